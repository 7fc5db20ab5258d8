"""The serving contract: signature names, tensor names and output decoding.

The exported SavedModel, the development server, the gRPC client and the
in-process API all agree on these names. ``encode_text`` makes the bytes a
document is sent as, and ``entities_from_outputs`` and ``tags_from_outputs``
turn a signature's output tensors into Python objects; the in-process API
and the client both call them, so a document gives the same objects
whichever way it was annotated.

``serving_default`` (raw text in, entity spans out)
    input ``text``: ``DT_STRING [-1]``, a batch of UTF-8 documents.
    outputs, padded to the largest entity count ``E`` of the batch:
    ``entity_start`` / ``entity_end`` ``DT_INT64 [B, E]`` (half-open
    code-point offsets into the document), ``entity_label`` ``DT_STRING
    [B, E]`` (``""`` as padding), ``entity_confidence`` ``DT_FLOAT [B, E]``,
    ``entity_count`` ``DT_INT32 [B]``; and, since 0.4.0, each entity's
    assertion ``entity_assertion`` ``DT_STRING [B, E]`` (``present``,
    ``absent``, ...; ``""`` for an entity without one and as padding) and
    ``entity_assertion_confidence`` ``DT_FLOAT [B, E]`` (0 where none). A
    model without assertions returns them too, all empty; decoding accepts
    outputs without them (exports before 0.4.0, old servers).

``predict_tokens`` (pre-tokenized sentences in, tags out)
    input ``tokens``: ``DT_STRING [-1, -1]``, right-padded with ``""``.
    outputs: ``tags`` ``DT_STRING [B, T]``, ``tag_confidence`` ``DT_FLOAT
    [B, T]``, ``length`` ``DT_INT32 [B]`` (tokens before the padding).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from clinical_ner.text.document import Entity
from clinical_ner.errors import ClinicalNERError, check_integer
from clinical_ner.model.vocab import PAD

PREDICT_METHOD_NAME = "tensorflow/serving/predict"
# The GetModelMetadata field that holds the SignatureDefs.
SIGNATURE_DEF_METADATA = "signature_def"

SERVING_DEFAULT = "serving_default"
TEXT = "text"
ENTITY_START = "entity_start"
ENTITY_END = "entity_end"
ENTITY_LABEL = "entity_label"
ENTITY_CONFIDENCE = "entity_confidence"
ENTITY_COUNT = "entity_count"
ENTITY_OUTPUTS = (ENTITY_START, ENTITY_END, ENTITY_LABEL, ENTITY_CONFIDENCE, ENTITY_COUNT)
# Shaped and padded like entity_label / entity_confidence; "" and 0.0 where
# an entity has no assertion (not a problem, or a model without assertions).
ENTITY_ASSERTION = "entity_assertion"
ENTITY_ASSERTION_CONFIDENCE = "entity_assertion_confidence"
# Optional when decoding: exports before 0.4.0 do not have them.
ENTITY_ASSERTION_OUTPUTS = (ENTITY_ASSERTION, ENTITY_ASSERTION_CONFIDENCE)

# classify_assertions: text [B], span_start / span_end int32 [B, S]
# (code-point offsets, padded with -1) in; assertion string [B, S] and
# assertion_confidence float [B, S] out ("" and 0.0 on padding).
CLASSIFY_ASSERTIONS = "classify_assertions"
SPAN_START = "span_start"
SPAN_END = "span_end"
ASSERTION = "assertion"
ASSERTION_CONFIDENCE = "assertion_confidence"
# The exported object's attribute that holds the assertion classes (a string
# tf.Variable, empty for a model without assertions; exports before 0.4.0 lack it).
ASSERTION_CLASSES = "assertion_classes"
# Likewise the sorted entity labels (exports before 0.4.0 lack it), so that
# ``clinical-ner evaluate EXPORT`` can say which of the data's labels it does not know.
ENTITY_LABELS = "entity_labels"

PREDICT_TOKENS = "predict_tokens"
TOKENS = "tokens"
TAGS = "tags"
TAG_CONFIDENCE = "tag_confidence"
LENGTH = "length"
TAG_OUTPUTS = (TAGS, TAG_CONFIDENCE, LENGTH)

# Token rows are right-padded with the vocabulary's padding token (this name
# is part of the contract that the client imports).
PAD_TOKEN = PAD
# Why a sentence may not hold the padding token: the graph skips it, so the
# tags would not line up with the tokens (the in-process API, the client and
# the server refuse it in these words).
EMPTY_TOKEN_RULE = "tokens must be non-empty strings (the empty string is padding)"

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class ModelOutputError(ClinicalNERError, ValueError):
    """A signature's outputs break the contract (a model or export bug).

    The message gives positions and sizes only, never document text.
    """


def encode_text(text: str) -> bytes:
    """The UTF-8 bytes a signature receives for ``text``.

    Lone surrogates (which UTF-8 cannot encode) become U+FFFD: one code point
    for one keeps every offset, and both are one-character tokens.
    """
    return replace_lone_surrogates(text).encode("utf-8")


def replace_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (e.g. from a JSON ``"\\ud800"``) as U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def checked_texts(texts: Iterable[Any]) -> list[str]:
    """``texts`` as a list, or TypeError naming the first item that is not a ``str``.

    >>> checked_texts(b"CT")
    Traceback (most recent call last):
    ...
    TypeError: texts is bytes, expected a str or a list of str (decode bytes first)
    """
    hint = None
    if isinstance(texts, (bytes, bytearray)):
        hint = " (decode bytes first)"
    elif isinstance(texts, Mapping):
        # It iterates over its keys: notes keyed by id would have their ids annotated.
        hint = " (not a mapping, whose keys would be annotated: give list(notes.values()))"
    elif hasattr(texts, "columns"):
        # A pandas DataFrame iterates over its column names (duck-typed: pandas is optional).
        hint = (" (not a table, whose column names would be annotated: give its text column "
                "as a list, e.g. df[\"text\"].tolist())")
    elif not isinstance(texts, Iterable):
        hint = ""
    if hint is not None:
        raise TypeError(f"texts is {type(texts).__name__}, expected a str or a list of "
                        f"str{hint}")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
        if type(text) is not str:
            # A str subclass as a plain str: worker processes cannot unpickle the caller's class.
            texts[index] = str.__str__(text)
    return texts


def sentence_list(sentences: Iterable[Any]) -> list[Any]:
    """``sentences`` (pre-tokenized, for ``tag``) as a list, read once, or TypeError.

    A ``str`` would be a sequence of one-character "tokens" and a mapping
    would have its keys tagged: both refused, as :func:`checked_texts` refuses
    them for texts.

    >>> sentence_list({("fever",): "n1"})
    Traceback (most recent call last):
    ...
    TypeError: sentences is dict, expected a list of sentences, each a list of tokens (str)
    """
    if (isinstance(sentences, (str, bytes, Mapping))
            or not isinstance(sentences, Iterable)):
        raise TypeError(f"sentences is {type(sentences).__name__}, expected a list of "
                        "sentences, each a list of tokens (str)")
    return list(sentences)


def span_within(start: Any, end: Any, length: Any) -> Any:
    """Whether ``[start, end)`` is a span of a text of ``length`` code points:
    ``0 <= start < end <= length``, the rule of ``classify_assertions``' spans.

    Ints give a bool; NumPy arrays an array of them, element by element.
    """
    return (0 <= start) & (start < end) & (end <= length)


def padded_token_rows(rows: Sequence[Sequence[Any]], pad: Any = PAD_TOKEN) -> list[list[Any]]:
    """Sentences of tokens right-padded with ``pad`` to the longest, as ``tokens`` takes them."""
    width = max((len(row) for row in rows), default=0)
    return [list(row) + [pad] * (width - len(row)) for row in rows]


def in_size_order_batches(
    items: Sequence[Any],
    sizes: Sequence[int],
    batch_size: int,
    run_batch: Callable[[list[Any]], list[Any]],
    max_batch_total: int | None = None,
) -> list[Any]:
    """``run_batch`` over batches of items of similar size, results in the items' order.

    Both the in-process API and the client batch this way: a batch costs as
    much as its largest member, so grouping by size wastes little on padding.
    A batch holds at most ``batch_size`` items and, with ``max_batch_total``,
    items whose sizes sum to at most that (an item larger than it goes alone),
    so that many short items share a call and a few long ones do not make a
    huge one.
    """
    check_integer("batch_size", batch_size)  # 0 or less would never end a batch
    order = sorted(range(len(items)), key=sizes.__getitem__)
    results: list[Any] = [None] * len(items)
    start = 0
    while start < len(order):
        end, total = start, 0
        while end < len(order) and end - start < batch_size and (
            end == start or max_batch_total is None
            or total + sizes[order[end]] <= max_batch_total
        ):
            total += sizes[order[end]]
            end += 1
        chosen = order[start:end]
        for index, result in zip(chosen, run_batch([items[index] for index in chosen])):
            results[index] = result
        start = end
    return results


def annotate_batch(
    texts: list[str], run_serving_default: Callable[[np.ndarray], Mapping[str, Any]]
) -> list[list[Entity]]:
    """Entities of ``texts`` from one call of a ``serving_default`` function.

    ``run_serving_default`` takes the encoded texts (an object array of bytes)
    and returns the output tensors by name: the in-process inference module's
    ``annotate_text`` or a loaded SavedModel's signature.
    """
    outputs = run_serving_default(np.array([encode_text(text) for text in texts], dtype=object))
    return entities_from_outputs(texts, outputs)


def classify_assertions_batch(
    texts: list[str], spans: list[list[tuple[int, int]]],
    run_classify_assertions: Callable[[np.ndarray, np.ndarray, np.ndarray], Mapping[str, Any]],
) -> list[list[tuple[str, float]]]:
    """Each span's assertion and confidence from one call of a ``classify_assertions`` function.

    ``run_classify_assertions`` takes the encoded texts and the span starts and
    ends (int32, padded with -1) and returns the output tensors by name: the
    in-process inference module's ``classify_assertions`` or a loaded
    SavedModel's signature.
    """
    starts = padded_token_rows([[start for start, _ in row] for row in spans], -1)
    ends = padded_token_rows([[end for _, end in row] for row in spans], -1)
    outputs = run_classify_assertions(
        np.array([encode_text(text) for text in texts], dtype=object),
        np.array(starts, dtype=np.int32), np.array(ends, dtype=np.int32))
    names = np.asarray(outputs[ASSERTION])
    confidences = np.asarray(outputs[ASSERTION_CONFIDENCE])
    return [[(_to_str(names[row, column]), float(confidences[row, column]))
             for column in range(len(row_spans))]
            for row, row_spans in enumerate(spans)]


def entities_from_outputs(
    texts: list[str], outputs: Mapping[str, Any]
) -> list[list[Entity]]:
    """Decode ``serving_default`` outputs into one entity list per document.

    ``outputs`` maps the output names to arrays (NumPy arrays, ``tf.Tensor``
    or anything ``np.asarray`` accepts). Offsets count code points, so
    ``entity.text == texts[i][entity.start:entity.end]``. Entities get their
    ``assertion`` and ``assertion_confidence`` from ``entity_assertion`` and
    ``entity_assertion_confidence`` where those hold one; both stay ``None``
    where the string is empty or the outputs lack them.
    """
    arrays = _require(outputs, ENTITY_OUTPUTS)
    starts, ends, labels, confidences, counts = (arrays[name] for name in ENTITY_OUTPUTS)
    if counts.shape != (len(texts),):
        raise ModelOutputError(
            f"{ENTITY_COUNT} has shape {counts.shape}, expected ({len(texts)},) "
            f"for {len(texts)} documents"
        )
    per_entity = [ENTITY_START, ENTITY_END, ENTITY_LABEL, ENTITY_CONFIDENCE]
    has_assertions = any(name in outputs for name in ENTITY_ASSERTION_OUTPUTS)
    if has_assertions:
        arrays.update(_require(outputs, ENTITY_ASSERTION_OUTPUTS))
        per_entity += ENTITY_ASSERTION_OUTPUTS
    for name in per_entity:
        if arrays[name].ndim != 2 or arrays[name].shape[0] != len(texts):
            raise ModelOutputError(
                f"{name} has shape {arrays[name].shape}, expected ({len(texts)}, E)"
            )
    width = starts.shape[1]
    for name in per_entity:
        if arrays[name].shape[1] != width:
            raise ModelOutputError(
                f"{name} has {arrays[name].shape[1]} columns, {ENTITY_START} {width}"
            )
    result = []
    for row, text in enumerate(texts):
        count = int(counts[row])
        if not 0 <= count <= width:
            raise ModelOutputError(
                f"document {row}: {ENTITY_COUNT} is {count} but the outputs hold {width} columns"
            )
        entities = []
        for column in range(count):
            start, end = int(starts[row, column]), int(ends[row, column])
            if not 0 <= start < end <= len(text):
                raise ModelOutputError(
                    f"document {row}, entity {column}: span [{start}, {end}) is not "
                    f"inside a text of {len(text)} characters"
                )
            assertion = (
                _to_str(arrays[ENTITY_ASSERTION][row, column]) if has_assertions else ""
            )
            entities.append(
                Entity(
                    start=start,
                    end=end,
                    text=text[start:end],
                    label=_to_str(labels[row, column]),
                    confidence=float(confidences[row, column]),
                    assertion=assertion or None,
                    assertion_confidence=(
                        float(arrays[ENTITY_ASSERTION_CONFIDENCE][row, column])
                        if assertion else None
                    ),
                )
            )
        result.append(entities)
    return result


def tags_from_outputs(outputs: Mapping[str, Any]) -> list[tuple[list[str], list[float]]]:
    """Decode ``predict_tokens`` outputs into ``(tags, confidences)`` per row.

    Each row is cut to its ``length``, dropping the padding positions.
    """
    arrays = _require(outputs, TAG_OUTPUTS)
    tags, confidences, lengths = (arrays[name] for name in TAG_OUTPUTS)
    if tags.ndim != 2 or confidences.shape != tags.shape or lengths.shape != tags.shape[:1]:
        raise ModelOutputError(
            f"inconsistent shapes: {TAGS} {tags.shape}, {TAG_CONFIDENCE} "
            f"{confidences.shape}, {LENGTH} {lengths.shape}"
        )
    result = []
    for row in range(tags.shape[0]):
        length = int(lengths[row])
        if not 0 <= length <= tags.shape[1]:
            raise ModelOutputError(
                f"row {row}: {LENGTH} is {length} but the outputs hold {tags.shape[1]} columns"
            )
        result.append(
            (
                [_to_str(tag) for tag in tags[row, :length]],
                [float(value) for value in confidences[row, :length]],
            )
        )
    return result


def _require(outputs: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    missing = [name for name in names if name not in outputs]
    if missing:
        raise ModelOutputError(
            f"missing outputs {missing}; got {sorted(outputs)}, expected {list(names)}"
        )
    return {name: np.asarray(outputs[name]) for name in names}


def _to_str(value: bytes | str) -> str:
    # TensorFlow string tensors come back as bytes; the contract says UTF-8.
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
