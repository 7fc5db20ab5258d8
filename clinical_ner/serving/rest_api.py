"""TensorFlow Serving's REST API (port 8501) over :class:`ModelService`.

The paths, bodies, status codes and ``{"error": "..."}`` bodies of
https://www.tensorflow.org/tfx/serving/api_rest:

* ``GET /v1/models/NAME[/versions/N]``: version status, as ``GetModelStatus``;
* ``GET /v1/models/NAME[/versions/N]/metadata``: the SignatureDefs;
* ``POST /v1/models/NAME[/versions/N]:predict`` with the row format
  (``{"signature_name": ..., "instances": [...]}`` answered by
  ``{"predictions": [...]}``) or the columnar format (``{"inputs": ...}``
  answered by ``{"outputs": ...}``). Strings are JSON strings or
  ``{"b64": "..."}``; token rows must be padded with ``""`` to one length.

Failures carry TF Serving's mapping of TensorFlow error codes to HTTP
statuses (``INVALID_ARGUMENT`` 400, ``NOT_FOUND`` 404,
``RESOURCE_EXHAUSTED`` 429, ``UNIMPLEMENTED`` 501, ``UNAVAILABLE`` 503, ...).
Two HTTP-level refusals have no TensorFlow code: a body larger than the
message limit gets 413 and a body without ``Content-Length`` (chunked) gets
411. Labels (``/labels/L``), ``:classify`` and ``:regress`` answer 501, as
their gRPC counterparts do here.

The requests go through the same :class:`ModelService` as gRPC ones: the
same limits, validation, merged model calls, statistics and logs (which
never hold request text: the per-request DEBUG line names the method, the
code, the time and sizes only, and http.server's own request logging is
replaced).

The HTTP stack is the standard library's ``ThreadingHTTPServer``: a thread
per connection suits the batcher, which parks request threads until their
merged model call is done (an asyncio server would need a thread pool for
that anyway), it adds no dependency to the core install, and TLS comes from
``ssl``. ``max_workers`` bounds the requests processed at once, as gRPC's
thread pool does; idle keep-alive connections cost a parked thread each.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import http
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from clinical_ner.errors import ConfigError
from clinical_ner.serving.errors import RequestError
from clinical_ner.serving.service import ModelService
from clinical_ner.serving.validation import (
    check_input_names,
    check_shape,
    clip,
    describe,
    string_tensor,
)
from clinical_ner.serving.versions import Signature
from clinical_ner.signatures import SIGNATURE_DEF_METADATA

logger = logging.getLogger(__name__)

# TF Serving's http_server.cc: ToHTTPStatusCode.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# TF Serving's http_rest_api_handler.cc, case-insensitive as there.
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(/metadata)?",
    re.IGNORECASE,
)
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
# Seconds a connection may stay silent (between requests, or mid-request).
_IDLE_TIMEOUT_S = 60.0
# How long a refused body is read and dropped before the connection closes.
_LINGER_S = 2.0
_INT64_MAX = 2**63 - 1


class _HttpRefusal(Exception):
    """A request refused at the HTTP level (no TensorFlow error code)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- JSON to tensors -------------------------------------------------------------


def _leaf_bytes(name: str, value: Any, position: list[int]) -> bytes:
    if isinstance(value, str):
        # surrogatepass: a lone surrogate from a JSON \ud800 escape becomes bytes
        # that are not UTF-8, refused below with its position, as over gRPC.
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' element {position} is not valid base64",
            ) from None
    raise RequestError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input '{name}' element {position} is {_json_kind(value)}; expected a string "
        'or {"b64": "..."}',
    )


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _tensor(name: str, value: Any) -> tuple[list[int], list[bytes]]:
    """The shape and row-major values of a nested JSON list of strings."""
    dims = []
    probe = value
    while isinstance(probe, list):
        dims.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    values: list[bytes] = []

    def visit(item: Any, position: list[int]) -> None:
        depth = len(position)
        if depth == len(dims):
            values.append(_leaf_bytes(name, item, position))
            return
        if not isinstance(item, list) or len(item) != dims[depth]:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' is not a rectangular list at element {position}: every "
                f"list at depth {depth} must have {dims[depth]} items (pad token rows "
                'with "")',
            )
        for index, child in enumerate(item):
            visit(child, position + [index])

    visit(value, [])
    return dims, values


