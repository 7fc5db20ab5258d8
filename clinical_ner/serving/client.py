"""gRPC client for a clinical-ner model served by TensorFlow Serving.

It speaks the stock ``tensorflow.serving`` API, so it works the same against
the official ``tensorflow_model_server`` and against the development server
in :mod:`clinical_ner.serving.server`. Outputs are decoded by
:mod:`clinical_ner.export.signatures`, exactly as the in-process API decodes them.

Failures become exceptions derived from
:class:`~clinical_ner.serving.client_errors.ServingError` (importable from here
too). Their messages never contain document text: a server message that quotes
a document is withheld.

``ClinicalNerClient``, this class's name before 0.4.0, still works and warns.
"""
from __future__ import annotations

import logging
import random
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from clinical_ner.text.document import Entity
from clinical_ner.artifacts.saved_model import MAX_VERSION
from clinical_ner.errors import check_host_port, check_integer, check_seconds, setting_name
from clinical_ner.serving import defaults
from clinical_ner.serving.client_errors import (
    InvalidRequestError,
    ModelNotFoundError,
    NotGrpcError,
    RequestTimeoutError,
    RequestTooLargeError,
    ServerUnavailableError,
    ServingError,
    TLSHandshakeError,
    UnknownHostError,
    error_from_rpc,
    handshake_failure,
    not_grpc,
    plaintext_to_tls,
    safe_details,
    unknown_host,
)
from clinical_ner.serving.tls import read_pem, speaks_tls
from clinical_ner.serving.model_metadata import (
    ModelMetadata,
    SignatureInfo,
    TensorInfo,
    VersionStatus,
    enum_name,
    tensor_info,
)
from clinical_ner.export.signatures import (
    EMPTY_TOKEN_RULE,
    PAD_TOKEN,
    PREDICT_TOKENS,
    SERVING_DEFAULT,
    SIGNATURE_DEF_METADATA,
    TEXT,
    TOKENS,
    ModelOutputError,
    checked_texts,
    sentence_list,
    encode_text,
    entities_from_outputs,
    in_size_order_batches,
    padded_token_rows,
    tags_from_outputs,
)

__all__ = [
    "ServingClient", "ServingError", "ModelNotFoundError", "InvalidRequestError",
    "RequestTooLargeError", "ServerUnavailableError", "RequestTimeoutError", "TLSHandshakeError",
    "NotGrpcError", "UnknownHostError", "ModelMetadata",
    "SignatureInfo", "TensorInfo", "VersionStatus",
]

logger = logging.getLogger(__name__)

_INITIAL_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 2.0
_CHANNEL_OPTIONS = [
    # gRPC's defaults (1 s, growing to 120 s) would leave a client idle long
    # after a restarted server is back.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", int(_MAX_BACKOFF_S * 1000)),
]
# A connection can die silently (a network partition; a NAT or firewall that
# forgets it): no FIN, no RST. Without keepalive, gRPC keeps sending requests
# into it, each one timing out, for good. With it, a connection quiet for
# _KEEPALIVE_TIME_MS is pinged while a call waits on it, and a ping left
# unanswered for _PING_TIMEOUT_MS closes it: calls still waiting fail
# UNAVAILABLE (retried) and later ones reconnect. gRPC then also sets
# TCP_USER_TIMEOUT (20 s), which drops a connection whose sent data goes
# unacknowledged. Idle connections are not pinged, and at most 2 pings go out
# until the client sends data (grpc.http2.max_pings_without_data), which stays
# within the default ping policy of gRPC servers such as TensorFlow Serving
# (no GOAWAY "too_many_pings").
_KEEPALIVE_TIME_MS = 10_000
# gRPC's default, set because grpcio (1.85) enforces this timeout on keepalive
# pings, not grpc.keepalive_timeout_ms. Keep it long: a ping's answer queues
# behind the response bytes still in flight, so a short timeout cuts off slow
# but healthy clients receiving large responses.
_PING_TIMEOUT_MS = 60_000
# What a server's refusal says of a request that holds too many rows (the development
# server's --max-documents; TF Serving's max_batch_size, "larger than maximum batch size")
# or too many bytes (gRPC's message size limit, "larger than max"): smaller batches mend
# them all, longer documents none.
_TOO_LARGE_A_BATCH = ("per request", "larger than max")
# What gRPC's UNAVAILABLE details say of a connection the server ended without a word:
# a TLS server's answer to a plaintext client (gRPC's; the REST one of `serve`).
_CLOSED_UNANSWERED = ("Socket closed", "Connection reset by peer")
# The shortest wait for a model status asked after a request timed out. A connected server
# answers in milliseconds, but one loaded by the slow request itself (and a loaded host) may
# take longer than a short ``timeout``: waited for no longer, a slow answer passed for a
# connection still being made, and the request was sent, and run, again.
_STATUS_PROBE_S = 2.0


