"""Sentence splitting and tokenization in the TensorFlow graph.

:func:`split_sentences_graph` repeats :func:`clinical_ner.text.tokenizer.split_sentences`
with core TensorFlow ops only, so that a SavedModel taking raw text runs in
stock TensorFlow Serving (no ``tensorflow_text``, no ``py_function``). It reads
the same per-code-point class table as the Python tokenizer and gives the
same tokens, offsets and sentence boundaries.

All work is vectorised over the code points of the whole batch: documents are
decoded once, every code point is classified by a table lookup, and tokens are
re-encoded from their code points (``tf.strings.substr`` with
``unit="UTF8_CHAR"`` rescans the string at every call and is quadratic on long
documents).

Invalid UTF-8 cannot reach the Python tokenizer (it takes ``str``), but stock
TensorFlow Serving passes any bytes through. Rather than failing the whole
batch, each invalid byte sequence is decoded as U+FFFD (an OTHER token of its
own), exactly as ``bytes.decode("utf-8", errors="replace")`` does, and offsets
count the code points of that repaired text.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from clinical_ner.text import tokenizer as text
from clinical_ner.text.tokenizer import PAD

# Refinements of text.SEPARATOR and text.OTHER used only here: the sentence
# rules need to know which separators are line breaks and which OTHER tokens
# are sentence-final punctuation, and folding that into the class table costs
# nothing at lookup time.
_LINE_BREAK = 3
_SENTENCE_FINAL = 4

_REPLACEMENT_CHAR = 0xFFFD


def dense_from_runs(starts: Sequence[int], values: Sequence[int]) -> np.ndarray:
    """Expand a run-length encoding (``text.char_class_runs()``) to one value per code point."""
    lengths = np.diff(np.append(np.asarray(starts, np.int64), text.MAX_CODE_POINT + 1))
    return np.repeat(np.asarray(values, np.int32), lengths)


class CodePointTable:
    """An int32 value for every code point, looked up in the graph with two gathers.

    The table is cut into pages of 256 code points and identical pages are
    stored once (the tokenizer's class table needs 130 pages instead of
    4,352), so it is small enough to live in the graph as a constant, and a
    lookup costs two ``tf.gather`` calls instead of a binary search.
    """

    PAGE_BITS = 8

    def __init__(self, values: np.ndarray) -> None:
        """``values[c]`` is the value of code point ``c`` (length 0x110000)."""
        values = np.asarray(values, np.int32)
        if values.shape != (text.MAX_CODE_POINT + 1,):
            raise ValueError(f"need one value per code point, got shape {values.shape}")
        page_size = 1 << self.PAGE_BITS
        page_ids: dict[bytes, int] = {}
        pages: list[np.ndarray] = []
        page_offsets = np.empty(len(values) // page_size, np.int32)
        for number, page in enumerate(values.reshape(-1, page_size)):
            page_id = page_ids.setdefault(page.tobytes(), len(pages))
            if page_id == len(pages):
                pages.append(page)
            # Store where the page starts, so that a lookup needs no multiply.
            page_offsets[number] = page_id * page_size
        self.page_offsets = page_offsets
        self.pages = np.concatenate(pages)

    def lookup(self, code_points: tf.Tensor) -> tf.Tensor:
        """The values of int32 code points in ``[0, 0x10FFFF]``, in the same shape."""
        page = tf.bitwise.right_shift(code_points, self.PAGE_BITS)
        page_start = tf.gather(tf.constant(self.page_offsets), page)
        in_page = tf.bitwise.bitwise_and(code_points, (1 << self.PAGE_BITS) - 1)
        return tf.gather(tf.constant(self.pages), page_start + in_page)


@functools.lru_cache(maxsize=None)
def _class_table() -> CodePointTable:
    """``text.char_class`` with line breaks and ``.!?`` set apart."""
    classes = dense_from_runs(*text.char_class_runs())
    for char in text.LINE_BREAKS:
        classes[ord(char)] = _LINE_BREAK
    for char in text.SENTENCE_FINAL:
        classes[ord(char)] = _SENTENCE_FINAL
    return CodePointTable(classes)


def decode_utf8(strings: tf.Tensor) -> tf.RaggedTensor:
    """Decode UTF-8 strings to int32 code points, invalid sequences becoming U+FFFD."""
    return tf.strings.unicode_decode(
        strings, "UTF-8", errors="replace", replacement_char=_REPLACEMENT_CHAR
    )


def _starts_after(ends: tf.Tensor) -> tf.Tensor:
    """Which items start a group, given which items end one (the first always starts)."""
    # Concatenating before slicing keeps an empty input empty.
    return tf.concat([tf.ones([1], tf.bool), ends], 0)[:-1]


def split_sentences_graph(
    texts: tf.Tensor, max_sentence_tokens: int = text.DEFAULT_MAX_SENTENCE_TOKENS
) -> dict[str, tf.Tensor]:
    """Tokenize a batch of documents and split them into sentences, in the graph.

    Equal to ``text.split_sentences(document, max_sentence_tokens)`` for each
    document. Runs eagerly or in a graph; wrap it in a ``tf.function`` for speed.

    Args:
      texts: string tensor [B] of UTF-8 documents.
      max_sentence_tokens: longest sentence, as in ``text.split_sentences``.

    Returns:
      A dict with, for the S sentences of all documents (in document order,
      then text order) padded to the longest one, T tokens:

      * ``tokens``: string [S, T], padded with ``""``;
      * ``token_start``, ``token_end``: int64 [S, T], half-open code-point
        offsets into the token's own document, padded with 0;
      * ``length``: int32 [S], tokens per sentence;
      * ``document``: int32 [S], index in ``texts`` of each sentence's document.

      Documents without tokens (empty or whitespace-only) have no sentences.
    """
    if max_sentence_tokens < 1:
        raise ValueError(f"max_sentence_tokens must be >= 1, got {max_sentence_tokens}")
    texts = tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1])
    decoded = decode_utf8(texts)
    code_points = decoded.flat_values
    doc_bounds = decoded.row_splits  # int64 [B + 1], into the code points of the batch
    num_code_points = tf.size(code_points, out_type=tf.int64)
    false = tf.zeros([1], tf.bool)

    classes = _class_table().lookup(code_points)
    is_word = tf.equal(classes, text.WORD)
    in_token = ~(tf.equal(classes, text.SEPARATOR) | tf.equal(classes, _LINE_BREAK))
    single = in_token & ~is_word  # each OTHER code point is a token of its own

    # A WORD run must not continue from one document into the next.
    doc_start_count = tf.scatter_nd(
        tf.expand_dims(doc_bounds[:-1], 1),
        tf.ones_like(doc_bounds[:-1], tf.int32),
        tf.reshape(num_code_points + 1, [1]),
    )
    continues = is_word[1:] & is_word[:-1] & tf.equal(doc_start_count[1:-1], 0)
    token_start = tf.where(single | (is_word & ~tf.concat([false, continues], 0)))[:, 0]
    token_end = tf.where(single | (is_word & ~tf.concat([continues, false], 0)))[:, 0] + 1
    num_tokens = tf.size(token_start, out_type=tf.int64)
    token_doc = tf.searchsorted(doc_bounds, token_start, side="right", out_type=tf.int64) - 1

    # The gap after a token (only separators) runs to the next token or to
    # the end of the token's document, whichever comes first.
    next_start = tf.minimum(
        tf.concat([token_start[1:], tf.reshape(num_code_points, [1])], 0),
        tf.gather(doc_bounds, token_doc + 1),
    )
    is_line_break = tf.cast(tf.equal(classes, _LINE_BREAK), tf.int32)
    line_breaks_before = tf.concat([tf.zeros([1], tf.int32), tf.cumsum(is_line_break)], 0)
    gap_has_line_break = tf.gather(line_breaks_before, next_start) > tf.gather(
        line_breaks_before, token_end
    )
    is_final = tf.equal(tf.gather(classes, token_start), _SENTENCE_FINAL)
    last_of_doc = ~tf.concat([tf.equal(token_doc[1:], token_doc[:-1]), false], 0)
    natural_end = last_of_doc | gap_has_line_break | (is_final & (next_start > token_end))

    # The max_sentence_tokens count restarts after every sentence end, so the
    # cuts fall every max_sentence_tokens tokens from the start of each stretch
    # between natural ends.
    starts_stretch = _starts_after(natural_end)
    stretch_first = tf.where(starts_stretch)[:, 0]
    stretch_id = tf.cumsum(tf.cast(starts_stretch, tf.int64)) - 1
    in_stretch = tf.range(num_tokens) - tf.gather(stretch_first, stretch_id)
    ends_sentence = natural_end | tf.equal((in_stretch + 1) % max_sentence_tokens, 0)
    sentence_first = tf.where(_starts_after(ends_sentence))[:, 0]
    sentence_splits = tf.concat([sentence_first, tf.reshape(num_tokens, [1])], 0)

    token_text = tf.strings.unicode_encode(
        tf.RaggedTensor.from_row_lengths(
            tf.boolean_mask(code_points, in_token), token_end - token_start, validate=False
        ),
        "UTF-8",
    )
    doc_offset = tf.gather(doc_bounds, token_doc)

    def by_sentence(values: tf.Tensor, padding: object) -> tf.Tensor:
        ragged = tf.RaggedTensor.from_row_splits(values, sentence_splits, validate=False)
        return ragged.to_tensor(default_value=padding)

    return {
        "tokens": by_sentence(token_text, PAD),
        "token_start": by_sentence(token_start - doc_offset, 0),
        "token_end": by_sentence(token_end - doc_offset, 0),
        "length": tf.cast(sentence_splits[1:] - sentence_splits[:-1], tf.int32),
        "document": tf.cast(tf.gather(token_doc, sentence_first), tf.int32),
    }
