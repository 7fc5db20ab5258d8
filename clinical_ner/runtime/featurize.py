"""Token features in NumPy: what :class:`clinical_ner.features.Featurizer` computes in the graph.

Word ids look up :func:`clinical_ner.text.normalize_word`, casing ids are
:func:`clinical_ner.text.casing_feature`, and character ids look up each of
a token's first ``max_word_length`` characters, exactly as the graph's
tables do (they are built from the same functions).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from clinical_ner import text

PADDING_ID = 0
UNKNOWN_ID = 1


class NumpyFeaturizer:
    """Padded id arrays for a batch of tokenized sentences.

    Example:
    >>> featurizer = NumpyFeaturizer(["", "<unk>", "ct", "0"], ["", "<unk>", "C", "T"], 4)
    >>> ids = featurizer([["CT", "12"], ["ct"]], width=3, char_width=2)
    >>> ids["word_ids"].tolist(), ids["casing_ids"].tolist()
    ([[2, 1, 0], [2, 0, 0]], [[4, 1, 0], [3, 0, 0]])
    >>> ids["char_ids"][0].tolist()
    [[2, 3], [1, 1], [0, 0]]
    """

    def __init__(self, words: Sequence[str], chars: Sequence[str], max_word_length: int,
                 cache_size: int = 1 << 16) -> None:
        self.max_word_length = int(max_word_length)
        self._word_ids = {word: index for index, word in enumerate(words)}
        self._char_ids = {char: index for index, char in enumerate(chars) if index >= 2}
        # Clinical text repeats its words: each distinct token is featurized once.
        self.token_features = functools.lru_cache(maxsize=cache_size)(self._token_features)

    def _token_features(self, token: str) -> tuple[int, int, tuple[int, ...]]:
        """(word id, casing id, char ids) of one non-empty token."""
        char_ids = tuple(self._char_ids.get(char, UNKNOWN_ID)
                         for char in token[:self.max_word_length])
        return (self._word_ids.get(text.normalize_word(token), UNKNOWN_ID),
                text.casing_feature(token), char_ids)

    def char_width(self, sentences: Sequence[Sequence[str]]) -> int:
        """Characters per token the graph would use for this batch (at least 1)."""
        longest = max((len(token) for sentence in sentences for token in sentence), default=0)
        return max(1, min(longest, self.max_word_length))

    def __call__(self, sentences: Sequence[Sequence[str]], width: int,
                 char_width: int) -> dict[str, np.ndarray]:
        """``word_ids``, ``casing_ids`` ``[B, width]`` and ``char_ids`` ``[B, width, char_width]``.

        ``width`` and ``char_width`` may exceed what the sentences need (the
        extra positions are padding, 0); the network's output at real tokens
        does not depend on them.
        """
        batch = len(sentences)
        word_ids = np.zeros((batch, width), np.int32)
        casing_ids = np.zeros((batch, width), np.int32)
        char_ids = np.zeros((batch, width, char_width), np.int32)
        for row, sentence in enumerate(sentences):
            for column, token in enumerate(sentence):
                if not token:
                    continue  # "" is padding, as in the graph
                word_id, casing_id, chars = self.token_features(token)
                word_ids[row, column] = word_id
                casing_ids[row, column] = casing_id
                char_ids[row, column, :len(chars)] = chars[:char_width]
        return {"word_ids": word_ids, "char_ids": char_ids, "casing_ids": casing_ids}
