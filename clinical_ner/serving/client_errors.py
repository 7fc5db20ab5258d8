"""The exceptions of the gRPC client (:mod:`clinical_ner.serving.client`), from gRPC statuses.

Their messages never contain document text: a server message that quotes a
request's text is withheld.
"""
from __future__ import annotations

import grpc

from clinical_ner.errors import ClinicalNERError


class ServingError(ClinicalNERError):
    """A request to the model server failed. ``code`` is the gRPC status, if any."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class ModelNotFoundError(ServingError):
    """The model, version or signature is not served.

    Raised for ``NOT_FOUND``, and for ``FAILED_PRECONDITION``, which stock
    TensorFlow Serving returns for an unknown signature.
    """

    exit_code = 4


class InvalidRequestError(ServingError, ValueError):
    """The request is malformed (``INVALID_ARGUMENT``, or caught before sending)."""


class RequestTooLargeError(ServingError):
    """The server refused the request's size (``RESOURCE_EXHAUSTED``); send smaller batches."""


class ServerUnavailableError(ServingError):
    """The server could not be reached before the retry deadline or retry count ran out."""

    exit_code = 5


class RequestTimeoutError(ServingError, TimeoutError):
    """The server accepted the request but did not answer within ``timeout``."""

    exit_code = 5


_ERROR_CLASSES = {
    grpc.StatusCode.NOT_FOUND: ModelNotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: ModelNotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RequestTooLargeError,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimeoutError,
}


def safe_details(error: grpc.RpcError, quoted: list[str]) -> str:
    """The server's message of ``error``, withheld if it quotes one of the ``quoted`` texts."""
    details = error.details() or ""
    # Long texts are often quoted truncated, so look for their beginning.
    if any(len(text) >= 4 and text[:32] in details for text in quoted):
        return "(server message withheld: it quoted request text)"
    return details


def error_from_rpc(call: str, error: grpc.RpcError, quoted: list[str]) -> ServingError:
    """The :class:`ServingError` subclass of ``error``'s status, its message safe to log."""
    code = error.code()
    error_class = _ERROR_CLASSES.get(code, ServingError)
    return error_class(f"{call} failed with {code.name}: {safe_details(error, quoted)}", code)
