"""An exported SavedModel (the artifact TF Serving runs), loaded to annotate in-process.

Beam workers and Spark executors load the export rather than the Keras model
directory: it is one self-contained artifact, it needs only TensorFlow, and it
is the exact graph TF Serving answers with. The path may be anything
``tf.io.gfile`` reads (a local folder, ``gs://``, ``s3://`` with the
matching TensorFlow file-system plugin, ``hdfs://``...).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from clinical_ner.export import signatures
from clinical_ner.annotators.base import Annotator
from clinical_ner.config import NERConfig
from clinical_ner.text.document import Entity
from clinical_ner.errors import ModelError
from clinical_ner.export.saved_model import VERSION_DIR_PATTERN

SAVED_MODEL_FILE = "saved_model.pb"
# `clinical-ner train` writes this file; its folder is a model directory, not an export.
_KERAS_MODEL_FILE = "model.keras"


class NotAnExportError(ModelError):
    """A model path is not a clinical-ner SavedModel export."""


def resolve_export(path: str) -> str:
    """The SavedModel folder that ``path`` names, checked to hold our serving signature.

    ``path`` is a version folder (``models/clinical_ner/1``) or a base path
    holding numbered versions (``models/clinical_ner``), of which the highest
    is taken, as TF Serving does. Only ``saved_model.pb`` is read (no
    variables), so this is cheap enough to run before a pipeline starts.
    Raises :class:`NotAnExportError` with what to do instead.

    >>> resolve_export("models/clinical_ner")  # doctest: +SKIP
    'models/clinical_ner/3'
    """
    export_dir = path.rstrip("/") or path
    if not tf.io.gfile.exists(tf.io.gfile.join(export_dir, SAVED_MODEL_FILE)):
        export_dir = _highest_version(export_dir)
    _check_serving_signature(export_dir)
    return export_dir


def _highest_version(base: str) -> str:
    try:
        entries = [entry.rstrip("/") for entry in tf.io.gfile.listdir(base)]
    except tf.errors.NotFoundError:
        raise NotAnExportError(f"{base}: no such model folder") from None
    except tf.errors.OpError as error:
        raise NotAnExportError(f"{base}: cannot list it: {error.message}") from None
    versions = sorted((int(entry) for entry in entries if VERSION_DIR_PATTERN.fullmatch(entry)),
                      reverse=True)
    for version in versions:
        candidate = tf.io.gfile.join(base, str(version))
        if tf.io.gfile.exists(tf.io.gfile.join(candidate, SAVED_MODEL_FILE)):
            return candidate
    if _KERAS_MODEL_FILE in entries:
        raise NotAnExportError(
            f"{base}: a model directory from 'clinical-ner train', not an export; run "
            f"'clinical-ner export {base} --output models/clinical_ner' and give "
            "models/clinical_ner/1")
    raise NotAnExportError(
        f"{base}: not an exported SavedModel (no {SAVED_MODEL_FILE} in it or in a numbered "
        "version folder under it); write one with 'clinical-ner export MODEL --output BASE'")


def _check_serving_signature(export_dir: str) -> None:
    saved_model = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(tf.io.gfile.join(export_dir, SAVED_MODEL_FILE), "rb") as handle:
            saved_model.ParseFromString(handle.read())
    except Exception as error:  # noqa: BLE001 (a corrupt file raises protobuf's DecodeError)
        raise NotAnExportError(
            f"{export_dir}/{SAVED_MODEL_FILE}: not a readable SavedModel ({type(error).__name__})"
        ) from None
    for meta_graph in saved_model.meta_graphs:
        signature = meta_graph.signature_def.get(signatures.SERVING_DEFAULT)
        if signature is None:
            continue
        inputs, outputs = set(signature.inputs), set(signature.outputs)
        if inputs == {signatures.TEXT} and set(signatures.ENTITY_OUTPUTS) <= outputs:
            return
    raise NotAnExportError(
        f"{export_dir}: a SavedModel, but without the clinical-ner '{signatures.SERVING_DEFAULT}' "
        f"signature (input '{signatures.TEXT}', outputs {list(signatures.ENTITY_OUTPUTS)}); "
        "is it a clinical-ner export?")


class ExportedModel(Annotator):
    """A clinical-ner export loaded with ``tf.saved_model.load``: ``annotate`` and ``tag``.

    It gives the same entities as ``ClinicalNER.annotate`` on the model the
    export was written from: the same graph, batched by size the same way
    (both are :class:`~clinical_ner.annotators.base.Annotator`).

    Example (after ``clinical-ner export runs/sample --output models/clinical_ner``)::

        model = ExportedModel.load("models/clinical_ner/1")
        entities = model.annotate(["CT of the chest showed a 2 cm nodule."])[0]
    """

    def __init__(self, export_dir: str) -> None:
        self.export_dir = export_dir
        # An export keeps no training configuration: batch as the default
        # configuration does (batching changes speed, not results).
        self.config = NERConfig()
        # Kept: the signature functions hold only weak references to the
        # loaded object's variables.
        self._loaded = tf.saved_model.load(export_dir)
        self._serving_default = self._loaded.signatures[signatures.SERVING_DEFAULT]

    @classmethod
    def load(cls, path: str) -> "ExportedModel":
        """Load the export at ``path`` (see :func:`resolve_export` for what it may be)."""
        return cls(resolve_export(path))

    def _annotate_batch(self, texts: list[str]) -> list[list[Entity]]:
        return signatures.annotate_batch(texts, self._run_serving_default)

    def _run_serving_default(self, encoded: np.ndarray) -> dict[str, tf.Tensor]:
        return self._serving_default(**{signatures.TEXT: tf.constant(encoded)})

    def _tag_batch(self, sentences: list[list[str]]) -> list[tuple[list[str], list[float]]]:
        predict_tokens = self._loaded.signatures[signatures.PREDICT_TOKENS]
        rows = np.array(signatures.padded_token_rows(sentences), dtype=object)
        return signatures.tags_from_outputs(predict_tokens(**{signatures.TOKENS: tf.constant(rows)}))
