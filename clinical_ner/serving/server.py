"""A development stand-in for ``tensorflow_model_server``.

Production runs the official TensorFlow Serving binary (or the
``tensorflow/serving`` Docker image, see ``serving/README.md``). That binary
cannot be installed everywhere (no PyPI or Debian package), so this module
serves the same ``tensorflow.serving`` gRPC API with the stock servicer
classes and protos from ``tensorflow-serving-api``: clients cannot tell the
two apart for ``Predict``, ``GetModelMetadata`` and ``GetModelStatus``. It is
meant for development, tests and demos.

Behaviour, and where it differs from TF Serving:

* Versions are the directories under the base path named by a positive
  integer that hold a ``saved_model.pb``. Every such version is loaded (like
  ``model_version_policy { all {} }``); requests without a version get the
  highest. The base path is polled, so versions appear and disappear without
  a restart. A version that fails to load is retried when its
  ``saved_model.pb`` changes.
* ``model_spec.version_label`` answers ``UNIMPLEMENTED``: this server has no
  label configuration. (TF Serving answers ``INVALID_ARGUMENT`` for a label
  its config does not define.)
* An unknown signature is ``NOT_FOUND`` (TF Serving: ``FAILED_PRECONDITION``).
* Only signatures whose inputs are all ``DT_STRING`` batches (rank >= 1)
  are served: all this package's signatures take text. Each string must be
  valid UTF-8, and the number of values must equal the number of elements of
  the shape (TF would repeat the last value).
* Requests that wait for the model together are merged into calls of at
  most ``--max-batch-documents`` rows (32) and the outputs split by
  request, as TF Serving's batching does (so outputs keep the merged call's
  padded width); a request that finds the model free never waits for
  others. A merged call that fails is rerun request by request, so one bad
  request fails alone (TF Serving fails the whole batch).
* Requests are limited in documents (rows of the first input dimension) and
  in characters per document; a document of tokens counts as its tokens
  joined by single spaces. Oversized requests get ``RESOURCE_EXHAUSTED``.
* Error messages and logs never contain request text: model errors are
  reported by type only, since TensorFlow messages may quote tensor values.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from clinical_ner.errors import ConfigError
from clinical_ner.export import existing_versions
from clinical_ner.signatures import SERVING_DEFAULT, SIGNATURE_DEF_METADATA

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8500
DEFAULT_MAX_WORKERS = 8
DEFAULT_POLL_INTERVAL_S = 1.0
# Matches max_batch_size in serving/batching_parameters.txt, so that what
# works here also works against TensorFlow Serving with batching.
DEFAULT_MAX_DOCUMENTS = 64
DEFAULT_MAX_DOCUMENT_CHARS = 100_000
# ClinicalNerClient's batch size: smaller requests are merged up to it, full
# ones run as they are, so merging never makes a call larger, or its memory
# higher, than a full request's.
DEFAULT_MAX_BATCH_DOCUMENTS = 32
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_GRACE_S = 10.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Letters, digits, "_", "-" and "."; starting with a letter or digit rules
# out "." and "..", so a name can never walk out of a directory.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

_State = get_model_status_pb2.ModelVersionStatus.State
# TensorFlow's error codes are numerically gRPC's.
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _RequestError(Exception):
    """A request failed with a gRPC status; the message is safe to send and log."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Signature:
    function: Any  # the restored ConcreteFunction
    inputs: dict[str, tf.TensorSpec]


@dataclass(frozen=True)
class _Version:
    number: int
    signatures: dict[str, _Signature]
    signature_defs: get_model_metadata_pb2.SignatureDefMap
    # The restored object owns the variables the functions read.
    restored: Any


@dataclass(frozen=True)
class _VersionState:
    state: int
    error_code: int = 0
    error_message: str = ""


