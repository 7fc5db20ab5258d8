"""Assertions in every output an entity goes to (issue 24).

These tests use hand-made entities and fake signature outputs; the tests that
train a model with an assertion head and serve it are in
``test_assertion_serving.py``.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from clinical_ner.config import NERConfig
from clinical_ner.export import signatures as sig
from clinical_ner.formats.conll import read_conll
from clinical_ner.formats.html_page import render_html
from clinical_ner.formats.i2b2 import read_i2b2
from clinical_ner.formats.jsonl import InputDocument
from clinical_ner.formats.writers import write_annotations
from clinical_ner.text.document import Entity
from clinical_ner.text.tokenizer import split_sentences


def test_to_dict_has_assertion_keys_only_when_there_is_an_assertion():
    absent = Entity(0, 9, "pneumonia", "problem", 0.9, "absent", 0.97)
    plain = Entity(0, 9, "pneumonia", "problem", 0.9)

    assert absent.to_dict() == {
        "start": 0, "end": 9, "text": "pneumonia", "label": "problem",
        "confidence": 0.9, "assertion": "absent", "assertion_confidence": 0.97,
    }
    assert "assertion" not in plain.to_dict()
    assert "assertion_confidence" not in plain.to_dict()


# -- decoding signature outputs ------------------------------------------------

TEXTS = ["No pneumonia, a cough.", "CT normal."]


def _outputs(with_assertions: bool = True) -> dict[str, np.ndarray]:
    """``serving_default`` outputs as an export with assertions returns them."""
    outputs = {
        sig.ENTITY_START: np.array([[3, 16], [0, 0]], dtype=np.int64),
        sig.ENTITY_END: np.array([[12, 21], [2, 0]], dtype=np.int64),
        sig.ENTITY_LABEL: np.array([[b"problem", b"problem"], [b"test", b""]], dtype=object),
        sig.ENTITY_CONFIDENCE: np.array([[0.9, 0.8], [0.7, 0.0]], dtype=np.float32),
        sig.ENTITY_COUNT: np.array([2, 1], dtype=np.int32),
    }
    if with_assertions:
        outputs[sig.ENTITY_ASSERTION] = np.array(
            [[b"absent", b"present"], [b"", b""]], dtype=object)
        outputs[sig.ENTITY_ASSERTION_CONFIDENCE] = np.array(
            [[0.97, 0.6], [0.0, 0.0]], dtype=np.float32)
    return outputs


def test_decoding_reads_assertions_and_leaves_none_where_the_string_is_empty():
    first, second = sig.entities_from_outputs(TEXTS, _outputs())

    assert [(e.text, e.assertion) for e in first] == [("pneumonia", "absent"), ("cough", "present")]
    assert first[0].assertion_confidence == pytest.approx(0.97)
    assert [(e.text, e.assertion, e.assertion_confidence) for e in second] == [("CT", None, None)]


def test_decoding_outputs_without_assertions_gives_the_entities_without_them():
    """A 0.3.0 export (or an old server) has no assertion outputs."""
    with_them = sig.entities_from_outputs(TEXTS, _outputs())
    without = sig.entities_from_outputs(TEXTS, _outputs(with_assertions=False))

    assert [[(e.start, e.end, e.label) for e in doc] for doc in without] == \
        [[(e.start, e.end, e.label) for e in doc] for doc in with_them]
    assert all(e.assertion is None and e.assertion_confidence is None
               for doc in without for e in doc)


def test_decoding_rejects_assertion_outputs_that_break_the_contract():
    outputs = _outputs()
    del outputs[sig.ENTITY_ASSERTION_CONFIDENCE]
    with pytest.raises(sig.ModelOutputError, match="missing outputs"):
        sig.entities_from_outputs(TEXTS, outputs)
    outputs = _outputs()
    outputs[sig.ENTITY_ASSERTION] = outputs[sig.ENTITY_ASSERTION][:, :1]
    with pytest.raises(sig.ModelOutputError, match="entity_assertion has 1 columns"):
        sig.entities_from_outputs(TEXTS, outputs)


# -- writers -------------------------------------------------------------------

NOTE = "No evidence of pneumonia today.\nShe was treated for a cough and CT was clear."


class RuleAnnotator:
    """A stand-in model: ``pneumonia`` and ``cough`` are problems, ``CT`` a test; a
    problem in a sentence starting with ``No`` is absent, other problems present."""

    config = NERConfig()
    labels = {"pneumonia": "problem", "cough": "problem", "CT": "test"}

    def __init__(self, assertion_classes: list[str]) -> None:
        self.assertion_classes = assertion_classes
        self.classified: list[list[tuple[int, int]]] = []

    def tag(self, sentences):
        return [([f"B-{self.labels[token]}" if token in self.labels else "O"
                  for token in sentence], [0.9] * len(sentence)) for sentence in sentences]

    def classify_assertions(self, text, spans):
        self.classified.append(spans)
        negated = {sentence[0].end: sentence[0].text == "No" for sentence in split_sentences(text)}
        results = []
        for start, _ in spans:
            first = max(end for end in negated if end <= start)
            results.append(("absent", 0.97) if negated[first] else ("present", 0.8))
        return results

    def annotate(self, texts):
        results = []
        for text in texts:
            entities = [Entity(token.start, token.end, token.text, self.labels[token.text], 0.9)
                        for sentence in split_sentences(text) for token in sentence
                        if token.text in self.labels]
            if self.assertion_classes:
                problems = [e for e in entities if e.label == "problem"]
                found = dict(zip(problems, self.classify_assertions(
                    text, [(e.start, e.end) for e in problems])))
                entities = [replace(e, assertion=found[e][0], assertion_confidence=found[e][1])
                            if e in found else e for e in entities]
            results.append(entities)
        return results


def test_jsonl_writer_gives_each_problem_its_assertion(tmp_path):
    write_annotations(RuleAnnotator(["present", "absent"]), [InputDocument("note", NOTE)], "jsonl",
                      tmp_path / "out.jsonl")

    [line] = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    entities = json.loads(line)["entities"]
    assert [(e["text"], e.get("assertion"), e.get("assertion_confidence")) for e in entities] == [
        ("pneumonia", "absent", 0.97), ("cough", "present", 0.8), ("CT", None, None)]
    assert "assertion" not in entities[2]


def test_a_json_line_stays_one_line_whatever_line_breaks_the_note_holds(tmp_path):
    # Audit: U+2028, U+2029 and U+0085 were written raw (valid JSON), so that readers that
    # split at str.splitlines()'s breaks got half a record each ("Unterminated string").
    text = "No pneumonia\u2028today.\x85She had a cough\u2029\r\nCT\x0c\x1e clear."
    write_annotations(RuleAnnotator([]), [InputDocument("note", text)], "jsonl",
                      tmp_path / "out.jsonl")

    [line] = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert record["text"] == text
    assert [text[e["start"]:e["end"]] for e in record["entities"]] == [
        "pneumonia", "cough", "CT"]


def test_conll_writer_puts_the_assertion_column_between_token_and_tag(tmp_path):
    write_annotations(RuleAnnotator(["present", "absent"]), [InputDocument("note", NOTE)], "conll",
                      tmp_path / "out.conll")

    rows = [line.split("\t") for line in
            (tmp_path / "out.conll").read_text(encoding="utf-8").splitlines() if line]
    assert [row for row in rows if row[2] != "O"] == [
        ["pneumonia", "absent", "B-problem"], ["cough", "present", "B-problem"],
        ["CT", "_", "B-test"]]
    assert {row[1] for row in rows if row[2] == "O"} == {"_"}
    # Readers take the last column as the tag, so the file reads back with its tags.
    sentences = read_conll(tmp_path / "out.conll").documents[0].sentences
    assert [tag for sentence in sentences for tag in sentence.tags] == [row[2] for row in rows]


def test_conll_writer_has_two_columns_for_a_model_without_assertions(tmp_path):
    ner = RuleAnnotator([])
    write_annotations(ner, [InputDocument("note", NOTE)], "conll", tmp_path / "out.conll")

    rows = [line.split("\t") for line in
            (tmp_path / "out.conll").read_text(encoding="utf-8").splitlines() if line]
    assert {len(row) for row in rows} == {2}
    assert ner.classified == []


def test_i2b2_writer_writes_the_ast_file_beside_the_con_file(tmp_path):
    write_annotations(RuleAnnotator(["present", "absent"]), [InputDocument("note", NOTE)], "i2b2",
                      tmp_path / "out")
    (tmp_path / "out" / "note.txt").write_text(NOTE, encoding="utf-8")

    assert (tmp_path / "out" / "note.ast").read_text(encoding="utf-8").splitlines() == [
        'c="pneumonia" 1:3 1:3||t="problem"||a="absent"',
        'c="cough" 2:5 2:5||t="problem"||a="present"',
    ]
    # The i2b2 reader takes the files back with the same assertions.
    [document] = read_i2b2(tmp_path / "out" / "note.txt").documents
    assert [s.assertions for s in document.sentences] == [{(3, 3): "absent"}, {(5, 5): "present"}]


def test_i2b2_writer_into_a_concept_folder_writes_the_release_layout(tmp_path):
    # Audit: the .ast went to ../ast/ but the text of a document given without a file
    # into concept/, a corpus the reader refused as a whole and read without its
    # assertions as concept/ alone.
    write_annotations(RuleAnnotator(["present", "absent"]), [InputDocument("note", NOTE)], "i2b2",
                      tmp_path / "out" / "concept")

    assert sorted(str(path.relative_to(tmp_path / "out"))
                  for path in (tmp_path / "out").rglob("*.*")) == [
        "ast/note.ast", "concept/note.con", "txt/note.txt"]
    [document] = read_i2b2(tmp_path / "out").documents
    assert [s.assertions for s in document.sentences] == [{(3, 3): "absent"}, {(5, 5): "present"}]


@pytest.mark.parametrize("layout", ["side by side", "release"])
def test_i2b2_writer_refuses_to_overwrite_the_annotations_beside_its_input(tmp_path, layout):
    from clinical_ner.errors import ConfigError

    # Audit: predicting into the corpus folder of the input text replaced its gold .con
    # and .ast with the model's answers.
    folders = (["", "", ""] if layout == "side by side" else ["txt/", "concept/", "ast/"])
    gold = {f"{folder}note.{kind}": f"gold {kind}\n"
            for folder, kind in zip(folders, ["txt", "con", "ast"])}
    for name, content in gold.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(content, encoding="utf-8")
    document = InputDocument("note", NOTE, tmp_path / f"{folders[0]}note.txt")
    with pytest.raises(ConfigError, match=r"note\.con holds the annotations of the input "):
        write_annotations(RuleAnnotator(["present", "absent"]), [document], "i2b2",
                          tmp_path / folders[1].rstrip("/"))
    assert {name: (tmp_path / name).read_text(encoding="utf-8") for name in gold} == gold


def test_i2b2_writer_refuses_a_folder_where_the_input_s_name_is_another_text_or_a_copy(tmp_path):
    from clinical_ner.errors import ConfigError

    # Audit: predicting a/note.txt into a folder holding another note.txt put note.con
    # beside it, read back as that note's concepts; into a folder holding a copy of the
    # input with its gold note.con, the gold file was replaced.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "note.txt").write_text(NOTE, encoding="utf-8")
    document = InputDocument("note", NOTE, tmp_path / "a" / "note.txt")
    other, copy = tmp_path / "other", tmp_path / "copy"
    for folder, text in ((other, "Another patient, another note.\n"), (copy, NOTE)):
        folder.mkdir()
        (folder / "note.txt").write_text(text, encoding="utf-8")
    (copy / "note.con").write_text("gold con\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"^--output {re.escape(str(other))}: .*note\.txt is "
                                          r"another text than the input .*note\.txt; note\.con "
                                          "beside it would read back as its annotations"):
        write_annotations(RuleAnnotator([]), [document], "i2b2", other)
    with pytest.raises(ConfigError, match=r"note\.con holds the annotations of the input "):
        write_annotations(RuleAnnotator([]), [document], "i2b2", copy)
    assert sorted(path.name for path in other.iterdir()) == ["note.txt"]
    assert (copy / "note.con").read_text(encoding="utf-8") == "gold con\n"


def test_i2b2_writer_writes_no_ast_file_for_a_model_without_assertions(tmp_path):
    write_annotations(RuleAnnotator([]), [InputDocument("note", NOTE)], "i2b2", tmp_path / "out")

    # (note.txt: a document given without a file gets its text beside its annotations.)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["note.con",
                                                                          "note.txt"]


def test_i2b2_writer_refuses_names_that_differ_only_in_case(tmp_path):
    from clinical_ner.errors import ConfigError

    # Audit: a/Note.txt and b/note.txt were written as Note.con and note.con, one file on
    # macOS and Windows, which kept b's entities under a's name, without a word.
    documents = [InputDocument("Note", NOTE, tmp_path / "a" / "Note.txt"),
                 InputDocument("note", NOTE, tmp_path / "b" / "note.txt")]
    with pytest.raises(ConfigError, match=r"^2 documents would all be written as note\.con "):
        write_annotations(RuleAnnotator([]), documents, "i2b2", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("output_format", ["jsonl", "conll", "html"])
def test_standard_output_is_utf8_whatever_the_locale(monkeypatch, output_format):
    # Audit: under a Latin-1 locale "≥" ended predict with internal error
    # (UnicodeEncodeError), and the HTML page said charset="utf-8" in Latin-1 bytes.
    import io
    import sys

    text = "No cough ≥ 2 days; café CT 😀."
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    monkeypatch.setattr(sys, "stdout", stdout)
    write_annotations(RuleAnnotator(["present", "absent"]), [InputDocument("note", text)],
                      output_format, None)

    written = stdout.buffer.getvalue().decode("utf-8")
    if output_format == "jsonl":
        assert json.loads(written)["text"] == text
    else:
        assert "≥" in written and "café" in written and "😀" in written


def test_a_closed_standard_output_is_one_line_not_an_internal_error(monkeypatch):
    import sys

    from clinical_ner.errors import ClinicalNERError

    monkeypatch.setattr(sys, "stdout", None)  # `clinical-ner predict TEXT >&-`
    with pytest.raises(ClinicalNERError, match="^standard output is closed; nothing could be "
                                               "written$"):
        write_annotations(RuleAnnotator([]), [InputDocument("note", NOTE)], "jsonl", None)


def _marks(page: str) -> list[dict[str, str]]:
    """The attributes of each entity's <mark>, in page order."""
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', attributes))
            for attributes in re.findall(r'<mark class="entity ([^>]*)>', page)]