class ServingClient:
    """Annotate documents with a model behind TensorFlow Serving's gRPC API.

    ``version=None`` asks for the highest served version. ``timeout`` bounds
    each attempt (seconds); ``deadline`` bounds one request with all its
    retries. ``UNAVAILABLE`` answers, and timeouts before the server has
    answered this client at all (a connection that cannot be established:
    the server does not answer a status request either), are retried with
    exponential backoff until ``deadline`` or ``max_retries``; other failures
    raise at once, a timeout of a server that answers as
    :class:`RequestTimeoutError`. Lists larger than
    ``batch_size`` are sent as several requests (documents of similar length
    together), and a failed request retries only its own batch; results come
    back in the caller's order. ``root_certificates`` (a PEM path or PEM
    bytes) switches to TLS. ``target`` is ``host:port`` (``[::1]:8500`` for
    IPv6), checked before any connection: a bad one raises
    :class:`~clinical_ner.errors.ConfigError`.
    """

    def __init__(
        self,
        target: str,
        model_name: str,
        *,
        version: int | None = None,
        signature: str = SERVING_DEFAULT,
        timeout: float = defaults.TIMEOUT_S,
        batch_size: int = defaults.BATCH_DOCUMENTS,
        root_certificates: str | Path | bytes | None = None,
        max_retries: int = defaults.MAX_RETRIES,
        deadline: float = defaults.DEADLINE_S,
        max_message_bytes: int = defaults.MAX_MESSAGE_BYTES,
    ) -> None:
        check_host_port("target", target)
        check_integer("batch_size", batch_size)
        if version is not None:
            check_integer("version", version, maximum=MAX_VERSION)
        check_seconds("timeout", timeout, maximum=defaults.MAX_WAIT_S)
        check_seconds("deadline", deadline, maximum=defaults.MAX_WAIT_S)
        check_integer("max_retries", max_retries, minimum=0)
        check_integer("max_message_bytes", max_message_bytes,
                      maximum=defaults.MAX_GRPC_MESSAGE_BYTES)
        self.target = target
        self.model_name = model_name
        self.version = version
        self.signature = signature
        self.timeout = timeout
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.deadline = deadline
        self._tls = root_certificates is not None
        options = _CHANNEL_OPTIONS + [
            ("grpc.keepalive_time_ms", _KEEPALIVE_TIME_MS),
            ("grpc.http2.ping_timeout_ms", _PING_TIMEOUT_MS),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if root_certificates is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            if not isinstance(root_certificates, bytes):
                root_certificates = read_pem(root_certificates, "root_certificates",
                                             "the CA certificates")
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._predict_rpc = prediction.Predict
        self._metadata_rpc = prediction.GetModelMetadata
        self._status_rpc = model_service_pb2_grpc.ModelServiceStub(self._channel).GetModelStatus
        # Whether the server has answered since the last UNAVAILABLE. Until it
        # has, a deadline is taken as a connection that cannot be established
        # (retried) unless the server then answers a status request; after, as
        # a server too slow to answer (not retried). gRPC's connectivity
        # subscription would tell exactly, but its polling thread can raise
        # when the channel is closed under it.
        self._answered = False

    def annotate(self, texts: str | Sequence[str]) -> list[Entity] | list[list[Entity]]:
        """Entities of one document, or one entity list per document (in order)."""
        if isinstance(texts, str):
            return self._annotate_all([texts])[0]
        try:
            # As the in-process API checks them (bytes, None, a number, a list of bytes).
            texts = checked_texts(texts)
        except TypeError as error:
            raise InvalidRequestError(str(error)) from None
        return self._annotate_all(texts)

    def tag_tokens(
        self, sentences: Sequence[Sequence[str]]
    ) -> list[tuple[list[str], list[float]]]:
        """``(tags, confidences)`` for each pre-tokenized sentence, in order."""
        try:
            sentences = sentence_list(sentences)
        except TypeError as error:
            raise InvalidRequestError(str(error)) from None
        for row_index, tokens in enumerate(sentences):
            if isinstance(tokens, (str, bytes)):
                raise InvalidRequestError(f"sentence {row_index} is {type(tokens).__name__}, "
                                          "expected a list of tokens (str)")
        rows = [list(tokens) for tokens in sentences]
        for row_index, tokens in enumerate(rows):
            for token_index, token in enumerate(tokens):
                if not isinstance(token, str) or token == PAD_TOKEN:
                    raise InvalidRequestError(
                        f"sentence {row_index}, token {token_index}: {EMPTY_TOKEN_RULE}")
        encoded = [[encode_text(token) for token in tokens] for tokens in rows]
        return in_size_order_batches(
            list(zip(range(len(rows)), rows, encoded)), [len(tokens) for tokens in rows],
            self.batch_size, self._tag_batch,
        )

    def metadata(self) -> ModelMetadata:
        """The served signatures (``GetModelMetadata``) of the requested version."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=[SIGNATURE_DEF_METADATA]
        )
        self._fill_model_spec(request.model_spec)
        response = self._call("GetModelMetadata", self._metadata_rpc, request, [])
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        # Reading a missing key of a proto map adds an empty value, which unpacks to nothing:
        # no signatures, as if the model had none.
        if SIGNATURE_DEF_METADATA not in response.metadata or \
                not response.metadata[SIGNATURE_DEF_METADATA].Unpack(signature_defs):
            raise ServingError(
                f"GetModelMetadata to {self.target} answered without a '{SIGNATURE_DEF_METADATA}'"
                f" SignatureDefMap (metadata: {sorted(response.metadata)[:8]}); is the server "
                "a TensorFlow Serving model server?")
        return ModelMetadata(
            model_name=response.model_spec.name,
            version=response.model_spec.version.value,
            signatures={
                name: SignatureInfo(
                    method_name=signature.method_name,
                    inputs={key: tensor_info(info) for key, info in signature.inputs.items()},
                    outputs={key: tensor_info(info) for key, info in signature.outputs.items()},
                )
                for name, signature in signature_defs.signature_def.items()
                # The init op of TF2 SavedModels is listed too but cannot be called.
                if not name.startswith("__")
            },
        )

    def status(self) -> list[VersionStatus]:
        """State of each version the server knows (``GetModelStatus``)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_model_spec(request.model_spec)
        response = self._call("GetModelStatus", self._status_rpc, request, [])
        return [
            VersionStatus(
                version=status.version,
                state=enum_name(get_model_status_pb2.ModelVersionStatus.State, status.state,
                                "state"),
                error_message=status.status.error_message,
            )
            for status in response.model_version_status
        ]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------

    def _annotate_all(self, texts: list[str]) -> list[list[Entity]]:
        encoded = [encode_text(text) for text in texts]
        return in_size_order_batches(
            list(zip(range(len(texts)), texts, encoded)), [len(data) for data in encoded],
            self.batch_size, self._annotate_batch,
        )

    def _annotate_batch(self, batch: list[tuple[int, str, bytes]]) -> list[list[Entity]]:
        texts = [text for _, text, _ in batch]
        request = predict_pb2.PredictRequest()
        self._fill_model_spec(request.model_spec, self.signature)
        request.inputs[TEXT].CopyFrom(
            tf.make_tensor_proto([data for _, _, data in batch], dtype=tf.string,
                                 shape=[len(batch)])
        )
        response = self._call("Predict", self._predict_rpc, request, texts,
                              [index for index, _, _ in batch])
        return entities_from_outputs(texts, _arrays(response))

    def _tag_batch(
        self, batch: list[tuple[int, list[str], list[bytes]]]
    ) -> list[tuple[list[str], list[float]]]:
        padded = padded_token_rows([data for _, _, data in batch], PAD_TOKEN.encode())
        request = predict_pb2.PredictRequest()
        self._fill_model_spec(request.model_spec, PREDICT_TOKENS)
        request.inputs[TOKENS].CopyFrom(
            tf.make_tensor_proto(padded, dtype=tf.string, shape=[len(batch), len(padded[0])])
        )
        quoted = [token for _, tokens, _ in batch for token in tokens]
        response = self._call("Predict", self._predict_rpc, request, quoted,
                              [index for index, _, _ in batch], "sentences")
        results = tags_from_outputs(_arrays(response))
        for (_, tokens, _), (tags, _) in zip(batch, results):
            if len(tags) != len(tokens):
                # What TF Serving's batching does with pad_variable_length_inputs:
                # true, which pads rows with their first token instead of "".
                raise ModelOutputError(
                    f"a sentence of {len(tokens)} tokens came back with {len(tags)} tags; "
                    "is the server padding token batches? Keep pad_variable_length_inputs "
                    "false (serving/README.md)"
                )
        return results

    def _fill_model_spec(self, spec: Any, signature: str = "") -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version
        if signature:
            spec.signature_name = signature

    def _call(self, method: str, rpc: Callable[..., Any], request: Any, quoted: list[str],
              rows: list[int] | None = None, items: str = "documents") -> Any:
        """Send ``request``, retrying unreachable servers; map failures to exceptions.

        ``quoted`` are the request's texts, withheld from any error message;
        ``rows`` the caller's indices (of its ``items``) of the request's rows.
        """
        started = time.monotonic()
        backoff = _INITIAL_BACKOFF_S
        attempts = 0
        while True:
            remaining = self.deadline - (time.monotonic() - started)
            try:
                response = rpc(request, timeout=max(min(self.timeout, remaining), 1e-3))
            except grpc.RpcError as error:
                code = error.code()
                if code is grpc.StatusCode.UNAVAILABLE:
                    self._answered = False
                    details = safe_details(error, quoted)
                    refused = self._mismatch(f"{method} to {self.target}", details,
                                             self.deadline - (time.monotonic() - started))
                    if refused is not None:
                        raise refused from None
                    failure = f"UNAVAILABLE: {details}"
                    pause = backoff * random.uniform(0.5, 1.0)
                    backoff = min(backoff * 2, _MAX_BACKOFF_S)
                elif code is grpc.StatusCode.DEADLINE_EXCEEDED and not self._answered and \
                        not self._answers_status(self.deadline - (time.monotonic() - started)):
                    failure = "DEADLINE_EXCEEDED before the server answered (connecting?)"
                    # The attempt already waited its whole timeout.
                    pause = 0.0
                else:
                    # An error status is an answer (a deadline here comes after one, or
                    # from a server that answers: too slow, and sent again it would only
                    # run again).
                    self._answered = True
                    raise self._refused(error_from_rpc(f"{method} to {self.target}", error,
                                                       quoted, rows, items), items) from None
            else:
                self._answered = True
                return response
            attempts += 1
            remaining = self.deadline - (time.monotonic() - started)
            if attempts > self.max_retries or remaining <= pause:
                raise ServerUnavailableError(
                    f"{method} to {self.target} failed after {attempts} attempts in "
                    f"{time.monotonic() - started:.1f} s; last: {failure}",
                    grpc.StatusCode.UNAVAILABLE,
                )
            logger.warning(
                "%s to %s failed (%s); retry %d of %d in %.2f s",
                method, self.target, failure, attempts, self.max_retries, pause,
            )
            time.sleep(pause)

    def _refused(self, error: ServingError, items: str) -> ServingError:
        """``error``, told how to send fewer ``items`` per request if its batch was too large."""
        if not (isinstance(error, RequestTooLargeError) and error.rows and len(error.rows) > 1
                and any(marker in error.reason for marker in _TOO_LARGE_A_BATCH)):
            return error
        # The server's message names its own limit; this client's user sets the batch.
        return RequestTooLargeError(
            f"{error.reason}; lower {setting_name('batch_size')} (this client sends up to "
            f"{self.batch_size} {items} per request)", error.code, error.rows, items)

    def _mismatch(self, call: str, details: str,
                  remaining: float) -> TLSHandshakeError | NotGrpcError | UnknownHostError | None:
        """The error of an UNAVAILABLE ``call`` that failed for a host name that does not
        resolve, a TLS mismatch or a server that does not speak gRPC, else ``None``.

        Retried, a mismatch would only fail again until the deadline. A TLS
        server closes or resets a plaintext connection without a word, as a
        server shutting down may: such a server is asked for a handshake, within
        the ``remaining`` seconds of the deadline.
        """
        wrong_target = unknown_host(call, self.target, details) or \
            not_grpc(call, self.target, details)
        if wrong_target is not None:
            return wrong_target
        if self._tls:
            return handshake_failure(call, self.target, details)
        if remaining > 0 and any(marker in details for marker in _CLOSED_UNANSWERED) and \
                speaks_tls(self.target, min(self.timeout, defaults.TLS_PROBE_S, remaining)):
            return plaintext_to_tls(call, self.target)
        return None

    def _answers_status(self, remaining: float) -> bool:
        """Whether the server answers a ``GetModelStatus`` soon, within ``remaining`` seconds.

        Asked when a request's timeout passed before this client had any answer:
        a server that answers is connected and was slow, not a connection still
        being made (a client's first request, the command line's every one).
        """
        if remaining <= 0:
            return False
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_model_spec(request.model_spec)
        try:
            self._status_rpc(request, timeout=min(max(self.timeout, _STATUS_PROBE_S), remaining))
        except grpc.RpcError as error:
            # Any other status is an answer (NOT_FOUND; UNIMPLEMENTED without ModelService).
            return error.code() not in (grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.DEADLINE_EXCEEDED)
        return True


def _arrays(response: predict_pb2.PredictResponse) -> dict[str, Any]:
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def __getattr__(name: str) -> type:
    # The class's name before 0.4.0, kept for existing callers (CHANGELOG.md).
    if name == "ClinicalNerClient":
        warnings.warn("clinical_ner.serving.client.ClinicalNerClient is now ServingClient; "
                      "the old name will be removed", DeprecationWarning, stacklevel=2)
        return ServingClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