def _is_named(value: Any) -> bool:
    """An object of input names (not a ``{"b64": ...}`` string)."""
    return isinstance(value, dict) and not (set(value) == {"b64"})


def _read_tensor(service: ModelService, name: str, spec: Any, value: Any) -> np.ndarray:
    dims, values = _tensor(name, value)
    check_shape(name, spec, dims, service.limits)
    return string_tensor(name, dims, values, service.limits)


def _row_inputs(
    service: ModelService, signature_name: str, signature: Signature, instances: Any
) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"'instances' must be a list, got {_json_kind(instances)}",
        )
    named = [_is_named(instance) for instance in instances]
    if instances and all(named):
        for index, instance in enumerate(instances):
            try:
                check_input_names(signature_name, signature.inputs, instance)
            except RequestError as error:
                raise RequestError(error.code, f"instance {index}: {error.message}") from None
        columns = {name: [instance[name] for instance in instances] for name in signature.inputs}
    elif any(named):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "'instances' mixes objects of named inputs with bare values; use one form",
        )
    else:
        columns = _single_input(signature_name, signature, instances, "each instance")
    return _read_columns(service, signature, columns)


def _columnar_inputs(
    service: ModelService, signature_name: str, signature: Signature, inputs: Any
) -> dict[str, np.ndarray]:
    if _is_named(inputs):
        check_input_names(signature_name, signature.inputs, inputs)
        columns = inputs
    else:
        columns = _single_input(signature_name, signature, inputs, "'inputs'")
    return _read_columns(service, signature, columns)


def _single_input(
    signature_name: str, signature: Signature, value: Any, what: str
) -> dict[str, Any]:
    """``value`` as the only input of a one-input signature (TF Serving's unnamed form)."""
    if len(signature.inputs) != 1:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"signature '{signature_name}' takes inputs {describe(signature.inputs)}; "
            f"{what} must be an object naming them",
        )
    return {next(iter(signature.inputs)): value}


def _read_columns(
    service: ModelService, signature: Signature, columns: dict[str, Any]
) -> dict[str, np.ndarray]:
    return {
        name: _read_tensor(service, name, signature.inputs[name], columns[name])
        for name in sorted(signature.inputs)
    }


# -- tensors to JSON ---------------------------------------------------------------


def _json_value(value: np.ndarray) -> Any:
    """An output tensor as nested JSON lists (strings as text, floats at float32 precision)."""
    if value.dtype == object or value.dtype.kind == "S":
        flat = [_json_string(item) for item in value.ravel()]
        return np.array(flat + [None], dtype=object)[:-1].reshape(value.shape).tolist()
    if value.dtype == np.float32:
        # The shortest decimal that reads back as the same float32 (0.9, not
        # 0.8999999761581421), as TF Serving writes floats.
        return value.astype(str).astype(np.float64).tolist()
    return value.tolist()


def _json_string(item: Any) -> Any:
    data = item if isinstance(item, bytes) else str(item).encode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode("ascii")}


def _predict_body(row_format: bool, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    if not row_format:
        values = {name: _json_value(value) for name, value in outputs.items()}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    sizes = {name: (value.shape[0] if value.ndim else None) for name, value in outputs.items()}
    batch = next(iter(sizes.values()))
    for name, size in sizes.items():
        if size is None or size != batch:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}; "
                "use the columnar format ('inputs')",
            )
    values = {name: _json_value(value) for name, value in outputs.items()}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{name: rows[index] for name, rows in values.items()}
                            for index in range(batch)]}


# -- requests ------------------------------------------------------------------------------


def _version_number(text: str | None, label: str | None) -> int | None:
    if label is not None:
        raise RequestError(
            grpc.StatusCode.UNIMPLEMENTED,
            "version labels are not supported by the development server; request a "
            "version number, or use TensorFlow Serving with version_labels in models.config",
        )
    if text is None:
        return None
    # Beyond int64 no version can exist; keep the number for the message.
    return int(text) if len(text) <= 19 and int(text) <= _INT64_MAX else _INT64_MAX


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"JSON Parse error: the body is not UTF-8 (byte offset {error.start})",
        ) from None
    except json.JSONDecodeError as error:
        # error.msg describes the syntax only; the document is not quoted.
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"JSON Parse error: {error.msg} at offset: {error.pos}",
        ) from None


