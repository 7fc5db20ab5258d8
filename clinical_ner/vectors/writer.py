"""Writing word vectors in the word2vec text format (the format :mod:`clinical_ner.vectors.reader` reads)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


def write_vectors(path: str | Path, words: Sequence[str], vectors: np.ndarray) -> None:
    """The word2vec text format: a ``count dim`` line, then ``word v1 … vd`` per line.

    Written to a temporary name beside ``path`` and renamed, readable by its owner only
    (the words come from patient notes).
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    row = " ".join(["%.6f"] * vectors.shape[1]) + "\n"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(descriptor, "w", encoding="utf-8") as handle:
            handle.write(f"{len(words)} {vectors.shape[1]}\n")
            for word, vector in zip(words, vectors):
                handle.write(word + " " + row % tuple(vector.tolist()))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