def _load_version(number: int, path: Path) -> _Version:
    restored = tf.saved_model.load(str(path))
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    meta_graph = next(
        (
            graph
            for graph in saved_model.meta_graphs
            if tf.saved_model.SERVING in graph.meta_info_def.tags
        ),
        None,
    )
    if meta_graph is None:
        raise ValueError(f"no MetaGraph tagged '{tf.saved_model.SERVING}'")
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in meta_graph.signature_def.items():
        signature_defs.signature_def[name].CopyFrom(signature_def)
    signatures = {}
    for name, function in restored.signatures.items():
        inputs = dict(function.structured_input_signature[1])
        if not inputs or any(
            spec.dtype != tf.string or not spec.shape.rank for spec in inputs.values()
        ):
            logger.warning(
                "Version %d: signature %r is not served: this development server serves "
                "signatures whose inputs are all DT_STRING batches (rank >= 1)",
                number,
                name,
            )
            continue
        signatures[name] = _Signature(function=function, inputs=inputs)
    return _Version(number, signatures, signature_defs, restored)


class _ModelVersions:
    """The loaded versions of one model, kept in step with its base path."""

    def __init__(self, base_path: Path, model_name: str) -> None:
        self._base_path = base_path
        self._model_name = model_name
        self._lock = threading.Lock()
        self._loaded: dict[int, _Version] = {}
        self._states: dict[int, _VersionState] = {}
        # version -> mtime of the saved_model.pb whose load failed
        self._failed: dict[int, int] = {}

    def poll(self) -> None:
        """Load new versions and unload the ones whose directory is gone."""
        on_disk = set(existing_versions(self._base_path))
        with self._lock:
            gone = set(self._loaded) - on_disk
            for number in gone:
                del self._loaded[number]
                self._states[number] = _VersionState(_State.END)
        for number in sorted(gone):
            logger.info(
                "Unloaded version %d of %r: its directory is gone", number, self._model_name
            )
        for number in set(self._failed) - on_disk:
            del self._failed[number]
        # Newest first, so that it serves as soon as possible.
        for number in sorted(on_disk - set(self._loaded), reverse=True):
            self._load(number)

    def _load(self, number: int) -> None:
        path = self._base_path / str(number)
        try:
            mtime = (path / "saved_model.pb").stat().st_mtime_ns
        except FileNotFoundError:
            return
        if self._failed.get(number) == mtime:
            return
        with self._lock:
            self._states[number] = _VersionState(_State.LOADING)
        started = time.perf_counter()
        try:
            version = _load_version(number, path)
        except Exception as error:  # a broken export must not stop the server
            self._failed[number] = mtime
            message = f"loading {path} failed: {type(error).__name__}: {error}"
            logger.error("Version %d of %r: %s", number, self._model_name, message)
            with self._lock:
                self._states[number] = _VersionState(
                    _State.END, grpc.StatusCode.UNKNOWN.value[0], message
                )
            return
        self._failed.pop(number, None)
        with self._lock:
            self._loaded[number] = version
            self._states[number] = _VersionState(_State.AVAILABLE)
        logger.info(
            "Loaded version %d of %r in %.2f s, signatures %s",
            number,
            self._model_name,
            time.perf_counter() - started,
            sorted(version.signatures),
        )

    def numbers(self) -> list[int]:
        with self._lock:
            return sorted(self._loaded)

    def get(self, number: int | None) -> _Version:
        """The requested version (the highest if ``None``), or NOT_FOUND."""
        with self._lock:
            loaded = dict(self._loaded)
        if not loaded:
            raise _RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"no version of model '{self._model_name}' is loaded; a version is a "
                f"directory named by a number with a saved_model.pb under {self._base_path}",
            )
        if number is None:
            return loaded[max(loaded)]
        if number not in loaded:
            raise _RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"version {number} of model '{self._model_name}' is not loaded; "
                f"loaded versions: {sorted(loaded)}",
            )
        return loaded[number]

    def states(self) -> dict[int, _VersionState]:
        with self._lock:
            return dict(self._states)


class _Stats:
    """Request counts per method and status code, and recent latencies per method."""

    # Latency percentiles cover the most recent requests, in bounded memory.
    _RECENT = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.latency_s: dict[str, deque[float]] = {}

    def record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        with self._lock:
            self.counts[method, code.name] += 1
            self.latency_s.setdefault(method, deque(maxlen=self._RECENT)).append(seconds)

    def summary(self) -> str:
        with self._lock:
            if not self.counts:
                return "no requests"
            parts = []
            for method, latencies in sorted(self.latency_s.items()):
                codes = ", ".join(
                    f"{code} {count}"
                    for (name, code), count in sorted(self.counts.items())
                    if name == method
                )
                parts.append(
                    f"{method}: {codes}; latency p50 {np.median(latencies) * 1e3:.1f} ms, "
                    f"max {max(latencies) * 1e3:.1f} ms"
                )
            return "; ".join(parts)


