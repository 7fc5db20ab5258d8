"""Loading and polling the numbered versions of one SavedModel base path.

Versions are the directories under the base path named by a positive integer
that hold a ``saved_model.pb``. Every such version is loaded (like
``model_version_policy { all {} }``); requests without a version get the
highest. :meth:`ModelVersions.poll` loads new versions and unloads removed
ones; a version that fails to load is retried when its ``saved_model.pb``
changes.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from clinical_ner.artifacts.saved_model import SAVED_MODEL_FILE, read_saved_model, versions
from clinical_ner.export.signatures import ASSERTION_CLASSES
from clinical_ner.serving.errors import RequestError
from clinical_ner.serving.validation import SERVED_DTYPES

logger = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State


@dataclass(frozen=True)
class Signature:
    function: Any  # the restored ConcreteFunction: string (and integer) tensors in, tensors out
    inputs: dict[str, tf.TensorSpec]
    outputs: tuple[str, ...]  # the names of the function's outputs, sorted


@dataclass(frozen=True)
class Version:
    number: int
    signatures: dict[str, Signature]
    signature_defs: get_model_metadata_pb2.SignatureDefMap
    # The restored object owns the variables the functions read.
    restored: Any
    # Whether the export records assertion classes: then its classify_assertions
    # answers "" only for padding and for spans that cover no token.
    classifies_assertions: bool


@dataclass(frozen=True)
class VersionState:
    state: int
    error_code: int = 0
    error_message: str = ""


def call_signature(function: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a signature function on arrays of bytes (or integers); its outputs as arrays."""
    # Validation made integer inputs arrays of their spec's type already.
    outputs = function(**{
        name: tf.constant(value, dtype=tf.string if value.dtype.kind in "OSU" else None)
        for name, value in inputs.items()
    })
    return {name: np.asarray(value) for name, value in outputs.items()}


def load_version(number: int, path: Path) -> Version:
    """Load one version directory; signatures with inputs of other types than
    strings and integers are left out."""
    restored = tf.saved_model.load(str(path))
    saved_model = read_saved_model(path)
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
            spec.dtype not in SERVED_DTYPES or not spec.shape.rank for spec in inputs.values()
        ):
            logger.warning(
                "Version %d: signature %r is not served: this development server serves "
                "signatures whose inputs are all DT_STRING, DT_INT32 or DT_INT64 batches "
                "(rank >= 1)",
                number,
                name,
            )
            continue
        signatures[name] = Signature(function=function, inputs=inputs,
                                     outputs=tuple(sorted(function.structured_outputs)))
    classes = getattr(restored, ASSERTION_CLASSES, None)
    classifies_assertions = classes is not None and bool(classes.shape.num_elements())
    return Version(number, signatures, signature_defs, restored, classifies_assertions)


class ModelVersions:
    """The loaded versions of one model, kept in step with its base path."""

    def __init__(self, base_path: Path, model_name: str) -> None:
        self._base_path = base_path
        self._model_name = model_name
        self._lock = threading.Lock()
        self._loaded: dict[int, Version] = {}
        self._states: dict[int, VersionState] = {}
        # version -> mtime of the saved_model.pb whose load failed
        self._failed: dict[int, int] = {}

    def poll(self) -> None:
        """Load new versions and unload the ones whose directory is gone."""
        on_disk = set(versions(self._base_path))
        with self._lock:
            gone = set(self._loaded) - on_disk
            for number in gone:
                del self._loaded[number]
                self._states[number] = VersionState(State.END)
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
            mtime = (path / SAVED_MODEL_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            return
        if self._failed.get(number) == mtime:
            return
        with self._lock:
            self._states[number] = VersionState(State.LOADING)
        started = time.perf_counter()
        try:
            version = load_version(number, path)
        except Exception as error:  # a broken export must not stop the server
            self._failed[number] = mtime
            message = f"loading {path} failed: {type(error).__name__}: {error}"
            logger.error("Version %d of %r: %s", number, self._model_name, message)
            with self._lock:
                self._states[number] = VersionState(
                    State.END, grpc.StatusCode.UNKNOWN.value[0], message
                )
            return
        self._failed.pop(number, None)
        with self._lock:
            self._loaded[number] = version
            self._states[number] = VersionState(State.AVAILABLE)
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

    def get(self, number: int | None) -> Version:
        """The requested version (the highest if ``None``), or NOT_FOUND."""
        with self._lock:
            loaded = dict(self._loaded)
        if not loaded:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"no version of model '{self._model_name}' is loaded; a version is a "
                f"directory named by a number with a saved_model.pb under {self._base_path}",
            )
        if number is None:
            return loaded[max(loaded)]
        if number not in loaded:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"version {number} of model '{self._model_name}' is not loaded; "
                f"loaded versions: {sorted(loaded)}",
            )
        return loaded[number]

    def states(self) -> dict[int, VersionState]:
        with self._lock:
            return dict(self._states)
