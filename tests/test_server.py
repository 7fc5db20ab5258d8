"""The development model server, spoken to with the stock TF Serving stubs."""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from clinical_ner.export import signatures as sig
from clinical_ner.errors import ConfigError, ModelError
from clinical_ner.cli import build_parser
from clinical_ner.serving.server import ModelServer
from helpers import (
    LEAKY,
    MARKER,
    MODEL,
    RPC_TIMEOUT_S,
    ConcurrencyProbe,
    Gate,
    export_leaky,
    expected_entities,
    expected_tags,
    export_toy,
    make_certificate,
    response_entities,
    text_request,
    wait_for,
)

LIMITS = {"max_documents": 16, "max_document_chars": 1000, "max_message_bytes": 200_000}
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


@pytest.fixture(scope="module")
def model_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("models") / MODEL
    export_leaky(base)
    return base


@pytest.fixture(scope="module")
def server(model_base):
    server = ModelServer(model_base, MODEL, port=0, poll_interval_s=0.1, **LIMITS)
    server.start()
    yield server
    server.stop(grace=1)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def tokens_request(rows) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = sig.PREDICT_TOKENS
    request.inputs[sig.TOKENS].CopyFrom(tf.make_tensor_proto(rows, dtype=tf.string))
    return request


def classify_request(starts, ends, texts=(MARKER,)) -> predict_pb2.PredictRequest:
    """A ``classify_assertions`` request for ``texts`` (MARKER: 26 code points)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = sig.CLASSIFY_ASSERTIONS
    request.inputs[sig.TEXT].CopyFrom(tf.make_tensor_proto(list(texts), dtype=tf.string))
    request.inputs[sig.SPAN_START].CopyFrom(tf.make_tensor_proto(starts, dtype=tf.int32))
    request.inputs[sig.SPAN_END].CopyFrom(tf.make_tensor_proto(ends, dtype=tf.int32))
    return request


def status_request(version=None) -> get_model_status_pb2.GetModelStatusRequest:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    if version is not None:
        request.model_spec.version.value = version
    return request


def test_predict_serving_default(predict_stub):
    texts = ["😀 aspirin for fever", "nothing here", "fièvre; aspirin aspirin"]
    response = predict_stub.Predict(text_request(texts), timeout=RPC_TIMEOUT_S)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == sig.SERVING_DEFAULT
    assert set(response.outputs) == set(sig.ENTITY_OUTPUTS)
    assert response.outputs[sig.ENTITY_START].dtype == types_pb2.DT_INT64
    assert response.outputs[sig.ENTITY_COUNT].dtype == types_pb2.DT_INT32
    found = response_entities(response, texts)
    assert found == [expected_entities(text) for text in texts]
    # Code-point offsets: the emoji is one character, not four bytes.
    assert (found[0][0].start, found[0][0].text) == (2, "aspirin")


def test_predict_tokens(predict_stub):
    response = predict_stub.Predict(
        tokens_request([["aspirin", "and", "fever"], ["ok", "", ""]]), timeout=RPC_TIMEOUT_S
    )
    assert response.model_spec.signature_name == sig.PREDICT_TOKENS
    arrays = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    assert sig.tags_from_outputs(arrays) == [
        expected_tags(["aspirin", "and", "fever"]),
        expected_tags(["ok"]),
    ]


def test_output_filter(predict_stub):
    request = text_request(["aspirin"])
    request.output_filter.append(sig.ENTITY_COUNT)
    response = predict_stub.Predict(request, timeout=RPC_TIMEOUT_S)
    assert list(response.outputs) == [sig.ENTITY_COUNT]
    assert tf.make_ndarray(response.outputs[sig.ENTITY_COUNT]).tolist() == [1]


def test_metadata_lists_both_signatures(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = predict_stub.GetModelMetadata(request, timeout=RPC_TIMEOUT_S)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    defs = signature_defs.signature_def
    assert {sig.SERVING_DEFAULT, sig.PREDICT_TOKENS} <= set(defs)
    text = defs[sig.SERVING_DEFAULT]
    assert text.method_name == sig.PREDICT_METHOD_NAME
    assert text.inputs[sig.TEXT].dtype == types_pb2.DT_STRING
    assert [d.size for d in text.inputs[sig.TEXT].tensor_shape.dim] == [-1]
    assert set(text.outputs) == set(sig.ENTITY_OUTPUTS)
    assert text.outputs[sig.ENTITY_CONFIDENCE].dtype == types_pb2.DT_FLOAT
    tokens = defs[sig.PREDICT_TOKENS]
    assert [d.size for d in tokens.inputs[sig.TOKENS].tensor_shape.dim] == [-1, -1]
    assert set(tokens.outputs) == set(sig.TAG_OUTPUTS)


def test_status_available(model_stub):
    response = model_stub.GetModelStatus(status_request(), timeout=RPC_TIMEOUT_S)
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (1, AVAILABLE, 0)
    ]
    response = model_stub.GetModelStatus(status_request(version=1), timeout=RPC_TIMEOUT_S)
    assert [s.version for s in response.model_version_status] == [1]


def _rename_input(request, name):
    proto = tensor_pb2.TensorProto()
    proto.CopyFrom(request.inputs[sig.TEXT])
    del request.inputs[sig.TEXT]
    request.inputs[name].CopyFrom(proto)


def _good():
    return text_request(["aspirin"])


def _with(mutate):
    request = _good()
    mutate(request)
    return request


BAD_PREDICTS = {
    "unknown model": (
        text_request(["x"], name="other_model"), grpc.StatusCode.NOT_FOUND, "serves 'clinical_ner'"
    ),
    "path traversal name": (
        text_request(["x"], name="../../etc"), grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name"
    ),
    "empty model name": (
        text_request(["x"], name=""), grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name"
    ),
    "missing model spec": (
        _with(lambda r: r.ClearField("model_spec")), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec"
    ),
    "unknown version": (
        text_request(["x"], version=99), grpc.StatusCode.NOT_FOUND, "loaded versions: [1]"
    ),
    "version label": (
        _with(lambda r: setattr(r.model_spec, "version_label", "stable")),
        grpc.StatusCode.UNIMPLEMENTED,
        "version labels",
    ),
    "unknown signature": (
        text_request(["x"], signature="classify"),
        grpc.StatusCode.NOT_FOUND,
        "['classify_assertions', 'fails_quoting_input', 'predict_tokens', 'serving_default']",
    ),
    "wrong input name": (
        _with(lambda r: _rename_input(r, "texts")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "missing ['text'], unexpected ['texts']",
    ),
    "extra input": (
        _with(lambda r: r.inputs["extra"].CopyFrom(r.inputs[sig.TEXT])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unexpected ['extra']",
    ),
    "missing input": (
        _with(lambda r: r.inputs.clear()), grpc.StatusCode.INVALID_ARGUMENT, "missing ['text']"
    ),
    "wrong dtype": (
        _with(lambda r: r.inputs[sig.TEXT].CopyFrom(tf.make_tensor_proto([1, 2]))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must be DT_STRING [-1], got DT_INT32",
    ),
    # An open enum: gRPC delivers any number, whose name lookup raised (INTERNAL).
    "a dtype that names no type": (
        _with(lambda r: setattr(r.inputs[sig.TEXT], "dtype", 12345)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'text' must be DT_STRING [-1], got dtype 12345",
    ),
    "wrong rank": (
        _with(lambda r: r.inputs[sig.TEXT].CopyFrom(
            tf.make_tensor_proto([[b"a"]], dtype=tf.string))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must be DT_STRING [-1], got shape [1, 1]",
    ),
    "values do not fill the shape": (
        _with(lambda r: r.inputs[sig.TEXT].tensor_shape.dim[0].__setattr__("size", 3)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "3 elements) but 1 string values",
    ),
    "empty batch": (text_request([]), grpc.StatusCode.INVALID_ARGUMENT, "empty batch"),
    "invalid UTF-8": (
        _with(lambda r: r.inputs[sig.TEXT].string_val.__setitem__(0, MARKER.encode() + b"\xff")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "element [0] is not valid UTF-8 (byte offset 26)",
    ),
    "too many documents": (
        text_request([MARKER] * 17), grpc.StatusCode.RESOURCE_EXHAUSTED, "limit is 16"
    ),
    "document too long": (
        text_request(["ok", MARKER * 40]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "document 1 has 1040 characters; the limit is 1000",
    ),
    "token row too long": (
        tokens_request([[MARKER] * 39]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "document 0 has 1052 characters",
    ),
    # "" is padding: the graph skipped it and gave two tags for three tokens.
    "an empty token before a token": (
        tokens_request([["chest", "pain", ""], ["chest", "", MARKER]]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'tokens' element [1, 1] is \"\" before a token of its row",
    ),
    # The graph answered a span past the text's end with an assertion.
    "a span past its text": (
        classify_request([[0, 15]], [[3, 99999]]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs 'span_start' and 'span_end' element [0, 1]: span [15, 99999) is neither -1, "
        "-1 (padding) nor 0 <= start < end <= 26",
    ),
    # The graph answered "" where the in-process API raises "covers no token".
    "a span that covers no token": (
        classify_request([[0, 26]], [[26, 28]], texts=[MARKER + "  x"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs 'span_start' and 'span_end' element [0, 1]: span [26, 28) covers no token "
        "of text 0",
    ),
    "message too large": (
        text_request([MARKER * 8000]), grpc.StatusCode.RESOURCE_EXHAUSTED, "200000"
    ),
    "unknown output filter": (
        _with(lambda r: r.output_filter.append("logits")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown outputs ['logits']",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PREDICTS))
def test_bad_predict_gets_its_code_and_the_server_carries_on(predict_stub, case):
    request, code, message = BAD_PREDICTS[case]
    with pytest.raises(grpc.RpcError) as raised:
        predict_stub.Predict(request, timeout=RPC_TIMEOUT_S)
    assert raised.value.code() is code, raised.value.details()
    assert message in raised.value.details()
    assert MARKER not in raised.value.details()
    assert response_entities(predict_stub.Predict(_good(), timeout=RPC_TIMEOUT_S), ["aspirin"]) == [
        expected_entities("aspirin")
    ]


def test_trailing_empty_tokens_and_minus_one_spans_are_padding(predict_stub):
    response = predict_stub.Predict(tokens_request([["aspirin", "fever"], ["ok", ""]]),
                                    timeout=RPC_TIMEOUT_S)
    assert tf.make_ndarray(response.outputs[sig.LENGTH]).tolist() == [2, 1]
    response = predict_stub.Predict(classify_request([[0, -1]], [[26, -1]]),
                                    timeout=RPC_TIMEOUT_S)
    assert tf.make_ndarray(response.outputs[sig.ASSERTION]).tolist() == [[b"present", b""]]


# A PredictRequest of model_spec (field 1) of name (field 1): b"\xff", which is not UTF-8.
_NAME_NOT_UTF8 = b"\x0a\x03\x0a\x01\xff"


@pytest.mark.parametrize("method, data", [
    ("/tensorflow.serving.PredictionService/Predict", b"\xff\xff\xff"),
    ("/tensorflow.serving.PredictionService/Predict", _NAME_NOT_UTF8),
    ("/tensorflow.serving.PredictionService/GetModelMetadata", b"\xff\xff\xff"),
    ("/tensorflow.serving.ModelService/GetModelStatus", b"\xff\xff\xff"),
])
def test_bytes_that_are_no_request_are_invalid_argument_without_a_traceback(
        channel, predict_stub, caplog, method, data):
    caplog.set_level(logging.DEBUG)
    # Sent as they are: a stub would serialize a message.
    call = channel.unary_unary(method)
    with pytest.raises(grpc.RpcError) as raised:
        call(data, timeout=RPC_TIMEOUT_S)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    request_type = "GetModelStatusRequest" if "Status" in method else (
        "GetModelMetadataRequest" if "Metadata" in method else "PredictRequest")
    assert raised.value.details() == (f"the request is not a valid {request_type} (it could "
                                      "not be parsed as that protobuf message)")
    # gRPC's own deserializing logged "Exception deserializing message!" with a traceback.
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []
    assert "INVALID_ARGUMENT" in caplog.text
    assert response_entities(predict_stub.Predict(_good(), timeout=RPC_TIMEOUT_S),
                             ["aspirin"]) == [expected_entities("aspirin")]


def test_unimplemented_methods(predict_stub, model_stub):
    calls = [
        (predict_stub.Classify, classification_pb2.ClassificationRequest()),
        (predict_stub.Regress, regression_pb2.RegressionRequest()),
        (predict_stub.MultiInference, inference_pb2.MultiInferenceRequest()),
        (model_stub.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest()),
    ]
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as raised:
            method(request, timeout=RPC_TIMEOUT_S)
        assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_bad_metadata_and_status_requests(predict_stub, model_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    with pytest.raises(grpc.RpcError) as raised:
        predict_stub.GetModelMetadata(request, timeout=RPC_TIMEOUT_S)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    request.metadata_field.append("graph")
    with pytest.raises(grpc.RpcError) as raised:
        predict_stub.GetModelMetadata(request, timeout=RPC_TIMEOUT_S)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "'signature_def'" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        model_stub.GetModelStatus(status_request(version=5), timeout=RPC_TIMEOUT_S)
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def test_model_errors_are_reported_without_their_message(predict_stub, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(grpc.RpcError) as raised:
        predict_stub.Predict(text_request([MARKER], signature=LEAKY), timeout=RPC_TIMEOUT_S)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "InvalidArgumentError" in raised.value.details()
    assert MARKER not in raised.value.details()
    assert "InvalidArgumentError (message withheld)" in caplog.text
    assert MARKER not in caplog.text
    captured = capfd.readouterr()
    assert MARKER not in captured.out + captured.err


def test_no_input_text_in_logs(predict_stub, model_stub, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    text = f"{MARKER} took aspirin"
    assert response_entities(predict_stub.Predict(text_request([text]), timeout=RPC_TIMEOUT_S), [text]) == [
        expected_entities(text)
    ]
    predict_stub.Predict(tokens_request([[MARKER, "aspirin"]]), timeout=RPC_TIMEOUT_S)
    for case in ("invalid UTF-8", "too many documents", "document too long", "message too large"):
        with pytest.raises(grpc.RpcError):
            predict_stub.Predict(BAD_PREDICTS[case][0], timeout=RPC_TIMEOUT_S)
    # Note text sent where a signature's name belongs: NOT_FOUND, and not in the log.
    with pytest.raises(grpc.RpcError) as raised:
        predict_stub.Predict(text_request(["aspirin"], signature=MARKER), timeout=RPC_TIMEOUT_S)
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert "Predict NOT_FOUND" in caplog.text and "signature=(unknown)" in caplog.text
    model_stub.GetModelStatus(status_request(), timeout=RPC_TIMEOUT_S)
    assert "Predict OK" in caplog.text  # the per-request DEBUG lines were captured
    assert MARKER not in caplog.text
    captured = capfd.readouterr()
    assert MARKER not in captured.out + captured.err


def test_concurrent_clients_get_their_own_answers(server):
    errors, done = [], []

    def client(number):
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                for request_number in range(10):
                    texts = [
                        f"client {number} request {request_number} " + "aspirin " * number,
                        "fever " * request_number,
                    ]
                    response = stub.Predict(text_request(texts), timeout=30)
                    assert response_entities(response, texts) == [expected_entities(t) for t in texts]
            done.append(number)
        except Exception as error:  # reported below, with the client's number
            errors.append((number, repr(error)))

    threads = [threading.Thread(target=client, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(done) == list(range(8))


@pytest.mark.parametrize("max_calls", [1, 2])
def test_at_most_max_concurrent_calls_run_the_model_at_once(model_base, max_calls):
    server = ModelServer(model_base, MODEL, port=0, max_workers=6,
                         max_concurrent_calls=max_calls)
    server.start()
    signatures = server._versions.get(1).signatures
    model_function = signatures[sig.SERVING_DEFAULT].function
    texts = [[f"aspirin {n}"] for n in range(6)]
    # One document a request: the batcher's queue counts requests, the probe rows.
    probe = ConcurrencyProbe(max_calls, len(texts), server._service.batcher.queued)

    def held_model(**inputs):
        rows = int(next(iter(inputs.values())).shape[0])
        return probe.call(rows, lambda: model_function(**inputs))

    signatures[sig.SERVING_DEFAULT] = dataclasses.replace(signatures[sig.SERVING_DEFAULT],
                                                          function=held_model)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            calls = [stub.Predict.future(text_request(t), timeout=RPC_TIMEOUT_S) for t in texts]
            answers = [response_entities(call.result(), t) for call, t in zip(calls, texts)]
    finally:
        server.stop(grace=1)
    assert answers == [[expected_entities(t[0])] for t in texts]
    assert probe.most == max_calls


GATE, LATER = b"gate", b"later"


def recording_server(model_base, max_batch_documents: int, fail_on: bytes | None = None):
    """A server of one model slot whose calls are recorded and may fail.

    ``calls`` lists each model call's signature and number of rows. A call
    with the document ``GATE`` holds the slot until ``gate`` is set; one
    with the token ``LATER``, until ``gate.later`` is set.
    """
    server = ModelServer(model_base, MODEL, port=0, max_workers=12, max_concurrent_calls=1,
                         max_batch_documents=max_batch_documents)
    server.start()
    signatures = server._versions.get(1).signatures
    calls, gate = [], threading.Event()
    gate.later = threading.Event()

    def recorded(name, function):
        def call(**inputs):
            rows = next(iter(inputs.values()))
            calls.append((name, int(rows.shape[0])))  # one call at a time: one slot
            values = rows.numpy().flatten().tolist()
            if GATE in values:
                gate.wait(timeout=RPC_TIMEOUT_S)
            if LATER in values:
                gate.later.wait(timeout=RPC_TIMEOUT_S)
            if fail_on is not None and fail_on in values:
                raise tf.errors.InvalidArgumentError(None, None, "the model failed")
            return function(**inputs)
        return call

    for name in (sig.SERVING_DEFAULT, sig.PREDICT_TOKENS):
        signatures[name] = dataclasses.replace(
            signatures[name], function=recorded(name, signatures[name].function))
    return server, calls, gate


def send_while_the_model_is_busy(server, calls, gate, requests, while_later_held=lambda f: None):
    """Send ``requests`` while a gate request holds the model, one at a time so
    that they queue in this order; then open the gate, call
    ``while_later_held(futures)`` and open ``gate.later``. Returns each
    request's response or gRPC error code, and the model calls after the gate's."""
    batcher = server._service.batcher

    def queued():
        return batcher.queued()

    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            gated = stub.Predict.future(text_request([GATE.decode()]), timeout=RPC_TIMEOUT_S)
            wait_for(lambda: len(calls) == 1, what="the gate request to hold the model")
            futures = []
            for request in requests:
                futures.append(stub.Predict.future(request, timeout=RPC_TIMEOUT_S))
                wait_for(lambda: queued() == len(futures), what="the request to queue")
            gate.set()
            gated.result()
            while_later_held(futures)
            gate.later.set()
            answers = []
            for future in futures:
                try:
                    answers.append(future.result())
                except grpc.RpcError as error:
                    answers.append(error.code())
            return answers, calls[1:]
    finally:
        server.stop(grace=1)


@pytest.mark.parametrize("max_batch_documents", [32, 1])
def test_requests_that_wait_together_run_as_one_model_call(model_base, max_batch_documents):
    texts = [[f"aspirin {n}", "fever " * n] for n in range(6)]
    rows_of_width_3 = [["aspirin", "and", "fever"], ["ok", "", ""]]
    rows_of_width_2 = [["fever", "aspirin"]]
    server, calls, gate = recording_server(model_base, max_batch_documents)
    answers, calls = send_while_the_model_is_busy(server, calls, gate, [
        text_request(t) for t in texts] + [
        tokens_request(rows_of_width_3), tokens_request(rows_of_width_2),
        tokens_request(rows_of_width_3)])
    for text, answer in zip(texts, answers):
        assert response_entities(answer, text) == [expected_entities(t) for t in text]
    tagged = [sig.tags_from_outputs({name: tf.make_ndarray(proto)
                                     for name, proto in answer.outputs.items()})
              for answer in answers[6:]]
    assert tagged == [[expected_tags(["aspirin", "and", "fever"]), expected_tags(["ok"])],
                      [expected_tags(["fever", "aspirin"])],
                      [expected_tags(["aspirin", "and", "fever"]), expected_tags(["ok"])]]
    text_calls = [rows for name, rows in calls if name == sig.SERVING_DEFAULT]
    token_calls = sorted(rows for name, rows in calls if name == sig.PREDICT_TOKENS)
    if max_batch_documents > 1:
        # Rows of different widths are not merged.
        assert text_calls == [12] and token_calls == [1, 4]
    else:
        assert text_calls == [2] * 6 and token_calls == [1, 2, 2]


def test_an_unknown_output_filter_is_refused_before_the_model_runs(model_base):
    # It was refused only after a full model call, which it wasted.
    server, calls, _ = recording_server(model_base, max_batch_documents=32)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(_with(lambda r: r.output_filter.extend([sig.ENTITY_COUNT, "logits"])),
                             timeout=RPC_TIMEOUT_S)
    finally:
        server.stop(grace=1)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(
        f"output_filter names unknown outputs ['logits']; signature '{sig.SERVING_DEFAULT}' has "
        f"outputs ['{sig.ENTITY_CONFIDENCE}', '{sig.ENTITY_COUNT}'")
    assert calls == []


def test_merged_calls_stop_at_max_batch_documents(model_base):
    server, calls, gate = recording_server(model_base, max_batch_documents=5)
    sizes = [2, 2, 2, 6, 1, 2]
    texts = [[f"aspirin {n}"] * size for n, size in enumerate(sizes)]
    answers, calls = send_while_the_model_is_busy(
        server, calls, gate, [text_request(t) for t in texts])
    assert [response_entities(a, t) for a, t in zip(answers, texts)] == [
        [expected_entities(x) for x in t] for t in texts]
    # First come first served; a request above the limit runs alone.
    assert [rows for _, rows in calls] == [4, 2, 6, 3]


def test_a_request_that_fails_in_a_merged_call_fails_alone(model_base):
    texts = [["aspirin"], ["fever"], ["boom"], ["aspirin fever"]]
    server, calls, gate = recording_server(model_base, max_batch_documents=32, fail_on=b"boom")
    answers, calls = send_while_the_model_is_busy(
        server, calls, gate, [text_request(t) for t in texts])
    assert answers[2] is grpc.StatusCode.INVALID_ARGUMENT
    for index in (0, 1, 3):
        assert response_entities(answers[index], texts[index]) == [expected_entities(texts[index][0])]
    assert [rows for _, rows in calls] == [4, 1, 1, 1, 1]


def test_a_merged_request_is_answered_without_waiting_for_later_calls(model_base):
    # Three text requests merge into one call; the tokens request that queued
    # with them runs next and is held. Each text request's answer must leave
    # when its own call ends, not after a further call run by its thread.
    server, calls, gate = recording_server(model_base, max_batch_documents=32)
    texts = [["aspirin"], ["fever"], ["aspirin fever"]]

    def texts_answered_while_later_is_held(futures):
        wait_for(lambda: all(future.done() for future in futures[:3]),
                 what="the merged requests' answers")
        assert not futures[3].done()

    answers, calls = send_while_the_model_is_busy(
        server, calls, gate,
        [text_request(t) for t in texts] + [tokens_request([[LATER.decode(), "x"]])],
        while_later_held=texts_answered_while_later_is_held)
    for text, answer in zip(texts, answers):
        assert response_entities(answer, text) == [expected_entities(text[0])]
    assert sorted(calls) == sorted([(sig.SERVING_DEFAULT, 3), (sig.PREDICT_TOKENS, 1)])


def test_versions_appear_and_disappear_without_restart(tmp_path, caplog):
    base = tmp_path / MODEL
    export_toy(base, version=1)
    with ModelServer(base, MODEL, port=0, poll_interval_s=0.1) as server, grpc.insecure_channel(
        f"127.0.0.1:{server.bound_port}"
    ) as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus

        def states():
            response = status(status_request(), timeout=RPC_TIMEOUT_S)
            return {s.version: s.state for s in response.model_version_status}

        export_toy(base, version=2, confidence_scale=0.5)
        wait_for(lambda: states() == {1: AVAILABLE, 2: AVAILABLE}, what="version 2")
        latest = predict(text_request(["aspirin"]), timeout=RPC_TIMEOUT_S)
        assert latest.model_spec.version.value == 2
        assert response_entities(latest, ["aspirin"]) == [expected_entities("aspirin", scale=0.5)]
        pinned = predict(text_request(["aspirin"], version=1), timeout=RPC_TIMEOUT_S)
        assert pinned.model_spec.version.value == 1
        assert response_entities(pinned, ["aspirin"]) == [expected_entities("aspirin")]

        # A broken version is reported and does not disturb the others.
        (base / "3").mkdir()
        (base / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
        wait_for(lambda: states().get(3) == END, what="version 3 to fail")
        broken = status(status_request(version=3), timeout=RPC_TIMEOUT_S).model_version_status[0]
        assert "loading" in broken.status.error_message and broken.status.error_code != 0
        answer = predict(text_request(["aspirin"]), timeout=RPC_TIMEOUT_S)
        assert answer.model_spec.version.value == 2
        shutil.rmtree(base / "3")

        shutil.rmtree(base / "1")
        wait_for(lambda: states().get(1) == END, what="version 1 to unload")
        assert server.versions == [2]
        with pytest.raises(grpc.RpcError) as raised:
            predict(text_request(["aspirin"], version=1), timeout=RPC_TIMEOUT_S)
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND
        assert "loaded versions: [2]" in raised.value.details()
        answer = predict(text_request(["aspirin"]), timeout=RPC_TIMEOUT_S)
        assert answer.model_spec.version.value == 2

        # Even the whole base path going away only unloads.
        shutil.rmtree(base)
        wait_for(lambda: server.versions == [], what="everything to unload")
        with pytest.raises(grpc.RpcError) as raised:
            predict(text_request(["aspirin"]), timeout=RPC_TIMEOUT_S)
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND
        export_toy(base, version=4)
        wait_for(lambda: server.versions == [4], what="version 4")
        answer = predict(text_request(["aspirin"]), timeout=RPC_TIMEOUT_S)
        assert answer.model_spec.version.value == 4


class ArrivalRecorder(grpc.ServerInterceptor):
    """Records each RPC's method when it reaches the server.

    gRPC runs interceptors in its polling thread as a call arrives, before
    a worker thread takes it: a test sees a request arrive even while every
    worker is busy.
    """

    def __init__(self) -> None:
        self.methods: list[str] = []

    def intercept_service(self, continuation, handler_call_details):
        self.methods.append(handler_call_details.method)
        return continuation(handler_call_details)


def test_stop_finishes_running_requests_and_refuses_queued_ones(tmp_path, monkeypatch):
    base = tmp_path / MODEL
    gate = Gate(tmp_path / "gate")
    export_toy(base, version=1, gate_dir=gate.directory)
    arrivals, make_server = ArrivalRecorder(), grpc.server
    monkeypatch.setattr(grpc, "server", lambda *args, **options: make_server(
        *args, interceptors=[arrivals], **options))
    server = ModelServer(base, MODEL, port=0, max_workers=1)
    server.start()
    stopping = threading.Thread(target=server.stop, kwargs={"grace": 30})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            running = stub.Predict.future(text_request(["aspirin"]), timeout=RPC_TIMEOUT_S)
            wait_for(gate.started, what="the first request to reach the model")
            # The only worker is busy, so this one waits in gRPC's queue.
            queued = stub.Predict.future(text_request(["fever"]), timeout=RPC_TIMEOUT_S)
            wait_for(lambda: len(arrivals.methods) == 2, what="the second request to arrive")
            stopping.start()
            wait_for(server._service.draining.is_set, what="the server to start stopping")
            assert not running.done()
            gate.open()
            assert response_entities(running.result(), ["aspirin"]) == [
                expected_entities("aspirin")]
            with pytest.raises(grpc.RpcError) as raised:
                queued.result()
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in raised.value.details()
    finally:
        gate.open()  # a failed test must not leave the model's loop spinning
        if stopping.ident is None:
            stopping.start()
        stopping.join()
    assert server.wait(timeout=1)


def test_invalid_configuration(tmp_path, model_base):
    for name in ["../x", "a/b", "", ".hidden", "x" * 200]:
        with pytest.raises(ConfigError, match="invalid model name"):
            ModelServer(model_base, name, port=0)
    with pytest.raises(ModelError, match="not a directory"):
        ModelServer(tmp_path / "missing", MODEL, port=0)
    with pytest.raises(ConfigError, match="max_documents"):
        ModelServer(model_base, MODEL, port=0, max_documents=0)
    with pytest.raises(ConfigError, match="max_concurrent_calls"):
        ModelServer(model_base, MODEL, port=0, max_concurrent_calls=0)
    with pytest.raises(ConfigError, match="max_batch_documents"):
        ModelServer(model_base, MODEL, port=0, max_batch_documents=0)
    with pytest.raises(ConfigError, match="both"):
        ModelServer(model_base, MODEL, port=0, ssl_cert=tmp_path / "cert.pem")
    # Each started before: an infinite poll interval ended the version poller with a
    # traceback, 3 GB overflowed gRPC's limit at start (exit 70), True was port 1.
    for options, message in (({"poll_interval_s": float("inf")}, "poll_interval_s must be a "
                                                                   "number of seconds"),
                             ({"max_message_bytes": 3_000_000_000}, "max_message_bytes must "
                                                                    "be at most 2147483647"),
                             ({"port": True}, "port must be an integer >= 0"),
                             ({"rest_port": 1.5}, "rest_port must be an integer >= 0")):
        with pytest.raises(ConfigError, match=message):
            ModelServer(model_base, MODEL, **{"port": 0, **options})


def test_a_savedmodel_given_as_the_base_path_is_refused(model_base, tmp_path):
    # `clinical-ner export` prints the version folder, models/x/1; served as a base path, it
    # had no versions, and every request got NOT_FOUND for as long as the server ran.
    with pytest.raises(ModelError, match=re.escape(
            f"{model_base / '1'} is a SavedModel (one version), not a base path of numbered "
            f"versions: serve {model_base}, which holds it as version 1")):
        ModelServer(model_base / "1", MODEL, port=0)
    shutil.copytree(model_base / "1", tmp_path / "export")
    with pytest.raises(ModelError, match="put it in a folder named 1 under a base path"):
        ModelServer(tmp_path / "export", MODEL, port=0)


def test_busy_port_is_a_clear_error(server, model_base):
    with pytest.raises(ConfigError, match="could not listen"):
        ModelServer(model_base, MODEL, port=server.bound_port).start()


def test_a_port_refused_by_the_system_is_named_with_its_reason(model_base, monkeypatch):
    # Both were "could not listen ... (in use?)": a non-root user's --port 80 too.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^could not listen on 127\.0\.0\.1:{port}: "
                                              r"Address already in use$"):
            ModelServer(model_base, MODEL, port=port).start()

        class Unprivileged(socket.socket):
            """A socket of a user who may not bind ``port`` (as a port below 1024)."""

            def bind(self, address):
                if address[1] == port:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
                super().bind(address)

        monkeypatch.setattr(socket, "socket", Unprivileged)
        denied = r"Permission denied \(a port below 1024 needs root or CAP_NET_BIND_SERVICE\)$"
        with pytest.raises(ConfigError, match=rf"^could not listen on 127\.0\.0\.1:{port}: "
                                              rf"{denied}"):
            ModelServer(model_base, MODEL, port=port).start()
        with pytest.raises(ConfigError, match=rf"^could not listen on 127\.0\.0\.1:{port} for "
                                              rf"REST: {denied}"):
            ModelServer(model_base, MODEL, port=0, rest_port=port).start()


def test_one_port_for_grpc_and_rest_is_refused_as_such(model_base):
    # Else REST failed as "could not listen ... (in use?)", taken by this server's gRPC.
    with pytest.raises(ConfigError, match="port and rest_port are both 8502; REST needs a port "
                                          "of its own"):
        ModelServer(model_base, MODEL, port=8502, rest_port=8502)


def test_tls_round_trip(tmp_path, model_base):
    cert, key = make_certificate(tmp_path)
    with ModelServer(model_base, MODEL, port=0, ssl_cert=cert, ssl_key=key) as server:
        address = f"127.0.0.1:{server.bound_port}"
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(address, credentials) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(text_request(["fever"]), timeout=RPC_TIMEOUT_S)
            assert response_entities(response, ["fever"]) == [expected_entities("fever")]
        with grpc.insecure_channel(address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(text_request(["fever"]), timeout=RPC_TIMEOUT_S)
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


def test_tls_files_that_cannot_serve_are_named_before_listening(tmp_path, model_base, capsys):
    from clinical_ner.cli import main

    cert, key = make_certificate(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = make_certificate(tmp_path / "other")  # not the certificate of key
    missing, not_pem, garbled = (tmp_path / "missing.pem", tmp_path / "key.der",
                                 tmp_path / "garbled.pem")
    not_pem.write_bytes(b"\x30\x82\x01\x0a")
    garbled.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                       "-----END CERTIFICATE-----\n")
    for files, message in [
        # Exit 70 with "internal error (FileNotFoundError)".
        ((missing, key), f"--ssl-cert {missing}: cannot read a certificate chain (No such "
                         "file or directory)"),
        ((cert, not_pem), f"--ssl-key {not_pem}: not PEM (no '-----BEGIN' line); give a private "
                          "key in PEM format"),
        # Blamed on the port: "could not listen on 127.0.0.1:0 (in use?)".
        ((garbled, key), f"--ssl-cert {garbled} and --ssl-key {key}: the certificate or key "
                         "could not be used"),
        ((other_cert, key), f"--ssl-cert {other_cert} and --ssl-key {key}: the certificate or "
                            "key could not be used"),
    ]:
        ssl_cert, ssl_key = files
        assert main(["serve", str(model_base), "--port", "0", "--ssl-cert", str(ssl_cert),
                     "--ssl-key", str(ssl_key)]) == 2
        assert capsys.readouterr().err.startswith(f"clinical-ner serve: error: {message}")


def test_serve_help_points_to_production_serving(capsys):
    with pytest.raises(SystemExit):
        build_parser(["serve"]).parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "tensorflow_model_server" in text and "tensorflow/serving Docker image" in text
    assert "for development and tests" in text
    args = build_parser(["serve"]).parse_args(
        ["serve", "/models/x", "--port", "0", "--max-documents", "4"])
    assert args.run is not None and args.port == 0 and args.max_documents == 4
    assert args.rest_port is None


@pytest.mark.parametrize("options, message", [
    (["--port", "99999"], "--port must be at most 65535, got 99999"),
    (["--max-documents", "0"], "--max-documents must be a positive integer, got 0"),
    (["--poll-interval", "0"], "--poll-interval must be a number of seconds > 0"),
    (["--model-name", "../x"], "invalid model name '../x'"),
    (["--port", "8502", "--rest-port", "8502"], "--port and --rest-port are both 8502"),
    (["--ssl-cert", "missing.pem"], "TLS needs both --ssl-cert and --ssl-key"),
    (["--ssl-cert", "missing.pem", "--ssl-key", "missing.key"],
     "--ssl-cert missing.pem: cannot read a certificate chain"),
    # These said "could not listen on bogus.invalid:0 (in use?)" once the model was loaded.
    (["--host", "bogus.invalid"], "--host bogus.invalid: cannot be resolved ("),
    (["--host", "192.0.2.1"], "--host 192.0.2.1: not an address of this machine ("),
    (["--host", ""], "--host is empty; give the address to listen on"),
])
def test_serve_options_are_checked_before_a_model_is_exported(model_base, capsys, monkeypatch,
                                                               options, message):
    # A model directory (`serve clinical`) was exported first, 20 s, and then refused.
    from clinical_ner.cli import main
    from clinical_ner.serving import serve_until_stopped

    def export_first(path):
        raise AssertionError("the model was exported before the options were checked")

    monkeypatch.setattr(serve_until_stopped, "served_base_path", export_first)
    assert main(["serve", str(model_base), *options]) == 2
    assert capsys.readouterr().err.startswith(f"clinical-ner serve: error: {message}")


@pytest.mark.parametrize("grace", ["nan", "-5"])
def test_a_grace_gRPC_would_read_as_none_is_refused_before_serving(model_base, capsys, grace):
    from clinical_ner.cli import main

    package_level = logging.getLogger("clinical_ner").level
    assert main(["serve", str(model_base), "--port", "0", "--grace", grace]) == 2
    assert capsys.readouterr().err == (
        "clinical-ner serve: error: --grace must be a number of seconds >= 0 and at most "
        f"86400, got {float(grace)!r}\n")
    # --log-level held only while serving: an in-process caller's loggers are as they were.
    assert logging.getLogger("clinical_ner").level == package_level


def wait_for_line(lines: list[str], pattern: str, timeout: float = 60.0) -> re.Match:
    """The first line matching ``pattern`` in ``lines``, which another thread fills."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            match = re.search(pattern, line)
            if match:
                return match
        time.sleep(0.05)
    raise AssertionError(f"no log line matched {pattern!r} within {timeout} s")


