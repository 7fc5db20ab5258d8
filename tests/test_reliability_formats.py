"""Damaged data files: each is read correctly or stops with file, line and reason.

Complements tests/test_formats*.py (which cover the well-formed layouts, the
.txt/.conll encodings, I- starts, unbalanced quotes, missing partner files)
with what a file system, an editor or a transfer does to files: truncation at
any byte, old Mac CR line ends, encodings of the partner files (.con, .ast,
.ann), tabs, absurd offsets. With ``skip_invalid`` the reader keeps everything
else and lists exactly the damaged units.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from clinical_ner.errors import DataFormatError
from clinical_ner.formats import load_corpus
from clinical_ner.formats.brat import read_brat
from clinical_ner.formats.conll import read_conll
from clinical_ner.formats.i2b2 import read_i2b2

SECRET = "ZZSECRET"

CONLL = (
    "Chest\tB-problem\npain\tI-problem\n.\tO\n\n"
    "CT\tB-test\nclear\tO\n\n"
    f"{SECRET}\tO\nfi\u00e8vre\tB-problem\naspirin\tB-treatment\n"
)
CONLL_SENTENCES = [
    (["Chest", "pain", "."], ["B-problem", "I-problem", "O"]),
    (["CT", "clear"], ["B-test", "O"]),
    ([SECRET, "fi\u00e8vre", "aspirin"], ["O", "B-problem", "B-treatment"]),
]

I2B2_TEXT = f"Chest pain today\nCT clear\n{SECRET} started aspirin\n"
I2B2_CON = (
    'c="chest pain" 1:0 1:1||t="problem"\n'
    'c="ct" 2:0 2:0||t="test"\n'
    'c="aspirin" 3:2 3:2||t="treatment"\n'
)
I2B2_CONCEPTS = [(1, 0, 1, "problem"), (2, 0, 0, "test"), (3, 2, 2, "treatment")]

BRAT_TEXT = f"Chest pain today. CT clear. {SECRET} started aspirin."
BRAT_ANN = (
    "T1\tSign_symptom 0 10\tChest pain\n"
    "T2\tDiagnostic_procedure 18 20\tCT\n"
    f"T3\tMedication {BRAT_TEXT.index('aspirin')} {BRAT_TEXT.index('aspirin') + 7}\taspirin\n"
)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def sentences(corpus) -> list[tuple[list[str], list[str]]]:
    return [(s.tokens, s.tags) for d in corpus.documents for s in d.sentences]


def concepts(corpus) -> list[tuple[int, int, int, str]]:
    """(line, first token, last token, label) of every i2b2 concept."""
    result = []
    for document in corpus.documents:
        for sentence in document.sentences:
            line = int(sentence.source.rsplit(":", 1)[1])
            tags = sentence.tags
            for index, tag in enumerate(tags):
                if tag.startswith("B-"):
                    last = index
                    while last + 1 < len(tags) and tags[last + 1] == f"I-{tag[2:]}":
                        last += 1
                    result.append((line, index, last, tag[2:]))
    return result


def assert_error(error: DataFormatError, path: Path, line: int | None, fragment: str) -> None:
    assert (error.path, error.line) == (str(path), line), str(error)
    assert fragment in error.problem, str(error)
    assert SECRET not in str(error)


def line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


# -- truncation ------------------------------------------------------------------------


def _cut_points(data: bytes) -> range:
    """Every byte offset inside the last line (a cut exactly at a line end is a valid file)."""
    last_line_start = data.rstrip(b"\n").rfind(b"\n") + 1
    return range(last_line_start + 1, len(data) - 1)


def test_conll_truncated_at_every_byte_of_the_last_line(tmp_path):
    data = CONLL.encode("utf-8")
    path = tmp_path / "cut.conll"
    outcomes = set()
    for cut in _cut_points(data):
        write(path, data[:cut])
        try:
            corpus = read_conll(path)
        except DataFormatError as error:
            # The damaged line is named; nothing earlier is blamed.
            assert error.path == str(path)
            assert error.line == line_of(data, cut), (cut, str(error))
            assert SECRET not in str(error)
            outcomes.add(" ".join(error.problem.split(" ")[:2]))
            skipped = read_conll(path, skip_invalid=True)
            assert sentences(skipped) == CONLL_SENTENCES[:2]
            assert [(e.path, e.line) for e in skipped.skipped] == [(str(path), error.line)]
            continue
        # Readable: every complete sentence is intact, the cut one is a prefix.
        *complete, last = sentences(corpus)
        assert complete == CONLL_SENTENCES[:2], cut
        tokens = last[0]
        assert tokens[:-1] == CONLL_SENTENCES[2][0][:len(tokens) - 1], cut
        assert corpus.skipped == []
        outcomes.add("read")
    # Cuts in the token or before the tag, in the tag's prefix, and inside the
    # tag's label all happen. (The last leaves a shorter label, which is valid:
    # CoNLL has no way to tell.)
    assert outcomes == {"only one", "invalid tag", "read"}


def test_conll_cut_inside_a_multibyte_character_names_line_and_byte(tmp_path):
    data = CONLL.encode("utf-8")
    cut = data.index("\u00e8".encode("utf-8")) + 1
    path = write(tmp_path / "cut.conll", data[:cut])
    with pytest.raises(DataFormatError) as caught:
        read_conll(path)
    assert_error(caught.value, path, line_of(data, cut), f"invalid UTF-8 at byte offset {cut - 1}")


def test_con_truncated_at_every_byte_of_the_last_line(tmp_path):
    write(tmp_path / "n.txt", I2B2_TEXT)
    data = I2B2_CON.encode("utf-8")
    con = tmp_path / "n.con"
    for cut in _cut_points(data):
        write(con, data[:cut])
        with pytest.raises(DataFormatError) as caught:
            read_i2b2(tmp_path)
        assert (caught.value.path, caught.value.line) == (str(con), 3), cut
        assert SECRET not in str(caught.value)
        corpus = read_i2b2(tmp_path, skip_invalid=True)
        assert concepts(corpus) == I2B2_CONCEPTS[:2]
        assert [(e.path, e.line) for e in corpus.skipped] == [(str(con), 3)]


def test_ann_truncated_at_every_byte_of_the_last_line(tmp_path):
    write(tmp_path / "n.txt", BRAT_TEXT)
    data = BRAT_ANN.encode("utf-8")
    ann = tmp_path / "n.ann"
    full = read_brat(write(tmp_path / "n.ann", data).parent)
    for cut in _cut_points(data):
        write(ann, data[:cut])
        with pytest.raises(DataFormatError) as caught:
            read_brat(tmp_path)
        assert (caught.value.path, caught.value.line) == (str(ann), 3), cut
        assert SECRET not in str(caught.value)
        corpus = read_brat(tmp_path, skip_invalid=True)
        assert [(e.path, e.line) for e in corpus.skipped] == [(str(ann), 3)]
        # T1 and T2 are kept, T3 is gone.
        assert corpus.labels == ["Diagnostic_procedure", "Sign_symptom"]
        assert [s.tokens for s in corpus.documents[0].sentences] == [
            s.tokens for s in full.documents[0].sentences
        ]


def test_truncated_txt_is_caught_by_its_annotations(tmp_path):
    cut_text = I2B2_TEXT[:I2B2_TEXT.index(SECRET) + 3]
    write(tmp_path / "i" / "n.txt", cut_text)
    con = write(tmp_path / "i" / "n.con", I2B2_CON)
    with pytest.raises(DataFormatError) as caught:
        read_i2b2(tmp_path / "i")
    assert_error(caught.value, con, 3, "goes past the end of line 3")

    write(tmp_path / "b" / "n.txt", BRAT_TEXT[:40])
    ann = write(tmp_path / "b" / "n.ann", BRAT_ANN)
    with pytest.raises(DataFormatError) as caught:
        read_brat(tmp_path / "b")
    assert_error(caught.value, ann, 3, "is past the end of the text (40 characters)")


# -- line ends --------------------------------------------------------------------------


def test_conll_with_old_mac_cr_line_ends_reads_every_line(tmp_path):
    path = write(tmp_path / "mac.conll", CONLL.replace("\n", "\r"))
    corpus = read_conll(path)
    assert sentences(corpus) == CONLL_SENTENCES
    assert [s.source for s in corpus.documents[0].sentences] == [
        f"{path}:1", f"{path}:5", f"{path}:8"
    ]
    # Line numbers in errors count CR line ends too.
    broken = write(tmp_path / "bad.conll", CONLL.replace("\n", "\r").replace("clear\tO", "clear"))
    with pytest.raises(DataFormatError) as caught:
        read_conll(broken)
    assert_error(caught.value, broken, 6, "only one column")


def test_mixed_lf_and_crlf_line_ends(tmp_path):
    lines = CONLL.split("\n")
    mixed = "".join(line + ("\r\n" if index % 2 else "\n") for index, line in enumerate(lines))
    assert sentences(read_conll(write(tmp_path / "mixed.conll", mixed))) == CONLL_SENTENCES


def test_conll_cr_inside_a_line_is_an_error_not_part_of_a_token(tmp_path):
    path = write(tmp_path / "cr.conll", CONLL.replace("CT\tB-test", "C\rT\tB-test"))
    with pytest.raises(DataFormatError) as caught:
        read_conll(path)
    assert_error(caught.value, path, 5, "carriage return")
    corpus = read_conll(path, skip_invalid=True)
    assert sentences(corpus) == [CONLL_SENTENCES[0], CONLL_SENTENCES[2]]
    assert [(e.path, e.line) for e in corpus.skipped] == [(str(path), 5)]


def test_i2b2_txt_with_cr_line_ends_is_an_error(tmp_path):
    # The i2b2 tools split lines at LF only: reading this as one line would
    # silently merge sentences and shift token positions.
    txt = write(tmp_path / "mac.txt", I2B2_TEXT.replace("\n", "\r"))
    write(tmp_path / "mac.con", 'c="chest pain" 1:0 1:1||t="problem"\n')
    write(tmp_path / "ok.txt", I2B2_TEXT)
    write(tmp_path / "ok.con", I2B2_CON)
    with pytest.raises(DataFormatError) as caught:
        read_i2b2(tmp_path)
    assert_error(caught.value, txt, 1, "carriage return without a line feed at character 17")
    corpus = read_i2b2(tmp_path, skip_invalid=True)
    assert [d.name for d in corpus.documents] == ["ok"]
    assert [(e.path, e.line) for e in corpus.skipped] == [(str(txt), 1)]
    # CRs that end lines (CRLF, or doubled before LF) are fine.
    write(tmp_path / "mac.txt", I2B2_TEXT.replace("\n", "\r\r\n"))
    assert len(read_i2b2(tmp_path).documents) == 2


@pytest.mark.parametrize("layout", ["i2b2", "brat"])
def test_annotation_file_with_cr_line_ends_names_the_reason(tmp_path, layout):
    if layout == "i2b2":
        write(tmp_path / "n.txt", I2B2_TEXT)
        partner = write(tmp_path / "n.con", I2B2_CON.replace("\n", "\r"))
    else:
        write(tmp_path / "n.txt", BRAT_TEXT)
        partner = write(tmp_path / "n.ann", BRAT_ANN.replace("\n", "\r"))
    with pytest.raises(DataFormatError) as caught:
        load_corpus(tmp_path)
    assert_error(caught.value, partner, 1, "carriage return")


# -- encodings of the annotation files ------------------------------------------------------


def _layout(tmp_path: Path, partner: str) -> tuple[Path, str, str]:
    """Write a valid document; return the partner file's path and its text."""
    if partner == "ann":
        write(tmp_path / "n.txt", BRAT_TEXT)
        content = BRAT_ANN
    else:
        write(tmp_path / "n.txt", I2B2_TEXT)
        write(tmp_path / "n.con", I2B2_CON)
        content = I2B2_CON
        if partner == "ast":
            # Only problems carry an assertion (the first line).
            content = I2B2_CON.split("\n")[0] + '||a="present"\n'
    path = tmp_path / f"n.{partner}"
    write(path, content)
    return path, content


