"""TensorFlow Serving's REST API on the development server: paths, formats, errors, limits."""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import gzip
import http.client
import json
import logging
import os
import re
import resource
import select
import socket
import ssl
import threading

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from clinical_ner.errors import ConfigError
from clinical_ner.export import signatures as sig
from clinical_ner.serving import rest_server
from clinical_ner.serving.rest_client import RestClient, RestError, outputs_as_arrays
from clinical_ner.serving.server import ModelServer
from clinical_ner.text.document import Entity
from helpers import (
    LEAKY,
    MARKER,
    MODEL,
    RPC_TIMEOUT_S,
    TOY_ASSERTION,
    Gate,
    expected_entities,
    expected_tags,
    export_leaky,
    export_toy,
    free_port,
    make_certificate,
    response_entities,
    text_request,
    wait_for,
)

LIMITS = {"max_documents": 16, "max_document_chars": 1000, "max_message_bytes": 200_000}


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / MODEL
    export_leaky(base)
    return base


@pytest.fixture(scope="module")
def server(model_base):
    server = ModelServer(model_base, MODEL, port=0, rest_port=0, poll_interval_s=0.1, **LIMITS)
    server.start()
    yield server
    server.stop(grace=1)


@pytest.fixture()
def rest(server):
    with RestClient("127.0.0.1", server.bound_rest_port, MODEL, timeout=RPC_TIMEOUT_S) as client:
        yield client


def predict(rest, body, path=f"/v1/models/{MODEL}:predict"):
    return rest.request("POST", path, body)


def rows_as_arrays(predictions):
    return outputs_as_arrays({name: [row[name] for row in predictions] for name in predictions[0]})


TEXTS = ["😀 aspirin for fever", "nothing here", "fièvre; aspirin aspirin"]


# -- status and metadata -------------------------------------------------------------------


def test_model_status(rest):
    available = {"model_version_status": [{
        "version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""},
    }]}
    assert rest.request("GET", f"/v1/models/{MODEL}") == (200, available)
    assert rest.request("GET", f"/v1/models/{MODEL}/versions/1") == (200, available)
    status, answer = rest.request("GET", f"/v1/models/{MODEL}/versions/7")
    assert (status, answer) == (404, {
        "error": f"Could not find any versions of model '{MODEL}' with version 7"})


