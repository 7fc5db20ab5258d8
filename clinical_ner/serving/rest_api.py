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
HTTP-level refusals have no TensorFlow code: a body larger than the message
limit (sent or gzip-uncompressed) gets 413, a body without ``Content-Length``
(chunked) 411, and a ``Content-Encoding`` other than gzip 415. Labels
(``/labels/L``), ``:classify`` and ``:regress`` answer 501, as their gRPC
counterparts do here.

The requests go through the same :class:`ModelService` as gRPC ones: the
same limits, validation, merged model calls, statistics and logs (which
never hold request text: the per-request DEBUG line names the method, the
code, the time and sizes only). This module routes a request to the
service; :mod:`~clinical_ner.serving.rest_json` reads and writes the JSON,
:mod:`~clinical_ner.serving.rest_server` speaks HTTP.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from clinical_ner.artifacts.saved_model import MAX_VERSION
from clinical_ner.serving.errors import RequestError
from clinical_ner.serving.rest_json import (
    columnar_inputs,
    parse_json,
    predict_body,
    row_inputs,
)
from clinical_ner.serving.service import ModelService
from clinical_ner.serving.validation import clip
from clinical_ner.serving.versions import Signature
from clinical_ner.export.signatures import SIGNATURE_DEF_METADATA
from clinical_ner.untrusted_json import json_kind

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


def _version_number(text: str | None, label: str | None) -> int | None:
    if label is not None:
        raise RequestError(
            grpc.StatusCode.UNIMPLEMENTED,
            "version labels are not supported by the development server; request a "
            "version number, or use TensorFlow Serving with version_labels in models.config",
        )
    if text is None:
        return None
    # Beyond int64 no version can exist (gRPC's version field cannot hold it); refused as
    # given, as TF Serving refuses it, where it was clipped and named so in the 404.
    if len(text) > 19 or int(text) > MAX_VERSION:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"version {clip(text)} is out of range: a version is at most "
                           f"{MAX_VERSION}")
    return int(text)


class RestApi:
    """Answers TF Serving REST requests for :class:`ModelService` (no sockets here)."""

    def __init__(self, service: ModelService) -> None:
        self._service = service

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body for one request (``path`` without the query)."""
        if not _API_PATH.fullmatch(path):
            # TF Serving's HTTP server has no handler outside /v1/.
            return 404, {"error": f"Not found: {clip(path)}"}
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
        request = parse_json(body)
        if not isinstance(request, dict):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request body must be a JSON object, got {json_kind(request)}",
            )
        signature_name = request.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"'signature_name' must be a string, got {json_kind(signature_name)}",
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
                return row_inputs(self._service.limits, name, signature, request["instances"])
            return columnar_inputs(self._service.limits, name, signature, request["inputs"])

        prediction = self._service.predict(model, number, signature_name, read, [], fields)
        return predict_body(row_format, prediction.outputs)

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
        number = _version_number(version, label)
        return _to_json(self._service.model_status(_model_name(model), number))


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