@dataclass(eq=False)
class _QueuedCall:
    """One request's inputs waiting for a model call, and what the call gave it."""

    inputs: dict[str, np.ndarray]
    documents: int
    taken: bool = False  # by a model call, its own or another request's
    finished: bool = False
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    batch_documents: int = 0


class _Batcher:
    """Runs signatures in at most ``max_concurrent_calls`` model calls at once.

    Requests that wait for a call while every slot is busy are merged, as
    TensorFlow Serving's batching merges them: requests for the same
    signature function whose inputs have the same shape after the first
    dimension queue together, and a waiting request that gets the next slot
    runs the queue (first come first served, up to ``max_batch_documents``
    rows; a larger request runs alone) as one call and splits the outputs
    along the first dimension, so they keep the merged call's padded width.
    A request that finds a free slot runs at once: nothing waits for a batch
    to fill. Slots go to the oldest waiting request, whatever its signature,
    and a request taken into another's call only waits for that call, never
    runs a further one, so its answer leaves as soon as it is ready.
    Fewer, larger calls are what makes it worth it: the model's time loops
    cost about the same per step for one sentence as for thirty.
    """

    def __init__(self, max_concurrent_calls: int, max_batch_documents: int) -> None:
        # Each model call running at once holds its own intermediate tensors and
        # warms per-thread kernel caches, so calls beyond the cores the CPU
        # kernels can use add memory without adding throughput.
        self._free_slots = max_concurrent_calls
        self._max_batch_documents = max_batch_documents
        self._lock = threading.Lock()
        # Signalled when a slot is freed (which is when calls finish) and when
        # the oldest waiting request changes.
        self._turn = threading.Condition(self._lock)
        self._queues: dict[tuple, deque[_QueuedCall]] = {}
        self._waiting: deque[_QueuedCall] = deque()  # not taken yet, oldest first

    def run(self, function: Callable[..., Any], inputs: dict[str, np.ndarray]) -> _QueuedCall:
        """Call ``function`` on ``inputs`` (alone or merged); raises what the call raised."""
        call = _QueuedCall(inputs, next(iter(inputs.values())).shape[0])
        # The function object is held by the call, so its id stays unique.
        key = (id(function),) + tuple(
            (name, value.shape[1:]) for name, value in sorted(inputs.items())
        )
        with self._lock:
            self._queues.setdefault(key, deque()).append(call)
            self._waiting.append(call)
        while True:
            with self._turn:
                while not call.finished and (
                    call.taken or self._free_slots == 0 or self._waiting[0] is not call
                ):
                    self._turn.wait()
                if call.finished:
                    break
                self._free_slots -= 1
                batch = self._take(key)
                self._turn.notify_all()
            try:
                self._run_batch(function, batch)
            finally:
                with self._turn:
                    self._free_slots += 1
                    self._turn.notify_all()
        if call.error is not None:
            raise call.error
        return call

    def _take(self, key: tuple) -> list[_QueuedCall]:
        """The next batch of ``key``'s queue (never empty); the lock is held."""
        queue = self._queues[key]
        batch: list[_QueuedCall] = []
        documents = 0
        while queue and (
            not batch or documents + queue[0].documents <= self._max_batch_documents
        ):
            call = queue.popleft()
            call.taken = True
            self._waiting.remove(call)
            batch.append(call)
            documents += call.documents
        if not queue:
            del self._queues[key]
        return batch

    def _run_batch(self, function: Callable[..., Any], batch: list[_QueuedCall]) -> None:
        if len(batch) == 1:
            self._run_alone(function, batch[0])
            return
        sizes = [call.documents for call in batch]
        total = sum(sizes)
        try:
            outputs = _call_signature(function, {
                name: np.concatenate([call.inputs[name] for call in batch])
                for name in batch[0].inputs
            })
            if any(value.ndim == 0 or value.shape[0] != total for value in outputs.values()):
                raise _NotBatchMajor()
            boundaries = np.cumsum(sizes)[:-1]
            parts = {name: np.split(value, boundaries) for name, value in outputs.items()}
        except (tf.errors.OpError, _NotBatchMajor):
            # One request's failure must not fail the others, and outputs that
            # are not one row per document cannot be split: each runs alone.
            for call in batch:
                self._run_alone(function, call)
            return
        except Exception as error:  # a bug: every request of the batch gets it
            for call in batch:
                call.error = error
                call.finished = True
            return
        for index, call in enumerate(batch):
            call.outputs = {name: pieces[index] for name, pieces in parts.items()}
            call.batch_documents = total
            call.finished = True

    @staticmethod
    def _run_alone(function: Callable[..., Any], call: _QueuedCall) -> None:
        try:
            call.outputs = _call_signature(function, call.inputs)
            call.batch_documents = call.documents
        except Exception as error:
            call.error = error
        finally:
            call.finished = True


