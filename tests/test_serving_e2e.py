"""A trained model, exported, served and called over gRPC, equals in-process predictions."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tensorflow.core.protobuf import saved_model_pb2

from clinical_ner.export import signatures
from clinical_ner.export.saved_model import check_core_ops
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from benchmarks.tf_serving_compat import load_and_run
from clinical_ner.serving.client import ServingClient
from clinical_ner.serving.rest_client import RestClient
from clinical_ner.export.signatures import padded_token_rows
from clinical_ner.serving.server import ModelServer
from helpers import (
    CONFIDENCE_TOLERANCE,
    SAMPLE,
    assert_same_documents,
    assert_same_tags,
    run_cli_in_process,
)

pytestmark = pytest.mark.slow

NOTE = "Chest x-ray showed pneumonia; started on ceftriaxone."


@pytest.fixture(scope="module")
def trained(trained_model):
    """The session's trained model (conftest.trained_model) and the base path of its export.

    Only read here (the server polls the base path, nothing writes to it), so the
    model and its export trained for the other modules serve this one too.
    """
    model_dir, export_dir = trained_model
    assert export_dir.name == "1"
    return KerasAnnotator.load(model_dir), model_dir, export_dir.parent


@pytest.fixture(scope="module")
def server(trained):
    _, _, base = trained
    model_server = ModelServer(base, "clinical_ner", port=0, rest_port=0, poll_interval_s=0.2)
    model_server.start()
    yield model_server
    model_server.stop(0)


def dev_texts(shared_data):
    folder = shared_data / "maccrobat-i2b2" / "dev" / "txt"
    return [path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.txt"))]


def test_export_uses_only_core_ops_and_runs_without_our_package(trained):
    ner, _, base = trained
    check_core_ops(base / "1")
    # Each graph is stored once, for its signature (not again as a method of the
    # saved object): a second copy cost the server 42 MB of memory.
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((base / "1" / "saved_model.pb").read_bytes())
    traced = [function.signature.name.rsplit("_", 1)[0]
              for function in saved_model.meta_graphs[0].graph_def.library.function
              if function.signature.name.startswith("__inference_")]
    assert traced.count("__inference_annotate_text") == 1
    assert traced.count("__inference_tag_tokens") == 1
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        model = tf.saved_model.load({str(base / "1")!r})
        out = model.signatures["serving_default"](text=tf.constant([{NOTE!r}, ""]))
        tags = model.signatures["predict_tokens"](tokens=tf.constant([["Chest", "pain", ""]]))
        print(json.dumps({{
            "count": out["entity_count"].numpy().tolist(),
            "start": out["entity_start"].numpy().tolist(),
            "label": [[l.decode() for l in row] for row in out["entity_label"].numpy()],
            "tags": [[t.decode() for t in row] for row in tags["tags"].numpy()],
            "length": tags["length"].numpy().tolist(),
            "ours_imported": any(name.startswith("clinical_ner") for name in sys.modules),
        }}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300,
                            cwd=base)
    assert result.returncode == 0, result.stderr[-2000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["ours_imported"] is False
    local = ner.annotate(NOTE)
    assert served["count"] == [len(local), 0]
    assert served["start"][0][:len(local)] == [e.start for e in local]
    assert served["label"][0][:len(local)] == [e.label for e in local]
    assert served["length"] == [2]
    assert served["tags"][0][2] == ""
    assert served["tags"][0][:2] == ner.tag([["Chest", "pain"]])[0][0]


def test_export_answers_as_in_process_when_loaded_the_way_tf_serving_loads(trained):
    # TF Serving does not rebuild Python objects: it imports the MetaGraph into a
    # session, runs the restore op and the main op, then the signatures. The TF1
    # loader does the same, in a process that imports only TensorFlow.
    ner, _, base = trained
    texts = [NOTE, ""] + [path.read_text(encoding="utf-8")
                          for path in sorted((SAMPLE / "dev" / "txt").glob("*.txt"))]
    sentences = [["Chest", "x-ray", "showed", "pneumonia"], ["ceftriaxone"]]
    answer = load_and_run(Path(sys.executable), base / "1", texts, padded_token_rows(sentences))
    assert "error" not in answer, answer
    served = {**answer["text"], **answer["tokens"]}
    local = ner.annotate(texts)
    assert sum(len(document) for document in local) > 0
    assert served["entity_count"] == [len(document) for document in local]
    for row, document in enumerate(local):
        count = len(document)
        assert served["entity_start"][row][:count] == [e.start for e in document]
        assert served["entity_end"][row][:count] == [e.end for e in document]
        assert served["entity_label"][row][:count] == [e.label for e in document]
        np.testing.assert_allclose(served["entity_confidence"][row][:count],
                                   [e.confidence for e in document], rtol=0,
                                   atol=CONFIDENCE_TOLERANCE)
    assert served["length"] == [len(sentence) for sentence in sentences]
    assert_same_tags([(tags[:length], confidences[:length]) for tags, confidences, length in
                      zip(served["tags"], served["tag_confidence"], served["length"])],
                     ner.tag(sentences))


def test_grpc_answers_equal_in_process_on_the_dev_split(trained, server, shared_data):
    ner, _, _ = trained
    texts = dev_texts(shared_data)
    with ServingClient(f"127.0.0.1:{server.bound_port}", "clinical_ner",
                           batch_size=8) as client:
        served = client.annotate(texts)
        assert_same_documents(served, ner.annotate(texts))
        assert sum(map(len, served)) > 0
        tokens = [["CT", "showed", "pneumonia", "."], ["Aspirin"]]
        assert_same_tags(client.tag_tokens(tokens), ner.tag(tokens))
        metadata = client.metadata()
        assert set(metadata.signatures) >= {signatures.SERVING_DEFAULT, signatures.PREDICT_TOKENS}
        assert any(status.state == "AVAILABLE" for status in client.status())


def test_rest_answers_equal_grpc_on_the_dev_split(server, shared_data):
    texts = dev_texts(shared_data)
    with ServingClient(f"127.0.0.1:{server.bound_port}", "clinical_ner",
                           batch_size=8) as client, RestClient(
            "127.0.0.1", server.bound_rest_port, "clinical_ner", timeout=120) as rest:
        over_grpc = client.annotate(texts)
        over_rest = [entity for start in range(0, len(texts), 8)
                     for entity in rest.annotate(texts[start:start + 8])]
    # Batches differ (the gRPC client groups documents by size): float32 rounding may too.
    assert_same_documents(over_rest, over_grpc)
    assert sum(map(len, over_rest)) > 0


def test_client_command_prints_what_predict_prints(trained, server, maccrobat_dev_notes):
    # Both commands run in this process (run_cli_in_process): the test reads their output
    # and exit status, not the process (test_cli checks the console script itself).
    # Dev notes, in which the tiny model finds entities (in NOTE it found none, and the
    # test compared empty lists).
    _, model_dir, _ = trained
    notes = [path.read_text(encoding="utf-8") for path in maccrobat_dev_notes[:3]]
    predicted = run_cli_in_process("predict", model_dir, *notes, check=False)
    served = run_cli_in_process("client", "--target", f"127.0.0.1:{server.bound_port}",
                                "--model-name", "clinical_ner", *notes, check=False)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert served.returncode == 0, served.stderr[-2000:]
    local = [json.loads(line) for line in predicted.stdout.splitlines()]
    remote = [json.loads(line) for line in served.stdout.splitlines()]
    assert [doc["text"] for doc in remote] == [doc["text"] for doc in local] == notes
    assert sum(len(doc["entities"]) for doc in local) > 0
    assert_same_documents([doc["entities"] for doc in remote], [doc["entities"] for doc in local])
