"""Training data from a corpus file: several corpora, their label maps, coverage and weights.

:func:`read_training_corpora` reads every corpus of a
:class:`~clinical_ner.formats.corpora.CorpusSet` into one
:class:`TrainingCorpora`; the trainer asks it for each epoch's sentences
(:meth:`TrainingCorpora.epoch_indices`, by the corpora's weights) and, when
some corpus labels a type only in part, for each sentence's allowed tags
(:meth:`TrainingCorpora.allowed_tags`), which make the loss the marginal
likelihood of the tag paths that agree with what its corpus labelled
(``docs/design/multi-corpus.md``). :func:`corpus_scores` scores each dev
corpus on its own labels and :func:`selection_scores` weighs them into the
score that chooses the epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from clinical_ner.text.document import Sentence
from clinical_ner.training.dataset import encode_allowed_tags
from clinical_ner.errors import ConfigError, DataFormatError
from clinical_ner.evaluation.evaluate import (
    corpus_sentences, evaluate_sentences, headline_scores, report_skipped,
)
from clinical_ner.formats.corpora import (
    CorpusSet, SourceData, check_corpus_labels, check_corpus_paths, check_label_map,
    load_spec_corpus,
)
from clinical_ner.annotators.keras_annotator import KerasAnnotator


def sentences_per_epoch(weight: float, sentences: int) -> int:
    """How many of a corpus's ``sentences`` an epoch draws at ``weight``."""
    return int(round(weight * sentences))


@dataclass
class TrainingCorpora:
    """The training sentences of every corpus, in file order, and which corpus each came from."""

    corpus_set: CorpusSet
    sentences: list[Sentence]
    corpus_index: np.ndarray  # int [sentences]: position of each sentence's corpus
    # The dev files as the label checks read them, for read_dev_corpora (by corpus name).
    dev_sources: dict[str, SourceData] = field(default_factory=dict)

    def epoch_indices(self, seed: int, epoch: int) -> np.ndarray:
        """The sentences (indices) that epoch ``epoch`` trains on.

        A corpus of ``n`` sentences and weight ``w`` contributes
        ``round(w * n)`` of them: whole copies of the corpus for the integer
        part of ``w``, then a sample drawn without replacement with a seed
        of (``seed``, ``epoch``, corpus), so a resumed run draws the same.
        With every weight 1 it is every sentence once, in file order (plain
        concatenation; the training pipeline shuffles).
        """
        chosen = []
        for position, spec in enumerate(self.corpus_set.corpora):
            members = np.flatnonzero(self.corpus_index == position)
            count = sentences_per_epoch(spec.weight, len(members))
            copies, rest = divmod(count, len(members))
            rng = np.random.default_rng([seed, epoch, position])
            sample = np.sort(rng.choice(members, size=rest, replace=False))
            chosen.extend([members] * copies + [sample])
        return np.concatenate(chosen)

    def settings(self) -> dict:
        """What training takes from the corpus file beside the sentences: each corpus's
        name, sentence count, weight and coverage, and ``select`` (a resumed run must keep
        them: they decide each epoch's draws, the loss and the score that keeps an epoch)."""
        counts = np.bincount(self.corpus_index, minlength=len(self.corpus_set.corpora))
        # Each corpus's share of the score: select = { a = 2, b = 0 } chooses as { a = 1 }.
        total = sum(self.corpus_set.selection.values())
        return {"corpora": [[spec.name, int(count), spec.weight, spec.coverage]
                            for spec, count in zip(self.corpus_set.corpora, counts)],
                "select": {name: weight / total
                           for name, weight in self.corpus_set.selection.items() if weight}}

    def allowed_tags(self, tags: list[str], scheme: str) -> list[np.ndarray] | None:
        """Each sentence's allowed-tag mask, or None when every corpus labels everything completely."""
        if not self.corpus_set.is_partly_labelled():
            return None
        open_labels = [spec.open_labels() for spec in self.corpus_set.corpora]
        return encode_allowed_tags(self.sentences,
                                   [open_labels[i] for i in self.corpus_index], tags, scheme)


