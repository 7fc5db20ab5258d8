"""Assertions in every output an entity goes to (issue 24).

These tests use hand-made entities and fake signature outputs; the tests that
train a model with an assertion head and serve it are in
``test_assertion_serving.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

from clinical_ner import signatures as sig
from clinical_ner.corpus import Entity


def test_to_dict_has_assertion_keys_only_when_there_is_an_assertion():
    absent = Entity(0, 9, "pneumonia", "problem", 0.9, "absent", 0.97)
    plain = Entity(0, 9, "pneumonia", "problem", 0.9)

    assert absent.to_dict() == {
        "start": 0, "end": 9, "text": "pneumonia", "label": "problem",
        "confidence": 0.9, "assertion": "absent", "assertion_confidence": 0.97,
    }
    assert "assertion" not in plain.to_dict()
    assert "assertion_confidence" not in plain.to_dict()


# -- decoding signature outputs ------------------------------------------------

TEXTS = ["No pneumonia, a cough.", "CT normal."]


def _outputs(with_assertions: bool = True) -> dict[str, np.ndarray]:
    """``serving_default`` outputs as an export with assertions returns them."""
    outputs = {
        sig.ENTITY_START: np.array([[3, 16], [0, 0]], dtype=np.int64),
        sig.ENTITY_END: np.array([[12, 21], [2, 0]], dtype=np.int64),
        sig.ENTITY_LABEL: np.array([[b"problem", b"problem"], [b"test", b""]], dtype=object),
        sig.ENTITY_CONFIDENCE: np.array([[0.9, 0.8], [0.7, 0.0]], dtype=np.float32),
        sig.ENTITY_COUNT: np.array([2, 1], dtype=np.int32),
    }
    if with_assertions:
        outputs[sig.ENTITY_ASSERTION] = np.array(
            [[b"absent", b"present"], [b"", b""]], dtype=object)
        outputs[sig.ENTITY_ASSERTION_CONFIDENCE] = np.array(
            [[0.97, 0.6], [0.0, 0.0]], dtype=np.float32)
    return outputs


def test_decoding_reads_assertions_and_leaves_none_where_the_string_is_empty():
    first, second = sig.entities_from_outputs(TEXTS, _outputs())

    assert [(e.text, e.assertion) for e in first] == [("pneumonia", "absent"), ("cough", "present")]
    assert first[0].assertion_confidence == pytest.approx(0.97)
    assert [(e.text, e.assertion, e.assertion_confidence) for e in second] == [("CT", None, None)]


def test_decoding_outputs_without_assertions_gives_the_entities_without_them():
    """A 0.3.0 export (or an old server) has no assertion outputs."""
    with_them = sig.entities_from_outputs(TEXTS, _outputs())
    without = sig.entities_from_outputs(TEXTS, _outputs(with_assertions=False))

    assert [[(e.start, e.end, e.label) for e in doc] for doc in without] == \
        [[(e.start, e.end, e.label) for e in doc] for doc in with_them]
    assert all(e.assertion is None and e.assertion_confidence is None
               for doc in without for e in doc)


def test_decoding_rejects_assertion_outputs_that_break_the_contract():
    outputs = _outputs()
    del outputs[sig.ENTITY_ASSERTION_CONFIDENCE]
    with pytest.raises(sig.ModelOutputError, match="missing outputs"):
        sig.entities_from_outputs(TEXTS, outputs)
    outputs = _outputs()
    outputs[sig.ENTITY_ASSERTION] = outputs[sig.ENTITY_ASSERTION][:, :1]
    with pytest.raises(sig.ModelOutputError, match="entity_assertion has 1 columns"):
        sig.entities_from_outputs(TEXTS, outputs)
