"""brat standoff reader on small files written in tmp_path."""
from __future__ import annotations

from pathlib import Path

import pytest

from clinical_ner.errors import ConfigError, DataFormatError
from clinical_ner.formats import load_corpus
from clinical_ner.formats.brat import read_brat

SECRET = "ZZSECRET"
LABEL_MAP = {
    "Sign_symptom": "problem",
    "Disease_disorder": "problem",
    "Diagnostic_procedure": "test",
    "Medication": "treatment",
    "Lab_value": None,
}
TEXT = "Chest pain and fever.\nCT: negative. Aspirin was given\n"


def span(text: str, piece: str, occurrence: int = 0) -> str:
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(piece, start + 1)
    return f"{start} {start + len(piece)}"


def write(folder: Path, name: str, text: str | bytes, ann: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    txt = folder / f"{name}.txt"
    txt.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    ann_path = folder / f"{name}.ann"
    ann_path.write_bytes(ann.encode("utf-8"))
    return txt, ann_path


def tagged(document) -> list[list[tuple[str, str]]]:
    return [list(zip(s.tokens, s.tags)) for s in document.sentences]


ANN = "\n".join([
    f"T1\tSign_symptom {span(TEXT, 'Chest pain')}\tChest pain",
    "E1\tSign_symptom:T1 ",
    f"T2\tDisease_disorder {span(TEXT, 'fever')}\tfever",
    f"T3\tDiagnostic_procedure {span(TEXT, 'CT')}\tCT",
    f"T4\tLab_value {span(TEXT, 'negative')}\tnegative",
    "R1\tMODIFY Arg1:T4 Arg2:T3\t",
    f"T5\tMedication {span(TEXT, 'Aspirin')};{span(TEXT, 'given')}\tAspirin given",
    f"T6\tClinical_event {span(TEXT, 'given')}\tgiven",
    "A1\tPOLARITY E1 NEG",
    "M1\tConfidence T3 High",
    "N1\tReference T2 Wikipedia:123\tfever",
    "#1\tAnnotatorNotes T1\tfree text note",
    "*\tOVERLAP T5 T6",
    "",
])


def test_reads_entities_sentences_and_offsets(tmp_path):
    txt, _ = write(tmp_path, "case", TEXT, ANN)
    corpus = read_brat(tmp_path, label_map=LABEL_MAP)
    assert corpus.format == "brat"
    assert corpus.labels == ["problem", "test", "treatment"]
    assert corpus.skipped == []
    [document] = corpus.documents
    assert document.name == "case"
    assert document.text == TEXT
    assert tagged(document) == [
        [("Chest", "B-problem"), ("pain", "I-problem"), ("and", "O"), ("fever", "B-problem"),
         (".", "O")],
        [("CT", "B-test"), (":", "O"), ("negative", "O"), (".", "O")],
        # The discontinuous T5 covers its full extent, "was" included.
        [("Aspirin", "B-treatment"), ("was", "I-treatment"), ("given", "I-treatment")],
    ]
    for sentence in document.sentences:
        assert [TEXT[a:b] for a, b in sentence.offsets] == sentence.tokens
    assert [s.source for s in document.sentences] == [f"{txt}:1", f"{txt}:2", f"{txt}:2"]


def test_without_label_map_every_type_is_kept(tmp_path):
    write(tmp_path, "case", TEXT, ANN)
    corpus = read_brat(tmp_path)
    assert corpus.labels == [
        "Diagnostic_procedure", "Disease_disorder", "Lab_value", "Medication", "Sign_symptom"
    ]
    # Clinical_event "given" lies inside the longer Medication annotation.
    assert [e.line for e in corpus.skipped] == [8]
    assert "T6 (Clinical_event) overlaps T5" in corpus.skipped[0].problem


def test_bom_and_crlf_offsets_count_the_text_as_written(tmp_path):
    text = "No fever.\r\nCough\r\n"
    ann = (f"T1\tSign_symptom {span(text, 'fever')}\tfever\r\n"
           f"T2\tSign_symptom {span(text, 'Cough')}\tCough\r\n")
    write(tmp_path, "crlf", b"\xef\xbb\xbf" + text.encode("utf-8"), ann)
    [document] = read_brat(tmp_path).documents
    assert document.text == text
    assert tagged(document) == [
        [("No", "O"), ("fever", "B-Sign_symptom"), (".", "O")], [("Cough", "B-Sign_symptom")]
    ]
    assert document.sentences[1].offsets == [(11, 16)]


def test_entity_boundary_inside_a_token_labels_the_token(tmp_path):
    text = "Known hypertension, 20mg daily"
    ann = (f"T1\tDisease_disorder {span(text, 'tension')}\ttension\n"
           f"T2\tMedication {span(text, '0m')}\t0m\n")
    write(tmp_path, "d", text, ann)
    [document] = read_brat(tmp_path, label_map=LABEL_MAP).documents
    assert tagged(document) == [[("Known", "O"), ("hypertension", "B-problem"), (",", "O"),
                                 ("20mg", "B-treatment"), ("daily", "O")]]


def test_overlaps_keep_the_longest_and_are_reported(tmp_path):
    text = "left lung mass and abc"
    ann = "\n".join([
        f"T1\tSign_symptom {span(text, 'lung mass')}\tlung mass",
        f"T2\tDisease_disorder {span(text, 'left lung mass')}\tleft lung mass",
        f"T3\tDiagnostic_procedure {span(text, 'mass')}\tmass",
        # Same length, overlapping: the earlier start wins.
        f"T4\tMedication {span(text, 'mass and')}\tmass and",
        f"T5\tMedication {span(text, 'ss and a')}\tss and a",
        # No shared character but a shared token ("abc"): the longer wins.
        f"T6\tSign_symptom {span(text, 'a', 2)}\ta",
        f"T7\tDiagnostic_procedure {span(text, 'bc')}\tbc",
    ])
    _, ann_path = write(tmp_path, "o", text, ann + "\n")
    corpus = read_brat(tmp_path, label_map=LABEL_MAP)
    [document] = corpus.documents
    assert document.sentences[0].tags == ["B-problem", "I-problem", "I-problem", "O", "B-test"]
    reports = {(e.path, e.line): e.problem for e in corpus.skipped}
    assert set(reports) == {(str(ann_path), line) for line in (1, 3, 4, 5, 6)}
    assert reports[(str(ann_path), 1)].startswith("T1 (problem) overlaps T2; kept T2")
    assert reports[(str(ann_path), 5)].startswith("T5 (treatment) overlaps")
    assert reports[(str(ann_path), 6)].startswith("T6 (problem) overlaps T7; kept T7")


def test_entity_crossing_a_sentence_boundary_is_clipped(tmp_path):
    text = "Severe pain. Fever now"
    write(tmp_path, "c", text, f"T1\tSign_symptom {span(text, 'pain. Fever')}\tpain. Fever\n")
    corpus = read_brat(tmp_path)
    assert tagged(corpus.documents[0]) == [
        [("Severe", "O"), ("pain", "B-Sign_symptom"), (".", "I-Sign_symptom")],
        [("Fever", "O"), ("now", "O")],
    ]
    [report] = corpus.skipped
    assert report.line == 1
    assert "crosses a sentence boundary" in report.problem


def test_entity_covering_no_token_is_reported(tmp_path):
    text = "a\u200bb"
    write(tmp_path, "z", text, "T1\tSign_symptom 1 2\t\u200b\n")
    corpus = read_brat(tmp_path)
    assert [s.tags for s in corpus.documents[0].sentences] == [["O", "O"]]
    assert [(e.line, "covers no token" in e.problem) for e in corpus.skipped] == [(1, True)]


@pytest.mark.parametrize("after", ["", " today"])  # past the end, or text that differs
def test_offsets_that_count_the_bom_are_named_in_the_error(tmp_path, after):
    # Audit H finding 20: brat's server counts a BOM, and every entity failed unexplained.
    text = f"{SECRET} fever{after}"
    counted = f"T1\tSign_symptom {span(text, 'fever')}\tfever\n"
    bom_counted = f"T1\tSign_symptom {len(SECRET) + 2} {len(SECRET) + 7}\tfever\n"
    _, ann = write(tmp_path, "b", b"\xef\xbb\xbf" + text.encode("utf-8"), bom_counted)
    with pytest.raises(DataFormatError) as caught:
        read_brat(tmp_path)
    assert caught.value.line == 1
    assert "it matches one character earlier: the .txt starts with a byte-order mark" in str(
        caught.value)
    assert SECRET not in str(caught.value)
    # Without the mark, or when a shift would not match either, no hint.
    write(tmp_path, "b", text, bom_counted)
    with pytest.raises(DataFormatError) as caught:
        read_brat(tmp_path)
    assert "byte-order mark" not in str(caught.value)
    write(tmp_path, "b", b"\xef\xbb\xbf" + text.encode("utf-8"),
          counted.replace("fever\n", "fevers\n"))
    with pytest.raises(DataFormatError) as caught:
        read_brat(tmp_path)
    assert "byte-order mark" not in str(caught.value)


SECRET_TEXT = f"Patient {SECRET} reports pain"


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (f"T2\tSign_symptom 0 7\t{SECRET}",
         "T2 (Sign_symptom): the annotation text does not match"),
        (f"T2\tSign_symptom 8 16;17 23\t{SECRET} reportz", "does not match the document text"),
        (f"T2\tSign_symptom 20 99\t{SECRET}", "offset 99 is past the end of the text (29"),
        (f"T2\tSign_symptom 8 8\t{SECRET}", "fragment 8 8 is empty or reversed"),
        (f"T2\tSign_symptom 8\t{SECRET}", "malformed T line"),
        (f"T2 Sign_symptom 8 16 {SECRET}", "malformed T line"),
        (f"T2\tSign symptom 8 16\t{SECRET}", "malformed T line"),
        (f"X2\t{SECRET}", "unknown annotation line"),
        (f" T2\tSign_symptom 8 16\t{SECRET}", "unknown annotation line"),
        (f"E1\t{SECRET}", "malformed E annotation line"),
        (f"R1\tMODIFY Arg1:T1 {SECRET}", "malformed R annotation line"),
        ("A1\tPOLARITY", "malformed A annotation line"),
        (f"#1\t{SECRET}", "malformed # annotation line"),
        ("*\tOVERLAP", "malformed * annotation line"),
        (f"T1\tSign_symptom 8 16\t{SECRET}", "duplicate annotation id T1"),
        # int() refused the first (Python's 4,300-digit limit): an internal error.
        (f"T2\tSign_symptom 8 {'9' * 5000}\t{SECRET}", "an offset of more than 100 digits"),
        (f"T2\tSign_symptom 8 1\u0666\t{SECRET}", "malformed T line"),  # an Arabic-Indic 6
    ],
)
def test_annotation_errors_name_file_and_line_without_text(tmp_path, line, fragment):
    start = SECRET_TEXT.index("pain")
    first = f"T1\tSign_symptom {start} {start + 4}\tpain"
    _, ann = write(tmp_path, "e", SECRET_TEXT, f"{first}\n{line}\n")
    with pytest.raises(DataFormatError) as caught:
        read_brat(tmp_path)
    assert (caught.value.path, caught.value.line) == (str(ann), 2)
    assert fragment in caught.value.problem
    assert SECRET not in str(caught.value)