@pytest.mark.parametrize("partner", ["con", "ast", "ann"])
def test_bom_and_crlf_in_annotation_files_are_accepted(tmp_path, partner):
    path, content = _layout(tmp_path, partner)
    expected = load_corpus(tmp_path)
    write(path, b"\xef\xbb\xbf" + content.replace("\n", "\r\n").encode("utf-8"))
    corpus = load_corpus(tmp_path)
    assert corpus.skipped == []
    assert sentences(corpus) == sentences(expected)
    if partner == "ast":
        assert [s.assertions for s in corpus.documents[0].sentences] == [
            {(0, 1): "present"}, {}, {}
        ]


@pytest.mark.parametrize("partner", ["con", "ast", "ann"])
@pytest.mark.parametrize(
    ("encoding", "fragment"),
    [
        ("latin-1", "invalid UTF-8 at byte offset"),
        ("utf-16", "starts with a UTF-16 byte-order mark"),
        ("utf-16-le", "NUL byte at byte offset 1"),
    ],
)
def test_annotation_files_in_other_encodings_stop_or_are_skipped(
    tmp_path, partner, encoding, fragment
):
    path, content = _layout(tmp_path, partner)
    # A non-ASCII character on line 2 makes Latin-1 differ from UTF-8 there.
    if partner == "ann":
        content = content.replace("Chest pain\n", "Chest pain\n#1\tAnnotatorNotes T1\tn\u00e9e\n")
    elif partner == "ast":
        content += content.replace("chest", "ch\u00e9st")
    else:
        content = content.replace('||t="test"', '||t="t\u00e9st"')
    data = content.encode(encoding)
    write(path, data)
    write(tmp_path / "other.txt", "Fever")
    if partner == "ann":
        write(tmp_path / "other.ann", "T1\tSign_symptom 0 5\tFever\n")
    else:
        write(tmp_path / "other.con", 'c="fever" 1:0 1:0||t="problem"\n')
    with pytest.raises(DataFormatError) as caught:
        load_corpus(tmp_path)
    error = caught.value
    expected_line = 2 if encoding == "latin-1" else 1
    assert_error(error, path, expected_line, fragment)
    assert "expected UTF-8" in error.problem
    corpus = load_corpus(tmp_path, skip_invalid=True)
    assert [d.name for d in corpus.documents] == ["other"]
    assert [(e.path, e.line) for e in corpus.skipped] == [(str(path), expected_line)]