def test_html_marks_absent_and_possible_problems_and_adds_an_assertion_legend():
    text = "No pneumonia; possible sepsis; cough; CT."
    entities = [
        Entity(3, 12, "pneumonia", "problem", 0.9, "absent", 0.97),
        Entity(23, 29, "sepsis", "problem", 0.8, "possible", 0.61),
        Entity(31, 36, "cough", "problem", 0.85, "present", 0.9),
        Entity(38, 40, "CT", "test", 0.99),
    ]
    page = render_html([("note", text, entities)])

    marks = _marks(page)
    assert [mark.get("data-assertion") for mark in marks] == ["absent", "possible", "present", None]
    assert marks[0]["title"] == "problem, absent (0.97), confidence 0.90"
    assert marks[3]["title"] == "test, confidence 0.99"
    legend = re.search(r'<div class="legend assertion-legend">(.*?)</div>', page).group(1)
    assert re.findall(r'data-assertion="(\w+)"', legend) == ["present", "absent", "possible"]
    # The style draws an absent problem struck through and a possible one dotted.
    assert re.search(r'mark\[data-assertion="absent"\] \{[^}]*line-through', page)
    assert re.search(r'mark\[data-assertion="possible"\] \{[^}]*dotted', page)


def test_html_without_assertions_has_no_assertion_legend():
    page = render_html([("note", "CT", [Entity(0, 2, "CT", "test", 0.9)])])

    assert '<div class="legend assertion-legend">' not in page
    assert "data-assertion" not in _marks(page)[0]


