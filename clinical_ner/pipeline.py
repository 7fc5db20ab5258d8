"""The in-process Python API: ``ClinicalNER.load(path).annotate(text)``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, overload

import keras
import numpy as np

from clinical_ner import __version__, signatures
from clinical_ner.config import NERConfig
from clinical_ner.corpus import Entity
from clinical_ner.errors import ModelError
from clinical_ner.export import export_saved_model
from clinical_ner.inference import InferenceModule
from clinical_ner.model import MODEL_FILE, ClinicalNERModel
from clinical_ner.vocab import Vocabulary


class ClinicalNER:
    """A trained model ready to annotate notes.

    Example (after ``clinical-ner train ... --output runs/sample``)::

        ner = ClinicalNER.load("runs/sample")
        for entity in ner.annotate("CT of the chest showed a 2 cm nodule."):
            print(entity.start, entity.end, entity.label, entity.text, entity.confidence)

    ``model`` is the Keras model (for fine-tuning), ``vocab`` and ``config``
    are those it was trained with, ``module`` is the inference graph that
    ``clinical-ner export`` saves for TF Serving.
    """

    def __init__(self, model: ClinicalNERModel, vocab: Vocabulary, config: NERConfig) -> None:
        self.model = model
        self.vocab = vocab
        self.config = config
        self.module = InferenceModule(model, vocab, config.max_word_length,
                                      config.max_sentence_tokens)

    @classmethod
    def load(cls, directory: str | Path) -> "ClinicalNER":
        """Load a model directory written by ``clinical-ner train``."""
        directory = Path(directory)
        model_path = directory / MODEL_FILE
        if not model_path.is_file():
            raise ModelError(
                f"{directory}: not a clinical-ner model directory (no {MODEL_FILE}); "
                "train one with 'clinical-ner train'"
            )
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
        return cls(model, vocab, config)

    def export(self, base_path: str | Path, version: int | None = None) -> Path:
        """Write the model as version ``version`` under ``base_path`` for TF Serving.

        Returns the version directory (see
        :func:`clinical_ner.export.export_saved_model`: written elsewhere and
        renamed into place, never overwriting a version, checked to use core
        ops only and to restore the way TF Serving loads it).
        """
        return export_saved_model(self.module.saved_object(), self.module.signatures(),
                                  base_path, version)

    @overload
    def annotate(self, texts: str, batch_size: int = ...,
                 max_batch_characters: int = ...) -> list[Entity]: ...

    @overload
    def annotate(self, texts: Sequence[str], batch_size: int = ...,
                 max_batch_characters: int = ...) -> list[list[Entity]]: ...

    def annotate(self, texts, batch_size: int = 256, max_batch_characters: int = 100_000):
        """Entities of one text (a list) or of each text of a list (a list of lists).

        Offsets are code points of the given text: ``text[e.start:e.end] == e.text``.
        Texts are tagged in batches of similar length, each of at most
        ``batch_size`` texts and ``max_batch_characters`` characters (a longer
        text goes alone): short texts are much faster many to a call, and the
        character limit bounds the memory of a call.
        """
        if isinstance(texts, str):
            return self.annotate([texts], batch_size, max_batch_characters)[0]
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
        return signatures.in_size_order_batches(
            texts, [len(text) for text in texts], batch_size, self._annotate_batch,
            max_batch_characters)

    def _annotate_batch(self, texts: list[str]) -> list[list[Entity]]:
        outputs = self.module.annotate_text(
            np.array([signatures.encode_text(text) for text in texts], dtype=object))
        return signatures.entities_from_outputs(
            texts, {name: value.numpy() for name, value in outputs.items()})

    def tag(self, sentences: Sequence[Sequence[str]], batch_size: int = 64
            ) -> list[tuple[list[str], list[float]]]:
        """IOB2 tags and their marginal probabilities for pre-tokenized sentences."""
        # Empty sentences have nothing to tag and are answered here.
        filled = [i for i, sentence in enumerate(sentences) if sentence]
        tagged = signatures.in_size_order_batches(
            [list(sentences[i]) for i in filled], [len(sentences[i]) for i in filled],
            batch_size, self._tag_batch)
        results: list[tuple[list[str], list[float]]] = [([], []) for _ in sentences]
        for index, result in zip(filled, tagged):
            results[index] = result
        return results

    def _tag_batch(self, sentences: list[list[str]]) -> list[tuple[list[str], list[float]]]:
        outputs = self.module.tag_tokens(
            np.array(signatures.padded_token_rows(sentences), dtype=object))
        return signatures.tags_from_outputs(
            {name: value.numpy() for name, value in outputs.items()})