# -- tabs, offsets, empty files ----------------------------------------------------------


def test_tabs_and_runs_of_spaces_between_con_fields(tmp_path):
    write(tmp_path / "n.txt", "Chest\tpain  today\n")
    write(tmp_path / "n.con", 'c="chest  pain"\t1:0\t1:1||t="problem"\r\n')
    corpus = read_i2b2(tmp_path)
    assert sentences(corpus) == [(["Chest", "pain", "today"], ["B-problem", "I-problem", "O"])]


def test_brat_fields_need_their_tabs(tmp_path):
    write(tmp_path / "n.txt", BRAT_TEXT)
    ann = write(tmp_path / "n.ann", "T1\tSign_symptom\t0 10\tChest pain\n")
    with pytest.raises(DataFormatError) as caught:
        read_brat(tmp_path)
    assert_error(caught.value, ann, 1, "malformed T line")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('c="aspirin" 3:2 3:99999999999999999999999999||t="x"', "goes past the end of line 3"),
        ('c="aspirin" 99999999999999999999999999:2 99999999999999999999999999:2||t="x"',
         "is not a line of the .txt file"),
        ('c="aspirin" 3:-2 3:2||t="x"', "<line>:<token> <line>:<token>"),
    ],
)
def test_con_offsets_out_of_any_range(tmp_path, line, fragment):
    write(tmp_path / "n.txt", I2B2_TEXT)
    con = write(tmp_path / "n.con", f"{line}\n")
    with pytest.raises(DataFormatError) as caught:
        read_i2b2(tmp_path)
    assert_error(caught.value, con, 1, fragment)