# -- batch outputs -------------------------------------------------------------


class EntityModel:
    """A stand-in export: the same two entities for every note."""

    def annotate(self, texts, batch_size=None, max_batch_characters=None):
        return [[Entity(3, 12, "pneumonia", "problem", 0.9, "absent", 0.97),
                 Entity(14, 16, "CT", "test", 0.8)] for _ in texts]


def test_spark_rows_name_every_struct_field_with_null_where_there_is_no_assertion():
    pytest.importorskip("pandas")
    import pandas as pd

    from clinical_ner.batch import spark

    frame = spark._annotate_frame(EntityModel(), pd.DataFrame(
        {spark._ID: ["n1"], spark._TEXT: ["No pneumonia, CT."], spark._NOT_UTF8: [None]}),
        "id", "text", None, None)

    [entities] = frame[spark.ENTITIES_COLUMN].tolist()
    assert [list(entity) for entity in entities] == [list(spark.ENTITY_FIELDS)] * 2
    assert [(e["assertion"], e["assertion_confidence"]) for e in entities] == [
        ("absent", 0.97), (None, None)]
    struct = spark.ENTITIES_TYPE.removeprefix("array<struct<").removesuffix(">>")
    assert [field.split(":")[0] for field in struct.split(",")] == list(spark.ENTITY_FIELDS)