def read_training_corpora(corpus_set: CorpusSet, skip_invalid: bool,
                          emit: Callable[[str], None], dev: bool = True) -> TrainingCorpora:
    """Check that every path exists (dev paths too with ``dev``: not on a worker, which
    reads none) and the label maps against the training data (which a label of the dev
    data may complete), then read every corpus's training files (each file once)."""
    check_corpus_paths(corpus_set, dev)
    sources = check_corpus_labels(corpus_set, dev, skip_invalid)
    sentences: list[Sentence] = []
    corpus_index: list[int] = []
    for position, spec in enumerate(corpus_set.corpora):
        part = []
        for path in spec.train:
            # Taken out as read: only the dev files' are kept, for read_dev_corpora.
            corpus = load_spec_corpus(spec, path, skip_invalid,
                                      sources.pop((spec.name, path), None))
            report_skipped(corpus, str(path), emit)
            sentences_of_path = corpus_sentences(corpus)
            if not sentences_of_path:
                # As with --train: an empty file in the list is a mistake, not nothing to add.
                raise DataFormatError(corpus_set.source, None,
                                      f"corpus {spec.name}: {path}: no sentences to train on")
            part.extend(sentences_of_path)
        if sentences_per_epoch(spec.weight, len(part)) == 0:
            # epoch_indices would draw none of them, every epoch.
            raise ConfigError(f"{corpus_set.source}: corpus {spec.name}: weight {spec.weight:g} "
                              f"draws none of its {len(part)} sentences per epoch; give it at "
                              f"least {1 / len(part):.3g} (one sentence)")
        sentences.extend(part)
        corpus_index.extend([position] * len(part))
        emit(f"corpus {spec.name}: {len(part)} sentences, weight {spec.weight:g}, "
             + ", ".join(f"{label} {how}" for label, how in spec.coverage.items()))
    dev_sources = {name: source for (name, _), source in sources.items()}
    return TrainingCorpora(corpus_set, sentences, np.array(corpus_index, np.int64), dev_sources)


def read_dev_corpora(corpus_set: CorpusSet, skip_invalid: bool, emit: Callable[[str], None],
                     sources: dict[str, SourceData] | None = None) -> dict[str, list[Sentence]]:
    """Each dev corpus's sentences by corpus name: none empty or without a mention of the
    labels it scores, each label map checked.

    ``sources``: the dev files as :attr:`TrainingCorpora.dev_sources` holds them, which
    are then not read again (a dev file was read three times as training started).
    """
    dev = {}
    for spec in corpus_set.dev_corpora():
        source = (sources or {}).get(spec.name)
        corpus = load_spec_corpus(spec, spec.dev, skip_invalid, source)
        report_skipped(corpus, str(spec.dev), emit)
        dev[spec.name] = corpus_sentences(corpus)
        if not dev[spec.name]:
            # Scores of nothing would choose the epoch.
            raise DataFormatError(str(spec.dev), None,
                                  f"corpus {spec.name}: no dev sentences to score")
        check_label_map(corpus_set, spec, [spec.dev], spec.format, training=False,
                        skip_invalid=skip_invalid,
                        found=None if source is None else source.labels)
        scored = spec.scored_labels()
        if not set(corpus.labels) & set(scored):
            # Its F1 is 0 at every epoch: it would keep epoch 1 and stop training early.
            raise DataFormatError(str(spec.dev), None,
                                  f"corpus {spec.name}: no entities to score (no "
                                  f"{' or '.join(scored)} mention)")
    return dev


def corpus_scores(ner: KerasAnnotator, corpus_set: CorpusSet,
                  dev: dict[str, list[Sentence]]) -> dict[str, dict]:
    """Exact micro precision, recall and F1 on each dev corpus, over the labels it annotates.

    A corpus whose problems carry assertions adds the gold problems'
    ``assertion_accuracy`` and ``assertion_macro_f1`` when the model has
    assertions (as a single dev set does; the epoch is still chosen by F1).
    """
    return {name: headline_scores(evaluate_sentences(
                ner, sentences, labels=corpus_set.by_name(name).scored_labels()))
            for name, sentences in dev.items()}


def selection_scores(corpus_set: CorpusSet, per_corpus: dict[str, dict]) -> dict[str, float]:
    """``dev_precision``, ``dev_recall``, ``dev_f1``: the ``select`` weighted means of each."""
    total = sum(corpus_set.selection.values())
    return {f"dev_{measure}": sum(weight * per_corpus[name][measure]
                                  for name, weight in corpus_set.selection.items()) / total
            for measure in ("precision", "recall", "f1")}
