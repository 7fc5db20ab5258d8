"""``annotate`` and ``tag`` in batches of similar size: what every in-process runtime shares.

:class:`~clinical_ner.annotators.keras_annotator.ClinicalNER` (TensorFlow) and
:class:`~clinical_ner.annotators.litert.annotator.LiteRTNER` (LiteRT) both derive from
:class:`Annotator` and only say how to run one batch, so that they check
their input, batch and answer empty sentences the same way. Nothing here
imports TensorFlow.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import overload

from clinical_ner.export import signatures
from clinical_ner.config import NERConfig
from clinical_ner.text.document import Entity


class Annotator:
    """The public API over ``_annotate_batch`` and ``_tag_batch``, which subclasses define.

    ``_annotate_batch(texts)`` returns each text's entities;
    ``_tag_batch(sentences)`` returns each sentence's IOB2 tags and their
    marginals (sentences are non-empty lists of strings). Subclasses set
    ``config``, whose batch sizes apply when a call gives none.
    """

    config: NERConfig

    @overload
    def annotate(self, texts: str, batch_size: int | None = ...,
                 max_batch_characters: int | None = ...) -> list[Entity]: ...

    @overload
    def annotate(self, texts: Sequence[str], batch_size: int | None = ...,
                 max_batch_characters: int | None = ...) -> list[list[Entity]]: ...

    def annotate(self, texts, batch_size: int | None = None,
                 max_batch_characters: int | None = None):
        """Entities of one text (a list) or of each text of a list (a list of lists).

        Offsets are code points of the given text: ``text[e.start:e.end] == e.text``.
        Texts are tagged in batches of similar length, each of at most
        ``batch_size`` texts and ``max_batch_characters`` characters (a longer
        text goes alone; ``None``: the configuration's
        ``annotate_batch_size`` and ``annotate_max_batch_characters``): short
        texts are much faster many to a call, and the character limit bounds
        the memory of a call.
        """
        if batch_size is None:
            batch_size = self.config.annotate_batch_size
        if max_batch_characters is None:
            max_batch_characters = self.config.annotate_max_batch_characters
        if isinstance(texts, str):
            return self.annotate([texts], batch_size, max_batch_characters)[0]
        texts = signatures.checked_texts(texts)
        return signatures.in_size_order_batches(
            texts, [len(text) for text in texts], batch_size, self._annotate_batch,
            max_batch_characters)

    def tag(self, sentences: Sequence[Sequence[str]], batch_size: int | None = None
            ) -> list[tuple[list[str], list[float]]]:
        """IOB2 tags and their marginal probabilities for pre-tokenized sentences.

        ``""`` tokens are padding, as in the ``predict_tokens`` signature.
        Sentences are tagged ``batch_size`` at a time (``None``: the
        configuration's ``tag_batch_size``).
        """
        if batch_size is None:
            batch_size = self.config.tag_batch_size
        for index, sentence in enumerate(sentences):
            for position, token in enumerate(sentence):
                if not isinstance(token, str):
                    raise TypeError(f"sentences[{index}][{position}] is "
                                    f"{type(token).__name__}, expected str")
        # Empty sentences have nothing to tag and are answered here.
        filled = [i for i, sentence in enumerate(sentences) if sentence]
        tagged = signatures.in_size_order_batches(
            [list(sentences[i]) for i in filled], [len(sentences[i]) for i in filled],
            batch_size, self._tag_batch)
        results: list[tuple[list[str], list[float]]] = [([], []) for _ in sentences]
        for index, result in zip(filled, tagged):
            results[index] = result
        return results

    def _annotate_batch(self, texts: list[str]) -> list[list[Entity]]:
        raise NotImplementedError

    def _tag_batch(self, sentences: list[list[str]]) -> list[tuple[list[str], list[float]]]:
        raise NotImplementedError