@pytest.mark.parametrize(
    ("offsets", "fragment"),
    [
        ("0 99999999999999999999999999", "offset 99999999999999999999999999 is past the end"),
        (f"{len(BRAT_TEXT)} {len(BRAT_TEXT) + 1}", "is past the end of the text"),
        ("-1 5", "malformed T line"),
    ],
)
def test_ann_offsets_past_the_text(tmp_path, offsets, fragment):
    write(tmp_path / "n.txt", BRAT_TEXT)
    ann = write(tmp_path / "n.ann", f"T1\tSign_symptom {offsets}\tChest\n")
    with pytest.raises(DataFormatError) as caught:
        read_brat(tmp_path)
    assert_error(caught.value, ann, 1, fragment)


@pytest.mark.parametrize("layout", ["i2b2", "brat"])
def test_empty_annotation_file_means_no_entities(tmp_path, layout):
    write(tmp_path / "n.txt", I2B2_TEXT)
    write(tmp_path / ("n.con" if layout == "i2b2" else "n.ann"), "")
    corpus = load_corpus(tmp_path)
    assert corpus.skipped == [] and corpus.labels == []
    assert [s.tokens for s in corpus.documents[0].sentences][0] == ["Chest", "pain", "today"]
    assert all(tag == "O" for _, tags in sentences(corpus) for tag in tags)


def test_unusual_labels_are_read_as_written_and_listed(tmp_path):
    # The readers know no label set: whatever type the annotator wrote is a
    # label, and Corpus.labels shows it so that a typo is visible.
    path = write(tmp_path / "x.conll", "a\tB-Drug_name.v2\nb\tI-Drug_name.v2\n\nc\tI-problem\n")
    corpus = read_conll(path)
    assert corpus.labels == ["Drug_name.v2", "problem"]
    assert sentences(corpus) == [
        (["a", "b"], ["B-Drug_name.v2", "I-Drug_name.v2"]), (["c"], ["B-problem"])
    ]