class _NotBatchMajor(Exception):
    """A merged call's outputs do not have one row per document."""


def _call_signature(
    function: Callable[..., Any], inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    outputs = function(
        **{name: tf.constant(value, dtype=tf.string) for name, value in inputs.items()}
    )
    return {name: np.asarray(value) for name, value in outputs.items()}


class _Handler:
    """Request validation and execution, shared by both gRPC services."""

    def __init__(
        self,
        versions: _ModelVersions,
        model_name: str,
        max_documents: int,
        max_document_chars: int,
        max_concurrent_calls: int,
        max_batch_documents: int,
    ) -> None:
        self._versions = versions
        self._model_name = model_name
        self._max_documents = max_documents
        self._max_document_chars = max_document_chars
        self._batcher = _Batcher(max_concurrent_calls, max_batch_documents)
        self.draining = threading.Event()
        self.stats = _Stats()

    def call(
        self,
        method: str,
        handle: Callable[[Any, dict[str, Any]], Any],
        request: Any,
        context: grpc.ServicerContext,
    ) -> Any:
        """Run ``handle``, turning failures into gRPC statuses; log and count the request."""
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        response = None
        if self.draining.is_set():
            code, message = grpc.StatusCode.UNAVAILABLE, "the server is shutting down"
        else:
            try:
                response = handle(request, fields)
                code, message = grpc.StatusCode.OK, ""
            except _RequestError as error:
                code, message = error.code, error.message
            except Exception as error:  # an unexpected bug must not end the server
                code = grpc.StatusCode.INTERNAL
                message = f"internal error ({type(error).__name__}); see the server log"
                # The exception's message is withheld: it could quote request data.
                logger.error(
                    "%s failed with %s (message withheld)\n%s",
                    method,
                    type(error).__name__,
                    "".join(traceback.format_tb(error.__traceback__)),
                )
        elapsed = time.perf_counter() - started
        self.stats.record(method, code, elapsed)
        logger.debug(
            "%s %s %.2f ms %s",
            method,
            code.name,
            elapsed * 1e3,
            " ".join(f"{key}={value}" for key, value in fields.items()),
        )
        if code is not grpc.StatusCode.OK:
            context.abort(code, message)
        return response

    # -- model spec ---------------------------------------------------------

    def _check_model_spec(self, request: Any) -> None:
        if not request.HasField("model_spec"):
            raise _RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        if not MODEL_NAME_PATTERN.fullmatch(spec.name):
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "model_spec.name is empty or invalid: use 1-128 letters, digits, '_', '-' "
                f"or '.', starting with a letter or digit; this server serves '{self._model_name}'",
            )
        if spec.name != self._model_name:
            raise _RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"model '{spec.name}' not found; this server serves '{self._model_name}'",
            )

    def _version_for(self, request: Any) -> _Version:
        self._check_model_spec(request)
        return self._versions.get(_requested_version(request.model_spec))

    # -- PredictionService ----------------------------------------------------

    def predict(self, request: predict_pb2.PredictRequest, fields: dict[str, Any]) -> Any:
        version = self._version_for(request)
        signature_name = request.model_spec.signature_name or SERVING_DEFAULT
        fields.update(version=version.number, signature=signature_name)
        signature = version.signatures.get(signature_name)
        if signature is None:
            raise _RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"signature '{_clip(signature_name)}' not found in version {version.number}; "
                f"signatures: {sorted(version.signatures)}",
            )
        inputs = self._read_inputs(signature_name, signature, request)
        fields["documents"] = next(iter(inputs.values())).shape[0]
        try:
            call = self._batcher.run(signature.function, inputs)
        except tf.errors.OpError as error:
            logger.error(
                "Signature %r of version %d failed with %s (message withheld)",
                signature_name,
                version.number,
                type(error).__name__,
            )
            raise _RequestError(
                _GRPC_CODES.get(error.error_code, grpc.StatusCode.INTERNAL),
                f"signature '{signature_name}' failed with {type(error).__name__}; the "
                "TensorFlow message is withheld because it may quote the input",
            ) from None
        outputs = call.outputs
        fields["batch_documents"] = call.batch_documents
        wanted = list(request.output_filter) or sorted(outputs)
        unknown = sorted(set(wanted) - set(outputs))
        if unknown:
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output_filter names unknown outputs {unknown}; "
                f"signature '{signature_name}' has outputs {sorted(outputs)}",
            )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self._model_name
        response.model_spec.version.value = version.number
        response.model_spec.signature_name = signature_name
        for name in wanted:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
        return response

    def _read_inputs(
        self, signature_name: str, signature: _Signature, request: predict_pb2.PredictRequest
    ) -> dict[str, np.ndarray]:
        expected = signature.inputs
        if set(request.inputs) != set(expected):
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"signature '{signature_name}' takes inputs {_describe(expected)}; "
                f"missing {sorted(set(expected) - set(request.inputs))}, "
                f"unexpected {sorted(_clip(name) for name in set(request.inputs) - set(expected))}",
            )
        return {
            name: self._read_string_tensor(name, expected[name], request.inputs[name])
            for name in sorted(expected)
        }

    def _read_string_tensor(self, name: str, spec: tf.TensorSpec, proto: Any) -> np.ndarray:
        wanted = f"DT_STRING {_shape_text(spec.shape)}"
        if proto.dtype != types_pb2.DT_STRING:
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' must be {wanted}, got {types_pb2.DataType.Name(proto.dtype)}",
            )
        dims = [dim.size for dim in proto.tensor_shape.dim]
        if (
            proto.tensor_shape.unknown_rank
            or len(dims) != spec.shape.rank
            or any(size < 0 for size in dims)
            or any(want is not None and want != size for want, size in zip(spec.shape, dims))
        ):
            shown = "unknown" if proto.tensor_shape.unknown_rank else str(dims)
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' must be {wanted}, got shape {shown}",
            )
        if dims and dims[0] == 0:
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' is an empty batch; send at least one document",
            )
        if dims and dims[0] > self._max_documents:
            raise _RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"input '{name}' has {dims[0]} documents; the limit is {self._max_documents} "
                "per request (--max-documents); split the batch",
            )
        if proto.tensor_content or len(proto.string_val) != math.prod(dims):
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' has shape {dims} ({math.prod(dims)} elements) but "
                f"{len(proto.string_val)} string values",
            )
        array = np.empty(len(proto.string_val), dtype=object)
        chars = np.empty(len(proto.string_val), dtype=np.int64)
        for index, value in enumerate(proto.string_val):
            try:
                chars[index] = len(value.decode("utf-8"))
            except UnicodeDecodeError as error:
                position = [int(i) for i in np.unravel_index(index, dims)]
                raise _RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{name}' element {position} is not valid UTF-8 "
                    f"(byte offset {error.start})",
                ) from None
            array[index] = value
        # A document is one row; its strings count as joined by single spaces,
        # so a row of one string counts exactly its characters.
        per_row = chars.reshape(dims[0], math.prod(dims[1:]))
        sizes = per_row.sum(axis=1) + max(per_row.shape[1] - 1, 0)
        too_long = np.flatnonzero(sizes > self._max_document_chars)
        if too_long.size:
            row = int(too_long[0])
            raise _RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"input '{name}' document {row} has {int(sizes[row])} characters; the limit "
                f"is {self._max_document_chars} per document (--max-document-chars)",
            )
        return array.reshape(dims)

    def get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, fields: dict[str, Any]
    ) -> Any:
        version = self._version_for(request)
        fields["version"] = version.number
        if not request.metadata_field:
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field; "
                f"supported: '{SIGNATURE_DEF_METADATA}'",
            )
        unsupported = sorted(set(request.metadata_field) - {SIGNATURE_DEF_METADATA})
        if unsupported:
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata fields {[_clip(field) for field in unsupported]} are not "
                f"supported; supported: '{SIGNATURE_DEF_METADATA}'",
            )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self._model_name
        response.model_spec.version.value = version.number
        response.metadata[SIGNATURE_DEF_METADATA].Pack(version.signature_defs)
        return response

    # -- ModelService -------------------------------------------------------

    def get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest, fields: dict[str, Any]
    ) -> Any:
        # Not _version_for: the status also reports versions that are not loaded.
        self._check_model_spec(request)
        states = self._versions.states()
        number = _requested_version(request.model_spec)
        if number is not None:
            states = {number: states[number]} if number in states else {}
        if not states:
            raise _RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"Could not find any versions of model '{self._model_name}'"
                + (f" with version {number}" if number is not None else ""),
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        for version_number, state in sorted(states.items()):
            status = response.model_version_status.add()
            status.version = version_number
            status.state = state.state
            status.status.error_code = state.error_code
            status.status.error_message = state.error_message
        return response


