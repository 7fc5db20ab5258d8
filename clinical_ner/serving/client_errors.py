"""The exceptions of the gRPC client (:mod:`clinical_ner.serving.client`), from gRPC statuses.

Their messages never contain document text: a server message that quotes a
request's text is withheld.
"""
from __future__ import annotations

import grpc

from clinical_ner.errors import ClinicalNERError, setting_name


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
    """The server refused the request's size (``RESOURCE_EXHAUSTED``, or the ``INVALID_ARGUMENT``
    of TF Serving's batching for more rows than its ``max_batch_size``); send smaller batches."""


class ServerUnavailableError(ServingError):
    """The server could not be reached before the retry deadline or retry count ran out."""

    exit_code = 5


class RequestTimeoutError(ServingError, TimeoutError):
    """The server accepted the request but did not answer within ``timeout``."""

    exit_code = 5


class TLSHandshakeError(ServingError):
    """The client and the server do not agree on TLS: a setting to change, not a server to
    wait for (a plaintext client of a TLS server, a CA that did not sign its certificate)."""

    exit_code = 2


_OTHER_HOST = ("the server's certificate does not name {host}: connect to a host name the "
               "certificate holds")
# What gRPC's UNAVAILABLE details (and Python's ssl errors, of the REST client) say of a TLS
# client's failed handshake, and what to do. Python's words for a certificate of another host
# come with CERTIFICATE_VERIFY_FAILED, so they are looked for first.
_HANDSHAKE_FAILURES = (
    ("WRONG_VERSION_NUMBER", "the server does not speak TLS: leave out {roots} (or serve "
                             "with a certificate)"),
    ("Hostname mismatch", _OTHER_HOST),
    ("IP address mismatch", _OTHER_HOST),
    ("CERTIFICATE_VERIFY_FAILED", "the server's certificate is not signed by a CA in {roots}: "
                                  "give the CA certificates that signed it"),
    ("Hostname Verification Check failed", _OTHER_HOST),
    ("Tls handshake failed", "check {roots} and the server's certificate"),
)


def handshake_refusal(details: str, roots: str, host: str) -> str | None:
    """``TLS handshake refused (MARKER); what to do`` for ``details`` that tell a failed
    handshake, else ``None``. ``roots``: the setting that gave the CA certificates;
    ``host``: the host connected to."""
    for marker, remedy in _HANDSHAKE_FAILURES:
        if marker in details:
            return (f"TLS handshake refused ({marker}); "
                    + remedy.format(roots=setting_name(roots), host=host))
    return None


def handshake_failure(call: str, target: str, details: str) -> TLSHandshakeError | None:
    """The error of a TLS client's ``call`` whose UNAVAILABLE ``details`` tell a failed
    handshake, which no retry mends; ``None`` for other details."""
    refusal = handshake_refusal(details, "root_certificates", target.rpartition(":")[0])
    if refusal is None:
        return None
    return TLSHandshakeError(f"{call} failed: {refusal}", grpc.StatusCode.UNAVAILABLE)


class NotGrpcError(ServingError):
    """The target answers, but not with gRPC (a REST port, another service): a target to
    change, not a server to wait for."""

    exit_code = 2


# What gRPC's UNAVAILABLE details say of a server that speaks HTTP/1 (a REST port): in
# plaintext, and over TLS (no HTTP/2 agreed in the handshake).
_NOT_GRPC = ("Failed parsing HTTP/2", "missing selected ALPN property")


def not_grpc(call: str, target: str, details: str) -> NotGrpcError | None:
    """The error of a ``call`` whose UNAVAILABLE ``details`` tell a server that does not
    speak gRPC (HTTP/2); ``None`` for other details."""
    if not any(marker in details for marker in _NOT_GRPC):
        return None
    return NotGrpcError(f"{call} failed: {target} does not speak gRPC (HTTP/2); is it a REST "
                        f"port? Give the server's gRPC port", grpc.StatusCode.UNAVAILABLE)


class UnknownHostError(ServingError):
    """The target's host name does not resolve (no such name): a target to correct, not a
    server to wait for."""

    exit_code = 2


# What gRPC's UNAVAILABLE details say of a host name the name servers do not know: c-ares's
# words, then getaddrinfo's (Linux, macOS). A name server that cannot be reached ("Temporary
# failure in name resolution", "Could not contact DNS servers") is retried.
_UNKNOWN_HOST = ("Domain name not found", "Name or service not known",
                 "nodename nor servname provided")


def unknown_host(call: str, target: str, details: str, *, setting: str = "target",
                 code: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE,
                 ) -> UnknownHostError | None:
    """The error of a ``call`` whose ``details`` (gRPC's UNAVAILABLE ones, or the resolver's
    words) tell that the host name of ``target`` (``host:port``) does not resolve; ``None``
    for other details. ``setting`` is the one that gave the host (the REST client's
    ``host``)."""
    for marker in _UNKNOWN_HOST:
        if marker in details:
            host = target.rpartition(':')[0]
            check = ("the host name of " if setting == "target" else "") + setting_name(setting)
            return UnknownHostError(
                f"{call} failed: host {host} does not resolve ({marker}); check {check}", code)
    return None


def plaintext_to_tls(call: str, target: str) -> TLSHandshakeError:
    """The error of a plaintext client's ``call`` to ``target``, a TLS server."""
    return TLSHandshakeError(
        f"{call} failed: {target} speaks TLS and this client does not; give "
        f"{setting_name('root_certificates')} (the CA certificates that verify the server)",
        grpc.StatusCode.UNAVAILABLE)


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


# How TF Serving's batching (--enable_batching) refuses a request of more rows than its
# max_batch_size: INVALID_ARGUMENT "Task size 100 is larger than maximum batch size 64"
# (tensorflow/core/kernels/batching_util). The request is too large, not malformed.
_BATCH_OVER_MAX_BATCH_SIZE = "is larger than maximum batch size"


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
    details = safe_details(error, quoted)
    error_class = _ERROR_CLASSES.get(code, ServingError)
    if code is grpc.StatusCode.INVALID_ARGUMENT and _BATCH_OVER_MAX_BATCH_SIZE in details:
        error_class = RequestTooLargeError
    message = f"{call} failed with {code.name}: {details}"
    if error_class not in (InvalidRequestError, RequestTooLargeError):
        rows = None
    return error_class(message, code, rows, items)
