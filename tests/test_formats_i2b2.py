"""i2b2/VA 2010 concept reader and writers on small files written in tmp_path."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinical_ner.text.document import Document, Entity, Mention, Sentence
from clinical_ner.errors import DataFormatError
from clinical_ner.formats import load_corpus
from clinical_ner.formats.i2b2 import (
    entities_to_con_lines,
    read_i2b2,
    write_con,
    write_con_entities,
)
from clinical_ner.text.tags import tags_to_mentions

SECRET = "zzsecret"

TEXT = "Chest pain  and\tfever .\n\nCT scan negative\nStarted aspirin"
CON = (
    'c="chest pain" 1:0 1:1||t="problem"\n'
    'c="fever" 1:3 1:3||t="problem"\n'
    'c="ct scan" 3:0 3:1||t="test"\n'
    'c="aspirin" 4:1 4:1||t="treatment"\n'
)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def concepts(corpus):
    """(document, line of the sentence, first, last, label) of every concept."""
    return [
        (d.name, int(s.source.rsplit(":", 1)[1]), m.first_token, m.last_token, m.label)
        for d in corpus.documents for s in d.sentences for m in tags_to_mentions(s.tags)
    ]


def test_reads_text_tokens_offsets_and_concepts(tmp_path):
    write(tmp_path / "note.txt", TEXT)
    write(tmp_path / "note.con", CON)
    corpus = read_i2b2(tmp_path)
    assert corpus.format == "i2b2"
    assert corpus.labels == ["problem", "test", "treatment"]
    [document] = corpus.documents
    assert document.name == "note"
    assert document.text == TEXT
    first, second, third = document.sentences
    assert first.tokens == ["Chest", "pain", "and", "fever", "."]
    assert first.tags == ["B-problem", "I-problem", "O", "B-problem", "O"]
    assert [TEXT[a:b] for a, b in first.offsets] == first.tokens
    assert first.offsets[2] == (12, 15)
    # The empty line 2 makes no sentence but still counts.
    assert second.source == f"{tmp_path / 'note.txt'}:3"
    assert second.tags == ["B-test", "I-test", "O"]
    assert [TEXT[a:b] for a, b in third.offsets] == ["Started", "aspirin"]
    assert third.tags == ["O", "B-treatment"]


def test_crlf_and_bom(tmp_path):
    write(tmp_path / "note.txt", b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode())
    write(tmp_path / "note.con", CON.replace("\n", "\r\n"))
    [document] = read_i2b2(tmp_path).documents
    assert document.text == TEXT
    assert document.sentences[0].offsets[2] == (12, 15)
    assert document.sentences[2].tags == ["O", "B-treatment"]


def test_release_layout_with_assertions(tmp_path):
    write(tmp_path / "txt" / "b.txt", TEXT)
    write(tmp_path / "txt" / "a.txt", "No fever")
    write(tmp_path / "concept" / "b.con", CON)
    write(tmp_path / "concept" / "a.con", 'c="fever" 1:1 1:1||t="problem"\n')
    write(tmp_path / "ast" / "b.ast",
          'c="fever" 1:3 1:3||t="problem"||a="present"\n'
          'c="chest pain" 1:0 1:1||t="problem"||a="absent"\n')
    corpus = read_i2b2(tmp_path)
    assert [d.name for d in corpus.documents] == ["a", "b"]
    a, b = corpus.documents
    assert a.sentences[0].assertions == {}
    assert b.sentences[0].assertions == {(3, 3): "present", (0, 1): "absent"}
    assert b.sentences[1].assertions == {}


def test_single_txt_file_with_con_beside_it(tmp_path):
    write(tmp_path / "note.txt", TEXT)
    write(tmp_path / "note.con", CON)
    write(tmp_path / "other.txt", "unrelated")
    corpus = read_i2b2(tmp_path / "note.txt")
    assert [d.name for d in corpus.documents] == ["note"]
    assert len(concepts(corpus)) == 4


def test_quotes_in_concept_text(tmp_path):
    write(tmp_path / "q.txt", 'said "dizzy" today')
    write(tmp_path / "q.con",
          'c=""dizzy"" 1:1 1:1||t="problem"\n'
          'c="said" 1:0 1:0||t="test"\n')
    assert concepts(read_i2b2(tmp_path)) == [("q", 1, 0, 0, "test"), ("q", 1, 1, 1, "problem")]
    write(tmp_path / "q.con", "c=\"'dizzy'\" 1:1 1:1||t=\"problem\"\n")
    assert concepts(read_i2b2(tmp_path)) == [("q", 1, 1, 1, "problem")]


def test_concept_text_matching_ignores_case_and_whitespace(tmp_path):
    write(tmp_path / "n.txt", "Chest   PAIN")
    write(tmp_path / "n.con", 'c="chest  pain " 1:0 1:1||t="problem"\n')
    assert concepts(read_i2b2(tmp_path)) == [("n", 1, 0, 1, "problem")]


def test_empty_files_give_a_document_without_sentences(tmp_path):
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "empty.con", "")
    [document] = read_i2b2(tmp_path).documents
    assert (document.name, document.sentences, document.text) == ("empty", [], "")


SECRET_TEXT = f"{SECRET}a {SECRET}b {SECRET}c\n{SECRET}d\n"


@pytest.mark.parametrize(
    ("lines", "bad_line", "fragment"),
    [
        ([f'c="{SECRET}x" 1:0 1:0||t="problem"'], 1, "concept text does not match tokens 1:0-1:0"),
        ([f'c="{SECRET}a {SECRET}b" 1:1 1:2||t="problem"'], 1, "does not match tokens 1:1-1:2"),
        ([f'c="{SECRET}a" 1:0 1:0||t="problem"', f'c="{SECRET}c" 1:2 1:3||t="x"'], 2,
         "past the end of line 1 (3 tokens)"),
        ([f'c="{SECRET}" 3:0 3:0||t="problem"'], 1,
         "line 3 is not a line of the .txt file (it has 2"),
        ([f'c="{SECRET}" 0:0 0:0||t="problem"'], 1, "line 0 is not a line"),
        ([f'c="{SECRET}" 1:2 1:1||t="problem"'], 1, "ends before it starts"),
        ([f'c="{SECRET}" 1:2 2:0||t="problem"'], 1, "spans lines 1 to 2"),
        ([f'c="{SECRET} 1:0 1:0||t="problem"'], 1, "unbalanced quotes"),
        ([f'c="{SECRET}" 1:0 1:0||t="problem'], 1, 'expected ||t="<type>"'),
        ([f'c="{SECRET}" 1:0 1:0||t=""'], 1, "concept type is empty"),
        ([f'c="{SECRET}" 1:0 1:0 t="problem"'], 1, 'expected ||t="<type>"'),
        ([f'c="{SECRET}" 1:0||t="problem"'], 1, "<line>:<token> <line>:<token>"),
        ([f'c="{SECRET}" 1:0 1:{"9" * 5000}||t="problem"'], 1, "a position of more than 100"),
        ([f'c="{SECRET}" 1:0 1:\u0661||t="problem"'], 1, "<line>:<token> <line>:<token>"),
        ([f'{SECRET} 1:0 1:0||t="problem"'], 1, 'expected c="<concept text>"'),
        ([f'c="{SECRET}a {SECRET}b" 1:0 1:1||t="problem"', "",
          f'c="{SECRET}b {SECRET}c" 1:1 1:2||t="test"'], 3,
         "concept 1:1-1:2 overlaps concept 1:0-1:1 on line 1"),
        ([f'c="{SECRET}d" 2:0 2:0||t="problem"', f'c="{SECRET}d" 2:0 2:0||t="problem"'], 2,
         "overlaps concept 2:0-2:0 on line 1"),
    ],
)
def test_con_errors_name_file_and_line_without_text(tmp_path, lines, bad_line, fragment):
    write(tmp_path / "n.txt", SECRET_TEXT)
    con = write(tmp_path / "n.con", "\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as caught:
        read_i2b2(tmp_path)
    assert (caught.value.path, caught.value.line) == (str(con), bad_line)
    assert fragment in caught.value.problem
    assert SECRET not in str(caught.value).lower().replace(str(tmp_path).lower(), "")


@pytest.mark.parametrize(
    ("ast_line", "fragment"),
    [
        (f'c="{SECRET}d" 2:0 2:0||t="test"||a="present"', "no concept 2:0-2:0 with type test"),
        (f'c="{SECRET}a" 1:0 1:0||t="problem"||a="present"', "no concept 1:0-1:0"),
        (f'c="{SECRET}d" 2:0 2:0||t="problem"', 'expected ||a="<assertion>"'),
        (f'c="{SECRET}x" 2:0 2:0||t="problem"||a="present"', "does not match tokens"),
    ],
)
def test_ast_errors(tmp_path, ast_line, fragment):
    write(tmp_path / "n.txt", SECRET_TEXT)
    write(tmp_path / "n.con", f'c="{SECRET}d" 2:0 2:0||t="problem"\n')
    ast = write(tmp_path / "n.ast", f'c="{SECRET}d" 2:0 2:0||t="problem"||a="absent"\n{ast_line}\n')
    with pytest.raises(DataFormatError) as caught:
        read_i2b2(tmp_path)
    assert (caught.value.path, caught.value.line) == (str(ast), 2)
    assert fragment in caught.value.problem
    assert SECRET not in caught.value.problem


def test_second_assertion_for_a_concept(tmp_path):
    write(tmp_path / "n.txt", "fever")
    write(tmp_path / "n.con", 'c="fever" 1:0 1:0||t="problem"\n')
    line = 'c="fever" 1:0 1:0||t="problem"||a="present"\n'
    write(tmp_path / "n.ast", line + line)
    with pytest.raises(DataFormatError, match="second assertion") as caught:
        read_i2b2(tmp_path)
    assert caught.value.line == 2


def test_an_assertion_on_a_concept_that_is_not_a_problem(tmp_path):
    # Audit H finding 20: read, then ignored by training and scoring.
    write(tmp_path / "n.txt", "fever\nCT scan")
    write(tmp_path / "n.con", 'c="fever" 1:0 1:0||t="problem"\nc="ct scan" 2:0 2:1||t="test"\n')
    ast = write(tmp_path / "n.ast", 'c="fever" 1:0 1:0||t="problem"||a="absent"\n'
                                    'c="ct scan" 2:0 2:1||t="test"||a="absent"\n')
    with pytest.raises(DataFormatError) as caught:
        read_i2b2(tmp_path)
    assert (caught.value.path, caught.value.line) == (str(ast), 2)
    assert caught.value.problem == (
        "an assertion on a test concept; i2b2 2010 gives assertions to problems only"
    )
    corpus = read_i2b2(tmp_path, skip_invalid=True)
    assert [e.line for e in corpus.skipped] == [2]
    assert [s.assertions for s in corpus.documents[0].sentences] == [{(0, 0): "absent"}, {}]


def test_an_assertion_on_another_type_is_kept_for_a_label_map_to_make_it_a_problem(tmp_path):
    write(tmp_path / "n.txt", "fever\nCT scan")
    write(tmp_path / "n.con", 'c="fever" 1:0 1:0||t="Disease"\nc="ct scan" 2:0 2:1||t="test"\n')
    write(tmp_path / "n.ast", 'c="fever" 1:0 1:0||t="Disease"||a="absent"\n')
    corpus = load_corpus(tmp_path, label_map={"Disease": "problem", "test": "test"})
    first = corpus.documents[0].sentences[0]
    assert first.tags == ["B-problem"] and first.assertions == {(0, 0): "absent"}


@pytest.mark.parametrize(
    ("txt", "con", "misplaced", "advice"),
    [
        ("txt", "concept", "concept", "put them in {root}/ast (beside txt/ and concept/)"),
        ("txt", "concept", "txt", "put them in {root}/ast (beside txt/ and concept/)"),
        ("txt", "concept", ".", "put them in {root}/ast (beside txt/ and concept/)"),
        (".", ".", "ast", "put them beside the .txt and .con files in {root}"),
    ],
)
def test_ast_files_where_the_layout_does_not_read_them(tmp_path, txt, con, misplaced, advice):
    # Audit H finding 14: they were ignored, and a model trained without assertions.
    write(tmp_path / txt / "n.txt", "fever")
    write(tmp_path / con / "n.con", 'c="fever" 1:0 1:0||t="problem"\n')
    write(tmp_path / misplaced / "n.ast", 'c="fever" 1:0 1:0||t="problem"||a="absent"\n')
    for skip_invalid in (False, True):
        with pytest.raises(DataFormatError) as caught:
            read_i2b2(tmp_path, skip_invalid=skip_invalid)
        assert caught.value.path == str(tmp_path / misplaced)
        assert caught.value.problem.startswith(".ast files here are not read; " +
                                               advice.format(root=tmp_path))


def test_missing_partner_files(tmp_path):
    write(tmp_path / "a.txt", "x")
    write(tmp_path / "a.con", "")
    lonely_txt = write(tmp_path / "b.txt", "y")
    lonely_con = write(tmp_path / "c.con", "")
    lonely_ast = write(tmp_path / "d.ast", "")
    with pytest.raises(DataFormatError, match="no .con file for this .txt file") as caught:
        read_i2b2(tmp_path)
    assert caught.value.path == str(lonely_txt)
    corpus = read_i2b2(tmp_path, skip_invalid=True)
    assert [d.name for d in corpus.documents] == ["a"]
    assert [(e.path, e.problem) for e in corpus.skipped] == [
        (str(lonely_txt), "no .con file for this .txt file"),
        (str(lonely_con), "no .txt file for this .con file"),
        (str(lonely_ast), "no .txt or .con file for this .ast file"),
    ]
    with pytest.raises(DataFormatError, match="no .con file for this .txt file"):
        read_i2b2(lonely_txt)


def test_folder_without_data_files_is_an_error(tmp_path):
    write(tmp_path / "README.md", "nothing here")
    with pytest.raises(DataFormatError, match="no .txt or .con files"):
        read_i2b2(tmp_path)
    with pytest.raises(DataFormatError, match="no such file"):
        read_i2b2(tmp_path / "absent")


def test_skip_invalid_skips_exactly_the_bad_concept_lines(tmp_path):
    write(tmp_path / "n.txt", SECRET_TEXT)
    con = write(
        tmp_path / "n.con",
        f'c="{SECRET}a" 1:0 1:0||t="problem"\n'
        f'c="{SECRET}b" 1:1 1:9||t="problem"\n'
        f'c="{SECRET}c" 1:2 1:2||t="test"\n'
        f'c="{SECRET}d 2:0 2:0||t="test"\n'
        f'c="{SECRET}d" 2:0 2:0||t="treatment"\n',
    )
    corpus = read_i2b2(tmp_path, skip_invalid=True)
    assert concepts(corpus) == [
        ("n", 1, 0, 0, "problem"), ("n", 1, 2, 2, "test"), ("n", 2, 0, 0, "treatment")
    ]
    assert [(e.path, e.line) for e in corpus.skipped] == [(str(con), 2), (str(con), 4)]


def test_undecodable_document_is_skipped_as_a_whole(tmp_path):
    write(tmp_path / "a.txt", "fever")
    write(tmp_path / "a.con", 'c="fever" 1:0 1:0||t="problem"\n')
    write(tmp_path / "b.txt", "fine")
    bad = write(tmp_path / "b.con", 'c="caf\xe9" 1:0 1:0||t="problem"\n'.encode("latin-1"))
    with pytest.raises(DataFormatError, match="invalid UTF-8 at byte offset 6") as caught:
        read_i2b2(tmp_path)
    assert (caught.value.path, caught.value.line) == (str(bad), 1)
    corpus = read_i2b2(tmp_path, skip_invalid=True)
    assert [d.name for d in corpus.documents] == ["a"]
    assert [e.path for e in corpus.skipped] == [str(bad)]


def _write_corpus(folder: Path, corpus) -> None:
    for document in corpus.documents:
        write(folder / "txt" / f"{document.name}.txt", document.text)
        (folder / "concept").mkdir(exist_ok=True)
        write_con(folder / "concept" / f"{document.name}.con", document)


def _comparable(documents):
    return [
        (d.name, d.text, [(s.tokens, s.tags, s.offsets, s.assertions, s.source.rsplit(":")[-1])
                          for s in d.sentences])
        for d in documents
    ]


def test_round_trip_with_assertions(tmp_path):
    source = tmp_path / "in"
    write(source / "txt" / "n.txt", 'Chest pain , "dizzy"\n\nNo  fever')
    write(source / "concept" / "n.con",
          'c="fever" 3:1 3:1||t="problem"\n'
          'c="chest pain" 1:0 1:1||t="problem"\n'
          'c="\'dizzy\'" 1:3 1:3||t="problem"\n')
    write(source / "ast" / "n.ast",
          'c="fever" 3:1 3:1||t="problem"||a="absent"\n'
          'c="chest pain" 1:0 1:1||t="problem"||a="present"\n')
    first = read_i2b2(source)
    _write_corpus(tmp_path / "out", first)
    assert (tmp_path / "out" / "concept" / "n.con").read_text() == (
        'c="chest pain" 1:0 1:1||t="problem"\n'
        'c="\'dizzy\'" 1:3 1:3||t="problem"\n'
        'c="fever" 3:1 3:1||t="problem"\n'
    )
    assert (tmp_path / "out" / "ast" / "n.ast").read_text() == (
        'c="chest pain" 1:0 1:1||t="problem"||a="present"\n'
        'c="fever" 3:1 3:1||t="problem"||a="absent"\n'
    )
    assert _comparable(read_i2b2(tmp_path / "out").documents) == _comparable(first.documents)


def test_round_trip_shared_examples(shared_data, tmp_path):
    examples = shared_data / "i2b2-format-examples"
    originals = []
    for name in ("ex_doc", "pretend", "single"):
        corpus = read_i2b2(examples / f"{name}.txt")
        _write_corpus(tmp_path, corpus)
        originals += corpus.documents
        # The writer follows the release convention exactly (order aside).
        written = (tmp_path / "concept" / f"{name}.con").read_text(encoding="utf-8")
        original = (examples / f"{name}.con").read_text(encoding="utf-8")
        assert sorted(written.splitlines()) == sorted(filter(None, original.splitlines()))
    again = read_i2b2(tmp_path)
    assert _comparable(again.documents) == _comparable(originals)


def test_entities_to_con_lines_grows_to_whitespace_tokens():
    text = "Chest pain\n  BP 120/80 ok"
    entities = [
        Entity(2, 8, text[2:8], "problem"),
        Entity(11, 15, text[11:15], "test"),
        Entity(20, 22, text[20:22], "test"),
    ]
    assert entities_to_con_lines(text, entities) == [
        'c="chest pain" 1:0 1:1||t="problem"',
        'c="bp" 2:0 2:0||t="test"',
        'c="120/80" 2:1 2:1||t="test"',
    ]


@pytest.mark.parametrize(("start", "end"), [(6, 13), (10, 12), (11, 13), (3, 3), (20, 40), (-1, 2)])
def test_entities_to_con_lines_rejects_unplaceable_entities(start, end):
    text = "Chest pain\n  BP 120/80 ok"
    with pytest.raises(ValueError):
        entities_to_con_lines(text, [Entity(start, end, "", "problem")])


def test_writing_a_con_without_assertions_removes_an_earlier_ast(tmp_path):
    # The earlier .ast would be read back as the new .con's assertions.
    text = "No fever."
    write(tmp_path / "n.txt", text)
    write_con_entities(tmp_path / "n.con", text,
                       [Entity(3, 8, "fever", "problem", assertion="absent")])
    assert read_i2b2(tmp_path).documents[0].sentences[0].assertions == {(1, 1): "absent"}
    write_con_entities(tmp_path / "n.con", text, [Entity(3, 8, "fever", "problem")])
    assert not (tmp_path / "n.ast").exists()
    assert read_i2b2(tmp_path).documents[0].sentences[0].assertions == {}


def test_write_con_needs_text_and_offsets(tmp_path):
    document = Document("d", [Sentence(["a"], ["B-problem"])])
    with pytest.raises(ValueError, match="no text or token offsets"):
        write_con(tmp_path / "d.con", document)


def test_write_con_with_predicted_mentions_beside_the_txt(tmp_path):
    document = Document("d", [Sentence(["No", "fever"], ["O", "O"], [(0, 2), (3, 8)])], "No fever")
    write_con(tmp_path / "d.con", document, [[Mention(1, 1, "problem", "absent")]])
    assert (tmp_path / "d.con").read_text() == 'c="fever" 1:1 1:1||t="problem"\n'
    assert (tmp_path / "d.ast").read_text() == 'c="fever" 1:1 1:1||t="problem"||a="absent"\n'
    with pytest.raises(ValueError, match="1 sentences but 0 mention lists"):
        write_con(tmp_path / "d.con", document, [])


@pytest.mark.parametrize("text", ["\ufeffCT showed a nodule.", "\ufeff CT showed a nodule."])
def test_write_con_entities_of_a_text_with_a_byte_order_mark_reads_back(tmp_path, text):
    # predict --input of a file saved with a BOM: the .con counted the mark as (part of) a
    # token, and reading it back beside its .txt said "concept text does not match tokens".
    ct, nodule = text.index("CT"), text.index("nodule")
    entities = [Entity(ct, ct + 2, "CT", "test"),
                Entity(nodule, nodule + 6, "nodule", "problem", assertion="present")]
    (tmp_path / "d.txt").write_text(text, encoding="utf-8")
    write_con_entities(tmp_path / "d.con", text, entities)
    [sentence] = load_corpus(tmp_path, "i2b2").documents[0].sentences
    assert [sentence.tokens[m.first_token] for m in tags_to_mentions(sentence.tags)] == [
        "CT", "nodule."]
    assert list(sentence.assertions.values()) == ["present"]


def test_entities_that_share_a_whitespace_token_are_written_as_one_concept(tmp_path):
    # predict tags pain and fever in "pain/fever."; both became `1:2 1:2` lines, a .con
    # that its reader (and evaluate, train) refused: "overlaps concept 1:2-1:2".
    text = "Chest pain/fever. CT: clear"

    def entity(word, label, assertion=None):
        start = text.index(word)
        return Entity(start, start + len(word), word, label, assertion=assertion)

    entities = [entity("pain", "problem", "present"), entity("fever", "problem", "absent"),
                entity("CT", "test")]
    assert entities_to_con_lines(text, entities) == [
        'c="pain/fever." 1:1 1:1||t="problem"', 'c="ct:" 1:2 1:2||t="test"']
    (tmp_path / "d.txt").write_text(text, encoding="utf-8")
    write_con_entities(tmp_path / "d.con", text, entities)
    [sentence] = load_corpus(tmp_path, "i2b2").documents[0].sentences
    assert sentence.tags == ["O", "B-problem", "B-test", "O"]
    assert sentence.assertions == {(1, 1): "present"}


def _expected_position(text: str, start: int, end: int) -> tuple[int, int, int, list[str]]:
    """Line, first and last token by a character scan (independent of the reader)."""
    line_start = text.rfind("\n", 0, start) + 1
    tokens: list[str] = []
    covered = []
    position = line_start
    while position < len(text) and text[position] != "\n":
        char = text[position]
        if char not in " \t\r":
            if position == line_start or text[position - 1] in " \t\r":
                tokens.append("")
            tokens[-1] += char
            if start <= position < end:
                covered.append(len(tokens) - 1)
        position += 1
    return text.count("\n", 0, start) + 1, covered[0], covered[-1], tokens


@st.composite
def texts_with_entity(draw):
    text = draw(st.text(alphabet='aBé"x \t\r\n', min_size=1, max_size=40))
    start = draw(st.integers(0, len(text) - 1))
    end = draw(st.integers(start + 1, len(text)))
    span = text[start:end]
    # Only entities that i2b2 can hold: on one line, with a token character.
    if "\n" in span or not span.strip(" \t\r"):
        return text, Entity(start, end, span, "problem"), False
    return text, Entity(start, end, span, "problem"), True


@given(texts_with_entity())
def test_entities_to_con_lines_property(case):
    text, entity, placeable = case
    if not placeable:
        with pytest.raises(ValueError):
            entities_to_con_lines(text, [entity])
        return
    [line] = entities_to_con_lines(text, [entity])
    number, first, last, tokens = _expected_position(text, entity.start, entity.end)
    concept_text = " ".join(tokens[first:last + 1]).lower().replace('"', "'")
    assert line == f'c="{concept_text}" {number}:{first} {number}:{last}||t="problem"'
    assert re.fullmatch(r'c=".*" (\d+):(\d+) \1:(\d+)\|\|t="problem"', line)
