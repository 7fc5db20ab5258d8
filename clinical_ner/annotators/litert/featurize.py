"""Token features in NumPy: what :class:`clinical_ner.model.features.Featurizer` computes in the graph.

Word ids look up :func:`clinical_ner.text.tokenizer.normalize_word`, casing ids are
:func:`clinical_ner.text.tokenizer.casing_feature`, and character ids look up each of
a token's first ``max_word_length`` characters, exactly as the graph's
tables do (they are built from the same functions).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from clinical_ner.text import tokenizer as text
from clinical_ner.model.vocab import UNKNOWN_ID


class NumpyFeaturizer:
    """Padded id arrays for a batch of tokenized sentences.

    Characters come as distinct spellings: ``spellings`` ``[S, C]`` holds the
    character ids of each distinct spelling of the batch once (row 0 is the
    empty spelling of padding positions) and ``spelling_index`` ``[B, T]``
    says which row each position has. The network convolves each spelling
    once, as the TensorFlow graph does after its ``UniqueV2``.

    Example:
    >>> featurizer = NumpyFeaturizer(["", "<unk>", "ct", "0"], ["", "<unk>", "C", "T"], 4)
    >>> ids = featurizer([["CT", "12", "CT"], ["ct"]], width=3, char_width=2)
    >>> ids["word_ids"].tolist(), ids["casing_ids"].tolist()
    ([[2, 1, 2], [2, 0, 0]], [[4, 1, 4], [3, 0, 0]])
    >>> ids["spelling_index"].tolist(), ids["spellings"].tolist()  # "12", "ct": unknown chars
    ([[1, 2, 1], [2, 0, 0]], [[0, 0], [2, 3], [1, 1]])
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

    def __call__(self, sentences: Sequence[Sequence[str]], width: int, char_width: int
                 ) -> dict[str, np.ndarray]:
        """``word_ids``, ``casing_ids``, ``spelling_index`` ``[B, width]`` and ``spellings``.

        ``spellings`` is ``[S, char_width]`` for ``S`` distinct spellings
        (the empty one included). The network's output at real tokens does
        not depend on padding (``width`` past a sentence's end, ``char_width``
        past a spelling's end).
        """
        batch = len(sentences)
        word_ids = np.zeros((batch, width), np.int32)
        casing_ids = np.zeros((batch, width), np.int32)
        spelling_index = np.zeros((batch, width), np.int32)
        spelling_rows: dict[tuple[int, ...], int] = {(): 0}
        for row, sentence in enumerate(sentences):
            for column, token in enumerate(sentence):
                if not token:
                    continue  # "" is padding, as in the graph
                # Only tokens within max_word_length are cached: the cache keeps each key
                # whole, so distinct long ones (base64 blobs of 100,000 characters) grew a
                # long-running worker by their size, up to 65,536 of them. They are rare,
                # and featurizing one costs about what reading it does.
                featurize = (self.token_features if len(token) <= self.max_word_length
                             else self._token_features)
                word_id, casing_id, chars = featurize(token)
                word_ids[row, column] = word_id
                casing_ids[row, column] = casing_id
                spelling_index[row, column] = spelling_rows.setdefault(
                    chars[:char_width], len(spelling_rows))
        spellings = np.zeros((len(spelling_rows), char_width), np.int32)
        for chars, index in spelling_rows.items():
            spellings[index, :len(chars)] = chars
        return {"word_ids": word_ids, "casing_ids": casing_ids,
                "spelling_index": spelling_index, "spellings": spellings}
