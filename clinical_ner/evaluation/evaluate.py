"""Scoring a model on gold-annotated corpora (dev evaluation in training, ``clinical-ner evaluate``)."""
from __future__ import annotations

from typing import Callable, Sequence

from clinical_ner.annotators.base import Annotator
from clinical_ner.errors import ConfigError
from clinical_ner.evaluation.scorer import (
    UNCLASSIFIED,
    score_assertions,
    score_end_to_end,
    score_mentions,
)
from clinical_ner.formats import Corpus
from clinical_ner.text.document import ASSERTION_LABEL, Mention, Sentence
from clinical_ner.text.tags import tags_to_mentions
from clinical_ner.text.tokenizer import count_tokens


def check_labels_known(labels: Sequence[str] | None, model_labels: Sequence[str] | None,
                       asked_by: Callable[[str], str] | None = None) -> None:
    """Refuse to score a label the model does not have: each gold mention of it would count
    as missed, with no word of why. ``asked_by(label)`` says what asks to score it (by default
    ``--label-map``); ``model_labels`` None (an export that does not record them): unchecked.
    """
    unknown = sorted(set(labels or ()) - set(model_labels)) if model_labels is not None else []
    if unknown:
        asking = (asked_by(unknown[0]) if asked_by is not None
                  else f"--label-map maps onto label {unknown[0]}")
        raise ConfigError(f"{asking}, which the model does not know (it has "
                          f"{', '.join(model_labels)})")


def unknown_labels_note(path: str, corpus_labels: Sequence[str],
                        model_labels: Sequence[str] | None) -> str | None:
    """The note for data (read without a label map) annotating labels the model lacks, or
    None: their mentions are scored as missed, F1 0 with no word of why otherwise."""
    unknown = sorted(set(corpus_labels) - set(model_labels)) if model_labels is not None else []
    if not unknown:
        return None
    return (f"note: {path}: the model does not know the label(s) {', '.join(unknown)} "
            f"(it has {', '.join(model_labels)}): they score 0; map them onto its labels "
            "with --label-map")


def corpus_sentences(corpus: Corpus) -> list[Sentence]:
    """Every non-empty sentence of a corpus, in document order."""
    return [s for document in corpus.documents for s in document.sentences if s.tokens]


def report_skipped(corpus: Corpus, path: str, emit: Callable[[str], None]) -> None:
    """Tell the user about every unit a reader skipped (never silently)."""
    if corpus.skipped:
        emit(f"{path}: {len(corpus.skipped)} item(s) skipped or adjusted:")
        for problem in corpus.skipped:
            emit(f"  {problem}")


def evaluate_sentences(ner: Annotator, sentences: Sequence[Sentence],
                       labels: Sequence[str] | None = None) -> dict:
    """Exact and lenient entity scores of ``ner`` on gold-tokenized sentences.

    With ``labels`` only mentions of those labels count, gold and predicted
    alike: a model is scored on a corpus that annotates only some of its
    labels (BC5CDR's diseases as ``problem``) without its other labels'
    predictions counting as false positives.

    When the gold problems scored carry assertions and the model has an
    assertion output, the report also has ``assertion`` (see
    :func:`evaluate_assertions`).

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
    report = score_mentions(gold, predicted)
    # Of the gold problems scored: with ``labels`` that leave problems out, scores of no
    # concept read as accuracy 0.
    if ner.assertion_classes and any(gold_problem_assertions(sentence, mentions)
                                     for sentence, mentions in zip(sentences, gold)):
        report["assertion"] = evaluate_assertions(ner, sentences, gold, predicted)
    return report


#: The keys of :func:`headline_scores`, in the training log's order.
HEADLINE_MEASURES = ("precision", "recall", "f1", "assertion_accuracy", "assertion_macro_f1")


def headline_scores(report: dict) -> dict[str, float]:
    """A report's exact micro ``precision``, ``recall`` and ``f1``, and, where it has
    assertions, the gold problems' ``assertion_accuracy`` and ``assertion_macro_f1``
    (the figures the training log keeps per epoch)."""
    micro = report["exact"]["micro"]
    scores = {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1"]}
    if "assertion" in report:
        gold_concepts = report["assertion"]["gold_concepts"]
        scores.update(assertion_accuracy=gold_concepts["accuracy"],
                      assertion_macro_f1=gold_concepts["macro_f1"])
    return scores


def has_assertions(sentences: Sequence[Sentence]) -> bool:
    return any(s.assertions for s in sentences)


def joined_text_and_spans(tokens: Sequence[str], mentions: Sequence[Mention]
                          ) -> tuple[str, list[tuple[int, int]]]:
    """The tokens joined by single spaces, and each mention's ``(start, end)`` code points in it.

    How a gold-tokenized sentence becomes a text for the runtimes, which take text.
    """
    starts, position = [], 0
    for token in tokens:
        starts.append(position)
        position += len(token) + 1
    spans = [(starts[m.first_token], starts[m.last_token] + len(tokens[m.last_token]))
             for m in mentions]
    return " ".join(tokens), spans


def gold_problem_assertions(sentence: Sentence, mentions: Sequence[Mention]
                            ) -> list[tuple[Mention, str]]:
    """The sentence's gold problems that have an assertion, each with it (what task 2 scores)."""
    return [(m, sentence.assertions[(m.first_token, m.last_token)]) for m in mentions
            if m.label == ASSERTION_LABEL and (m.first_token, m.last_token) in sentence.assertions]


