"""A model with assertions gives the same assertions everywhere an entity goes.

The tiny negation model (``conftest.negation_model``) ("No X was seen ." is absent,
"She has X ..." present, "Possible X ." possible; trained once for the
module) is exported as a SavedModel and for LiteRT. Served by ``clinical-ner
serve`` (gRPC and REST), run by ``clinical-ner batch`` (Beam) and Spark, and
run by the LiteRT runtime, it must give ``predict``'s entities: the same
spans, labels and assertions, confidences within ``CONFIDENCE_TOLERANCE``.
"""
from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from clinical_ner import ClinicalNER
from clinical_ner.cli import main as cli_main
from clinical_ner.export import signatures
from clinical_ner.serving.client import ServingClient
from clinical_ner.serving.rest_client import RestClient
from clinical_ner.serving.server import ModelServer
from clinical_ner.text.document import Entity
from helpers import CONFIDENCE_TOLERANCE, run_cli_in_process, spark_session

pytestmark = pytest.mark.slow


NOTES = [
    "No wheezing was seen. She has edema on the biopsy.",
    "Possible rash.\nNo fever was seen.",
    "She has cough on the x-ray. No nausea was seen. Possible headache.",
    "",
    "Nothing of note.",
]


@pytest.fixture(scope="module")
def model(negation_model):  # noqa: F811
    model_dir, _ = negation_model
    return model_dir, ClinicalNER.load(model_dir)


@pytest.fixture(scope="module")
def expected(model):
    """``predict``'s entities of NOTES, checked to hold every kind of assertion."""
    _, ner = model
    entities = ner.annotate(NOTES)
    found = {(e.label, e.assertion) for document in entities for e in document}
    assert {("problem", "absent"), ("problem", "present"), ("problem", "possible"),
            ("test", None)} <= found, found
    return entities


@pytest.fixture(scope="module")
def export_base(model, tmp_path_factory):
    _, ner = model
    base = tmp_path_factory.mktemp("export") / "negation"
    ner.export(base, 1)
    return base


def assert_same_entities(actual, expected):
    """Spans, labels and assertions equal; confidences within the tolerance."""
    assert [[(e.start, e.end, e.text, e.label, e.assertion) for e in document]
            for document in actual] == \
           [[(e.start, e.end, e.text, e.label, e.assertion) for e in document]
            for document in expected]
    for name in ("confidence", "assertion_confidence"):
        for got, want in zip(actual, expected):
            got_values = [getattr(e, name) for e in got]
            want_values = [getattr(e, name) for e in want]
            assert [value is None for value in got_values] == \
                   [value is None for value in want_values]
            np.testing.assert_allclose([v for v in got_values if v is not None],
                                       [v for v in want_values if v is not None],
                                       atol=CONFIDENCE_TOLERANCE)


def assert_same_span_assertions(runtime, ner, expected):
    """``runtime.classify_assertions`` equals the Keras model's on NOTES' entities and "No"."""
    spans = [[(e.start, e.end) for e in document] for document in expected]
    spans[0].append((0, 2))  # "No": any span, not only an entity's
    texts, spans = zip(*[(text, row) for text, row in zip(NOTES, spans) if row])
    for got, want in zip(runtime.classify_assertions(list(texts), list(spans)),
                         ner.classify_assertions(list(texts), list(spans))):
        assert [name for name, _ in got] == [name for name, _ in want]
        np.testing.assert_allclose([c for _, c in got], [c for _, c in want],
                                   atol=CONFIDENCE_TOLERANCE)


