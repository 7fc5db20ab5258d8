"""Scoring a model on gold-annotated corpora (dev evaluation in training, ``clinical-ner evaluate``)."""
from __future__ import annotations

from typing import Callable, Sequence

from clinical_ner.text.document import Sentence
from clinical_ner.formats import Corpus
from clinical_ner.annotators.keras_annotator import ClinicalNER
from clinical_ner.evaluation.scorer import score_mentions
from clinical_ner.text.tags import tags_to_mentions


def corpus_sentences(corpus: Corpus) -> list[Sentence]:
    """Every non-empty sentence of a corpus, in document order."""
    return [s for document in corpus.documents for s in document.sentences if s.tokens]


def report_skipped(corpus: Corpus, path: str, emit: Callable[[str], None]) -> None:
    """Tell the user about every unit a reader skipped (never silently)."""
    if corpus.skipped:
        emit(f"{path}: {len(corpus.skipped)} item(s) skipped or adjusted:")
        for problem in corpus.skipped:
            emit(f"  {problem}")


def evaluate_sentences(ner: ClinicalNER, sentences: Sequence[Sentence],
                       labels: Sequence[str] | None = None) -> dict:
    """Exact and lenient entity scores of ``ner`` on gold-tokenized sentences.

    With ``labels`` only mentions of those labels count, gold and predicted
    alike: a model is scored on a corpus that annotates only some of its
    labels (BC5CDR's diseases as ``problem``) without its other labels'
    predictions counting as false positives.

    Example (``ner`` from ``ClinicalNER.load``, ``corpus`` from ``load_corpus``)::

        report = evaluate_sentences(ner, corpus_sentences(corpus))
        report["exact"]["micro"]["f1"]
    """
    predictions = ner.tag([s.tokens for s in sentences])
    gold = [tags_to_mentions(s.tags) for s in sentences]
    predicted = [tags_to_mentions(tags) for tags, _ in predictions]
    if labels is not None:
        kept = set(labels)
        gold = [[m for m in mentions if m.label in kept] for mentions in gold]
        predicted = [[m for m in mentions if m.label in kept] for mentions in predicted]
    return score_mentions(gold, predicted)
