"""``ClinicalNER.load(path)``: one entry point for every model artifact.

What ``path`` is decides the annotator (all three are
:class:`~clinical_ner.annotators.base.Annotator`, with the same ``annotate``
and ``tag``):

==========================================================  ====================
``path``                                                    annotator
==========================================================  ====================
a bundled model's name (``"clinical"``) or a model          :class:`~clinical_ner.annotators.keras_annotator.KerasAnnotator`
directory (``clinical-ner train``: ``model.keras``)
a LiteRT export (``clinical-ner export --format litert``)   :class:`~clinical_ner.annotators.litert.annotator.LiteRTAnnotator`
a SavedModel version folder or base path of numbered        :class:`~clinical_ner.annotators.saved_model_annotator.SavedModelAnnotator`
versions (``clinical-ner export``), local or any
``tf.io.gfile`` URL (``gs://``, ``ram://``...)
==========================================================  ====================

Nothing here imports TensorFlow: each annotator's module is imported only
once its artifact is recognised, so a LiteRT export loads where only the
``[litert]`` extra is installed.
"""
from __future__ import annotations

import os
from types import ModuleType

from clinical_ner.annotators.base import Annotator
from clinical_ner.artifacts import incomplete_message, keras_model, litert, saved_model
from clinical_ner.errors import ModelError
from clinical_ner.pretrained import DEFAULT_MODEL, bundled_model_path, resolve_model_path


def load_annotator(path: str | os.PathLike) -> Annotator:
    """The annotator for the artifact at ``path`` (see the module's table).

    Raises :class:`~clinical_ner.errors.ModelError` naming ``path`` when it is
    none of them, or naming the files it lacks (:func:`check_model_files`).
    """
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise TypeError(f"path is {type(path).__name__}, expected a str or os.PathLike: a "
                        f"model directory, an export or a bundled model's name "
                        f"('{DEFAULT_MODEL}')")
    if not os.fspath(path):
        # Path("") is the working directory: an unset setting would load whatever is there.
        raise ModelError(f"the model path is empty; give a model directory, an export or a "
                         f"bundled model's name ('{DEFAULT_MODEL}')")
    if not saved_model.is_local(path):
        # Only a SavedModel is read through tf.io.gfile.
        return _saved_model_annotator(os.fspath(path))
    directory = resolve_model_path(path)
    kind = check_model_files(directory)
    if kind == "litert":
        from clinical_ner.annotators.litert.annotator import LiteRTAnnotator

        return LiteRTAnnotator.load(directory)
    if kind == "keras":
        from clinical_ner.annotators.keras_annotator import KerasAnnotator

        return KerasAnnotator.load(directory)
    return _saved_model_annotator(str(directory))


def check_model_files(path: str | os.PathLike) -> str:
    """Which artifact a local ``path`` is (``"keras"``, ``"litert"`` or ``"saved_model"``), checked to be complete.

    Reads no weights and imports no TensorFlow, so that what loads a model
    later (a spaCy pipeline, a batch job) can say at once that it cannot.
    Raises :class:`~clinical_ner.errors.ModelError` naming ``path`` when it is
    no artifact, or the files it lacks, or a ``model.keras`` that is cut short.
    """
    directory = resolve_model_path(path)
    if litert.looks_like_litert_export(directory):
        litert.check_complete(directory)
        return "litert"
    if keras_model.is_model_directory(directory):
        _check_complete(directory, keras_model)
        if not keras_model.is_complete_archive(directory):
            raise ModelError(keras_model.truncated_archive_message(directory))
        return "keras"
    if saved_model.holds_saved_model(directory):
        _check_complete(directory, saved_model)
        return "saved_model"
    if os.path.isfile(directory):
        raise ModelError(not_a_model_message(directory))
    # A value that can be no folder (a NUL byte, a name too long for the file system) has no
    # versions; listing it raised ValueError or OSError instead of naming it.
    versions = saved_model.versions(directory) if os.path.isdir(directory) else []
    if versions:
        version_dir = saved_model.join(directory, str(versions[-1]))
        _check_complete(version_dir, saved_model)
        return "saved_model"
    raise ModelError(not_a_model_message(directory))


def check_keras_model_directory(path: str | os.PathLike, use: str) -> None:
    """Raise :class:`ModelError` unless ``path`` is a model directory (``clinical-ner train``).

    Only one holds the weights as trainable variables, which fine-tuning and
    an export need; an export is named as such, so that the user looks for
    the folder it was exported from rather than for a missing file. ``use``
    says what the export cannot be used for (``"be fine-tuned"``).
    """
    directory = resolve_model_path(path)
    kind = check_model_files(directory)
    if kind != "keras":
        name = "SavedModel" if kind == "saved_model" else "LiteRT"
        raise ModelError(f"{directory}: a {name} export cannot {use}; give the Keras "
                         f"model directory it was exported from (the one with "
                         f"{keras_model.MODEL_FILE})")