def _requested_version(spec: Any) -> int | None:
    choice = spec.WhichOneof("version_choice")
    if choice == "version_label":
        raise _RequestError(
            grpc.StatusCode.UNIMPLEMENTED,
            "version labels are not supported by the development server; request a "
            "version number, or use TensorFlow Serving with version_labels in models.config",
        )
    return spec.version.value if choice == "version" else None


def _describe(specs: dict[str, tf.TensorSpec]) -> str:
    return ", ".join(
        f"'{name}' DT_STRING {_shape_text(spec.shape)}" for name, spec in sorted(specs.items())
    )


def _shape_text(shape: tf.TensorShape) -> str:
    return "[" + ", ".join("-1" if size is None else str(size) for size in shape) + "]"


def _clip(name: str) -> str:
    # Names come from the client; keep a log-safe, bounded form.
    return name[:64]


class _PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, handler: _Handler) -> None:
        self._handler = handler

    def Predict(self, request, context):  # noqa: N802 (gRPC method names)
        return self._handler.call("Predict", self._handler.predict, request, context)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._handler.call(
            "GetModelMetadata", self._handler.get_model_metadata, request, context
        )

    def Classify(self, request, context):  # noqa: N802
        _unimplemented("Classify", context)

    def Regress(self, request, context):  # noqa: N802
        _unimplemented("Regress", context)

    def MultiInference(self, request, context):  # noqa: N802
        _unimplemented("MultiInference", context)