def test_served_model_returns_assertions_over_grpc_and_rest(model, export_base, expected):
    _, ner = model
    # The spans of each note's entities, padded with -1 as the signature takes them.
    spans = [[(e.start, e.end) for e in document] for document in expected[:3]]
    starts = signatures.padded_token_rows([[s for s, _ in row] for row in spans], -1)
    ends = signatures.padded_token_rows([[e for _, e in row] for row in spans], -1)
    server = ModelServer(export_base, "negation", port=0, rest_port=0, poll_interval_s=0.2)
    server.start()
    try:
        with ServingClient(f"127.0.0.1:{server.bound_port}", "negation",
                               batch_size=2) as client:
            assert_same_entities(client.annotate(NOTES), expected)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "negation"
        request.model_spec.signature_name = signatures.CLASSIFY_ASSERTIONS
        request.inputs[signatures.TEXT].CopyFrom(tf.make_tensor_proto(NOTES[:3]))
        request.inputs[signatures.SPAN_START].CopyFrom(
            tf.make_tensor_proto(np.array(starts, np.int32)))
        request.inputs[signatures.SPAN_END].CopyFrom(
            tf.make_tensor_proto(np.array(ends, np.int32)))
        with grpc.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            over_grpc = stub.Predict(request, timeout=120).outputs
        with RestClient("127.0.0.1", server.bound_rest_port, "negation", timeout=120) as rest:
            assert_same_entities(rest.annotate(NOTES), expected)
            # The raw JSON as any REST client sees it: the outputs beside entity_label.
            answer = rest.predict({"instances": [NOTES[0]]})
            over_rest = rest.predict({
                "signature_name": signatures.CLASSIFY_ASSERTIONS,
                "inputs": {signatures.TEXT: NOTES[:3], signatures.SPAN_START: starts,
                           signatures.SPAN_END: ends}})["outputs"]
            # Spans that miss a document, or ends that miss a start, are refused (400),
            # not answered for whatever the graph can pair up.
            for texts, span_ends, message in (
                    (NOTES[:4], ends, "every input needs one row per document"),
                    (NOTES[:3], [row[:-1] for row in ends], "must have the same shape")):
                status, refusal = rest.request(
                    "POST", "/v1/models/negation:predict",
                    {"signature_name": signatures.CLASSIFY_ASSERTIONS,
                     "inputs": {signatures.TEXT: texts, signatures.SPAN_START: starts,
                                signatures.SPAN_END: span_ends}})
                assert status == 400 and message in refusal["error"]
        request.inputs[signatures.SPAN_END].CopyFrom(
            tf.make_tensor_proto(np.array([row[:-1] for row in ends], np.int32)))
        with grpc.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(request, timeout=120)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'span_end' and 'span_start' must have the same shape" in refused.value.details()
    finally:
        server.stop(0)
    local = ner.classify_assertions(NOTES[:3], spans)
    for names, confidences in [
            ([[name.decode() for name in row]
              for row in tf.make_ndarray(over_grpc[signatures.ASSERTION])],
             tf.make_ndarray(over_grpc[signatures.ASSERTION_CONFIDENCE])),
            (over_rest[signatures.ASSERTION], over_rest[signatures.ASSERTION_CONFIDENCE])]:
        for row, classified in enumerate(local):
            assert names[row][:len(classified)] == [name for name, _ in classified]
            np.testing.assert_allclose(np.asarray(confidences)[row][:len(classified)],
                                       [c for _, c in classified], atol=CONFIDENCE_TOLERANCE)
    [prediction] = answer["predictions"]
    count = prediction[signatures.ENTITY_COUNT]
    assert prediction[signatures.ENTITY_ASSERTION][:count] == \
        [e.assertion or "" for e in expected[0]]
    np.testing.assert_allclose(prediction[signatures.ENTITY_ASSERTION_CONFIDENCE][:count],
                               [e.assertion_confidence or 0.0 for e in expected[0]],
                               atol=CONFIDENCE_TOLERANCE)


def test_client_command_prints_the_assertions_predict_prints(model, export_base):
    # Both commands run in this process (run_cli_in_process): the test reads their output
    # and exit status, not the process (test_cli checks the console script itself).
    model_dir, _ = model
    server = ModelServer(export_base, "negation", port=0, poll_interval_s=0.2)
    server.start()
    try:
        served = run_cli_in_process("client", "--target", f"127.0.0.1:{server.bound_port}",
                                    "--model-name", "negation", *NOTES[:3], check=False)
    finally:
        server.stop(0)
    predicted = run_cli_in_process("predict", model_dir, *NOTES[:3], check=False)
    assert served.returncode == 0, served.stderr[-2000:]
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    remote = [json.loads(line)["entities"] for line in served.stdout.splitlines()]
    local = [json.loads(line)["entities"] for line in predicted.stdout.splitlines()]
    approximate = ("confidence", "assertion_confidence")
    assert [[{k: v for k, v in e.items() if k not in approximate} for e in doc]
            for doc in remote] == [[{k: v for k, v in e.items() if k not in approximate}
                                    for e in doc] for doc in local]
    assert any(e.get("assertion") == "absent" for doc in remote for e in doc)
    for name in approximate:
        np.testing.assert_allclose([e.get(name, 0.0) for doc in remote for e in doc],
                                   [e.get(name, 0.0) for doc in local for e in doc],
                                   atol=CONFIDENCE_TOLERANCE)