def test_beam_json_lines_carry_the_assertion_as_predict_writes_it():
    from clinical_ner.batch.notes import result_json_line

    entities = EntityModel().annotate(["No pneumonia, CT."])[0]
    record = json.loads(result_json_line("n1", entities))

    assert record == {"id": "n1", "entities": [entity.to_dict() for entity in entities]}
    assert record["entities"][0]["assertion"] == "absent"
    assert "assertion" not in record["entities"][1]


# -- the LiteRT runtime's pooling ----------------------------------------------


class FakeNetwork:
    """Stands in for the .tflite network of a model with assertions (present, absent).

    ``pneumonia`` and ``cough`` score as B-problem, ``fever`` as I-problem, and
    each token's assertion probabilities say absent in a sentence that starts
    with ``no``, and present otherwise, with a per-token spread so that
    pooling (a mean) is visible.
    """

    workers = 1
    words = ["", "<unk>", "no", "pneumonia", "cough", "fever", "ct"]
    tags = ["O", "B-problem", "I-problem", "B-test"]

    def __call__(self, features):
        word_ids = features["word_ids"]
        scores = {3: 1, 4: 1, 5: 2, 6: 3}
        emissions = np.zeros(word_ids.shape + (len(self.tags),), np.float32)
        for (row, column), word in np.ndenumerate(word_ids):
            emissions[row, column, scores.get(int(word), 0)] = 10.0
        negated = word_ids[:, :1] == self.words.index("no")
        absent = np.where(negated, 0.9, 0.2) - 0.1 * (word_ids == 5)
        probabilities = np.stack([1 - absent, absent], axis=-1).astype(np.float32)
        return [emissions, probabilities]