class _ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, handler: _Handler) -> None:
        self._handler = handler

    def GetModelStatus(self, request, context):  # noqa: N802
        return self._handler.call(
            "GetModelStatus", self._handler.get_model_status, request, context
        )

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        _unimplemented("HandleReloadConfigRequest", context)


def _unimplemented(method: str, context: grpc.ServicerContext) -> None:
    context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{method} is not implemented by the clinical-ner development server; use Predict",
    )


class ModelServer:
    """Serve the versions of one SavedModel over TensorFlow Serving's gRPC API.

    ``port=0`` binds a free port; read it from :attr:`bound_port` after
    :meth:`start`. With ``ssl_cert`` and ``ssl_key`` (PEM files) the port
    speaks TLS. ``max_message_bytes`` is gRPC's receive limit, so larger
    messages are refused with ``RESOURCE_EXHAUSTED`` before being parsed.
    Of the ``max_workers`` requests handled at once, at most
    ``max_concurrent_calls`` run the model at the same time (default: the
    number of CPUs this process may use); the others wait for a turn.
    Requests that wait together are merged into model calls of at most
    ``max_batch_documents`` rows, as TensorFlow Serving's batching does; 1
    runs every request on its own.
    """

    def __init__(
        self,
        base_path: str | Path,
        model_name: str,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_concurrent_calls: int | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        max_documents: int = DEFAULT_MAX_DOCUMENTS,
        max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        ssl_cert: str | Path | None = None,
        ssl_key: str | Path | None = None,
        max_batch_documents: int = DEFAULT_MAX_BATCH_DOCUMENTS,
    ) -> None:
        if not MODEL_NAME_PATTERN.fullmatch(model_name):
            raise ConfigError(
                f"invalid model name {model_name[:64]!r}: use 1-128 letters, digits, '_', "
                "'-' or '.', starting with a letter or digit"
            )
        self.base_path = Path(base_path)
        if not self.base_path.is_dir():
            raise ConfigError(f"model base path {self.base_path} is not a directory")
        if max_concurrent_calls is None:
            max_concurrent_calls = len(os.sched_getaffinity(0))
        for option, value in (
            ("max_workers", max_workers),
            ("max_concurrent_calls", max_concurrent_calls),
            ("max_documents", max_documents),
            ("max_batch_documents", max_batch_documents),
            ("max_document_chars", max_document_chars),
            ("max_message_bytes", max_message_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{option} must be a positive integer, got {value!r}")
        if not poll_interval_s > 0:
            raise ConfigError(f"poll_interval_s must be positive, got {poll_interval_s!r}")
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {port}")
        if (ssl_cert is None) != (ssl_key is None):
            raise ConfigError("TLS needs both ssl_cert and ssl_key")
        self.model_name = model_name
        self.host = host
        self.port = port
        self._max_workers = max_workers
        self._poll_interval_s = poll_interval_s
        self._max_message_bytes = max_message_bytes
        self._credentials = None
        if ssl_cert is not None:
            self._credentials = grpc.ssl_server_credentials(
                [(Path(ssl_key).read_bytes(), Path(ssl_cert).read_bytes())]
            )
        self._versions = _ModelVersions(self.base_path, model_name)
        self._handler = _Handler(
            self._versions, model_name, max_documents, max_document_chars, max_concurrent_calls,
            max_batch_documents,
        )
        self._server: grpc.Server | None = None
        self._stop_polling = threading.Event()
        self._poller: threading.Thread | None = None
        self.bound_port: int | None = None

    @property
    def versions(self) -> list[int]:
        """The versions loaded now."""
        return self._versions.numbers()

    def start(self) -> None:
        """Load the versions present now, then listen. Returns once serving."""
        self._versions.poll()
        if not self._versions.numbers():
            logger.warning(
                "No loadable version under %s yet; requests get NOT_FOUND until one appears",
                self.base_path,
            )
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="clinical-ner-serve"
            ),
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                # Otherwise a second server could bind the same port and steal requests.
                ("grpc.so_reuseport", 0),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionServicer(self._handler), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            _ModelServicer(self._handler), server
        )
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            if self._credentials is None:
                self.bound_port = server.add_insecure_port(address)
            else:
                self.bound_port = server.add_secure_port(address, self._credentials)
        except RuntimeError as error:
            raise ConfigError(f"could not listen on {address} (in use?): {error}") from None
        server.start()
        self._server = server
        if self._credentials is None and self.host not in _LOOPBACK_HOSTS:
            logger.warning(
                "Listening on %s without TLS: clinical text crosses the network in clear; "
                "use --ssl-cert and --ssl-key",
                self.host,
            )
        self._poller = threading.Thread(
            target=self._poll_loop, name="clinical-ner-model-poller", daemon=True
        )
        self._poller.start()
        logger.info(
            "Serving model %r (versions %s) on %s:%d%s",
            self.model_name,
            self._versions.numbers(),
            self.host,
            self.bound_port,
            " with TLS" if self._credentials else "",
        )

    def _poll_loop(self) -> None:
        while not self._stop_polling.wait(self._poll_interval_s):
            try:
                self._versions.poll()
            except Exception:  # e.g. the base path vanished; keep serving what is loaded
                logger.exception("Polling %s failed", self.base_path)

    def stop(self, grace: float | None = DEFAULT_GRACE_S) -> None:
        """Refuse new requests (UNAVAILABLE), let in-flight ones finish for up to ``grace`` s."""
        self._handler.draining.set()
        self._stop_polling.set()
        if self._server is not None:
            self._server.stop(grace).wait()
        if self._poller is not None:
            self._poller.join()
        logger.info("Stopped. Requests served: %s", self._handler.stats.summary())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; False if ``timeout`` passed first."""
        if self._server is None:
            raise RuntimeError("the server was not started")
        # gRPC returns True when the timeout passed.
        return not self._server.wait_for_termination(timeout)

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


SERVE_DESCRIPTION = """\
Serve a SavedModel base path over TensorFlow Serving's gRPC API
(tensorflow.serving.PredictionService and ModelService).

