"""CoNLL reader and writer on small files written in tmp_path."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from clinical_ner.text.document import Document, Sentence
from clinical_ner.errors import DataFormatError
from clinical_ner.formats import load_corpus
from clinical_ner.formats.conll import read_conll, write_conll

SECRET = "ZZSECRET"


def write(tmp_path: Path, content: str | bytes, name: str = "notes.conll") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def sentences(corpus):
    return [(s.tokens, s.tags) for d in corpus.documents for s in d.sentences]


def test_reads_columns_sentences_and_sources(tmp_path):
    path = write(
        tmp_path,
        "Chest NN x B-problem\npain  NN   x  I-problem\n.\t. \t x\tO\n\n\n"
        "CT NNP x B-test\nclear JJ x O\n \t \nNo DT x O\n",
    )
    corpus = read_conll(path)
    assert corpus.format == "conll"
    assert corpus.labels == ["problem", "test"]
    assert corpus.skipped == []
    [document] = corpus.documents
    assert document.name == "notes"
    assert document.text is None
    assert sentences(corpus) == [
        (["Chest", "pain", "."], ["B-problem", "I-problem", "O"]),
        (["CT", "clear"], ["B-test", "O"]),
        (["No"], ["O"]),
    ]
    assert [s.source for s in document.sentences] == [f"{path}:1", f"{path}:6", f"{path}:9"]
    assert all(s.offsets is None for s in document.sentences)


def test_a_folder_read_as_conll_is_named_a_folder(tmp_path):
    # evaluate --corpus (format conll) on an i2b2 folder said "no such file" of a folder
    # that exists.
    with pytest.raises(DataFormatError, match=r": a folder \(a CoNLL corpus is one file\)$"):
        read_conll(tmp_path)
    with pytest.raises(DataFormatError, match=r": no such file \(a CoNLL corpus is one file\)$"):
        read_conll(tmp_path / "missing.conll")


def test_crlf_and_bom_are_accepted(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfChest\tB-problem\r\npain\tI-problem\r\n\r\nok\tO\r\n")
    assert sentences(read_conll(path)) == [
        (["Chest", "pain"], ["B-problem", "I-problem"]),
        (["ok"], ["O"]),
    ]


def test_docstart_splits_documents(tmp_path):
    path = write(
        tmp_path,
        "-DOCSTART- -X- O\n\na O\n\n-DOCSTART- O\n-DOCSTART- O\nb B-X\nc O\n\n",
        name="set.conll",
    )
    corpus = read_conll(path)
    assert [d.name for d in corpus.documents] == ["set-1", "set-2", "set-3"]
    assert [[s.tokens for s in d.sentences] for d in corpus.documents] == [
        [["a"]], [], [["b", "c"]]
    ]


def test_sentences_before_the_first_docstart_form_a_document(tmp_path):
    path = write(tmp_path, "a O\n-DOCSTART- O\nb O\n", name="set.conll")
    corpus = read_conll(path)
    assert [(d.name, [s.tokens for s in d.sentences]) for d in corpus.documents] == [
        ("set-1", [["a"]]), ("set-2", [["b"]])
    ]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_one_empty_document(tmp_path, content):
    corpus = read_conll(write(tmp_path, content))
    assert [(d.name, d.sentences) for d in corpus.documents] == [("notes", [])]
    assert corpus.labels == []


def test_missing_file_and_folder_are_errors(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        read_conll(tmp_path / "absent.conll")
    with pytest.raises(DataFormatError):
        read_conll(tmp_path)


@pytest.mark.parametrize(
    ("content", "scheme", "line", "fragment"),
    [
        (f"a O\n{SECRET}\nb O\n", "auto", 2, "only one column"),
        (f"a O\n{SECRET}secret X-foo\n", "auto", 2, "invalid tag"),
        (f"a O\n\nb O\n{SECRET} I-X\n", "bio", 4, "an I- tag after O:"),
        (f"{SECRET} S-X\n\na B-X\nb O\n", "auto", 4, "an O tag after B-:"),
        (f"{SECRET} B-X\nb I-X\n", "bioes", 2, "ends inside an entity"),
        (f"a O\n{SECRET} B-X\n", "iob1", 2, "a B- tag after O:"),
        # A line of the note in the file: its last word has the shape of a tag.
        (f"a O\ngrew E-{SECRET}\n", "auto", 2, "an E- tag after O:"),
        (f"a O\nb B-X\nc I-{SECRET}\n", "bio", 3, "an I- tag after B- of another type"),
    ],
)
def test_errors_name_file_and_line_without_text(tmp_path, content, scheme, line, fragment):
    path = write(tmp_path, content)
    with pytest.raises(DataFormatError) as caught:
        read_conll(path, scheme=scheme)
    assert caught.value.path == str(path)
    assert caught.value.line == line
    assert fragment in caught.value.problem
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "scheme", "expected"),
    [
        ("a I-X\nb I-X\nc B-X\nd O\ne I-Y\n", "auto", ["B-X", "I-X", "B-X", "O", "B-Y"]),
        ("a I-X\nb I-X\nc B-X\nd O\ne I-Y\n", "iob1", ["B-X", "I-X", "B-X", "O", "B-Y"]),
        ("a S-X\nb B-Y\nc I-Y\nd E-Y\ne O\n", "auto", ["B-X", "B-Y", "I-Y", "I-Y", "O"]),
        ("a U-X\nb B-Y\nc L-Y\ne O\n", "bilou", ["B-X", "B-Y", "I-Y", "O"]),
    ],
)
def test_other_schemes_read_as_iob2(tmp_path, content, scheme, expected):
    [(_, tags)] = sentences(read_conll(write(tmp_path, content), scheme=scheme))
    assert tags == expected


def test_bioes_is_decided_for_the_whole_file(tmp_path):
    # Read alone, the second sentence would be valid BIO.
    path = write(tmp_path, "a S-X\n\nb O\nc B-X\nd O\n")
    with pytest.raises(DataFormatError) as caught:
        read_conll(path)
    assert caught.value.line == 5


def test_skip_invalid_skips_exactly_the_bad_sentences(tmp_path):
    path = write(
        tmp_path,
        "good B-X\none I-X\n\n"
        f"{SECRET}\nbad O\n\n"
        "fine O\n\n"
        f"x O\n{SECRET} I-Y\n\n"
        "last B-Y\n",
    )
    corpus = read_conll(path, scheme="bio", skip_invalid=True)
    assert sentences(corpus) == [
        (["good", "one"], ["B-X", "I-X"]), (["fine"], ["O"]), (["last"], ["B-Y"])
    ]
    assert [(e.path, e.line) for e in corpus.skipped] == [(str(path), 4), (str(path), 10)]
    assert corpus.labels == ["X", "Y"]
    with pytest.raises(DataFormatError):
        read_conll(path, scheme="bio")


def test_a_token_with_a_space_is_an_error_and_space_aligned_columns_read_as_before(tmp_path):
    # Audit H finding 1: "mg" and "York" were dropped (first and last column kept).
    path = write(tmp_path, "He\tO\n50 mg\tO\nin\tO\nNew York\tB-problem\nsyndrome\tI-problem\n")
    with pytest.raises(DataFormatError) as caught:
        read_conll(path)
    assert (caught.value.line, caught.value.problem) == (2, (
        "3 columns, but the file's lines have 2 (columns are split at spaces and tabs: a token "
        "cannot hold a space)"))
    # Columns aligned with spaces before the tag's tab: the token is the first word.
    aligned = write(tmp_path, "Chest NN\tB-problem\npain  NN\tI-problem\n", name="aligned.conll")
    assert sentences(read_conll(aligned)) == [(["Chest", "pain"], ["B-problem", "I-problem"])]


@pytest.mark.parametrize(
    ("content", "line", "counts"),
    [
        # A line of the note in a tab-separated file; its last word looks like a tag.
        (f"Chest\tB-problem\npain\tI-problem\n\nPatient {SECRET} with B-cell\n", 4, (4, 2)),
        # A token with a space in a file split at spaces.
        (f"He O\ntook O\n\n50 {SECRET} O\n", 4, (3, 2)),
        (f"a NN B-X\nb NN I-X\n\nc {SECRET} NN O\n", 4, (4, 3)),
        # Most lines decide: a stray line at the top is the error, not every other line.
        (f"{SECRET} text\tO\tO\na\tO\n\nb\tO\n", 1, (4, 2)),
    ],
)
def test_a_line_with_other_columns_is_an_error(tmp_path, content, line, counts):
    path = write(tmp_path, content, name="bad.conll")
    with pytest.raises(DataFormatError) as caught:
        read_conll(path)
    assert caught.value.line == line
    assert caught.value.problem.startswith(
        f"{counts[0]} columns, but the file's lines have {counts[1]}"
    )
    assert SECRET not in str(caught.value)
    skipping = read_conll(path, skip_invalid=True)
    assert [(e.path, e.line) for e in skipping.skipped] == [(str(path), line)]
    assert len(sentences(skipping)) == 1


def test_docstart_lines_are_not_counted_but_may_not_carry_an_entity_tag(tmp_path):
    path = write(tmp_path, "-DOCSTART- -X- -X- O\n\na\tO\n-DOCSTART-\n\nb\tO\n", name="set.conll")
    assert [d.name for d in read_conll(path).documents] == ["set-1", "set-2"]
    # Audit H finding 20: read as a break, the entity went unnoticed.
    path = write(tmp_path, "a\tO\n-DOCSTART-\tB-problem\nsyndrome\tI-problem\n", name="set.conll")
    with pytest.raises(DataFormatError) as caught:
        read_conll(path)
    assert caught.value.line == 2
    assert "-DOCSTART- line tagged as part of an entity" in caught.value.problem
    skipping = read_conll(path, skip_invalid=True)
    assert [e.line for e in skipping.skipped] == [2]
    assert [[s.tokens for s in d.sentences] for d in skipping.documents] == [
        [["a"]], [["syndrome"]]
    ]


def test_round_trip_several_documents(tmp_path):
    original = write(
        tmp_path,
        "-DOCSTART- O\n\nChest B-problem\npain I-problem\n\nCT B-test\nCT B-test\n\n"
        "-DOCSTART- O\n\n-DOCSTART- O\n\nno O\n",
        name="a.conll",
    )
    first = read_conll(original)
    copy = tmp_path / "copy" / "a.conll"
    copy.parent.mkdir()
    write_conll(copy, first.documents)
    second = read_conll(copy)
    assert [d.name for d in second.documents] == ["a-1", "a-2", "a-3"]
    assert sentences(second) == sentences(first)
    assert [len(d.sentences) for d in second.documents] == [2, 0, 1]
    write_conll(tmp_path / "again.conll", second.documents)
    assert (tmp_path / "again.conll").read_bytes() == copy.read_bytes()


def test_write_single_document_has_no_docstart(tmp_path):
    document = Document("d", [Sentence(["a", "b"], ["B-X", "I-X"]), Sentence(["c"], ["O"])])
    path = tmp_path / "out.conll"
    write_conll(path, [document])
    assert path.read_text(encoding="utf-8") == "a\tB-X\nb\tI-X\n\nc\tO\n\n"
    assert sentences(read_conll(path)) == [(["a", "b"], ["B-X", "I-X"]), (["c"], ["O"])]


def test_write_to_a_stream():
    stream = io.StringIO()
    write_conll(stream, [Document("d", [Sentence(["a"], ["B-X"])]), Document("e", [])])
    assert stream.getvalue() == "-DOCSTART- O\n\na\tB-X\n\n-DOCSTART- O\n\n"


def test_write_with_predicted_tags(tmp_path):
    documents = [Document("d", [Sentence(["a", "b"]), Sentence(["c"])])]
    path = tmp_path / "out.conll"
    write_conll(path, documents, tags_per_sentence=[["O", "B-X"], ["B-Y"]])
    assert sentences(read_conll(path)) == [(["a", "b"], ["O", "B-X"]), (["c"], ["B-Y"])]
    with pytest.raises(ValueError, match="2 sentences but 1 tag lists"):
        write_conll(path, documents, tags_per_sentence=[["O", "O"]])


@pytest.mark.parametrize(
    "sentence",
    [
        Sentence([], []),
        Sentence(["chest pain"], ["O"]),
        Sentence([""], ["O"]),
        Sentence(["a"], ["B X"]),
        Sentence(["a"]),
        Sentence(["-DOCSTART-"], ["O"]),
    ],
)
def test_write_rejects_what_conll_cannot_hold(tmp_path, sentence):
    with pytest.raises(ValueError):
        write_conll(tmp_path / "out.conll", [Document("d", [sentence])])


def test_a_plain_note_is_refused_as_no_annotated_corpus(tmp_path):
    # A note given to evaluate (or train) as --data was read as CoNLL: "PATH:1: invalid tag",
    # or "only one column", as if an annotated file had a bad line.
    for content in (f"Patient has {SECRET} fever.\nStarted aspirin 81 mg.\n",
                    f"{SECRET}\n\nfever\n"):
        path = write(tmp_path, content, "note.txt")
        with pytest.raises(DataFormatError, match=rf"^{re.escape(str(path))}: not an annotated "
                                                  r"corpus \(no line ends in a tag such as O or "
                                                  r"B-problem\); expected a CoNLL file, a folder "
                                                  r"with txt/ and concept/") as caught:
            load_corpus(path, skip_invalid=True)
        assert SECRET not in str(caught.value)
    # A CoNLL file is read whatever its name.
    path = write(tmp_path, "Fever B-problem\nnoted O\n", "notes.txt")
    assert sentences(load_corpus(path)) == [(["Fever", "noted"], ["B-problem", "O"])]