@pytest.fixture
def litert_with_assertions(tmp_path):
    from clinical_ner.annotators.litert.annotator import LiteRTAnnotator
    from clinical_ner.annotators.litert.crf import ConstrainedCRF
    from clinical_ner.model.vocab import Vocabulary

    tags = FakeNetwork.tags
    vocab = Vocabulary(FakeNetwork.words, ["", "<unk>"], tags, assertions=["present", "absent"])
    crf = ConstrainedCRF(np.zeros((len(tags),) * 2), np.zeros(len(tags)), np.zeros(len(tags)))
    return LiteRTAnnotator(tmp_path, {}, NERConfig(), vocab, crf, FakeNetwork())


def test_litert_pools_the_token_probabilities_of_each_problem(litert_with_assertions):
    text = "No pneumonia fever. Cough, CT."
    entities = litert_with_assertions.annotate(text)

    assert [(e.text, e.label, e.assertion) for e in entities] == [
        ("pneumonia fever", "problem", "absent"), ("Cough", "problem", "present"),
        ("CT", "test", None)]
    # The mean of the tokens' vectors: (0.9 + 0.8) / 2 for the two-token problem.
    assert entities[0].assertion_confidence == pytest.approx(0.85, abs=1e-6)
    assert entities[1].assertion_confidence == pytest.approx(0.8, abs=1e-6)
    assert entities[2].assertion_confidence is None


def test_litert_classifies_given_spans_by_the_tokens_they_overlap(litert_with_assertions):
    text = "No pneumonia fever. Cough, CT."
    spans = [(3, 12), (5, 15), (20, 25), (0, 2)]

    found = litert_with_assertions.classify_assertions(text, spans)

    assert [name for name, _ in found] == ["absent", "absent", "present", "absent"]
    # (5, 15) overlaps "pneumonia" and "fever": the same tokens as the entity.
    assert [confidence for _, confidence in found] == pytest.approx(
        [0.9, 0.85, 0.8, 0.9], abs=1e-6)
    with pytest.raises(ValueError, match="span 0: covers no token"):
        litert_with_assertions.classify_assertions("a   b", [(1, 4)])
    # NumPy's integers are offsets; a bool (True == 1) and a missing list are not.
    assert litert_with_assertions.classify_assertions(
        text, [(np.int64(3), np.int32(12))]) == found[:1]
    for bad in ([(True, 12)], [3], [None]):
        with pytest.raises(TypeError, match="text 0, span 0: expected \\(start, end\\), two "
                                            "integers"):
            litert_with_assertions.classify_assertions(text, bad)
    with pytest.raises(TypeError, match="spans is NoneType, expected a list"):
        litert_with_assertions.classify_assertions([text], None)


