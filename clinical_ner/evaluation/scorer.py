"""Entity-level precision, recall and F1, exact and lenient (as i2b2 2010 reports)."""
from __future__ import annotations

from typing import Sequence

from clinical_ner.text.document import Mention


def _prf(true_positives_p: int, predicted: int, true_positives_r: int, gold: int) -> dict:
    precision = true_positives_p / predicted if predicted else 0.0
    recall = true_positives_r / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "predicted": predicted,
        "gold": gold,
        "correct": true_positives_p,
    }


def _overlaps(a: Mention, b: Mention) -> bool:
    return a.first_token <= b.last_token and b.first_token <= a.last_token


def _count(mentions: Sequence[Mention], others: Sequence[Mention], counts: dict,
           matched: int, total: int) -> None:
    """Count ``mentions`` and those of them that ``others`` match, exactly and leniently."""
    other_keys = {(m.first_token, m.last_token, m.label) for m in others}
    for mention in mentions:
        exact = counts["exact"][mention.label]
        lenient = counts["lenient"][mention.label]
        exact[total] += 1
        lenient[total] += 1
        if (mention.first_token, mention.last_token, mention.label) in other_keys:
            exact[matched] += 1
        if any(o.label == mention.label and _overlaps(o, mention) for o in others):
            lenient[matched] += 1


def score_mentions(
    gold: Sequence[Sequence[Mention]], predicted: Sequence[Sequence[Mention]]
) -> dict:
    """Score predicted mentions against gold ones, sentence by sentence.

    ``exact``: a prediction is correct when a gold mention has the same
    tokens and label. ``lenient``: a prediction is correct when it overlaps a
    gold mention of the same label, and a gold mention is found when a
    prediction of its label overlaps it (so lenient precision and recall
    count their own numerators, as the i2b2 2010 "inexact" scores do).

    Returns ``{"exact": {"micro": {...}, "per_label": {label: {...}}},
    "lenient": {...}}`` where each ``{...}`` holds precision, recall, f1 and
    the predicted, gold and correct counts.

    >>> gold = [[Mention(0, 1, "problem")]]
    >>> score_mentions(gold, [[Mention(1, 1, "problem")]])["lenient"]["micro"]["f1"]
    1.0
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    labels = sorted({m.label for sentence in [*gold, *predicted] for m in sentence})
    counts = {
        mode: {label: [0, 0, 0, 0] for label in labels} for mode in ("exact", "lenient")
    }  # per label: correct predictions, predictions, found gold, gold
    for gold_mentions, predicted_mentions in zip(gold, predicted):
        _count(predicted_mentions, gold_mentions, counts, matched=0, total=1)
        _count(gold_mentions, predicted_mentions, counts, matched=2, total=3)
    report = {}
    for mode, per_label in counts.items():
        totals = [sum(values[i] for values in per_label.values()) for i in range(4)]
        report[mode] = {
            "micro": _prf(totals[0], totals[1], totals[2], totals[3]),
            "per_label": {label: _prf(*values) for label, values in per_label.items()},
        }
    return report


#: The predicted assertion of a concept that covers none of the model's tokens
#: (only separators): never correct, and not a class of its own in the scores.
UNCLASSIFIED = ""


def score_assertions(gold: Sequence[str], predicted: Sequence[str]) -> dict:
    """Assertion scores of gold concepts (the i2b2 2010 task-2 protocol).

    ``gold[i]`` and ``predicted[i]`` are the gold and the predicted class of
    concept ``i``. Returns ``accuracy``, ``per_class`` (precision, recall,
    f1, gold, predicted and correct for every class that is gold or
    predicted) and ``macro_f1``, the mean F1 over the classes present in the
    gold data. A prediction of :data:`UNCLASSIFIED` is wrong.

    >>> scores = score_assertions(["present", "absent"], ["present", "present"])
    >>> scores["accuracy"], scores["per_class"]["absent"]["recall"], scores["macro_f1"]
    (0.5, 0.0, 0.3333333333333333)
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold concepts but {len(predicted)} predictions")
    classes = sorted((set(gold) | set(predicted)) - {UNCLASSIFIED})
    per_class = {}
    for name in classes:
        correct = sum(1 for g, p in zip(gold, predicted) if g == p == name)
        per_class[name] = _prf(correct, sum(1 for p in predicted if p == name),
                               correct, sum(1 for g in gold if g == name))
    present = [per_class[name]["f1"] for name in classes if per_class[name]["gold"]]
    return {
        "accuracy": sum(1 for g, p in zip(gold, predicted) if g == p) / len(gold) if gold else 0.0,
        "concepts": len(gold),
        "per_class": per_class,
        "macro_f1": sum(present) / len(present) if present else 0.0,
    }


def score_end_to_end(gold: Sequence[Sequence[tuple[Mention, str]]],
                     predicted: Sequence[Sequence[tuple[Mention, str]]]) -> dict:
    """Precision, recall and F1 of predicted problems whose span, label and assertion are gold.

    Each sentence holds ``(mention, assertion)`` pairs of its problems.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    correct = 0
    for gold_pairs, predicted_pairs in zip(gold, predicted):
        keys = {(m.first_token, m.last_token, m.label, a) for m, a in gold_pairs}
        correct += sum(1 for m, a in predicted_pairs
                       if (m.first_token, m.last_token, m.label, a) in keys)
    return _prf(correct, sum(map(len, predicted)), correct, sum(map(len, gold)))


def format_report(report: dict) -> str:
    """A readable table of an evaluation report."""
    lines = []
    header = f"{'':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'gold':>8}{'predicted':>11}"
    for mode in ("exact", "lenient"):
        lines.append(f"{mode} match")
        lines.append(header)
        rows = list(report[mode]["per_label"].items()) + [("micro avg", report[mode]["micro"])]
        for label, values in rows:
            lines.append(
                f"{label:<14}{values['precision']:>10.4f}{values['recall']:>10.4f}"
                f"{values['f1']:>10.4f}{values['gold']:>8}{values['predicted']:>11}"
            )
        lines.append("")
    if "assertion" in report:
        lines += format_assertion_report(report["assertion"])
    return "\n".join(lines).rstrip() + "\n"


def format_assertion_report(report: dict) -> list[str]:
    """The lines of the ``assertion`` part of an evaluation report."""
    gold_concepts = report["gold_concepts"]
    lines = [f"assertion of the gold problems (accuracy {gold_concepts['accuracy']:.4f}, "
             f"macro F1 {gold_concepts['macro_f1']:.4f})",
             f"{'':<30}{'precision':>10}{'recall':>10}{'f1':>10}{'gold':>8}{'predicted':>11}"]
    for name, values in gold_concepts["per_class"].items():
        lines.append(f"{name:<30}{values['precision']:>10.4f}{values['recall']:>10.4f}"
                     f"{values['f1']:>10.4f}{values['gold']:>8}{values['predicted']:>11}")
    end = report["end_to_end"]
    lines += ["", "end to end (problem span, label and assertion all correct)",
              f"{'':<30}{'precision':>10}{'recall':>10}{'f1':>10}{'gold':>8}{'predicted':>11}",
              f"{'problem':<30}{end['precision']:>10.4f}{end['recall']:>10.4f}{end['f1']:>10.4f}"
              f"{end['gold']:>8}{end['predicted']:>11}", ""]
    return lines