def check_fine_tunable(path: str | os.PathLike) -> None:
    """Raise :class:`ModelError` unless ``path`` is a model directory that can be fine-tuned."""
    check_keras_model_directory(path, "be fine-tuned")


def not_a_model_message(directory: str | os.PathLike) -> str:
    """Why ``directory`` is no model that :func:`load_annotator` takes, and what to do."""
    directory = os.fspath(directory)
    if not os.path.exists(directory):
        reason = "no such folder"
    elif keras_model.is_complete_archive(*os.path.split(directory)):
        # What model.save("x.keras") writes, after model.fit in Python: "train one with
        # 'clinical-ner train'" did not say how to use it.
        return (f"{directory}: a Keras model file, not a model directory; put it in a folder "
                f"as {keras_model.MODEL_FILE}, beside the {keras_model.CONFIG_FILE} and "
                f"{keras_model.VOCAB_FILE} of the model it was trained from, and give that "
                "folder")
    elif os.path.isfile(directory):
        reason = "a file, not a folder"
    elif keras_model.is_unfinished_training(directory):
        # "copy the whole model folder again" is no advice for a run still in its first epoch.
        return (f"{directory}: a training run that has not finished its first epoch, so it has "
                f"no {keras_model.MODEL_FILE} yet (training is in progress, or stopped before "
                f"the epoch ended); wait for the epoch to end, or train it again if it stopped")
    elif any(os.path.isfile(os.path.join(directory, name))
             for name in (keras_model.CONFIG_FILE, keras_model.VOCAB_FILE)):
        # The rest of a model directory without its model.
        return incomplete_message(directory, keras_model.KIND,
                                  keras_model.missing_files(directory), keras_model.REMEDY)
    else:
        reason = (f"no {keras_model.MODEL_FILE}, {litert.MANIFEST_FILE}, "
                  f"{saved_model.SAVED_MODEL_FILE} or numbered version folder holding one")
    return (f"{directory}: not a clinical-ner model directory or export ({reason}); train one "
            f"with 'clinical-ner train', or use the bundled model '{DEFAULT_MODEL}'")


def _check_complete(directory: str | os.PathLike, artifact: ModuleType) -> None:
    # artifact: keras_model or saved_model, each of which lists its files and names itself.
    missing = artifact.missing_files(directory)
    if missing:
        raise ModelError(incomplete_message(directory, artifact.KIND, missing, artifact.REMEDY))


def _saved_model_annotator(path: str) -> Annotator:
    try:
        from clinical_ner.annotators.saved_model_annotator import SavedModelAnnotator
    except ImportError as error:
        raise ModelError(f"{path}: a SavedModel needs TensorFlow ({error}); install "
                         "clinical-ner with its dependencies") from None
    return SavedModelAnnotator.load(path)


class ClinicalNER:
    """Where users start: ``ClinicalNER.load(path)`` or ``ClinicalNER.pretrained()``.

    Both return an :class:`~clinical_ner.annotators.base.Annotator` (a
    ``KerasAnnotator``, ``SavedModelAnnotator`` or ``LiteRTAnnotator``,
    whichever fits the artifact); ``ClinicalNER`` itself is never
    instantiated, so type hints and ``isinstance`` checks name ``Annotator``.

    Example::

        ner = ClinicalNER.load("runs/sample")         # or "models/clinical_ner", "gs://...", "clinical"
        for entity in ner.annotate("CT of the chest showed a 2 cm nodule."):
            print(entity.start, entity.end, entity.label, entity.text, entity.confidence)
    """

    def __new__(cls, *args, **kwargs):
        raise TypeError(
            "ClinicalNER only loads models: ClinicalNER.load(path) or ClinicalNER.pretrained(); "
            "to wrap a Keras model in memory, use "
            "clinical_ner.annotators.keras_annotator.KerasAnnotator(model, vocab, config)")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Annotator:
        """The annotator for a model directory, an export (SavedModel or LiteRT) or a bundled name.

        An existing path of a bundled model's name wins
        (:func:`clinical_ner.pretrained.resolve_model_path`). See
        :func:`load_annotator`.
        """
        return load_annotator(path)

    @classmethod
    def pretrained(cls, name: str = DEFAULT_MODEL) -> Annotator:
        """A model shipped inside the package (see ``clinical_ner/pretrained/<name>/MODEL_CARD.md``).

        Example::

            ner = ClinicalNER.pretrained()   # the "clinical" problem/test/treatment model
            ner.annotate("CT of the chest showed a 2 cm nodule; she was started on aspirin.")
        """
        return load_annotator(bundled_model_path(name))


__all__ = ["ClinicalNER", "check_model_files", "load_annotator", "not_a_model_message"]