def start_cli_server(base: Path, *extra: str) -> tuple[subprocess.Popen, int, list[str]]:
    """Run `clinical-ner serve` on a free port; return (process, port, its log lines so far).

    TF_CPP_MIN_LOG_LEVEL is left unset, as a user would: TensorFlow's own C++
    log repeats op error messages, which can quote the input, at WARNING level.
    """
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "clinical_ner.cli", "serve", str(base), "--model-name", MODEL,
         "--port", "0", "--log-level", "DEBUG", *extra],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
    try:
        port = int(wait_for_line(lines, r"Serving model .* on 127\.0\.0\.1:(\d+)").group(1))
    except AssertionError:
        process.kill()
        raise
    return process, port, lines


def refuses_requests(status) -> bool:
    """Whether a GetModelStatus call gets UNAVAILABLE (the server is stopping)."""
    try:
        status(status_request(), timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as error:
        return error.code() is grpc.StatusCode.UNAVAILABLE
    return False


@pytest.mark.slow
def test_sigterm_lets_in_flight_requests_finish(tmp_path):
    base = tmp_path / MODEL
    gate = Gate(tmp_path / "gate")
    export_leaky(base, gate_dir=gate.directory)
    process, port, lines = start_cli_server(base, "--grace", "30")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(text_request([MARKER], signature=LEAKY), timeout=RPC_TIMEOUT_S)
            assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            text = f"{MARKER} aspirin"
            in_flight = stub.Predict.future(text_request([text]), timeout=RPC_TIMEOUT_S)
            wait_for(gate.started, what="the request to reach the model")
            process.send_signal(signal.SIGTERM)
            wait_for_line(lines, "Received SIGTERM", timeout=RPC_TIMEOUT_S)
            wait_for(lambda: refuses_requests(status), what="the server to refuse requests")
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(text_request(["fever"]), timeout=RPC_TIMEOUT_S)
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
            assert not in_flight.done()  # held by the gate until now
            gate.open()
            assert response_entities(in_flight.result(), [text]) == [expected_entities(text)]
        assert process.wait(timeout=30) == 0
    finally:
        gate.open()
        if process.poll() is None:
            process.kill()
    log = "".join(lines)
    assert "Received SIGTERM" in log and "Predict OK" in log and "INVALID_ARGUMENT" in log
    assert MARKER not in log


@pytest.mark.slow
def test_sigterm_ends_the_process_when_the_grace_period_runs_out(tmp_path):
    # The server stopped after --grace, but the process went on until the model call held
    # past it returned (Python joins gRPC's worker threads at exit): for ever if it hangs.
    base = tmp_path / MODEL
    gate = Gate(tmp_path / "gate")
    export_toy(base, version=1, gate_dir=gate.directory)
    process, port, lines = start_cli_server(base, "--grace", "1")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            in_flight = stub.Predict.future(text_request([MARKER]), timeout=RPC_TIMEOUT_S)
            wait_for(gate.started, what="the request to reach the model")
            process.send_signal(signal.SIGTERM)
            # The gate stays shut: the model call never returns while the process runs.
            assert process.wait(timeout=RPC_TIMEOUT_S) == 0
            with pytest.raises(grpc.RpcError) as raised:
                in_flight.result()
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        gate.open()
        if process.poll() is None:
            process.kill()
    log = "".join(lines)
    assert "1 gRPC call(s) still running past the 1 s grace period" in log
    assert MARKER not in log
