"""``KerasAnnotator``: ``annotate`` and ``tag`` with a model directory's Keras model.

This is the annotator of a model directory (``clinical-ner train``) and the
one that can be fine-tuned or exported; users reach it through
``ClinicalNER.load(path)`` (:mod:`clinical_ner.annotators.load`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clinical_ner.annotators.base import Annotator
from clinical_ner.artifacts.keras_model import (
    MODEL_FILE, VOCAB_FILE, is_complete_archive, truncated_archive_message,
)
from clinical_ner.config import NERConfig
from clinical_ner.errors import ModelError
from clinical_ner.export import signatures
from clinical_ner.model.vocab import Vocabulary
from clinical_ner.pretrained import DEFAULT_MODEL, resolve_model_path
from clinical_ner.text.document import Entity
from clinical_ner.text.tags import entity_labels
from clinical_ner.version import __version__

if TYPE_CHECKING:
    from clinical_ner.model.network import ClinicalNERModel


class KerasAnnotator(Annotator):
    """A trained Keras model ready to annotate notes.

    Example (after ``clinical-ner train ... --output runs/sample``)::

        ner = ClinicalNER.load("runs/sample")     # a KerasAnnotator for a model directory
        for entity in ner.annotate("CT of the chest showed a 2 cm nodule."):
            print(entity.start, entity.end, entity.label, entity.text, entity.confidence)

    ``model`` is the Keras model (for fine-tuning), ``vocab`` and ``config``
    are those it was trained with, ``module`` is the inference graph that
    ``clinical-ner export`` saves for TF Serving. ``vocab`` must be the one
    ``model`` was built with (``ValueError`` otherwise).
    """

    def __init__(self, model: ClinicalNERModel, vocab: Vocabulary, config: NERConfig) -> None:
        from clinical_ner.model.inference_graph import InferenceModule

        # A model held in memory (fine-tuned in Python) meets its vocabulary here only:
        # another model's gave ids beyond its tables (an error from deep in the graph at
        # the first annotate) or, of the same sizes, other words' rows and other labels.
        if (mismatch := vocabulary_mismatch(vocab, model)) is not None:
            raise ValueError(f"vocab does not fit the model's embedding tables and outputs "
                             f"({mismatch}); give the vocabulary the model was built with")
        self.model = model
        self.vocab = vocab
        self.config = config
        self.assertion_classes = list(vocab.assertions)
        self.labels = entity_labels(vocab.tags)
        model.apply_runtime_settings(config)
        self.module = InferenceModule(model, vocab, config)

    @classmethod
    def load(cls, directory: str | Path) -> "KerasAnnotator":
        """Load a model directory (``clinical-ner train``) or a bundled model by name.

        An existing path of a bundled model's name wins
        (:func:`clinical_ner.pretrained.resolve_model_path`). Any other
        artifact: ``ClinicalNER.load``.
        """
        directory = resolve_model_path(directory)
        try:
            import keras

            # Registers ClinicalNERModel and its layers under the names that
            # model.keras records ("clinical_ner>ClinicalNERModel"): Keras
            # resolves them through that registry, not by importing the module.
            import clinical_ner.model.network  # noqa: F401
        except ImportError as error:
            raise ModelError(
                f"{directory}: a Keras model directory needs TensorFlow and Keras ({error}); "
                "install clinical-ner with its dependencies, or run a LiteRT export of it "
                "('clinical-ner export MODEL --format litert')") from None

        model_path = directory / MODEL_FILE
        if not model_path.is_file():
            raise ModelError(
                f"{directory}: not a clinical-ner model directory (no {MODEL_FILE}); "
                f"train one with 'clinical-ner train', or use the bundled model "
                f"'{DEFAULT_MODEL}'"
            )
        if not is_complete_archive(directory):
            # Keras would report it as weights that do not fit, and "File not found".
            raise ModelError(truncated_archive_message(directory))
        config = NERConfig.load(directory)
        vocab = Vocabulary.load(directory)
        try:
            model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
        except ValueError as error:
            # Keras says which layer did not match, not what to do about it.
            raise ModelError(
                f"{model_path}: its weights do not fit the model it describes, so it "
                f"cannot be loaded by clinical-ner {__version__} (models trained before "
                "0.2.0 kept the word embedding in one table); retrain it with "
                f"'clinical-ner train'. Keras said: {error}"
            ) from None
        except OSError:
            # A whole zip whose weights file inside is cut short: h5py cannot open it.
            raise ModelError(truncated_archive_message(directory)) from None
        if (mismatch := vocabulary_mismatch(vocab, model)) is not None:
            raise ModelError(f"{directory / VOCAB_FILE}: does not match {MODEL_FILE}'s "
                             f"embedding tables and outputs ({mismatch}), so it comes from "
                             "another model; copy the whole model folder again")
        return cls(model, vocab, config)

    def export(self, base_path: str | Path, version: int | None = None) -> Path:
        """Write the model as version ``version`` under ``base_path`` for TF Serving.

        Returns the version directory (see
        :func:`clinical_ner.export.saved_model.export_saved_model`: written elsewhere and
        renamed into place, never overwriting a version, checked to use core
        ops only and to restore the way TF Serving loads it).
        """
        from clinical_ner.export.saved_model import export_saved_model

        return export_saved_model(self.module.saved_object(), self.module.signatures(),
                                  base_path, version)

    def _annotate_batch(self, texts: list[str]) -> list[list[Entity]]:
        return signatures.annotate_batch(texts, self.module.annotate_text)

    def _classify_assertions_batch(self, texts: list[str], spans: list[list[tuple[int, int]]]
                                   ) -> list[list[tuple[str, float]]]:
        return signatures.classify_assertions_batch(texts, spans,
                                                    self.module.classify_assertions)

    def _tag_batch(self, sentences: list[list[str]]) -> list[tuple[list[str], list[float]]]:
        outputs = self.module.tag_tokens(
            np.array(signatures.padded_token_rows(sentences), dtype=object))
        return signatures.tags_from_outputs(
            {name: value.numpy() for name, value in outputs.items()})


def vocabulary_mismatch(vocab: Vocabulary, model: ClinicalNERModel) -> str | None:
    """How ``vocab`` differs from the vocabulary ``model`` was built with, or ``None``.

    Another model's vocabulary gives ids beyond the embedding tables (an
    IndexError, or TensorFlow's InvalidArgumentError mid-run) or wrong tags.
    """
    sizes = {"words": (len(vocab.words), model.num_words),
             "characters": (len(vocab.chars), model.num_chars),
             "tags": (list(vocab.tags), list(model.tags)),
             "assertion classes": (list(vocab.assertions), list(model.assertions))}
    for what, (in_vocab, in_model) in sizes.items():
        if in_vocab != in_model:
            return (f"{in_vocab} {what} against the model's {in_model}"
                    if isinstance(in_vocab, int) else f"its {what} are not the model's")
    return None
