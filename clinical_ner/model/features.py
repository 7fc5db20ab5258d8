"""Token features for the tagger, computed in the TensorFlow graph.

:class:`Featurizer` turns a padded batch of token strings into word ids, char
ids and casing ids with core TensorFlow ops only. The same module serves the
training ``tf.data`` pipeline, in-process inference and the exported
SavedModel, so the three cannot drift apart. Word normalisation and casing
read the per-code-point tables of :mod:`clinical_ner.text.tokenizer` and equal
``text.normalize_word`` and ``text.casing_feature`` exactly.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from clinical_ner.text import tokenizer as text
from clinical_ner.text.graph_tokenizer import CodePointTable, decode_utf8, dense_from_runs
from clinical_ner.model.vocab import PAD, PAD_ID, UNKNOWN, UNKNOWN_ID


@functools.lru_cache(maxsize=None)
def _normalization_table() -> CodePointTable:
    """What ``text.normalize_char`` adds to each code point (0 for most)."""
    deltas = np.zeros(text.MAX_CODE_POINT + 1, np.int32)
    for code_point, normalized in text.normalization_map().items():
        deltas[code_point] = normalized - code_point
    return CodePointTable(deltas)


@functools.lru_cache(maxsize=None)
def _shape_table() -> CodePointTable:
    return CodePointTable(dense_from_runs(*text.char_shape_runs()))


def _check_vocabulary(kind: str, entries: Sequence[str]) -> None:
    if list(entries[:2]) != [PAD, UNKNOWN]:
        raise ValueError(
            f"{kind} must start with {PAD!r}, {UNKNOWN!r}; got {list(entries[:2])}"
        )
    if len(set(entries)) != len(entries):
        raise ValueError(f"{kind} has duplicate entries")


@dataclasses.dataclass(frozen=True)
class _Vocabularies:
    # A plain object, not tuples on the module: tf.Module would wrap those and
    # walk every word whenever anyone asks it for its variables (over a
    # second for a 400,000-word vocabulary).
    words: tuple[str, ...]
    chars: tuple[str, ...]
    max_word_length: int


class Featurizer(tf.Module):
    """Word, character and casing ids of a padded batch of tokens.

    ``words[0]`` must be the padding entry ``""`` and ``words[1]`` the unknown
    entry ``"<unk>"``; the others are normalised word forms
    (``text.normalize_word``). ``chars`` starts with the same two entries,
    followed by single characters.
    """

    def __init__(
        self,
        words: Sequence[str],
        chars: Sequence[str],
        max_word_length: int,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        _check_vocabulary("words", words)
        _check_vocabulary("chars", chars)
        long_chars = [char for char in chars[2:] if len(char) != 1]
        if long_chars:
            raise ValueError(f"chars must be single characters, got {long_chars[:5]}")
        if max_word_length < 1:
            raise ValueError(f"max_word_length must be >= 1, got {max_word_length}")
        self._vocabularies = _Vocabularies(tuple(words), tuple(chars), int(max_word_length))
        self._word_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.words, tf.string), tf.range(len(self.words), dtype=tf.int32)
            ),
            default_value=UNKNOWN_ID,
        )
        char_ids = np.full(text.MAX_CODE_POINT + 1, UNKNOWN_ID, np.int32)
        for index, char in enumerate(self.chars[2:], start=2):
            char_ids[ord(char)] = index
        self._char_table = CodePointTable(char_ids)

    @property
    def word_table(self) -> tf.lookup.StaticHashTable:
        """The graph's word -> id table (a resource a SavedModel must track)."""
        return self._word_table

    @property
    def words(self) -> tuple[str, ...]:
        """The word vocabulary; a word's id is its index."""
        return self._vocabularies.words

    @property
    def chars(self) -> tuple[str, ...]:
        """The character vocabulary; a character's id is its index."""
        return self._vocabularies.chars

    @property
    def max_word_length(self) -> int:
        """Characters per token kept in ``char_ids``."""
        return self._vocabularies.max_word_length

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for ``Featurizer(**config)``."""
        return {
            "words": list(self.words),
            "chars": list(self.chars),
            "max_word_length": self.max_word_length,
            "name": self.name,
        }

    # autograph=False: see clinical_ner/model/inference_graph.py.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string)], autograph=False)
    def __call__(self, tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        """Features of a string tensor [B, T] of tokens padded with ``""``.

        Returns a dict of int32 tensors, 0 at padding:

        * ``word_ids`` [B, T]: index of ``text.normalize_word(token)`` in
          ``words``, 1 if absent;
        * ``char_ids`` [B, T, C]: ids of the token's first ``max_word_length``
          characters (case kept), 1 if absent; C is the longest token in the
          batch cut to ``max_word_length``, and at least 1;
        * ``casing_ids`` [B, T]: ``text.casing_feature(token)``.

        Invalid UTF-8 is read as ``bytes.decode("utf-8", errors="replace")``.
        """
        batch_shape = tf.shape(tokens)
        flat = tf.reshape(tokens, [-1])
        num_tokens = tf.size(flat, out_type=tf.int64)
        # Batches of sentences are mostly padding, so only real tokens are
        # decoded; filling the rest with zeros gives the padding ids (0 is
        # PAD_ID and the "padding" casing feature).
        real = tf.where(tf.strings.length(flat) > 0)[:, 0]
        decoded = decode_utf8(tf.gather(flat, real))
        code_points = decoded.flat_values
        # Each code point's token and position in it, from one kernel (the
        # ragged value_rowids() goes through a much slower tf.repeat).
        token, position = tf.unstack(decoded.to_sparse().indices, axis=1)

        normalized = code_points + _normalization_table().lookup(code_points)
        real_word_ids = self._word_table.lookup(
            tf.strings.unicode_encode(decoded.with_flat_values(normalized), "UTF-8")
        )
        word_ids = tf.scatter_nd(real[:, None], real_word_ids, num_tokens[None])

        # With no tokens the maximum position is the lowest int64, and width 1.
        width = tf.maximum(tf.minimum(tf.reduce_max(position) + 1, self.max_word_length), 1)
        char_ids = tf.RaggedTensor.from_value_rowids(
            self._char_table.lookup(code_points),
            tf.gather(real, token),
            nrows=num_tokens,
            validate=False,
        ).to_tensor(default_value=PAD_ID, shape=tf.stack([num_tokens, width]))

        real_casing_ids = _casing(_shape_table().lookup(code_points), token, decoded.row_splits)
        casing_ids = tf.scatter_nd(real[:, None], real_casing_ids, num_tokens[None])
        return {
            "word_ids": tf.reshape(word_ids, batch_shape),
            "char_ids": tf.reshape(
                char_ids, tf.concat([batch_shape, tf.cast(width, tf.int32)[None]], 0)
            ),
            "casing_ids": tf.reshape(casing_ids, batch_shape),
        }


def _casing(shapes: tf.Tensor, token: tf.Tensor, row_splits: tf.Tensor) -> tf.Tensor:
    """``text.casing_feature`` of non-empty tokens from their code points' shapes.

    ``token`` gives the token of each code point and ``row_splits`` where each
    token's code points start and end.
    """
    num_tokens = tf.size(row_splits) - 1
    num_shapes = max(text.NO_SHAPE, text.DIGIT, text.UPPER, text.LOWER) + 1
    # One histogram of (token, shape) pairs counts every token's shapes.
    counts = tf.reshape(
        tf.math.bincount(
            tf.cast(token, tf.int32) * num_shapes + shapes,
            minlength=num_tokens * num_shapes,
            maxlength=num_tokens * num_shapes,
        ),
        [num_tokens, num_shapes],
    )
    lengths = tf.cast(row_splits[1:] - row_splits[:-1], tf.int32)
    digits = counts[:, text.DIGIT]
    first = tf.gather(shapes, row_splits[:-1])
    rules = [
        (tf.equal(digits, lengths), "numeric"),
        (2 * digits > lengths, "mainly_numeric"),
        (tf.equal(counts[:, text.LOWER], lengths), "all_lower"),
        (tf.equal(counts[:, text.UPPER], lengths), "all_upper"),
        (tf.equal(first, text.UPPER), "initial_upper"),
        (digits > 0, "contains_digit"),
    ]
    casing = tf.fill([num_tokens], text.CASING_FEATURES.index("other"))
    # Applied last to first, so that the first rule that holds wins.
    for condition, feature in reversed(rules):
        casing = tf.where(condition, text.CASING_FEATURES.index(feature), casing)
    return casing