class RestApi:
    """Answers TF Serving REST requests for :class:`ModelService` (no sockets here)."""

    def __init__(self, service: ModelService) -> None:
        self._service = service

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body for one request."""
        name, handle = self._route(method, path, body)
        outcome = self._service.handle(name, handle)
        if outcome.code is not grpc.StatusCode.OK:
            return HTTP_STATUS.get(outcome.code, 500), {"error": outcome.message}
        return 200, outcome.response

    def _route(
        self, method: str, path: str, body: bytes
    ) -> tuple[str, Callable[[dict[str, Any]], Any]]:
        predict = _PREDICT_PATH.fullmatch(path)
        if method == "POST" and predict:
            model, version, label, verb = predict.groups()
            if verb.lower() != "predict":
                return f"REST {verb.lower()}", _fail(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{verb.lower()} is not implemented by the clinical-ner development "
                    "server; use :predict",
                )
            return "REST Predict", lambda fields: self._predict(model, version, label, body, fields)
        status = _STATUS_PATH.fullmatch(path)
        if method == "GET" and status:
            model, version, label, metadata = status.groups()
            if metadata:
                return "REST GetModelMetadata", lambda fields: self._metadata(
                    model, version, label, fields
                )
            return "REST GetModelStatus", lambda fields: self._status(model, version, label)
        return "REST malformed", _fail(
            grpc.StatusCode.INVALID_ARGUMENT,
            # The path is the client's own and may be long: clip it.
            f"Malformed request: {method} {clip(path)}",
        )

    def _predict(
        self, model: str, version: str | None, label: str | None, body: bytes,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        number = _version_number(version, label)
        request = _parse_json(body)
        if not isinstance(request, dict):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request body must be a JSON object, got {_json_kind(request)}",
            )
        signature_name = request.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"'signature_name' must be a string, got {_json_kind(signature_name)}",
            )
        if ("instances" in request) == ("inputs" in request):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the request must have exactly one of 'instances' (row format) and "
                "'inputs' (columnar format)",
            )
        row_format = "instances" in request

        def read(name: str, signature: Signature) -> dict[str, np.ndarray]:
            if row_format:
                return _row_inputs(self._service, name, signature, request["instances"])
            return _columnar_inputs(self._service, name, signature, request["inputs"])

        prediction = self._service.predict(model, number, signature_name, read, [], fields)
        return _predict_body(row_format, prediction.outputs)

    def _metadata(
        self, model: str | None, version: str | None, label: str | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        response = self._service.model_metadata(
            _model_name(model), _version_number(version, label), [SIGNATURE_DEF_METADATA], fields
        )
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_METADATA].Unpack(signature_defs)
        return {
            "model_spec": _to_json(response.model_spec),
            "metadata": {SIGNATURE_DEF_METADATA: _to_json(signature_defs)},
        }

    def _status(self, model: str | None, version: str | None, label: str | None) -> dict[str, Any]:
        return _to_json(self._service.model_status(_model_name(model), _version_number(version, label)))


def _model_name(model: str | None) -> str:
    if model is None:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
    return model


def _fail(code: grpc.StatusCode, message: str) -> Callable[[dict[str, Any]], Any]:
    def handle(fields: dict[str, Any]) -> Any:
        raise RequestError(code, message)

    return handle


def _to_json(message: Any) -> dict[str, Any]:
    # As TF Serving prints protos: field names as in the .proto, defaults included.
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


# -- HTTP ------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many requests
    server_version = "clinical-ner-dev-server"
    timeout = _IDLE_TIMEOUT_S
    server: RestServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._request()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815 (others: 400 Malformed)

    def _request(self) -> None:
        try:
            body = self._read_body()
        except _HttpRefusal as refusal:
            logger.debug("REST %s refused: %d %s", self.command, refusal.status, refusal.message)
            self.close_connection = True
            self._send(refusal.status, {"error": refusal.message})
            self._discard_unread_body()
            return
        with self.server.in_flight():
            self._serve(body)

    def _discard_unread_body(self) -> None:
        """A lingering close: closing with the body unread would reset the connection,
        and the client could lose the answer; read (and drop) what arrives for a moment."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_LINGER_S)
            deadline = time.monotonic() + _LINGER_S
            while time.monotonic() < deadline and self.connection.recv(1 << 16):
                pass
        except OSError:
            pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _HttpRefusal(
                411, "send the body with a Content-Length (chunked bodies are not supported)"
            )
        length_text = self.headers.get("Content-Length", "0")
        try:
            length = int(length_text)
        except ValueError:
            raise _HttpRefusal(400, "Content-Length is not a number") from None
        limit = self.server.max_body_bytes
        if length < 0:
            raise _HttpRefusal(400, "Content-Length is negative")
        if length > limit:
            raise _HttpRefusal(
                413, f"the body has {length} bytes; the limit is {limit} (--max-message-bytes)"
            )
        return self.rfile.read(length)

    def _serve(self, body: bytes) -> None:
        path = urlsplit(self.path).path
        if not _API_PATH.fullmatch(path):
            # TF Serving's HTTP server has no handler outside /v1/.
            self._send(404, {"error": f"Not found: {clip(path)}"})
            return
        with self.server.admission:
            status, answer = self.server.api.answer(self.command, path, body)
        if status == 503:
            self.close_connection = True
        self._send(status, answer)

    def _send(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer, ensure_ascii=False).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own errors (bad request line, headers too long, ...)
        # would echo the raw request back as HTML; answer with the phrase only.
        self.close_connection = True
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        logger.debug("REST request refused by the HTTP parser: %d %s", code, phrase)
        self._send(code, {"error": phrase})

    def version_string(self) -> str:
        return self.server_version  # without the Python version

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one DEBUG line per request comes from ModelService, without the path

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        # The arguments can hold the raw request line: log the event only.
        logger.debug("REST connection error (details withheld)")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class RestServer(ThreadingHTTPServer):
    """The REST API on a socket: a thread per connection, ``max_workers`` requests at once."""

    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog is 5: with it, 32 clients connecting at once
    # on a busy machine saw 6 connection resets in 10,000 requests (one run of
    # benchmarks.load_test --protocol rest); with 128, none in the next run.
    request_queue_size = 128
    # Refuse a second server on the same port rather than share it.
    allow_reuse_port = False

    def __init__(
        self,
        api: RestApi,
        host: str,
        port: int,
        *,
        max_workers: int,
        max_body_bytes: int,
        ssl_cert: str | Path | None = None,
        ssl_key: str | Path | None = None,
    ) -> None:
        self.api = api
        self.admission = threading.BoundedSemaphore(max_workers)
        self.max_body_bytes = max_body_bytes
        self._tls: ssl.SSLContext | None = None
        if ssl_cert is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(str(ssl_cert), str(ssl_key))
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._requests = 0
        self._requests_done = threading.Condition()
        try:
            super().__init__((host, port), _Handler)
        except OSError as error:
            raise ConfigError(f"could not listen on {host}:{port} for REST (in use?): {error}") from None

    @property
    def tls(self) -> bool:
        return self._tls is not None

    @property
    def bound_port(self) -> int:
        return self.server_address[1]

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        # Runs in the connection's own thread, so a slow TLS handshake holds
        # only that thread.
        with self._connections_lock:
            self._connections.add(request)
        try:
            connection = request
            if self._tls is not None:
                request.settimeout(_IDLE_TIMEOUT_S)
                try:
                    connection = self._tls.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    logger.debug("REST TLS handshake failed (details withheld)")
                    return
            super().finish_request(connection, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Counts a request from its body read to its answer sent, for :meth:`drain`."""
        with self._requests_done:
            self._requests += 1
        try:
            yield
        finally:
            with self._requests_done:
                self._requests -= 1
                self._requests_done.notify_all()

    def drain(self, grace: float | None) -> None:
        """Wait up to ``grace`` s for requests in progress, then stop and close every connection."""
        with self._requests_done:
            self._requests_done.wait_for(lambda: self._requests == 0, grace)
        self.shutdown()
        self.close_connections()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print the traceback, with locals' reprs, to stderr.
        logger.debug("REST connection ended with an error (details withheld)")

    def close_connections(self) -> None:
        """Close every open connection (idle keep-alive ones would otherwise linger)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
