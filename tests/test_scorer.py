import pytest

from clinical_ner.text.document import Mention
from clinical_ner.evaluation.scorer import format_report, score_mentions


def test_exact_and_lenient_counts_by_hand():
    gold = [[Mention(0, 1, "problem"), Mention(4, 4, "test")], [Mention(2, 3, "treatment")]]
    predicted = [
        [Mention(0, 1, "problem"), Mention(3, 4, "test")],  # exact hit, overlap hit
        [Mention(2, 3, "problem"), Mention(6, 6, "test")],  # wrong label, spurious
    ]
    report = score_mentions(gold, predicted)
    exact, lenient = report["exact"], report["lenient"]
    assert exact["micro"]["correct"] == 1
    assert exact["micro"]["predicted"] == 4 and exact["micro"]["gold"] == 3
    assert exact["micro"]["precision"] == pytest.approx(1 / 4)
    assert exact["micro"]["recall"] == pytest.approx(1 / 3)
    assert lenient["micro"]["precision"] == pytest.approx(2 / 4)
    assert lenient["micro"]["recall"] == pytest.approx(2 / 3)
    assert exact["per_label"]["treatment"]["recall"] == 0.0
    assert exact["per_label"]["test"]["f1"] == 0.0
    assert lenient["per_label"]["test"]["precision"] == pytest.approx(1 / 2)
    assert exact["per_label"]["problem"]["precision"] == pytest.approx(1 / 2)


def test_lenient_counts_gold_found_not_predictions_for_recall():
    # One long prediction overlapping two gold mentions finds both of them.
    gold = [[Mention(0, 0, "problem"), Mention(2, 2, "problem")]]
    predicted = [[Mention(0, 2, "problem")]]
    lenient = score_mentions(gold, predicted)["lenient"]["micro"]
    assert lenient["recall"] == 1.0 and lenient["precision"] == 1.0
    assert score_mentions(gold, predicted)["exact"]["micro"]["f1"] == 0.0


def test_empty_and_mismatched_inputs():
    report = score_mentions([[]], [[]])
    assert report["exact"]["micro"]["f1"] == 0.0 and report["exact"]["per_label"] == {}
    with pytest.raises(ValueError):
        score_mentions([[]], [])


def test_format_report_lists_every_label():
    report = score_mentions([[Mention(0, 0, "problem")]], [[Mention(0, 0, "test")]])
    table = format_report(report)
    for word in ("exact match", "lenient match", "problem", "test", "micro avg"):
        assert word in table