def _is_unasserted_gold_problem(mention: Mention, sentence: Sentence,
                                gold: Sequence[Mention]) -> bool:
    span = (mention.first_token, mention.last_token)
    return span not in sentence.assertions and any(
        (m.first_token, m.last_token, m.label) == (*span, mention.label) for m in gold)


def evaluate_assertions(ner: Annotator, sentences: Sequence[Sentence],
                        gold: Sequence[Sequence[Mention]],
                        predicted: Sequence[Sequence[Mention]]) -> dict:
    """Assertion scores: ``gold_concepts`` and ``end_to_end``.

    ``gold_concepts`` classifies every gold problem that has an assertion,
    given its gold span (the i2b2 2010 task-2 protocol; see
    :func:`clinical_ner.evaluation.scorer.score_assertions`). ``end_to_end`` counts a
    predicted problem (from ``predicted``, the tagger's mentions) as correct
    when a gold problem has its span, label and assertion (one on a gold problem
    without an assertion is left out, as that problem is). Each sentence is
    classified as its tokens joined by spaces, the spans being its mentions'
    tokens, through ``ner.classify_assertions``, so every runtime is scored
    by the rule it annotates with.
    """
    gold_pairs = [gold_problem_assertions(s, mentions) for s, mentions in zip(sentences, gold)]
    # A predicted problem on a gold problem without an assertion (a document without
    # an .ast file, a problem its .ast leaves out) cannot be judged: it is left out,
    # as that gold problem is, instead of counting as wrong.
    predicted_problems = [[m for m in mentions if m.label == ASSERTION_LABEL
                           and not _is_unasserted_gold_problem(m, sentence, gold_mentions)]
                          for sentence, gold_mentions, mentions
                          in zip(sentences, gold, predicted)]
    texts, spans, covers_tokens = [], [], []
    for sentence, pairs, problems in zip(sentences, gold_pairs, predicted_problems):
        text, mention_spans = joined_text_and_spans(
            sentence.tokens, [m for m, _ in pairs] + problems)
        # A mention of separators only (a zero-width space that the data's
        # tokenization keeps as a token) covers none of the model's tokens: it
        # gets no assertion (UNCLASSIFIED), which is never correct.
        covers = [count_tokens(text[start:end]) > 0 for start, end in mention_spans]
        texts.append(text)
        spans.append([span for span, kept in zip(mention_spans, covers) if kept])
        covers_tokens.append(covers)
    answered = [iter(answers) for answers in ner.classify_assertions(texts, spans)]
    classified = [[next(answers) if kept else (UNCLASSIFIED, 0.0) for kept in covers]
                  for covers, answers in zip(covers_tokens, answered)]
    gold_classes, predicted_classes, predicted_pairs = [], [], []
    for pairs, problems, answers in zip(gold_pairs, predicted_problems, classified):
        gold_classes += [assertion for _, assertion in pairs]
        predicted_classes += [name for name, _ in answers[:len(pairs)]]
        predicted_pairs.append([(m, name) for m, (name, _) in
                                zip(problems, answers[len(pairs):])])
    return {"gold_concepts": score_assertions(gold_classes, predicted_classes),
            "end_to_end": score_end_to_end(gold_pairs, predicted_pairs)}
