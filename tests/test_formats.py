"""Format detection, load_corpus and the UTF-8 rules shared by every reader."""
from __future__ import annotations

from pathlib import Path

import pytest

from clinical_ner.errors import ConfigError, DataFormatError
from clinical_ner.formats import Corpus, detect_format, load_corpus

SECRET = "ZZSECRET"


def touch(path: Path, content: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("files", "target", "expected"),
    [
        (["train.conll"], "train.conll", "conll"),
        (["notes.txt"], "notes.txt", "conll"),
        (["a.txt", "a.con"], "a.txt", "i2b2"),
        (["a.txt", "a.ann"], "a.txt", "brat"),
        (["txt/a.txt", "concept/a.con"], ".", "i2b2"),
        (["a.txt", "a.con", "README.md"], ".", "i2b2"),
        (["a.txt", "a.ann", "b.txt", "b.ann"], ".", "brat"),
    ],
)
def test_detect_format(tmp_path, files, target, expected):
    for name in files:
        touch(tmp_path / name)
    assert detect_format(tmp_path / target) == expected


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ([], "is not a corpus folder: expected a CoNLL file"),
        (["a.txt", "b.txt"], "is not a corpus folder"),
        (["a.txt", "a.con", "b.txt", "b.ann"], "has both .con and .ann files"),
    ],
)
def test_detect_format_explains_what_was_expected(tmp_path, files, fragment):
    for name in files:
        touch(tmp_path / name)
    with pytest.raises(DataFormatError) as caught:
        detect_format(tmp_path)
    assert caught.value.path == str(tmp_path)
    assert fragment in caught.value.problem
    assert "(brat)" in caught.value.problem
    with pytest.raises(DataFormatError, match="no such file or folder"):
        detect_format(tmp_path / "absent")


@pytest.mark.parametrize(("files", "target", "problem"), [
    (["txt/a.txt", "concept/a.con"], "txt/a.txt",
     "a document's text in an i2b2 folder (txt/ + concept/), not a corpus; give the folder "
     "({root})"),
    (["txt/a.txt", "concept/a.con"], "concept/a.con",
     "an i2b2 concept file, not a corpus; give the i2b2 folder that holds it ({root})"),
    (["txt/a.txt", "concept/a.con", "ast/a.ast"], "ast/a.ast",
     "an i2b2 assertion file, not a corpus; give the i2b2 folder that holds it ({root})"),
    (["a.txt", "a.con"], "a.con",
     "an i2b2 concept file, not a corpus; give the i2b2 folder that holds it ({root}), or its "
     "document's text {root}/a.txt for that document alone"),
    (["a.ann"], "a.ann", "a brat annotation file, not a corpus; give the brat folder that "
                         "holds it ({root})"),
])
def test_detect_format_refuses_one_file_of_an_i2b2_or_brat_corpus(tmp_path, files, target,
                                                                  problem):
    # Each was read as CoNLL: "PATH:1: 21 columns, but the file's lines have 14".
    for name in files:
        touch(tmp_path / name, f"{SECRET} words of a note\n")
    with pytest.raises(DataFormatError) as caught:
        load_corpus(tmp_path / target)
    assert str(caught.value) == f"{tmp_path / target}: {problem.format(root=tmp_path)}"


def test_detect_format_on_shared_data(shared_data):
    assert detect_format(shared_data / "maccrobat-i2b2" / "train") == "i2b2"
    assert detect_format(shared_data / "i2b2-format-examples") == "i2b2"
    assert detect_format(shared_data / "maccrobat" / "brat") == "brat"
    assert detect_format(shared_data / "ncbi-disease" / "dev.conll") == "conll"


def test_load_corpus_dispatches_and_checks_options(tmp_path):
    touch(tmp_path / "c" / "a.conll", "x S-X\n")
    touch(tmp_path / "i" / "a.txt", "fever")
    touch(tmp_path / "i" / "a.con", 'c="fever" 1:0 1:0||t="problem"\n')
    touch(tmp_path / "b" / "a.txt", "fever")
    touch(tmp_path / "b" / "a.ann", "T1\tSign_symptom 0 5\tfever\n")
    conll = load_corpus(tmp_path / "c" / "a.conll", scheme="bioes")
    i2b2 = load_corpus(tmp_path / "i")
    brat = load_corpus(tmp_path / "b", label_map={"Sign_symptom": "problem"})
    assert isinstance(conll, Corpus)
    assert (conll.format, conll.labels) == ("conll", ["X"])
    assert (i2b2.format, i2b2.labels) == ("i2b2", ["problem"])
    assert (brat.format, brat.labels) == ("brat", ["problem"])
    assert load_corpus(tmp_path / "i", format="i2b2").labels == ["problem"]
    with pytest.raises(ConfigError, match="unknown corpus format"):
        load_corpus(tmp_path / "i", format="xml")
    with pytest.raises(ConfigError, match="CoNLL input only"):
        load_corpus(tmp_path / "i", scheme="bio")
    # A label map renames CoNLL and i2b2 types too; unmapped types become O.
    assert load_corpus(tmp_path / "c" / "a.conll", label_map={"X": "problem"}).labels \
        == ["problem"]
    assert load_corpus(tmp_path / "c" / "a.conll", label_map={"Y": "test"}).labels == []
    assert load_corpus(tmp_path / "i", label_map={"problem": "finding"}).labels == ["finding"]


ENCODINGS = [
    # (bytes, line, byte offset, fragment)
    (f"ok\tO\n\n{SECRET} caf\u00e9\tO\n".encode("latin-1"), 3, 18, "invalid UTF-8"),
    (b"\xef\xbb\xbf" + f"ok\tO\n{SECRET}\u00e9\tO\n".encode("latin-1"), 2, 16, "invalid UTF-8"),
    (f"{SECRET}\tO\n".encode("utf-16"), 1, 0, "starts with a UTF-16 byte-order mark"),
    (f"ok\tO\n{SECRET}\tO\n".encode("utf-16-le"), 1, 1, "NUL byte"),
    (f"{SECRET}\tO\n".encode("utf-16-be"), 1, 0, "NUL byte"),
]


@pytest.mark.parametrize("layout", ["conll", "i2b2", "brat"])
@pytest.mark.parametrize(
    ("data", "line", "offset", "fragment"),
    ENCODINGS,
    ids=["latin-1", "latin-1-after-bom", "utf-16-bom", "utf-16-le", "utf-16-be"],
)
def test_non_utf8_files_are_errors(tmp_path, layout, data, line, offset, fragment):
    if layout == "conll":
        bad = tmp_path / "x.conll"
    else:
        bad = tmp_path / "x.txt"
        touch(tmp_path / ("x.con" if layout == "i2b2" else "x.ann"))
    bad.write_bytes(data)
    with pytest.raises(DataFormatError) as caught:
        load_corpus(bad if layout == "conll" else tmp_path)
    error = caught.value
    assert (error.path, error.line) == (str(bad), line)
    assert f"byte offset {offset}" in error.problem
    assert fragment in error.problem
    assert "expected UTF-8" in error.problem
    assert SECRET not in str(error)
