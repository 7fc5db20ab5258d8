"""The shared comparison helpers: confidences within the tolerance, everything else exact."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinical_ner.text.document import Entity
from helpers import (
    CONFIDENCE_TOLERANCE,
    assert_same_documents,
    assert_same_entities,
    assert_same_tags,
    wait_for,
)

TEXT = "Chest pain on aspirin; CT showed a nodule."
# The entity whose confidences differed between an AMD EPYC host (Beam, two
# processes) and an Intel one (predict) in issue 22.
PREDICTED = [Entity(0, 10, "Chest pain", "problem", 0.287247896194458),
             Entity(14, 21, "aspirin", "treatment", 0.9921875, assertion="present",
                    assertion_confidence=0.75),
             Entity(23, 25, "CT", "test", 0.5)]
ON_AMD = [dataclasses.replace(PREDICTED[0], confidence=0.28724798560142517), *PREDICTED[1:]]


def shifted(entities: list[Entity], index: int, **changes) -> list[Entity]:
    return [dataclasses.replace(entity, **changes) if number == index else entity
            for number, entity in enumerate(entities)]


def test_the_confidences_of_two_hosts_are_the_same_entities():
    assert ON_AMD[0].confidence != PREDICTED[0].confidence
    assert_same_entities(ON_AMD, PREDICTED)
    # As JSON records (predict, batch) and mixed with Entity objects.
    assert_same_entities([e.to_dict() for e in ON_AMD], [e.to_dict() for e in PREDICTED])
    assert_same_entities([e.to_dict() for e in ON_AMD], PREDICTED)


@given(index=st.integers(0, 2), ulps=st.integers(-64, 64))
def test_last_digit_changes_of_float32_are_accepted(index, ulps):
    confidence = np.float32(PREDICTED[index].confidence)
    step = np.float32(np.inf if ulps > 0 else -np.inf)
    for _ in range(abs(ulps)):
        confidence = np.nextafter(confidence, step)
    assert_same_entities(shifted(PREDICTED, index, confidence=float(confidence)), PREDICTED)


@given(index=st.integers(0, 2),
       fraction=st.floats(-0.9, 0.9, allow_nan=False))
def test_changes_within_the_tolerance_are_accepted(index, fraction):
    moved = PREDICTED[index].confidence + fraction * CONFIDENCE_TOLERANCE
    assert_same_entities(shifted(PREDICTED, index, confidence=moved), PREDICTED)


@given(index=st.integers(0, 2), factor=st.floats(1.1, 1000.0), sign=st.sampled_from([-1, 1]))
def test_changes_beyond_the_tolerance_are_rejected(index, factor, sign):
    moved = PREDICTED[index].confidence + sign * factor * CONFIDENCE_TOLERANCE
    with pytest.raises(AssertionError, match=f"entity {index} .*more than"):
        assert_same_entities(shifted(PREDICTED, index, confidence=moved), PREDICTED)


@pytest.mark.parametrize("changes", [
    {"label": "test"},
    {"end": 9},
    {"start": 1},
    {"text": "chest pain"},
    {"assertion": "absent"},
    {"assertion": None},
])
def test_any_other_difference_is_rejected(changes):
    index = 1 if "assertion" in changes else 0
    with pytest.raises(AssertionError, match="spans, texts, labels or assertions differ"):
        assert_same_entities(shifted(ON_AMD, index, **changes), PREDICTED)
    with pytest.raises(AssertionError):
        assert_same_entities([e.to_dict() for e in shifted(ON_AMD, index, **changes)],
                             [e.to_dict() for e in PREDICTED])


def test_an_assertion_confidence_is_a_confidence_too():
    assert_same_entities(shifted(PREDICTED, 1, assertion_confidence=0.75 + 9e-8), PREDICTED)
    with pytest.raises(AssertionError, match="assertion_confidence"):
        assert_same_entities(shifted(PREDICTED, 1, assertion_confidence=0.76), PREDICTED)


@pytest.mark.parametrize("confidence", [float("nan"), None, float("inf")])
def test_a_confidence_that_is_not_a_number_is_rejected(confidence):
    with pytest.raises(AssertionError):
        assert_same_entities(shifted(PREDICTED, 2, confidence=confidence), PREDICTED)


def test_a_missing_or_extra_entity_is_rejected():
    with pytest.raises(AssertionError):
        assert_same_entities(PREDICTED[:2], PREDICTED)
    with pytest.raises(AssertionError):
        assert_same_entities(PREDICTED + PREDICTED[:1], PREDICTED)


def test_documents_by_position_and_by_note_id():
    assert_same_documents([ON_AMD, []], [PREDICTED, []])
    assert_same_documents({"n1": ON_AMD, "n2": []}, {"n1": PREDICTED, "n2": []})
    with pytest.raises(AssertionError, match="note ids differ"):
        assert_same_documents({"n1": ON_AMD}, {"n1": PREDICTED, "n2": []})
    with pytest.raises(AssertionError, match="document n1"):
        assert_same_documents({"n1": shifted(ON_AMD, 0, label="test")}, {"n1": PREDICTED})
    with pytest.raises(AssertionError, match="1 documents, expected 2"):
        assert_same_documents([ON_AMD], [PREDICTED, []])


def test_tags_within_the_tolerance():
    expected = [(["B-problem", "I-problem", "O"], [0.287247896194458, 0.5, 0.96875])]
    assert_same_tags([(["B-problem", "I-problem", "O"],
                       [0.28724798560142517, 0.5 + 0.9 * CONFIDENCE_TOLERANCE, 0.96875])],
                     expected)
    with pytest.raises(AssertionError, match="the tags differ"):
        assert_same_tags([(["B-problem", "O", "O"], [0.287247896194458, 0.5, 0.96875])],
                         expected)
    with pytest.raises(AssertionError):
        assert_same_tags([(["B-problem", "I-problem", "O"],
                           [0.287247896194458, 0.5 + 2 * CONFIDENCE_TOLERANCE, 0.96875])],
                         expected)


def test_wait_for_returns_once_true_and_names_what_it_waited_for():
    answers = iter([False, False, True])
    wait_for(lambda: next(answers), what="the third answer")
    with pytest.raises(AssertionError, match="waiting for the impossible"):
        wait_for(lambda: False, what="the impossible", timeout=0.05)
