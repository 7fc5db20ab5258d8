"""``annotate`` and ``tag`` in batches of similar size: what every in-process runtime shares.

:class:`~clinical_ner.annotators.keras_annotator.KerasAnnotator` (a model directory),
:class:`~clinical_ner.annotators.saved_model_annotator.SavedModelAnnotator` (an export
for TF Serving) and :class:`~clinical_ner.annotators.litert.annotator.LiteRTAnnotator`
(a LiteRT export) derive from :class:`Annotator` and only say how to run one
batch, so that they check their input, batch and answer empty sentences the
same way. ``ClinicalNER.load(path)`` returns the one that fits ``path``; type
hints and ``isinstance`` checks name :class:`Annotator`. Nothing here imports
TensorFlow.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from numbers import Integral
from typing import overload

from clinical_ner.export import signatures
from clinical_ner.config import NERConfig
from clinical_ner.errors import ModelError, check_integer
from clinical_ner.text.document import Entity


class Annotator:
    """The public API over ``_annotate_batch`` and ``_tag_batch``, which subclasses define.

    ``_annotate_batch(texts)`` returns each text's entities;
    ``_tag_batch(sentences)`` returns each sentence's IOB2 tags and their
    marginals (sentences are non-empty lists of non-empty strings);
    ``_classify_assertions_batch(texts, spans)`` returns the assertion and
    its confidence of each text's spans (already checked, at least one span
    per text). Subclasses set ``config``, whose batch sizes apply when a call
    gives none, ``assertion_classes`` (empty, the default, for a model
    without assertions) and ``labels``, the sorted entity labels the model
    finds (``None``, the default, where the artifact does not record them:
    SavedModel exports before 0.4.0).
    """

    config: NERConfig
    # A runtime that cannot tell (or a model without assertions) has none.
    assertion_classes: Sequence[str] = ()
    labels: Sequence[str] | None = None

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
        check_integer("batch_size", batch_size)
        check_integer("max_batch_characters", max_batch_characters)
        if isinstance(texts, str):
            return self.annotate([texts], batch_size, max_batch_characters)[0]
        return self._annotate_texts(signatures.checked_texts(texts), batch_size,
                                    max_batch_characters)

    def _annotate_texts(self, texts: list[str], batch_size: int, max_batch_characters: int
                        ) -> list[list[Entity]]:
        """Each (checked) text's entities, in batches of similar length through ``_annotate_batch``.

        A runtime that spreads one call over processes overrides this.
        """
        return signatures.in_size_order_batches(
            texts, [len(text) for text in texts], batch_size, self._annotate_batch,
            max_batch_characters)

    def tag(self, sentences: Sequence[Sequence[str]], batch_size: int | None = None
            ) -> list[tuple[list[str], list[float]]]:
        """IOB2 tags and their marginal probabilities for pre-tokenized sentences.

        One tag per token; a token may not be ``""`` (``ValueError``), the
        ``predict_tokens`` signature's padding. Sentences are tagged
        ``batch_size`` at a time (``None``: the configuration's
        ``tag_batch_size``).
        """
        if batch_size is None:
            batch_size = self.config.tag_batch_size
        sentences = signatures.sentence_list(sentences)
        for index, sentence in enumerate(sentences):
            # Any iterable of tokens but a str: a tuple, or a NumPy array (the rows of a
            # list column that pandas read from Parquet), as annotate takes any of texts.
            if isinstance(sentence, (str, bytes)) or not isinstance(sentence, Iterable):
                raise TypeError(f"sentences[{index}] is {type(sentence).__name__}, expected "
                                "a list of tokens (str)")
            sentences[index] = sentence = list(sentence)
            for position, token in enumerate(sentence):
                if not isinstance(token, str):
                    raise TypeError(f"sentences[{index}][{position}] is "
                                    f"{type(token).__name__}, expected str")
                if token == signatures.PAD_TOKEN:
                    raise ValueError(f'sentences[{index}][{position}] is "": '
                                     f"{signatures.EMPTY_TOKEN_RULE}")
        # Empty sentences have nothing to tag and are answered here. Lone surrogates
        # become U+FFFD, as in annotate: UTF-8 cannot carry them to the model (and
        # TensorFlow's error would quote every token of the batch).
        filled = [i for i, sentence in enumerate(sentences) if sentence]
        tagged = signatures.in_size_order_batches(
            [[signatures.replace_lone_surrogates(token) for token in sentences[i]]
             for i in filled],
            [len(sentences[i]) for i in filled], batch_size, self._tag_batch)
        results: list[tuple[list[str], list[float]]] = [([], []) for _ in sentences]
        for index, result in zip(filled, tagged):
            results[index] = result
        return results

    @overload
    def classify_assertions(self, texts: str, spans: Sequence[tuple[int, int]],
                            batch_size: int | None = ...) -> list[tuple[str, float]]: ...

    @overload
    def classify_assertions(self, texts: Sequence[str],
                            spans: Sequence[Sequence[tuple[int, int]]],
                            batch_size: int | None = ...) -> list[list[tuple[str, float]]]: ...

    def classify_assertions(self, texts, spans, batch_size: int | None = None):
        """The assertion (``present``, ``absent``, ...) and its confidence of given spans.

        ``texts`` is one text with ``spans`` a list of ``(start, end)``
        code-point offsets (half-open, as ``Entity.start``/``end``), or a list
        of texts with a list of spans for each. A span's tokens are those of
        the model's tokenizer that overlap it; its assertion is the class
        whose probability, averaged over them, is the highest, and the
        confidence is that average (the rule ``annotate`` applies to the
        problems it finds). For entities found by other tools, or for gold
        concepts (``clinical-ner evaluate``). Texts are run in batches of
        similar length, ``batch_size`` at a time (``None``: the
        configuration's ``annotate_batch_size``).

        Raises :class:`~clinical_ner.errors.ModelError` for a model trained
        without assertions, and ``ValueError`` for a span outside its text or
        one that covers no token.
        """
        if not self.assertion_classes:
            raise ModelError("this model was trained without assertions; train one on data "
                             "with assertions (docs/guide/assertions.md)")
        if isinstance(texts, str):
            return self.classify_assertions([texts], [spans], batch_size)[0]
        texts = signatures.checked_texts(texts)
        if not isinstance(spans, Iterable):
            raise TypeError(f"spans is {type(spans).__name__}, expected a list")
        spans = [_checked_spans(index, text_spans) for index, text_spans in enumerate(spans)]
        if len(spans) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(spans)} span lists")
        for index, (text, text_spans) in enumerate(zip(texts, spans)):
            for number, span in enumerate(text_spans):
                if not signatures.span_within(*span, len(text)):
                    raise ValueError(f"text {index}, span {number}: expected (start, end) "
                                     f"with 0 <= start < end <= {len(text)}")
        if batch_size is None:
            batch_size = self.config.annotate_batch_size
        filled = [index for index, text_spans in enumerate(spans) if text_spans]
        classified = signatures.in_size_order_batches(
            filled, [len(texts[index]) for index in filled], batch_size,
            lambda batch: self._classify_assertions_batch([texts[i] for i in batch],
                                                          [spans[i] for i in batch]))
        results: list[list[tuple[str, float]]] = [[] for _ in texts]
        for index, result in zip(filled, classified):
            for number, (assertion, _) in enumerate(result):
                if not assertion:
                    raise ValueError(f"text {index}, span {number}: covers no token")
            results[index] = result
        return results

    def close(self) -> None:
        """Let go of what the annotator runs beside this process (a LiteRT export's workers).

        Every runtime has it, so that code written for any annotator may call
        it or use one in a ``with`` block; the annotator still works after it
        (what it needs starts again).
        """

    def __enter__(self) -> Annotator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _annotate_batch(self, texts: list[str]) -> list[list[Entity]]:
        raise NotImplementedError

    def _classify_assertions_batch(self, texts: list[str], spans: list[list[tuple[int, int]]]
                                   ) -> list[list[tuple[str, float]]]:
        raise NotImplementedError

    def _tag_batch(self, sentences: list[list[str]]) -> list[tuple[list[str], list[float]]]:
        raise NotImplementedError


def _checked_spans(index: int, text_spans: object) -> list[tuple[int, int]]:
    """One text's spans as ``(start, end)`` tuples of ints (NumPy integers too, never bools)."""
    if not isinstance(text_spans, Iterable) or isinstance(text_spans, (str, bytes)):
        raise TypeError(f"text {index}: spans is {type(text_spans).__name__}, expected a "
                        "list of (start, end)")
    checked = []
    for number, span in enumerate(text_spans):
        values = tuple(span) if isinstance(span, Iterable) and not isinstance(
            span, (str, bytes)) else ()
        # (NumPy's bool is no Integral; Python's bool is.)
        if len(values) != 2 or not all(isinstance(value, Integral)
                                       and not isinstance(value, bool) for value in values):
            raise TypeError(f"text {index}, span {number}: expected (start, end), two integers")
        checked.append((int(values[0]), int(values[1])))
    return checked