# -- the development server reads classify_assertions' integer inputs -------------

CLASSIFY_INPUTS = {
    "text": tf.TensorSpec([None], tf.string),
    "span_start": tf.TensorSpec([None, None], tf.int32),
    "span_end": tf.TensorSpec([None, None], tf.int32),
}


def test_rest_reads_integer_inputs_and_names_a_bad_value():
    from clinical_ner.serving.errors import RequestError
    from clinical_ner.serving.rest_json import columnar_inputs
    from clinical_ner.serving.validation import Limits
    from clinical_ner.serving.versions import Signature

    signature = Signature(function=None, inputs=CLASSIFY_INPUTS, outputs=())
    inputs = columnar_inputs(Limits(), "classify_assertions", signature, {
        "text": ["No rash.", "Cough."], "span_start": [[3, -1], [0, -1]],
        "span_end": [[7, -1], [5, -1]]})

    assert inputs["span_start"].dtype == np.int32
    assert inputs["span_end"].tolist() == [[7, -1], [5, -1]]
    assert inputs["text"].tolist() == [b"No rash.", b"Cough."]
    for bad, message in [("3", r"element \[0, 0\] is a string; expected an integer"),
                         (True, r"element \[0, 0\] is a boolean"),
                         (2**31, r"element \[0, 0\] does not fit DT_INT32")]:
        with pytest.raises(RequestError, match=message):
            columnar_inputs(Limits(), "classify_assertions", signature, {
                "text": ["No rash."], "span_start": [[bad]], "span_end": [[7]]})
    with pytest.raises(RequestError, match="3 values per document; the limit is 2") as error:
        columnar_inputs(Limits(max_document_chars=2), "classify_assertions", signature, {
            "text": ["No"], "span_start": [[0, 0, 0]], "span_end": [[1, 1, 1]]})
    assert error.value.code.name == "RESOURCE_EXHAUSTED"


def test_grpc_reads_integer_inputs_packed_or_listed():
    from tensorflow.core.framework import tensor_pb2, types_pb2

    from clinical_ner.serving.errors import RequestError
    from clinical_ner.serving.grpc_api import _input_tensor
    from clinical_ner.serving.validation import Limits

    class Service:
        limits = Limits()

    packed = tf.make_tensor_proto(np.array([[3, -1]], np.int32))
    listed = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, int_val=[3, -1])
    listed.tensor_shape.dim.add(size=1)
    listed.tensor_shape.dim.add(size=2)
    for proto in (packed, listed):
        array = _input_tensor(Service(), "span_start", CLASSIFY_INPUTS["span_start"], proto)
        assert array.dtype == np.int32 and array.tolist() == [[3, -1]]
    with pytest.raises(RequestError, match="must be DT_INT32 \\[-1, -1\\], got DT_INT64"):
        _input_tensor(Service(), "span_start", CLASSIFY_INPUTS["span_start"],
                      tf.make_tensor_proto(np.array([[3]], np.int64)))


def test_a_span_covering_no_token_is_refused_only_for_a_model_with_assertions():
    # A model without them answers "" for every span (as TF Serving passes on): not refused.
    from clinical_ner.serving.errors import RequestError
    from clinical_ner.serving.validation import check_answer

    inputs = {sig.TEXT: np.array([b"No  rash."], dtype=object),
              sig.SPAN_START: np.array([[2, 3]], np.int32),
              sig.SPAN_END: np.array([[3, 7]], np.int32)}
    outputs = {sig.ASSERTION: np.array([[b"", b""]], dtype=object)}
    check_answer(sig.CLASSIFY_ASSERTIONS, inputs, outputs, classifies_assertions=False)
    with pytest.raises(RequestError, match=r"element \[0, 0\]: span \[2, 3\) covers no token "
                                           "of text 0"):
        check_answer(sig.CLASSIFY_ASSERTIONS, inputs, outputs, classifies_assertions=True)
