"""Training word2vec or fastText with gensim on the token file, with a progress bar."""
from __future__ import annotations

import collections
import threading
from pathlib import Path

from clinical_ner.vectors.extras import progress_bar

METHODS = ("word2vec", "fasttext")


def train_keyed_vectors(models, method: str, corpus: Path, counts: collections.Counter, totals: dict,
           dim: int, window: int, epochs: int, min_count: int, workers: int, seed: int,
           progress: bool):
    """gensim on the token file; the trained ``KeyedVectors``."""
    model_class = models.Word2Vec if method == "word2vec" else models.FastText
    model = model_class(vector_size=dim, window=window, min_count=min_count, workers=workers,
                        sg=1, seed=seed, epochs=epochs)
    # The counts are already known: no second pass over the file to build the vocabulary.
    model.build_vocab_from_freq(counts, corpus_count=totals["sentences"])
    bar = progress_bar(epochs * totals["tokens"], f"training {method}", "word", progress)
    callbacks = [] if bar is None else [_EpochProgress(bar, totals["tokens"])]
    ticking = _Ticker(bar)
    try:
        model.train(corpus_file=str(corpus), total_words=totals["tokens"], epochs=epochs,
                    callbacks=callbacks)
    finally:
        ticking.stop()
        if bar is not None:
            bar.close()
    return model.wv


class _EpochProgress:
    """A gensim callback: ``corpus_file`` mode reports progress only once per epoch."""

    def __init__(self, bar, words_per_epoch: int) -> None:
        self.bar = bar
        self.words_per_epoch = words_per_epoch

    def on_epoch_begin(self, model) -> None:
        pass

    def on_epoch_end(self, model) -> None:
        self.bar.update(self.words_per_epoch)

    def on_batch_begin(self, model) -> None:
        pass

    def on_batch_end(self, model) -> None:
        pass

    def on_train_begin(self, model) -> None:
        pass

    def on_train_end(self, model) -> None:
        pass


class _Ticker:
    """Refreshes a progress bar every second, so that the elapsed time moves within an epoch."""

    def __init__(self, bar) -> None:
        self._stop = threading.Event()
        self._thread = None
        if bar is not None:
            self._thread = threading.Thread(target=self._run, args=(bar,), daemon=True)
            self._thread.start()

    def _run(self, bar) -> None:
        while not self._stop.wait(1.0):
            bar.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