def test_skip_invalid_skips_bad_annotations_and_documents(tmp_path):
    write(tmp_path, "a", SECRET_TEXT,
          f"T1\tSign_symptom {span(SECRET_TEXT, 'pain')}\tpain\n"
          f"T2\tSign_symptom 0 7\t{SECRET}\n"
          "T3\tSign_symptom 0 7\tPatient\n"
          "T4\tSign_symptom 99 100\tx\n")
    (tmp_path / "b.txt").write_text("no annotations", encoding="utf-8")
    (tmp_path / "c.ann").write_text("", encoding="utf-8")
    (tmp_path / "d.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "d.ann").write_text("", encoding="utf-8")
    corpus = read_brat(tmp_path, skip_invalid=True)
    assert [d.name for d in corpus.documents] == ["a"]
    assert corpus.documents[0].sentences[0].tags == [
        "B-Sign_symptom", "O", "O", "B-Sign_symptom"
    ]
    assert [(Path(e.path).name, e.line) for e in corpus.skipped] == [
        ("b.txt", None), ("c.ann", None), ("a.ann", 2), ("a.ann", 4), ("d.txt", 1)
    ]
    with pytest.raises(DataFormatError, match="no .ann file for this .txt file"):
        read_brat(tmp_path)


def test_single_txt_file_and_missing_paths(tmp_path):
    txt, _ = write(tmp_path, "case", TEXT, ANN)
    (tmp_path / "other.txt").write_text("x", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [d.name for d in read_brat(txt).documents] == ["case"]
    with pytest.raises(DataFormatError, match="no .ann file"):
        read_brat(tmp_path / "other.txt")
    with pytest.raises(DataFormatError, match="no .txt or .ann files"):
        read_brat(empty)
    with pytest.raises(DataFormatError, match="no such file"):
        read_brat(tmp_path / "absent")


def test_documents_the_reader_would_leave_out_are_named(tmp_path):
    # brat keeps collections in subfolders; this reader reads one folder.
    write(tmp_path / "top", "case", TEXT, ANN)
    write(tmp_path / "top" / "more", "other", TEXT, ANN)
    with pytest.raises(DataFormatError,
                       match="brat documents in a subfolder are not read") as caught:
        read_brat(tmp_path / "top")
    assert caught.value.path == str(tmp_path / "top" / "more")
    # brat files beside an i2b2 layout: read as i2b2, they were left out.
    mixed = tmp_path / "mixed"
    for folder in ("txt", "concept"):
        (mixed / folder).mkdir(parents=True)
    write(mixed, "case", TEXT, ANN)
    with pytest.raises(DataFormatError, match="has both the i2b2 txt/ \\+ concept/ layout and "
                                              "brat .ann files"):
        load_corpus(mixed)


def test_empty_document(tmp_path):
    write(tmp_path, "e", "", "")
    [document] = read_brat(tmp_path).documents
    assert (document.sentences, document.text) == ([], "")


def test_invalid_label_map_target(tmp_path):
    write(tmp_path, "case", TEXT, ANN)
    with pytest.raises(ConfigError):
        read_brat(tmp_path, label_map={"Sign_symptom": "chest problem"})
