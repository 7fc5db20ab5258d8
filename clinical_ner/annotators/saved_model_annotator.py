"""An exported SavedModel (the artifact TF Serving runs), loaded to annotate in-process.

Beam workers and Spark executors load the export rather than the Keras model
directory: it is one self-contained artifact, it needs only TensorFlow, and it
is the exact graph TF Serving answers with. The path may be anything
``tf.io.gfile`` reads (a local folder, ``gs://``, ``s3://`` with the
matching TensorFlow file-system plugin, ``hdfs://``...).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from clinical_ner.annotators.base import Annotator
from clinical_ner.artifacts import incomplete_message, saved_model
from clinical_ner.artifacts.keras_model import MODEL_FILE
from clinical_ner.config import NERConfig
from clinical_ner.errors import ModelError
from clinical_ner.export import signatures
from clinical_ner.pretrained import bundled_models
from clinical_ner.text.document import Entity


class NotAnExportError(ModelError):
    """A model path is not a clinical-ner SavedModel export."""


def resolve_export(path: str | os.PathLike) -> str:
    """The SavedModel folder that ``path`` names, checked to hold our serving signature.

    ``path`` is a version folder (``models/clinical_ner/1``) or a base path
    holding numbered versions (``models/clinical_ner``), of which the highest
    is taken, as TF Serving does. Only ``saved_model.pb`` is read (the
    variables are only checked to be there), so this is cheap enough to run
    before a pipeline starts.
    Raises :class:`NotAnExportError` with what to do instead.

    >>> resolve_export("models/clinical_ner")  # doctest: +SKIP
    'models/clinical_ner/3'
    """
    path = os.fspath(path)
    export_dir = path.rstrip("/") or path
    try:
        if not saved_model.holds_saved_model(export_dir):
            export_dir = _highest_version(export_dir)
        missing = saved_model.missing_files(export_dir)
    except OSError as error:  # foo://, or gs:// without a network: an internal error
        raise NotAnExportError(str(error)) from None
    if missing:
        raise NotAnExportError(incomplete_message(export_dir, saved_model.KIND, missing,
                                                  saved_model.REMEDY))
    _check_serving_signature(export_dir)
    return export_dir


def resolve_loadable_export(path: str | os.PathLike) -> str:
    """:func:`resolve_export`, its variables read too: what a batch job checks before its
    workers start.

    A truncated or damaged variables file passed :func:`resolve_export` and
    failed in every worker (an ``IndexError``). Reading the variables costs
    milliseconds (a few MB); loading the whole model here took a second.
    """
    export_dir = resolve_export(path)
    try:
        variables = saved_model.join(export_dir, saved_model.VARIABLES_PREFIX)
        reader = tf.train.load_checkpoint(variables)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except _DAMAGED_ERRORS as error:
        raise _damaged(export_dir, error) from None
    return export_dir


# What TensorFlow raises for a variables file cut short or damaged (an interrupted copy).
_DAMAGED_ERRORS = (tf.errors.OpError, IndexError, ValueError)


def _damaged(export_dir: str, error: BaseException) -> NotAnExportError:
    return NotAnExportError(f"{export_dir}: a damaged SavedModel (TensorFlow cannot read it: "
                            f"{type(error).__name__}); {saved_model.REMEDY}")


def _highest_version(base: str) -> str:
    if not saved_model.exists(base):
        if base in bundled_models():
            # predict, evaluate and serve take the name; an export is a folder of its own.
            raise NotAnExportError(
                f"{base}: a bundled model, not an export; run 'clinical-ner export {base} "
                f"--output models/{base}' (or '--format litert --output DIR') and give that "
                "folder")
        raise NotAnExportError(f"{base}: no such model folder")
    try:
        versions = saved_model.versions(base)
    except OSError as error:
        raise NotAnExportError(str(error)) from None
    if versions:
        return saved_model.join(base, str(versions[-1]))
    if saved_model.exists(saved_model.join(base, MODEL_FILE)):
        raise NotAnExportError(
            f"{base}: a model directory from 'clinical-ner train', not an export; run "
            f"'clinical-ner export {base} --output models/clinical_ner' and give "
            "models/clinical_ner/1")
    raise NotAnExportError(
        f"{base}: not an exported SavedModel (no {saved_model.SAVED_MODEL_FILE} in it or in a "
        "numbered version folder under it); write one with 'clinical-ner export MODEL --output "
        "BASE'")


def _check_serving_signature(export_dir: str) -> None:
    try:
        proto = saved_model.read_saved_model(export_dir)
    except Exception as error:  # noqa: BLE001 (a corrupt file raises protobuf's DecodeError)
        raise NotAnExportError(
            f"{export_dir}/{saved_model.SAVED_MODEL_FILE}: not a readable SavedModel "
            f"({type(error).__name__})") from None
    for meta_graph in proto.meta_graphs:
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


class SavedModelAnnotator(Annotator):
    """A clinical-ner export loaded with ``tf.saved_model.load``: ``annotate`` and ``tag``.

    It gives the same entities as the :class:`~clinical_ner.annotators.keras_annotator.KerasAnnotator`
    of the model the export was written from: the same graph, batched by size the same way
    (both are :class:`~clinical_ner.annotators.base.Annotator`).

    Example (after ``clinical-ner export runs/sample --output models/clinical_ner``)::

        model = ClinicalNER.load("models/clinical_ner")   # the highest version; or .../1
        entities = model.annotate(["CT of the chest showed a 2 cm nodule."])[0]
    """

    def __init__(self, export_dir: str) -> None:
        self.export_dir = export_dir
        # An export keeps no training configuration: batch as the default
        # configuration does (batching changes speed, not results).
        self.config = NERConfig()
        # Kept: the signature functions hold only weak references to the
        # loaded object's variables.
        try:
            self._loaded = tf.saved_model.load(export_dir)
        except _DAMAGED_ERRORS as error:  # a variables file cut short: IndexError
            raise _damaged(export_dir, error) from None
        self._serving_default = self._loaded.signatures[signatures.SERVING_DEFAULT]
        classes = getattr(self._loaded, signatures.ASSERTION_CLASSES, None)
        self.assertion_classes = ([] if classes is None else
                                  [name.decode("utf-8") for name in classes.numpy()])
        labels = getattr(self._loaded, signatures.ENTITY_LABELS, None)
        self.labels = (None if labels is None else
                       [name.decode("utf-8") for name in labels.numpy()])

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SavedModelAnnotator":
        """Load the export at ``path`` (see :func:`resolve_export` for what it may be)."""
        return cls(resolve_export(path))

    def _annotate_batch(self, texts: list[str]) -> list[list[Entity]]:
        return signatures.annotate_batch(texts, self._run_serving_default)

    def _run_serving_default(self, encoded: np.ndarray) -> dict[str, tf.Tensor]:
        return self._serving_default(**{signatures.TEXT: tf.constant(encoded)})

    def _classify_assertions_batch(self, texts: list[str], spans: list[list[tuple[int, int]]]
                                   ) -> list[list[tuple[str, float]]]:
        classify = self._loaded.signatures[signatures.CLASSIFY_ASSERTIONS]
        return signatures.classify_assertions_batch(
            texts, spans, lambda text, start, end: classify(**{
                signatures.TEXT: tf.constant(text), signatures.SPAN_START: tf.constant(start),
                signatures.SPAN_END: tf.constant(end)}))

    def _tag_batch(self, sentences: list[list[str]]) -> list[tuple[list[str], list[float]]]:
        predict_tokens = self._loaded.signatures[signatures.PREDICT_TOKENS]
        rows = np.array(signatures.padded_token_rows(sentences), dtype=object)
        return signatures.tags_from_outputs(predict_tokens(**{signatures.TOKENS: tf.constant(rows)}))


#: Deprecated alias (the 0.3 name); remove in 0.5 (CHANGELOG.md).
ExportedModel = SavedModelAnnotator
