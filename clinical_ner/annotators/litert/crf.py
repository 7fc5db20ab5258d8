"""Constrained Viterbi decoding and tag marginals in NumPy.

The same computation as :meth:`clinical_ner.model.layers.crf.CRF.decode`: the
forbidden transitions, first tags and last tags get ``forbidden_score``
added (the export saves the masks and that score as data), Viterbi finds the
best path, and the forward-backward algorithm gives each tag's marginal
probability under the same constrained scores, so a confidence belongs to
the path it describes. Rows have their own lengths; padding steps never
change a real step's result.

Per step, only a handful of NumPy calls run: the forward and the backward
passes share one loop as a stack of two (the backward pass is the forward
pass over each row reversed within its length, with transposed
transitions), in probability space rescaled at every step, and Viterbi's
backpointers are computed for all steps at once after its loop and followed
in plain Python.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np


class ConstrainedCRF:
    """A linear-chain CRF's decoding with saved parameters.

    ``transitions[i, j]`` scores tag ``i`` followed by ``j``; ``allowed_*``
    are the boolean masks (``None`` allows everything); ``forbidden_score``
    is added where a mask is false.

    Example:
    >>> crf = ConstrainedCRF(np.zeros((3, 3)), np.zeros(3), np.zeros(3),
    ...                      allowed_start=np.array([True, True, False]))
    >>> tags, confidence = crf.decode(np.array([[[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]]]),
    ...                               np.array([2]))
    >>> tags.tolist()  # tag 2 may not start a sentence
    [[0, 2]]
    """

    def __init__(self, transitions, start_transitions, end_transitions,
                 allowed_transitions=None, allowed_start=None, allowed_end=None,
                 forbidden_score: float = -1e4) -> None:
        def constrained(scores, allowed):
            # Summed in float32, as the graph sums its float32 variables.
            scores = np.asarray(scores, np.float32)
            if allowed is not None:
                scores = scores + np.where(np.asarray(allowed, bool), np.float32(0),
                                           np.float32(forbidden_score))
            return scores.astype(np.float64)

        self.transitions = constrained(transitions, allowed_transitions)
        self.start = constrained(start_transitions, allowed_start)
        self.end = constrained(end_transitions, allowed_end)
        self.num_tags = self.transitions.shape[0]
        # transitions_into[j, i] = transitions[i, j]: the backpointers' argmax
        # over the previous tag runs along the last, contiguous axis (NumPy's
        # argmax over a middle axis copies the array first).
        self._transitions_into = np.ascontiguousarray(self.transitions.T)
        # Exponentials shifted by their maximum: forbidden entries become exact zeros.
        forward = np.exp(self.transitions - self.transitions.max())
        self._exp_transitions = np.stack([forward, forward.T])
        self._exp_first = np.stack([np.exp(self.start - self.start.max()),
                                    np.exp(self.end - self.end.max())])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConstrainedCRF":
        """From the ``crf.json`` of a LiteRT export.

        Raises ``ValueError`` naming the field that is missing or does not
        fit (a wrong shape would broadcast, and a null score decode to other
        tags, without an error).
        """
        if not isinstance(data, Mapping):
            raise ValueError("expected a JSON object")
        transitions = _array(data, "transitions", float, None)
        if transitions.ndim != 2 or transitions.shape[0] != transitions.shape[1]:
            raise ValueError(f"'transitions' must be a square matrix, not {transitions.shape}")
        tags = transitions.shape[0]
        forbidden_score = data.get("forbidden_score")
        if isinstance(forbidden_score, bool) or not isinstance(forbidden_score, (int, float)) \
                or not np.isfinite(forbidden_score):
            raise ValueError("'forbidden_score' must be a finite number")
        return cls(transitions, _array(data, "start_transitions", float, (tags,)),
                   _array(data, "end_transitions", float, (tags,)),
                   _array(data, "allowed_transitions", bool, (tags, tags), optional=True),
                   _array(data, "allowed_start", bool, (tags,), optional=True),
                   _array(data, "allowed_end", bool, (tags,), optional=True), forbidden_score)

    def decode(self, emissions: np.ndarray, lengths: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Best tag ids ``[B, T]`` and each chosen tag's marginal probability ``[B, T]``.

        ``emissions`` is ``[B, T, K]``; ``lengths`` ``[B]`` counts each row's
        real steps (at least 1). Padding positions hold tag 0 and confidence 0.
        """
        emissions = np.asarray(emissions, np.float64)
        lengths = np.asarray(lengths)
        batch, steps, _ = emissions.shape
        real = np.arange(steps)[np.newaxis, :] < lengths[:, np.newaxis]
        emissions = np.where(real[:, :, np.newaxis], emissions, 0.0)
        tags = self._viterbi(emissions, lengths)
        marginals = self._marginals(emissions, lengths, real)
        rows = np.arange(batch)[:, np.newaxis]
        confidence = marginals[rows, np.arange(steps)[np.newaxis, :], tags]
        return np.where(real, tags, 0), np.where(real, confidence, 0.0)

    def _viterbi(self, emissions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        batch, steps, _ = emissions.shape
        transitions = self.transitions[np.newaxis]
        bests = np.empty((steps, batch, self.num_tags))
        best = bests[0] = self.start + emissions[:, 0]
        # Through each row's padding unmasked: only real steps are read.
        for step in range(1, steps):
            best = bests[step] = (best[:, :, np.newaxis] + transitions).max(axis=1) \
                + emissions[:, step]
        rows = np.arange(batch)
        last = (bests[lengths - 1, rows] + self.end).argmax(axis=1).tolist()
        # backpointers[b][t - 1][j]: the best tag at t - 1 before tag j at t,
        # for every step at once; the backtrace itself is cheapest in plain
        # Python (one list lookup a step, against several NumPy calls).
        backpointers = (bests[:-1, :, np.newaxis, :] + self._transitions_into).argmax(axis=3)
        backpointers = backpointers.transpose(1, 0, 2).tolist()
        tags = np.zeros((batch, steps), np.int64)
        for row, length in enumerate(lengths.tolist()):
            tag, path, pointers = last[row], [0] * length, backpointers[row]
            for step in range(length - 1, 0, -1):
                path[step] = tag
                tag = pointers[step - 1][tag]
            path[0] = tag
            tags[row, :length] = path
        return tags

    def _marginals(self, emissions: np.ndarray, lengths: np.ndarray,
                   real: np.ndarray) -> np.ndarray:
        batch, steps, _ = emissions.shape
        # Each step's potentials as probabilities, shifted by the step's maximum.
        potentials = np.exp(emissions - emissions.max(axis=2, keepdims=True))
        np.maximum(potentials, np.finfo(np.float64).tiny, out=potentials)
        # Row b reversed within its length: position t holds step lengths[b] - 1 - t.
        positions = np.arange(steps)[np.newaxis, :]
        reverse = np.where(real, lengths[:, np.newaxis] - 1 - positions, positions)
        rows = np.arange(batch)[:, np.newaxis]
        both = np.stack([potentials, potentials[rows, reverse]], axis=1)  # [B, 2, T, K]
        sums = np.empty((steps, 2, batch, self.num_tags))
        current = self._exp_first[:, np.newaxis, :] * both[:, :, 0].transpose(1, 0, 2)
        current /= current.sum(axis=2, keepdims=True)
        sums[0] = current
        stacked = both.transpose(2, 1, 0, 3)  # [T, 2, B, K]
        for step in range(1, steps):
            current = np.matmul(current, self._exp_transitions) * stacked[step]
            current /= current.sum(axis=2, keepdims=True)
            sums[step] = current
        alphas = sums[:, 0].transpose(1, 0, 2)
        betas = sums[:, 1].transpose(1, 0, 2)[rows, reverse]
        # Both include the step's own potential once: divide it out once.
        marginals = alphas * betas / potentials
        return marginals / marginals.sum(axis=2, keepdims=True)


def _array(data: Mapping[str, Any], name: str, kind: type, shape: tuple[int, ...] | None,
           optional: bool = False) -> Any:
    """``data[name]`` as an array of finite numbers (or booleans) of ``shape``."""
    value = data.get(name)
    if value is None:
        if optional:
            return None
        raise ValueError(f"'{name}' is missing")
    try:
        array = np.asarray(value)
    except ValueError:
        raise ValueError(f"'{name}' is not a regular array") from None
    valid = (array.dtype == bool if kind is bool
             else array.dtype.kind in "iuf" and bool(np.isfinite(array).all()))
    if not valid or (shape is not None and array.shape != shape):
        wanted = "booleans" if kind is bool else "finite numbers"
        raise ValueError(f"'{name}' must be {wanted} of shape {shape or '(tags, tags)'}, "
                         f"not {array.dtype} of shape {array.shape}")
    return array