def test_model_metadata(rest):
    status, answer = rest.request("GET", f"/v1/models/{MODEL}/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    defs = answer["metadata"]["signature_def"]["signature_def"]
    text = defs[sig.SERVING_DEFAULT]
    assert text["method_name"] == sig.PREDICT_METHOD_NAME
    assert text["inputs"][sig.TEXT]["dtype"] == "DT_STRING"
    assert text["inputs"][sig.TEXT]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert set(text["outputs"]) == set(sig.ENTITY_OUTPUTS)
    assert set(defs[sig.PREDICT_TOKENS]["outputs"]) == set(sig.TAG_OUTPUTS)
    assert rest.request("GET", f"/v1/models/{MODEL}/versions/1/metadata")[1] == answer
    assert rest.request("GET", f"/v1/models/{MODEL}/versions/2/metadata")[0] == 404


# -- predict: both formats, both signatures ---------------------------------------------------


@pytest.mark.parametrize("named", [False, True])
def test_predict_text_row_format(rest, named):
    instances = [{sig.TEXT: text} for text in TEXTS] if named else TEXTS
    status, answer = predict(rest, {"instances": instances})
    assert status == 200 and list(answer) == ["predictions"]
    assert len(answer["predictions"]) == 3
    assert set(answer["predictions"][0]) == set(sig.ENTITY_OUTPUTS)
    found = sig.entities_from_outputs(TEXTS, rows_as_arrays(answer["predictions"]))
    assert found == [expected_entities(text) for text in TEXTS]
    # Code-point offsets, and float32 confidences written at float32 precision.
    assert answer["predictions"][0][sig.ENTITY_START][0] == 2
    assert answer["predictions"][0][sig.ENTITY_CONFIDENCE][0] == 0.875


@pytest.mark.parametrize("named", [False, True])
def test_predict_text_columnar_format(rest, named):
    inputs = {sig.TEXT: TEXTS} if named else TEXTS
    status, answer = predict(rest, {"signature_name": sig.SERVING_DEFAULT, "inputs": inputs})
    assert status == 200 and list(answer) == ["outputs"]
    assert set(answer["outputs"]) == set(sig.ENTITY_OUTPUTS)
    assert answer["outputs"][sig.ENTITY_COUNT] == [len(expected_entities(t)) for t in TEXTS]
    found = sig.entities_from_outputs(TEXTS, outputs_as_arrays(answer["outputs"]))
    assert found == [expected_entities(text) for text in TEXTS]


def test_predict_tokens_both_formats(rest):
    rows = [["aspirin", "and", "fever"], ["ok", "", ""]]
    expected = [expected_tags(["aspirin", "and", "fever"]), expected_tags(["ok"])]
    status, answer = predict(rest, {"signature_name": sig.PREDICT_TOKENS, "instances": rows})
    assert status == 200
    assert answer["predictions"][0][sig.TAGS] == ["B-DRUG", "O", "B-PROBLEM"]
    assert sig.tags_from_outputs(rows_as_arrays(answer["predictions"])) == expected
    status, answer = predict(rest, {"signature_name": sig.PREDICT_TOKENS,
                                    "inputs": {sig.TOKENS: rows}})
    assert status == 200
    assert sig.tags_from_outputs(outputs_as_arrays(answer["outputs"])) == expected


def test_predict_a_version_and_base64_strings(rest):
    encoded = {"b64": base64.b64encode("aspirin".encode()).decode()}
    status, answer = predict(rest, {"instances": [encoded]},
                             path=f"/v1/models/{MODEL}/versions/1:predict")
    assert status == 200
    assert answer["predictions"][0][sig.ENTITY_LABEL] == ["DRUG"]


def test_a_single_output_is_answered_bare(rest):
    # The leaky signature has one output: TF Serving then drops the output name.
    status, answer = predict(rest, {"signature_name": LEAKY, "inputs": [MARKER]})
    assert status == 400 and "InvalidArgumentError" in answer["error"]
    assert MARKER not in answer["error"]


def test_classify_assertions_takes_spans_within_their_texts_padded_with_minus_one(rest):
    status, answer = predict(rest, classify_request([[0, 11], [0, -1]], [[10, 26], [2, -1]],
                                                    texts=[MARKER, "ok"]))
    assert status == 200, answer
    assert answer["outputs"][sig.ASSERTION] == [[TOY_ASSERTION] * 2, [TOY_ASSERTION, ""]]


# -- errors: TF Serving's status codes and {"error": ...} bodies ------------------------------


def classify_request(starts, ends, texts=(MARKER,)):
    """A ``classify_assertions`` request (columnar) for ``texts`` (MARKER: 26 code points)."""
    return {"signature_name": sig.CLASSIFY_ASSERTIONS,
            "inputs": {sig.TEXT: list(texts), sig.SPAN_START: starts, sig.SPAN_END: ends}}


BAD = {
    "bad JSON": (b'{"instances": [', 400, "JSON Parse error: Expecting value at offset: 15"),
    "not UTF-8": (b'{"instances": ["\xff"]}', 400, "JSON Parse error: the body is not UTF-8"),
    # What json.loads raises besides syntax errors: RecursionError, and a
    # ValueError for an integer of more than 4300 digits (Python's limit).
    "nested 100,000 deep": (b"[" * 100_000, 400,
                            "JSON Parse error: arrays or objects nested too deeply"),
    "nested in an instance": (b'{"instances": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400,
                              "JSON Parse error: arrays or objects nested too deeply"),
    "nested below the parser's limit": ({"instances": functools.reduce(
        lambda inner, _: [inner], range(300), MARKER)}, 400,
        "must be DT_STRING [-1], got shape [1, 1, 1"),
    "a number of 5,000 digits": (b'{"instances": [' + b"7" * 5000 + b"]}", 400,
                                 "JSON Parse error: a number has more than 4300 digits"),
    "not an object": ([MARKER], 400, "must be a JSON object, got a list"),
    "neither format": ({"instance": [MARKER]}, 400, "exactly one of 'instances'"),
    "both formats": ({"instances": [MARKER], "inputs": [MARKER]}, 400, "exactly one of"),
    "signature name not a string": ({"signature_name": 3, "instances": ["a"]}, 400,
                                    "'signature_name' must be a string, got a number"),
    "unknown signature": ({"signature_name": "nope", "instances": [MARKER]}, 404,
                          "signature 'nope' not found in version 1"),
    # Quoted as sent, the answer could not be encoded: the connection closed unanswered.
    "a lone surrogate in the signature name": (
        b'{"signature_name": "\\ud800", "instances": ["' + MARKER.encode() + b'"]}', 404,
        "signature '\ufffd' not found in version 1"),
    "wrong input name": ({"inputs": {"txt": [MARKER]}}, 400,
                         "missing ['text'], unexpected ['txt']"),
    "wrong input name in an instance": ({"instances": [{"text": "a"}, {"txt": MARKER}]}, 400,
                                        "instance 1: signature 'serving_default' takes inputs"),
    "mixed instances": ({"instances": [{"text": MARKER}, MARKER]}, 400, "mixes objects"),
    "a number": ({"instances": [MARKER, 7]}, 400,
                 "input 'text' element [1] is a number; expected a string"),
    "null": ({"inputs": [None]}, 400, "element [0] is null"),
    "wrong rank": ({"instances": [[MARKER]]}, 400, "must be DT_STRING [-1], got shape [1, 1]"),
    "ragged token rows": ({"signature_name": sig.PREDICT_TOKENS,
                           "instances": [[MARKER, "b"], ["c"]]}, 400,
                          "not a rectangular list at element [1]"),
    "empty batch": ({"instances": []}, 400, "empty batch"),
    "bad base64": ({"instances": [{"b64": "%%%"}]}, 400, "element [0] is not valid base64"),
    "invalid UTF-8 in base64": ({"instances": [{"b64": base64.b64encode(
        MARKER.encode() + b"\xff").decode()}]}, 400, "element [0] is not valid UTF-8"),
    "lone surrogate": (b'{"instances": ["\\ud800 ' + MARKER.encode() + b'"]}', 400,
                       "element [0] is not valid UTF-8 (byte offset 0)"),
    "too many documents": ({"instances": [MARKER] * 17}, 429, "limit is 16"),
    "document too long": ({"instances": ["ok", MARKER * 40]}, 429,
                          "document 1 has 1040 characters; the limit is 1000"),
    "token row too long": ({"signature_name": sig.PREDICT_TOKENS, "inputs": [[MARKER] * 39]},
                           429, "document 0 has 1052 characters"),
    # NumPy holds no integer beyond int64: these got 500 and a traceback in the log.
    "an integer beyond int64": (classify_request([[2**70]], [[5]]), 400,
                                "input 'span_start' element [0, 0] does not fit DT_INT32"),
    "a negative integer beyond int64": (classify_request([[0, 1]], [[5, -2**70]]), 400,
                                        "input 'span_end' element [0, 1] does not fit DT_INT32"),
    # Spans the in-process API refuses were answered by the graph ("present", or "").
    "a span past its text": (classify_request([[15]], [[99999]]), 400,
                             "inputs 'span_start' and 'span_end' element [0, 0]: span "
                             "[15, 99999) is neither -1, -1 (padding) nor 0 <= start < end "
                             "<= 26 (text 0's length in code points)"),
    "a span ending before its start": (classify_request([[0, 25]], [[5, 15]]), 400,
                                       "element [0, 1]: span [25, 15) is neither"),
    "a span starting before its text": (classify_request([[-7]], [[25]]), 400,
                                        "element [0, 0]: span [-7, 25) is neither"),
    "half a padding span": (classify_request([[-1]], [[3]]), 400,
                            "element [0, 0]: span [-1, 3) is neither"),
    # The graph answered "" where the in-process API raises "covers no token".
    "a span that covers no token": (classify_request([[0, 26]], [[26, 28]],
                                                     texts=[MARKER + "  x"]), 400,
                                    "inputs 'span_start' and 'span_end' element [0, 1]: span "
                                    "[26, 28) covers no token of text 0"),
    # "" is padding: the graph skipped it, and the tags no longer lined up with the tokens.
    "an empty token before a token": ({"signature_name": sig.PREDICT_TOKENS,
                                       "instances": [["chest", "pain", ""], ["chest", "", MARKER]]},
                                      400, "input 'tokens' element [1, 1] is \"\" before a "
                                           "token of its row"),
    "an empty first token": ({"signature_name": sig.PREDICT_TOKENS, "inputs": [["", MARKER]]},
                             400, "input 'tokens' element [0, 0] is \"\""),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_predict_gets_tf_servings_status_and_the_server_carries_on(rest, case):
    body, status, message = BAD[case]
    got_status, answer = predict(rest, body)
    assert got_status == status, answer
    assert list(answer) == ["error"] and message in answer["error"]
    assert MARKER not in answer["error"]
    assert predict(rest, {"instances": ["aspirin"]})[0] == 200


@pytest.mark.parametrize("path, status, message", [
    ("/v1/models/other:predict", 404, "model 'other' not found; this server serves"),
    (f"/v1/models/{MODEL}/versions/9:predict", 404, "version 9 of model"),
    # Named clipped to 2^63 - 1 in a 404, as if that had been asked for.
    (f"/v1/models/{MODEL}/versions/99999999999999999999:predict", 400,
     "version 99999999999999999999 is out of range: a version is at most 9223372036854775807"),
    (f"/v1/models/{MODEL}/labels/stable:predict", 501, "version labels are not supported"),
    (f"/v1/models/{MODEL}:classify", 501, "classify is not implemented"),
    (f"/v1/models/{MODEL}:explode", 400, f"Malformed request: POST /v1/models/{MODEL}:explode"),
    ("/v1/models/bad name!:predict", 400, "model_spec.name is empty or invalid"),
])
def test_unknown_models_versions_and_verbs(rest, path, status, message):
    got_status, answer = predict(rest, {"instances": ["aspirin"]}, path=path.replace(" ", "%20"))
    assert got_status == status and message in answer["error"], answer


@pytest.mark.parametrize("line, status", [(f"GET /v1/models/{MODEL} HTTP/2.0", 505),
                                          (f"GET /v1/models/{MODEL} HTTP/1.1.1", 400),
                                          (f"GET /v1/models/{MODEL} HTTPS/1.1", 400),
                                          ("s", 400)])
def test_a_request_line_of_a_refused_http_version_gets_a_status_line(server, line, status):
    # The answer was the JSON alone, as to HTTP/0.9: no status line, no headers.
    with socket_to_port(server.bound_rest_port) as raw:
        raw.sendall(f"{line}\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:100]
    assert b"Content-Type: application/json" in answer and b"Connection: close" in answer


def test_a_request_target_that_urlsplit_refuses_is_answered(server):
    # ValueError ("Invalid IPv6 URL") in the handler: the connection closed unanswered.
    with socket_to_port(server.bound_rest_port) as raw:
        raw.sendall(f"GET http://[/v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n"
                    "Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:100]
    assert answer.endswith(f'{{"error": "Not found: http://[/v1/models/{MODEL}"}}\n'.encode())


def test_paths_and_methods_outside_the_api(rest):
    assert rest.request("GET", f"/v1/models/{MODEL}:predict")[0] == 400  # a GET of :predict
    assert rest.request("DELETE", f"/v1/models/{MODEL}") == (
        400, {"error": f"Malformed request: DELETE /v1/models/{MODEL}"})
    assert rest.request("GET", "/v1/models") == (400, {"error": "Missing model name in request."})
    assert rest.request("GET", "/v1/models/other") == (
        404, {"error": f"model 'other' not found; this server serves '{MODEL}'"})
    assert rest.request("GET", "/index.html")[0] == 404


def test_head_gets_a_get_s_status_and_headers_without_its_body(server):
    # HEAD was a 501 with a JSON body, which a client reads as the start of its next answer.
    connection = http.client.HTTPConnection("127.0.0.1", server.bound_rest_port, timeout=30)
    connection.request("GET", f"/v1/models/{MODEL}")
    response = connection.getresponse()
    got = response.read()
    connection.request("HEAD", f"/v1/models/{MODEL}")
    head = connection.getresponse()
    assert head.status == response.status == 200
    assert head.getheader("Content-Length") == str(len(got)) and head.read() == b""
    connection.request("HEAD", "/v1/models/other")
    missing = connection.getresponse()
    assert missing.status == 404 and missing.read() == b""
    # The connection goes on: nothing of a body was left in it.
    connection.request("GET", f"/v1/models/{MODEL}")
    again = connection.getresponse()
    assert again.status == 200 and again.read() == got
    connection.close()


def test_an_http_1_0_client_that_asks_for_keep_alive_is_told_it_has_it(server):
    # The connection was kept open without "Connection: keep-alive" in the answer, which an
    # HTTP/1.0 client (ab -k) needs to keep it: it waited for the close, for a minute.
    def exchange(raw, reader, connection):
        raw.sendall(f"GET /v1/models/{MODEL} HTTP/1.0\r\n{connection}\r\n".encode())
        status = reader.readline()
        headers = http.client.parse_headers(reader)
        body = reader.read(int(headers["Content-Length"]))
        return status, headers["Connection"], json.loads(body)

    with socket_to_port(server.bound_rest_port) as raw, raw.makefile("rb") as reader:
        for _ in range(2):  # the same connection serves the second request
            status, connection, answer = exchange(raw, reader, "Connection: keep-alive\r\n")
            assert status.startswith(b"HTTP/1.1 200 "), status
            assert connection == "keep-alive" and "model_version_status" in answer
        status, connection, _ = exchange(raw, reader, "")
        assert status.startswith(b"HTTP/1.1 200 ") and connection == "close"
        assert reader.read() == b""  # HTTP/1.0's default: closed after the answer


def test_oversized_and_unframed_bodies_are_refused_before_reading(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.bound_rest_port, timeout=30)
    body = json.dumps({"instances": [MARKER * 8000]}).encode()
    connection.request("POST", f"/v1/models/{MODEL}:predict", body=body)
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 413 and "limit is 200000" in answer["error"]
    assert MARKER not in answer["error"]
    connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", server.bound_rest_port, timeout=30)
    connection.request("POST", f"/v1/models/{MODEL}:predict", body=iter([b'{"instances": []}']),
                       encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    connection.close()


@pytest.mark.parametrize("lengths", [["1_5"], ["+15"], ["\u0661\u0665"], ["-1"],
                                     ["15", "16"]])
def test_a_content_length_that_is_not_plain_digits_or_disagrees_is_refused(server, lengths):
    body = b'{"instances": []}'[:15]
    headers = "".join(f"Content-Length: {length}\r\n" for length in lengths)
    answer = raw_exchange(server, headers.encode(), body)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), status_line
    assert b"Content-Length" in rest and b"Connection: close" in rest


def test_a_chunked_body_named_in_a_second_transfer_encoding_header_is_refused(server):
    # Only the first Transfer-Encoding header was read: the body was taken as empty (400
    # "JSON Parse error: Expecting value at offset: 0") and its chunks as the next request
    # on the connection (a second 400).
    request = json.dumps({"instances": ["aspirin"]}).encode()
    body = f"{len(request):x}\r\n".encode() + request + b"\r\n0\r\n\r\n"
    answer = raw_exchange(
        server, b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", body)
    assert answer.startswith(b"HTTP/1.1 411 "), answer[:100]
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # the chunks are not read as a request
    assert answer.endswith(b'{"error": "send the body with a Content-Length (chunked bodies '
                           b'are not supported)"}\n')


def raw_exchange(server, headers, body=b"", half_close=False):
    """All the server answers, until it closes, to a :predict with these headers and body
    (``half_close``: the client then closes its side)."""
    with socket_to_port(server.bound_rest_port) as raw:
        raw.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n".encode()
                    + headers + b"\r\n" + body)
        if half_close:
            raw.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
    return answer


def test_a_content_length_of_thousands_of_digits_is_too_large(server):
    # int() refuses more than 4300 digits: the connection was dropped without an answer.
    answer = raw_exchange(server, b"Content-Length: " + b"9" * 5000 + b"\r\n", b"{}")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert answer.endswith(b'{"error": "the body has a length of 5000 digits; the limit is '
                           b'200000 (--max-message-bytes)"}\n')


def test_a_body_cut_short_of_its_content_length_is_refused(server):
    # The cut body was parsed: a JSON error at the cut, or an answer where it still parsed.
    body = json.dumps({"instances": [MARKER]}).encode()
    answer = raw_exchange(server, f"Content-Length: {len(body) + 1}\r\n".encode(), body,
                          half_close=True)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert answer.endswith(f'{{"error": "the body ended after {len(body)} of its '
                           f'{len(body) + 1} bytes (Content-Length)"}}\n'.encode())


def test_a_body_that_stops_arriving_on_an_open_connection_gets_408(server, monkeypatch):
    # A Content-Length larger than the body sent, the connection left open: after the idle
    # timeout (a minute by default) the connection was closed without an answer.
    monkeypatch.setattr(rest_server._Handler, "timeout", 1.0)
    body = json.dumps({"instances": [MARKER]}).encode()
    answer = raw_exchange(server, f"Content-Length: {len(body) + 1}\r\n".encode(), body)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert answer.endswith(f'{{"error": "the body stopped arriving before its {len(body) + 1} '
                           'bytes (Content-Length): nothing came for 1 s"}\n'.encode())


def test_expect_100_continue_is_refused_before_a_body_over_the_limit(server):
    # "100 Continue" came first: the client sent the body that the 413 then refused.
    answer = raw_exchange(server, b"Expect: 100-continue\r\nContent-Length: 200001\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert b"100 Continue" not in answer
    body = json.dumps({"instances": ["aspirin"]}).encode()
    with socket_to_port(server.bound_rest_port) as raw:
        raw.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nExpect: "
                    f"100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n")
        raw.sendall(body)
        assert raw.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")


def post_encoded(server, body, encoding):
    """The status and JSON answer of a :predict whose body has this Content-Encoding."""
    connection = http.client.HTTPConnection("127.0.0.1", server.bound_rest_port, timeout=30)
    try:
        connection.request("POST", f"/v1/models/{MODEL}:predict", body=body,
                           headers={"Content-Encoding": encoding})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_gzip_body_is_read_as_tf_serving_reads_it(server):
    # It was read as JSON: 400 "JSON Parse error: the body is not UTF-8 (byte offset 1)".
    request = json.dumps({"instances": ["aspirin"]}).encode()
    status, answer = post_encoded(server, gzip.compress(request), "gzip")
    assert status == 200, answer
    assert answer["predictions"][0][sig.ENTITY_LABEL] == ["DRUG"]


@pytest.mark.parametrize("case", ["a bomb", "cut short", "not gzip", "brotli"])
def test_a_body_that_cannot_be_uncompressed_is_refused(server, case):
    request = json.dumps({"instances": [MARKER]}).encode()
    body, encoding, status, message = {
        # 1 MB of zeros in 1 KB: uncompressed up to the limit (200000) only.
        "a bomb": (gzip.compress(b"0" * 1_000_000), "gzip", 413,
                   "the body has more than 200000 bytes uncompressed; the limit is 200000 "
                   "(--max-message-bytes)"),
        "cut short": (gzip.compress(request)[:20], "gzip", 400,
                      "the gzip body (Content-Encoding: gzip) is cut short"),
        "not gzip": (request, "gzip", 400, "the body is not valid gzip (Content-Encoding: gzip)"),
        "brotli": (request, "br", 415, "Content-Encoding br is not supported; send the body "
                                       "uncompressed or gzip-compressed"),
    }[case]
    assert post_encoded(server, body, encoding) == (status, {"error": message})


def test_the_bodies_held_at_once_stay_within_max_workers_full_size_bodies(model_base,
                                                                         monkeypatch):
    # Each connection read its whole body before it waited for one of the --max-workers
    # slots: many clients sending at once made the server hold as many bodies.
    server = ModelServer(model_base, MODEL, port=0, rest_port=0, max_workers=1,
                         max_message_bytes=200_000)
    server.start()
    request = json.dumps({"instances": ["aspirin"]}).encode()
    full_size = request.ljust(200_000)  # JSON may end in spaces
    head = (f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Length: {len(full_size)}\r\n\r\n").encode()
    small = f"Content-Length: {len(request)}\r\nConnection: close\r\n".encode()

    def held():
        return server._rest._body_bytes

    def answer_of(connection):
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
        return answer

    try:
        with socket_to_port(server.bound_rest_port) as holder:
            holder.sendall(head + full_size[:-1])  # all but its last byte, for now
            wait_for(lambda: held() == len(full_size), what="the server to hold the body")
            refused = raw_exchange(server, small, request)
            holder.sendall(full_size[-1:])
            holder_answer = answer_of(holder)
        wait_for(lambda: held() == 0, what="the answered request's body to be freed")
        after_answer = raw_exchange(server, small, request)
        # A client that stops sending mid-body frees its share once its connection times
        # out (after a second here, a minute by default).
        monkeypatch.setattr(rest_server._Handler, "timeout", 1.0)
        with socket_to_port(server.bound_rest_port) as silent:
            silent.sendall(head + full_size[:1000])
            wait_for(lambda: held() > 0, what="the server to hold part of the body")
            wait_for(lambda: held() == 0, what="the silent connection to time out")
        after_timeout = raw_exchange(server, small, request)
    finally:
        server.stop(grace=1)
    assert refused.startswith(b"HTTP/1.1 503 "), refused[:100]
    assert refused.endswith(
        b'{"error": "the server is busy: the request bodies it holds would pass its limit of '
        b'200000 bytes (--max-workers x --max-message-bytes); retry later"}\n')
    for answer in (holder_answer, after_answer, after_timeout):
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["predictions"][0][
            sig.ENTITY_LABEL] == ["DRUG"]


def test_large_bodies_sent_at_once_are_let_in_whole_or_refused_before_they_are_sent(
        model_base):
    # Counted as they arrived, bodies sent at once shared the budget until none could go on:
    # two that each fitted it, sent together, were both refused half-way (503), and a client
    # that asked "Expect: 100-continue" was told to send a body that was then refused.
    server = ModelServer(model_base, MODEL, port=0, rest_port=0, max_workers=1,
                         max_message_bytes=200_000)
    server.start()
    request = json.dumps({"instances": ["aspirin"]}).encode()
    large = request.ljust(150_000)  # each fits the budget of 200000 bytes, not both
    head = (f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(large)}\r\n").encode()

    def answer_of(reader):
        status = reader.readline()
        headers = http.client.parse_headers(reader)
        return status, json.loads(reader.read(int(headers["Content-Length"])))

    try:
        with socket_to_port(server.bound_rest_port) as first, first.makefile("rb") as first_in, \
                socket_to_port(server.bound_rest_port) as second, \
                second.makefile("rb") as second_in:
            first.sendall(head + b"\r\n" + large[:70_000])
            wait_for(lambda: server._rest._body_bytes == len(large),
                     what="the first body to be let in")
            second.sendall(head + b"\r\n" + large[:70_000])
            second_answer = answer_of(second_in)  # its connection stays open, unanswered more
            small = raw_exchange(server, f"Content-Length: {len(request)}\r\nConnection: "
                                         "close\r\n".encode(), request)
            expecting = raw_exchange(server, f"Expect: 100-continue\r\nContent-Length: "
                                             f"{len(large)}\r\n".encode())
            first.sendall(large[70_000:])
            first_answer = answer_of(first_in)
    finally:
        server.stop(grace=1)
    busy = {"error": "the server is busy: the request bodies it holds would pass its limit of "
                     "200000 bytes (--max-workers x --max-message-bytes); retry later"}
    assert second_answer == (b"HTTP/1.1 503 Service Unavailable\r\n", busy)
    assert expecting.startswith(b"HTTP/1.1 503 ") and b"100 Continue" not in expecting
    # The first body, let in whole, is answered; a small one fits beside it.
    assert first_answer[0].startswith(b"HTTP/1.1 200 "), first_answer
    assert first_answer[1]["predictions"][0][sig.ENTITY_LABEL] == ["DRUG"]
    assert small.startswith(b"HTTP/1.1 200 "), small[:100]


def test_a_gzip_body_is_uncompressed_only_once_it_has_a_slot(model_base, monkeypatch):
    # It was uncompressed as soon as it arrived: bodies of a few KB waiting for a slot
    # each held up to --max-message-bytes uncompressed, however many clients sent them.
    server = ModelServer(model_base, MODEL, port=0, rest_port=0, max_workers=1)
    server.start()
    uncompressed = []
    gunzip = rest_server._gunzip

    def counted_gunzip(body, limit):
        uncompressed.append(len(body))
        return gunzip(body, limit)

    monkeypatch.setattr(rest_server, "_gunzip", counted_gunzip)
    body = gzip.compress(json.dumps({"instances": ["aspirin"]}).encode())
    answers = []
    sending = threading.Thread(target=lambda: answers.append(post_encoded(server, body, "gzip")))

    def body_read():
        with server._rest._requests_done:  # the set of requests in progress, not changing
            return any(handler._body_read for handler in server._rest._requests)

    server._rest.admission.acquire()  # the one slot, as a request being served holds it
    try:
        sending.start()
        wait_for(body_read, what="the body to be read")
        waiting = list(uncompressed)
    finally:
        server._rest.admission.release()
        sending.join(timeout=RPC_TIMEOUT_S)
        server.stop(grace=1)
    assert waiting == []
    assert uncompressed == [len(body)]
    assert answers[0][0] == 200 and answers[0][1]["predictions"][0][sig.ENTITY_LABEL] == ["DRUG"]


def test_connections_past_max_connections_get_503_with_retry_after(model_base):
    # Every connection took a thread of its own, however many were open: 2000 idle
    # connections made 2000 threads.
    server = ModelServer(model_base, MODEL, port=0, rest_port=0, max_connections=2)
    server.start()
    path = f"/v1/models/{MODEL}"

    def get():
        client = http.client.HTTPConnection("127.0.0.1", server.bound_rest_port,
                                            timeout=RPC_TIMEOUT_S)
        try:
            client.request("GET", path)
            answer = client.getresponse()
            return answer.status, answer.getheader("Retry-After"), json.loads(answer.read())
        finally:
            client.close()

    try:
        with socket_to_port(server.bound_rest_port), \
                socket_to_port(server.bound_rest_port) as second:
            wait_for(lambda: len(server._rest._connections) == 2,
                     what="the server to hold both idle connections")
            refused = get()
            second.close()
            wait_for(lambda: len(server._rest._connections) == 1,
                     what="the closed connection to be let go")
            served = get()
    finally:
        server.stop(grace=1)
    assert refused == (503, "1", {"error": "the server is busy: it has 2 connections open, "
                                           "its limit (--max-connections); retry later"})
    assert served[0] == 200 and served[2]["model_version_status"][0]["state"] == "AVAILABLE"


def test_a_post_past_max_connections_gets_its_503_not_a_broken_pipe(model_base):
    # The refused connection was closed at once: the request's body, sent after its headers,
    # reset it, and the client got "Broken pipe" instead of the 503 (9 POSTs in 10).
    server = ModelServer(model_base, MODEL, port=0, rest_port=0, max_connections=1)
    server.start()
    body = json.dumps({"instances": ["aspirin"] * 100}).encode()
    answers = []
    try:
        with socket_to_port(server.bound_rest_port):
            wait_for(lambda: len(server._rest._connections) == 1,
                     what="the server to hold the idle connection")
            for _ in range(5):
                client = http.client.HTTPConnection("127.0.0.1", server.bound_rest_port,
                                                    timeout=RPC_TIMEOUT_S)
                try:
                    client.request("POST", f"/v1/models/{MODEL}:predict", body)
                    answers.append(client.getresponse().status)
                except OSError as error:
                    answers.append(type(error).__name__)
                finally:
                    client.close()
    finally:
        server.stop(grace=1)
    assert answers == [503] * 5


def test_a_request_whose_client_closed_while_it_waited_for_a_slot_is_not_run(model_base):
    # It ran the model when its turn came, for nobody, holding the slot from others.
    server = ModelServer(model_base, MODEL, port=0, rest_port=0, max_workers=1)
    server.start()
    answered = []
    answer = server._rest.api.answer

    def counted_answer(method, path, body):
        answered.append(path)
        return answer(method, path, body)

    server._rest.api.answer = counted_answer
    body = json.dumps({"instances": ["aspirin"]}).encode()

    def waiting():  # the handlers whose request has been read, waiting for the slot
        with server._rest._requests_done:
            return [handler for handler in server._rest._requests if handler._body_read]

    def closed_by_client(handler):
        poller = select.poll()
        poller.register(handler.connection, select.POLLRDHUP)
        return poller.poll(0)

    server._rest.admission.acquire()  # the one slot, as a request being served holds it
    try:
        with socket_to_port(server.bound_rest_port) as gone:
            gone.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            wait_for(waiting, what="the request to wait for the slot")
            (handler,) = waiting()
        wait_for(lambda: closed_by_client(handler), what="the server to see the close")
        server._rest.admission.release()
        wait_for(lambda: not server._rest._requests, what="the request to end")
        dropped = list(answered)
        served = raw_exchange(server, f"Content-Length: {len(body)}\r\n"
                                      "Connection: close\r\n".encode(), body)
    finally:
        server.stop(grace=1)
    assert dropped == []
    assert served.startswith(b"HTTP/1.1 200 "), served[:100]
    assert answered == [f"/v1/models/{MODEL}:predict"]


@pytest.fixture()
def lowered_soft_file_limit():
    """This process's soft limit of open files lowered to 40 more than it has open (the hard
    limit kept; restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = len(os.listdir("/dev/fd")) + 40
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        yield lowered, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_max_connections_past_the_soft_file_limit_raise_it_up_to_the_hard_one(
        model_base, lowered_soft_file_limit):
    # A soft limit of 256 (macOS) or 1024 would otherwise refuse the default 256 connections;
    # past the limit, accepting failed (EMFILE) and the server's loop spun a CPU.
    lowered, hard = lowered_soft_file_limit
    wanted = lowered + 500
    if hard != resource.RLIM_INFINITY and hard < wanted + 200:
        pytest.fail(f"this test needs a hard limit of open files above {wanted + 200}: {hard}")
    server = ModelServer(model_base, MODEL, port=0, rest_port=0, max_connections=wanted)
    try:
        soft_now, hard_now = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert hard_now == hard and soft_now > wanted
    finally:
        server.stop(grace=1)


def test_max_connections_past_the_hard_file_limit_is_a_config_error(model_base, monkeypatch):
    # The hard limit as a small number: lowering the real one cannot be undone.
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (100, 300))
    raised = []
    monkeypatch.setattr(resource, "setrlimit", lambda kind, limits: raised.append(limits))
    with pytest.raises(ConfigError, match=r"^max_connections 400: the server would need "
                                          r"about \d+ open files \(one per connection\), more "
                                          r"than this process may open \(100, ulimit -n; at "
                                          r"most 300, ulimit -Hn\); lower max_connections or "
                                          r"raise ulimit -Hn$"):
        ModelServer(model_base, MODEL, port=0, rest_port=0, max_connections=400)
    assert raised == []


def test_a_draining_server_answers_503(server, rest):
    server._service.draining.set()
    try:
        status, answer = rest.request("GET", f"/v1/models/{MODEL}")
    finally:
        server._service.draining.clear()
    assert (status, answer) == (503, {"error": "the server is shutting down"})
    assert rest.request("GET", f"/v1/models/{MODEL}")[0] == 200


def test_waiting_rest_requests_merge_and_a_stopping_server_finishes_them(model_base):
    server = ModelServer(model_base, MODEL, port=0, rest_port=0, max_concurrent_calls=1)
    server.start()
    signatures = server._versions.get(1).signatures
    model_function, calls, gate = signatures[sig.SERVING_DEFAULT].function, [], threading.Event()

    def gated(**inputs):
        calls.append(int(inputs[sig.TEXT].shape[0]))  # one call at a time: one slot
        if b"gate" in inputs[sig.TEXT].numpy().tolist():
            gate.wait(timeout=RPC_TIMEOUT_S)
        return model_function(**inputs)

    signatures[sig.SERVING_DEFAULT] = dataclasses.replace(
        signatures[sig.SERVING_DEFAULT], function=gated)
    texts = ["gate", "aspirin 1", "fever 2", "aspirin fever 3"]
    answers = {}

    def send(index):
        with RestClient("127.0.0.1", server.bound_rest_port, MODEL, timeout=60) as client:
            answers[index] = client.annotate([texts[index]])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(4)]
    stopping = threading.Thread(target=server.stop, args=(RPC_TIMEOUT_S,))
    try:
        threads[0].start()
        wait_for(lambda: calls == [1], what="the gate request to hold the model")
        for index, thread in enumerate(threads[1:], start=1):
            thread.start()
            wait_for(lambda: server._service.batcher.queued() == index, what="a request to queue")
        stopping.start()
        wait_for(server._service.draining.is_set, what="the server to start draining")
        with RestClient("127.0.0.1", server.bound_rest_port, MODEL, timeout=60) as late:
            assert late.request("GET", f"/v1/models/{MODEL}") == (
                503, {"error": "the server is shutting down"})
        gate.set()
        for thread in threads:
            thread.join(timeout=RPC_TIMEOUT_S)
        stopping.join(timeout=RPC_TIMEOUT_S)
    finally:
        gate.set()
        server.stop(grace=1)
    assert calls == [1, 3]  # the three waiting requests ran as one model call
    assert [answers[index] for index in range(4)] == [[expected_entities(t)] for t in texts]


def test_a_request_still_arriving_when_the_server_stops_is_answered(model_base):
    # It counted as in progress only once its body was read: the stop did not wait for it
    # and closed its connection, so the client got no answer at all.
    server = ModelServer(model_base, MODEL, port=0, rest_port=0)
    server.start()
    stopping = threading.Thread(target=server.stop, args=(RPC_TIMEOUT_S,))
    body = json.dumps({"instances": ["aspirin"]}).encode()
    try:
        with socket_to_port(server.bound_rest_port) as raw:
            raw.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:5])
            wait_for(lambda: server._rest._requests, what="the request to reach its handler")
            stopping.start()
            wait_for(server._service.draining.is_set, what="the server to start stopping")
            raw.sendall(body[5:])
            answer = b""
            while chunk := raw.recv(4096):
                answer += chunk
    finally:
        if stopping.ident is None:
            stopping.start()
        stopping.join(timeout=RPC_TIMEOUT_S)
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert answer.endswith(b'{"error": "the server is shutting down"}\n')


def test_a_request_running_past_the_grace_period_gets_503(tmp_path):
    # Its connection was closed without an answer (RestClient: "got no answer").
    base = tmp_path / MODEL
    gate = Gate(tmp_path / "gate")
    export_toy(base, version=1, gate_dir=gate.directory)
    server = ModelServer(base, MODEL, port=0, rest_port=0)
    server.start()
    answers = []
    with RestClient("127.0.0.1", server.bound_rest_port, MODEL, timeout=RPC_TIMEOUT_S) as client:
        sending = threading.Thread(
            target=lambda: answers.append(predict(client, {"instances": ["aspirin"]})))
        try:
            sending.start()
            wait_for(gate.started, what="the request to reach the model")
            server.stop(grace=0.5)  # the gate stays shut: the request outlives the grace
            sending.join(timeout=RPC_TIMEOUT_S)
        finally:
            gate.open()  # a failed test must not leave the model's loop spinning
            sending.join(timeout=RPC_TIMEOUT_S)
            server.stop(grace=0)
    assert answers == [(503, {"error": "the server stopped before the request finished (it "
                                       "ran longer than the 0.5 s grace period)"})]


def test_a_client_that_does_not_read_its_answer_does_not_hold_up_the_stop(model_base,
                                                                           monkeypatch):
    # The stop waited for the answer being written until the connection's timeout (a minute)
    # after the grace period, however short the grace.
    monkeypatch.setattr(rest_server._Handler, "timeout", 3600.0)  # far past any wait here
    server = ModelServer(model_base, MODEL, port=0, rest_port=0)
    server.start()
    # An answer of megabytes, far more than the socket buffers between server and client.
    body = json.dumps({"instances": ["aspirin " * 10_000] * 16}).encode()
    stopping = threading.Thread(target=server.stop, args=(0,))
    with socket.socket() as reader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", server.bound_rest_port))
        try:
            reader.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            wait_for(lambda: reader.recv(1, socket.MSG_PEEK),
                     what="the answer to start arriving")
            stopping.start()
            wait_for(lambda: not stopping.is_alive(), what="the stop to return")
            # What had been sent, then the close: the answer is cut, not left hanging.
            reader.settimeout(RPC_TIMEOUT_S)
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := reader.recv(1 << 20):
                    answer += chunk
        finally:
            reader.close()  # lets a stop that waits on the answer go on
            if stopping.ident is not None:
                stopping.join(timeout=RPC_TIMEOUT_S)
    head, _, sent = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(sent) < int(re.search(rb"Content-Length: (\d+)", head)[1])


def test_no_request_text_in_logs(rest, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    predict(rest, {"instances": [f"{MARKER} aspirin"]})
    predict(rest, {"signature_name": LEAKY, "instances": [MARKER]})
    predict(rest, b'{"instances": ["' + MARKER.encode() + b'"')
    predict(rest, {"instances": [MARKER * 2000]})
    rest.request("GET", f"/v1/models/{MARKER}")
    rest.request("GET", f"/{MARKER}")
    with socket_to(rest) as raw:  # a request line http.server cannot parse
        raw.sendall(f"GARBAGE {MARKER}\r\n\r\n".encode())
        raw.recv(4096)
    assert "REST Predict OK" in caplog.text and "REST Predict INVALID_ARGUMENT" in caplog.text
    assert MARKER not in caplog.text
    captured = capfd.readouterr()
    assert MARKER not in captured.out + captured.err


def socket_to(rest):
    return socket_to_port(rest.port, rest.host)


def socket_to_port(port, host="127.0.0.1"):
    return socket.create_connection((host, port), timeout=30)


def test_rest_equals_grpc_on_the_maccrobat_dev_documents(model_base, shared_data):
    folder = shared_data / "maccrobat-i2b2" / "dev" / "txt"
    texts = [path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.txt"))]
    assert len(texts) == 24
    texts += [line for text in texts for line in text.splitlines() if "fever" in line]
    found = 0
    with ModelServer(model_base, MODEL, port=0, rest_port=0) as server, grpc.insecure_channel(
        f"127.0.0.1:{server.bound_port}"
    ) as channel, RestClient("127.0.0.1", server.bound_rest_port, MODEL, timeout=60) as rest:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for start in range(0, len(texts), 8):
            batch = texts[start:start + 8]
            over_grpc = response_entities(stub.Predict(text_request(batch), timeout=RPC_TIMEOUT_S), batch)
            assert rest.annotate(batch) == over_grpc
            status, answer = predict(rest, {"instances": batch})
            assert sig.entities_from_outputs(batch, rows_as_arrays(answer["predictions"])) \
                == over_grpc
            found += sum(len(document) for document in over_grpc)
    assert found > 0


def test_tls(model_base, tmp_path):
    cert, key = make_certificate(tmp_path)
    with ModelServer(model_base, MODEL, host="localhost", port=0, rest_port=0,
                     ssl_cert=cert, ssl_key=key) as server:
        context = ssl.create_default_context(cafile=str(cert))
        with RestClient("localhost", server.bound_rest_port, MODEL, timeout=30,
                        ssl_context=context) as client:
            assert client.annotate(["fever"]) == [expected_entities("fever")]
        with RestClient("localhost", server.bound_rest_port, MODEL, timeout=30) as plain:
            # The TLS server closes the plaintext connection: "Connection reset by peer".
            with pytest.raises(RestError, match=rf"got no answer: localhost:"
                                                rf"{server.bound_rest_port} speaks TLS and "
                                                r"this client does not; give ssl_context"):
                plain.request("GET", f"/v1/models/{MODEL}")
        # The SSL reason alone said nothing of what to do.
        with RestClient("localhost", server.bound_rest_port, MODEL, timeout=30,
                        ssl_context=ssl.create_default_context()) as other_ca:
            with pytest.raises(RestError, match=r"TLS handshake refused "
                                                r"\(CERTIFICATE_VERIFY_FAILED\); the server's "
                                                r"certificate is not signed by a CA in "
                                                r"ssl_context: give the CA certificates"):
                other_ca.request("GET", f"/v1/models/{MODEL}")


def test_a_stop_closes_idle_tls_connections(model_base, tmp_path, monkeypatch):
    # The stop shut down the accepted socket, which the TLS one had detached: idle TLS
    # connections stayed open, each with its thread, until their idle timeout.
    monkeypatch.setattr(rest_server._Handler, "timeout", 3600.0)  # far past any wait here
    cert, key = make_certificate(tmp_path)
    server = ModelServer(model_base, MODEL, host="localhost", port=0, rest_port=0,
                         ssl_cert=cert, ssl_key=key)
    server.start()
    client = http.client.HTTPSConnection("localhost", server.bound_rest_port,
                                         timeout=RPC_TIMEOUT_S,
                                         context=ssl.create_default_context(cafile=str(cert)))
    try:
        client.request("GET", f"/v1/models/{MODEL}")
        assert client.getresponse().read()  # the connection stays open (keep-alive)
        server.stop(grace=1)
        with contextlib.suppress(ConnectionResetError):
            assert client.sock.recv(1) == b""  # closed by the server, not timed out
    finally:
        client.close()
        server.stop(grace=0)


def test_a_tls_rest_client_of_a_plaintext_port_says_what_to_do(server):
    client = RestClient("127.0.0.1", server.bound_rest_port, MODEL, timeout=30,
                        ssl_context=ssl.create_default_context())
    with client, pytest.raises(RestError) as raised:
        client.request("GET", f"/v1/models/{MODEL}")
    assert str(raised.value) == (
        f"GET /v1/models/{MODEL} to 127.0.0.1:{server.bound_rest_port}: TLS handshake refused "
        "(WRONG_VERSION_NUMBER); the server does not speak TLS: leave out ssl_context (or "
        "serve with a certificate)")


def test_the_rest_client_names_a_port_that_does_not_answer_http_1(server):
    # The gRPC port's HTTP/2 frames: a bare http.client.BadStatusLine quoting their bytes.
    with RestClient("127.0.0.1", server.bound_port, MODEL, timeout=30) as client:
        with pytest.raises(RestError, match=rf"^POST /v1/models/{MODEL}:predict to 127\.0\.0\.1:"
                                            rf"{server.bound_port}: the answer is not valid "
                                            r"HTTP/1\.1 \(BadStatusLine\); is it a gRPC port\? "
                                            r"Give the server's REST port$"):
            client.annotate(["fever"])


def test_rest_port_in_use_is_a_config_error(model_base, server):
    from clinical_ner.errors import ConfigError

    with pytest.raises(ConfigError, match="could not listen"):
        ModelServer(model_base, MODEL, port=0, rest_port=server.bound_rest_port).start()


def test_the_rest_client_refuses_what_would_annotate_keys_or_characters():
    # Each was sent: a mapping's ids, a DataFrame's column names, a str's characters.
    with RestClient("127.0.0.1", 1, MODEL) as client:
        for texts, message in (
            ({"note-1": "fever"}, r"^texts is dict, expected a str or a list of str \(not a "
                                  r"mapping, whose keys would be annotated"),
            ("fever", r"^texts is str, expected a list of str \(give \[text\] for one "
                      r"document\)$"),
            ([b"fever"], r"^texts\[0\] is bytes, expected str$"),
        ):
            with pytest.raises(TypeError, match=message):
                client.annotate(texts)
        pd = pytest.importorskip("pandas")
        with pytest.raises(TypeError, match=r"^texts is DataFrame, .* df\[\"text\"\]\.tolist"):
            client.annotate(pd.DataFrame({"id": ["n1"], "text": ["fever"]}))


def test_the_rest_client_annotates_no_documents_and_lone_surrogates_as_serving_client(rest):
    # Both got HTTP 400 (an empty batch; not valid UTF-8), where ServingClient and the
    # in-process API answer [] and read a lone surrogate as U+FFFD.
    assert rest.annotate([]) == []
    text = "aspirin \ud800 fever"
    assert rest.annotate([text]) == [expected_entities(text)]


@pytest.mark.parametrize("reason", ["Name or service not known", "Temporary failure in name "
                                                                  "resolution"])
def test_the_rest_client_names_a_host_that_does_not_resolve(monkeypatch, reason):
    # socket.gaierror came out bare ("[Errno -2] Name or service not known"), no host named.
    from clinical_ner.serving.client_errors import UnknownHostError

    def unresolved(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, reason)

    monkeypatch.setattr(socket, "getaddrinfo", unresolved)
    with RestClient("no-such-host.invalid", 8501, MODEL) as client:
        if reason.startswith("Temporary"):
            # A name server that cannot be reached is no wrong host name (it was a bare
            # socket.gaierror, naming no host).
            with pytest.raises(RestError, match=rf"^POST /v1/models/{MODEL}:predict to "
                                                rf"no-such-host\.invalid:8501 got no answer: "
                                                rf"{reason}$"):
                client.annotate(["fever"])
            return
        with pytest.raises(UnknownHostError, match=rf"^POST /v1/models/{MODEL}:predict failed: "
                                                   r"host no-such-host\.invalid does not "
                                                   rf"resolve \({reason}\); check host$") as raised:
            client.annotate(["fever"])
    assert raised.value.exit_code == 2


@pytest.mark.parametrize("host, port", [("127.0.0.1", 99999), ("127.0.0.1", 0),
                                        ("127.0.0.1", None), ("http://127.0.0.1", 8501),
                                        ("127.0.0.1:8501", 8501)])
def test_the_rest_client_checks_its_host_and_port_as_serving_client_does(host, port):
    # Port 99999 connected to port 34463 (wrapped round), None to 80.
    from clinical_ner.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^host and port '{re.escape(host)}:{port}' is not "
                                          r"host:port with a port from 1 to 65535"):
        RestClient(host, port, MODEL)
    with pytest.raises(ConfigError, match=r"^timeout must be a number of seconds > 0"):
        RestClient("127.0.0.1", 8501, MODEL, timeout=0)
    with pytest.raises(ConfigError, match=r"^host is NoneType, expected a str"):
        RestClient(None, 8501, MODEL)


@pytest.mark.parametrize("version", [0, True, "1", 1.5])
def test_the_rest_client_checks_the_version_as_serving_client_does(version):
    # It went into the path: /versions/True:predict got 400 "Malformed request", 0 got 404.
    from clinical_ner.errors import ConfigError

    with RestClient("127.0.0.1", 1, MODEL) as client:
        with pytest.raises(ConfigError, match=r"^version must be a positive integer"):
            client.annotate(["fever"], version=version)


def test_both_clients_refuse_a_version_past_int64():
    # ServingClient raised protobuf's bare "ValueError: Value out of range" as it sent it.
    from clinical_ner.errors import ConfigError
    from clinical_ner.serving.client import ServingClient

    message = r"^version must be at most 9223372036854775807, got 9223372036854775808$"
    with pytest.raises(ConfigError, match=message):
        ServingClient("127.0.0.1:1", MODEL, version=2**63)
    with RestClient("127.0.0.1", 1, MODEL) as client:
        with pytest.raises(ConfigError, match=message):
            client.annotate(["fever"], version=2**63)


def test_the_rest_client_takes_an_ipv6_address_with_or_without_brackets():
    # "[::1]" was looked up as a host name: UnknownHostError. (No server there: refused, or
    # whatever a host without IPv6 says.)
    for host in ("[::1]", "::1"):
        with RestClient(host, free_port(), MODEL) as client:
            with pytest.raises(RestError, match=rf"to {re.escape(host)}:\d+ got no answer: "):
                client.annotate(["fever"])


def test_the_rest_client_names_a_server_that_does_not_answer():
    # ConnectionRefusedError came out bare ("[Errno 111] Connection refused"), no server named.
    port = free_port()
    with RestClient("127.0.0.1", port, MODEL) as client:
        with pytest.raises(RestError, match=rf"^POST /v1/models/{MODEL}:predict to "
                                            rf"127\.0\.0\.1:{port} got no answer: "
                                            r"Connection refused$") as raised:
            client.annotate(["fever"])
    assert raised.value.status is None


@pytest.fixture()
def fake_server():
    """An HTTP server on a free port that answers every request with ``answer["body"]``
    (JSON, HTTP status ``answer["status"]``, 200 if not given), once ``answer["together"]``
    (a barrier, if given) has as many requests waiting as it has parties."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answer = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            if "together" in answer:
                answer["together"].wait()
            body = answer["body"]
            self.send_response(answer.get("status", 200))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], answer
    server.shutdown()
    server.server_close()


OUTPUTS = {sig.ENTITY_START: [[0]], sig.ENTITY_END: [[5]], sig.ENTITY_LABEL: [["DRUG"]],
           sig.ENTITY_CONFIDENCE: [[0.5]], sig.ENTITY_COUNT: [1]}


@pytest.mark.parametrize("answer, error, message", [
    # A bare KeyError ('outputs') or AttributeError ('list' object has no attribute 'items').
    ({"predictions": [{}]}, RestError, r"HTTP 200 without 'outputs' \(the columnar format's "
                                       r"answer\); got fields \['predictions'\]$"),
    ([OUTPUTS], RestError, r"HTTP 200 without 'outputs' .*; got a list$"),
    ({"outputs": [1, 2]}, RestError, r"HTTP 200 whose 'outputs' is a list, not an object"),
    ({"outputs": None}, RestError, r"HTTP 200 whose 'outputs' is null, not an object"),
    # ValueErrors of NumPy and int(), one quoting the server's value.
    ({"outputs": {**OUTPUTS, sig.ENTITY_START: [[0], [1, 2]]}}, sig.ModelOutputError,
     r"HTTP 200 with outputs that are not lists of one shape and type each \(ValueError\)$"),
    ({"outputs": {**OUTPUTS, sig.ENTITY_COUNT: [MARKER]}}, sig.ModelOutputError,
     r"HTTP 200 with outputs that are not lists .* \(ValueError\)$"),
])
def test_the_rest_client_names_an_answer_that_is_not_tf_servings(fake_server, answer, error,
                                                                 message):
    port, served = fake_server
    served["body"] = json.dumps(answer).encode()
    with RestClient("127.0.0.1", port, MODEL) as client:
        with pytest.raises(error, match=rf"^POST /v1/models/{MODEL}:predict: {message}") as raised:
            client.annotate(["fever"])
    assert MARKER not in str(raised.value)


def test_threads_share_a_rest_client(fake_server):
    # A web framework's thread pool shares one client. Its one connection failed the second
    # request in flight (CannotSendRequest, "the answer is not valid HTTP/1.1"). The server
    # answers only once it holds two requests at once: on two connections.
    port, served = fake_server
    served["body"] = json.dumps({"outputs": OUTPUTS}).encode()
    expected = [[Entity(start=0, end=5, text="fever", label="DRUG", confidence=0.5)]]
    with RestClient("127.0.0.1", port, MODEL, timeout=RPC_TIMEOUT_S) as client:
        assert client.annotate(["fever"]) == expected  # a keep-alive connection to share
        served["together"] = threading.Barrier(2, timeout=RPC_TIMEOUT_S)
        start = threading.Barrier(2)
        answers, errors = [], []

        def annotate():
            start.wait()
            try:
                answers.append(client.annotate(["fever"]))
            except RestError as error:
                errors.append(str(error))

        threads = [threading.Thread(target=annotate) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert answers == [expected, expected]


def test_the_rest_client_says_a_request_timed_out():
    # "got no answer: TimeoutError": a listening socket that never answers.
    with socket.create_server(("127.0.0.1", 0)) as silent, RestClient(
            "127.0.0.1", silent.getsockname()[1], MODEL, timeout=0.2) as client:
        with pytest.raises(RestError, match=r"got no answer: none within 0\.2 s \(timeout\)$"):
            client.annotate(["fever"])


@pytest.mark.parametrize("answer, message", [
    ({"error": 5}, r"\(no error message: the answer is an object without a string 'error'\)"),
    ({"message": "Bad gateway"}, r"\(no error message: the answer is an object without a "
                                 r"string 'error'\)"),
    ([1, 2], r"\(no error message: the answer is a list\)"),
])
def test_the_rest_client_names_an_error_answer_that_is_not_tf_servings(fake_server, answer,
                                                                       message):
    # {"error": 5} raised TypeError ("argument of type 'int' is not iterable"); the others
    # said "failed with HTTP 502: " and nothing more.
    port, served = fake_server
    served.update(status=502, body=json.dumps(answer).encode())
    with RestClient("127.0.0.1", port, MODEL) as client:
        with pytest.raises(RestError, match=rf"^POST /v1/models/{MODEL}:predict failed with "
                                            rf"HTTP 502: {message}$"):
            client.annotate(["fever"])