This server exists for development and tests. Production uses the official
TensorFlow Serving binary (tensorflow_model_server) or the tensorflow/serving
Docker image with the files in serving/ (see serving/README.md); clients such
as `clinical-ner client` work unchanged against both.

MODEL_BASE_PATH holds numbered version directories (1/, 2/, ...), as written
by the export step. Every version is loaded, new ones are picked up while
running, and requests without a version get the highest. SIGTERM or SIGINT
stops accepting requests and lets in-flight ones finish.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``clinical-ner serve``."""
    parser.add_argument("model_base_path", metavar="MODEL_BASE_PATH", type=Path)
    add = parser.add_argument
    add("--model-name", default="clinical_ner",
        help="name clients put in model_spec.name (default: %(default)s)")
    add("--host", default="127.0.0.1",
        help="address to listen on; 0.0.0.0 for all interfaces (default: %(default)s)")
    add("--port", type=int, default=DEFAULT_PORT,
        help="gRPC port, 0 for any free port (default: %(default)s)")
    add("--ssl-cert", type=Path, help="PEM certificate chain; with --ssl-key, enables TLS")
    add("--ssl-key", type=Path, help="PEM private key of --ssl-cert")
    add("--max-documents", type=int, default=DEFAULT_MAX_DOCUMENTS,
        help="most documents (batch rows) per request (default: %(default)s)")
    add("--max-document-chars", type=int, default=DEFAULT_MAX_DOCUMENT_CHARS,
        help="most characters per document (default: %(default)s)")
    add("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
        help="largest request message accepted (default: %(default)s)")
    add("--max-workers", type=int, default=DEFAULT_MAX_WORKERS,
        help="requests served at once (default: %(default)s)")
    add("--max-concurrent-calls", type=int, default=None, metavar="N",
        help="of those, how many run the model at the same time; more use more memory "
             "without more throughput once the CPUs are busy (default: the number of CPUs)")
    add("--max-batch-documents", type=int, default=DEFAULT_MAX_BATCH_DOCUMENTS, metavar="N",
        help="requests that wait for the model together are merged into calls of at most N "
             "documents; 1 runs every request on its own (default: %(default)s)")
    add("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL_S, metavar="SECONDS",
        help="how often to look for new or removed versions (default: %(default)s)")
    add("--grace", type=float, default=DEFAULT_GRACE_S, metavar="SECONDS",
        help="how long in-flight requests may run after SIGTERM (default: %(default)s)")
    add("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG logs one line per request (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT (``clinical-ner serve``)."""
    server = ModelServer(
        args.model_base_path,
        args.model_name,
        host=args.host,
        port=args.port,
        max_workers=args.max_workers,
        max_concurrent_calls=args.max_concurrent_calls,
        poll_interval_s=args.poll_interval,
        max_documents=args.max_documents,
        max_document_chars=args.max_document_chars,
        max_message_bytes=args.max_message_bytes,
        ssl_cert=args.ssl_cert,
        ssl_key=args.ssl_key,
        max_batch_documents=args.max_batch_documents,
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("Received %s: finishing in-flight requests", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in _STOP_SIGNALS}
    try:
        server.start()
        # A timed wait lets the main thread run the signal handler promptly.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(args.grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0