def test_beam_results_carry_predicts_assertions(export_base, expected, tmp_path):
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"id": str(index), "text": text}) + "\n"
                             for index, text in enumerate(NOTES)), encoding="utf-8")
    assert cli_main(["batch", str(export_base), "--input", str(notes), "--input-format",
                     "jsonl", "--output", str(tmp_path / "out"), "--runner",
                     "FnApiRunner"]) == 0
    records = [json.loads(line) for shard in sorted((tmp_path / "out").glob("entities-*"))
               for line in shard.read_text(encoding="utf-8").splitlines()]
    by_id = {record["id"]: [Entity(**e) for e in record["entities"]] for record in records}
    assert sorted(by_id) == [str(index) for index in range(len(NOTES))]
    assert_same_entities([by_id[str(index)] for index in range(len(NOTES))], expected)


def test_spark_struct_carries_predicts_assertions(export_base, expected):
    pytest.importorskip("pyspark", reason="the [spark] extra is not installed")
    from clinical_ner.batch.spark import annotate

    with spark_session() as spark:
        notes = spark.createDataFrame([(str(i), text) for i, text in enumerate(NOTES)],
                                      "id string, text string")
        rows = {row.id: [Entity(**entity.asDict()) for entity in row.entities]
                for row in annotate(notes, str(export_base)).collect()}
    assert sorted(rows) == [str(index) for index in range(len(NOTES))]
    assert_same_entities([rows[str(index)] for index in range(len(NOTES))], expected)


def test_litert_gives_tensorflows_assertions(model, expected, tmp_path):
    pytest.importorskip("ai_edge_litert", reason="the [litert] extra is not installed")
    from clinical_ner.artifacts import litert as layout
    from clinical_ner.annotators.litert.annotator import LiteRTAnnotator
    from clinical_ner.export.litert import export_litert

    model_dir, ner = model
    export_dir = export_litert(model_dir, tmp_path / "litert")
    manifest = json.loads((export_dir / layout.MANIFEST_FILE).read_text())
    assert manifest["version"] == layout.ASSERTIONS_FORMAT_VERSION
    assert manifest["max_abs_assertion_difference"] < 1e-4

    lite = LiteRTAnnotator.load(export_dir)
    assert lite.assertion_classes == ner.assertion_classes
    assert_same_entities(lite.annotate(NOTES), expected)
    assert_same_span_assertions(lite, ner, expected)


def test_a_loaded_saved_model_classifies_assertions_as_the_keras_model(model, export_base,
                                                                       expected):
    """The export records its classes, so ClinicalNER.load(export) classifies given spans."""
    _, ner = model
    exported = ClinicalNER.load(export_base)
    assert exported.assertion_classes == ner.assertion_classes == [
        "present", "absent", "possible"]
    assert_same_entities(exported.annotate(NOTES), expected)
    assert_same_span_assertions(exported, ner, expected)
    with pytest.raises(ValueError, match="text 0, span 0: covers no token"):
        exported.classify_assertions(["No  rash."], [[(2, 3)]])


def test_predict_writers_carry_the_assertions(model, expected, tmp_path):
    model_dir, _ = model
    note = tmp_path / "note.txt"
    note.write_text(NOTES[0], encoding="utf-8")
    assert cli_main(["predict", str(model_dir), "--input", str(note), "--output-format",
                     "conll", "--output", str(tmp_path / "out.conll")]) == 0
    assert cli_main(["predict", str(model_dir), "--input", str(note), "--output-format",
                     "i2b2", "--output", str(tmp_path / "i2b2")]) == 0

    rows = [line.split("\t") for line in
            (tmp_path / "out.conll").read_text(encoding="utf-8").splitlines() if line]
    assert [(token, assertion) for token, assertion, tag in rows if tag != "O"] == [
        (e.text, e.assertion or "_") for e in expected[0]]
    ast = (tmp_path / "i2b2" / "note.ast").read_text(encoding="utf-8").splitlines()
    assert [line.rsplit('||a="', 1)[1].rstrip('"') for line in ast] == \
        [e.assertion for e in expected[0] if e.assertion]
