"""The exceptions of the gRPC client (:mod:`clinical_ner.serving.client`), from gRPC statuses.

Their messages never contain document text: a server message that quotes a
request's text is withheld.
"""
from __future__ import annotations

import grpc

from clinical_ner.errors import ClinicalNERError


class ServingError(ClinicalNERError):
    """A request to the model server failed. ``code`` is the gRPC status, if any.

    ``rows``, for a request refused for what it holds, are the caller's indices
    (of its ``items``, documents or sentences) of the request's rows, in its
    order: a server message's ``document 1`` or ``element [1]`` is the caller's
    ``rows[1]``. The message says so where they differ (the client sends
    batches in size order); ``reason`` is the message without that note.
    """

    def __init__(self, message: str, code: grpc.StatusCode | None = None,
                 rows: list[int] | None = None, items: str = "documents") -> None:
        note = ""
        if rows is not None and rows != list(range(len(rows))):
            note = f" ({request_rows(len(rows), items)} are {items} {rows} of those given)"
        super().__init__(message + note)
        self.reason = message
        self.code = code
        self.rows = rows


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


def request_rows(count: int, items: str = "documents") -> str:
    """How a server numbers the ``count`` rows of one request: ``documents 0-3 of this request``."""
    if count == 1:
        return f"{items.rstrip('s')} 0 of this request"
    return f"{items} 0-{count - 1} of this request"


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


def error_from_rpc(call: str, error: grpc.RpcError, quoted: list[str],
                   rows: list[int] | None = None, items: str = "documents") -> ServingError:
    """The :class:`ServingError` subclass of ``error``'s status, its message safe to log.

    ``rows`` (of the caller's ``items``) are kept for the statuses that refuse
    what a request holds, whose messages may name its rows.
    """
    code = error.code()
    error_class = _ERROR_CLASSES.get(code, ServingError)
    message = f"{call} failed with {code.name}: {safe_details(error, quoted)}"
    if error_class not in (InvalidRequestError, RequestTooLargeError):
        rows = None
    return error_class(message, code, rows, items)
