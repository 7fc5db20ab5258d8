"""The corpora the benchmarks train and score on: the one list to extend.

``benchmarks.run`` trains and scores each, ``benchmarks.bench_report`` orders
its tables and checks the accuracy targets by it, and
``benchmarks.pretrain_word_vectors`` reads the training splits' tokens.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    format: str  # "conll" or "i2b2"
    train: str  # relative to the data root
    dev: str
    test: str | None = None
    # (split, exact micro F1 at least) that the README tables check; None: no target.
    accuracy_target: tuple[str, float] | None = None


# In the order of the README tables.
CORPORA = {
    spec.name: spec
    for spec in (
        CorpusSpec("bc5cdr", "conll", "bc5cdr/train.conll", "bc5cdr/dev.conll",
                   "bc5cdr/test.conll", accuracy_target=("test", 0.88)),
        CorpusSpec("ncbi-disease", "conll", "ncbi-disease/train.conll", "ncbi-disease/dev.conll",
                   accuracy_target=("dev", 0.86)),
        # The i2b2 layout, so that the i2b2 reader is what gets measured; no
        # threshold: "as high as we can get" on dev.
        CorpusSpec("maccrobat", "i2b2", "maccrobat-i2b2/train", "maccrobat-i2b2/dev"),
    )
}
