"""Assertions in every output an entity goes to (issue 24).

These tests use hand-made entities and fake signature outputs; the tests that
train a model with an assertion head and serve it are in
``test_assertion_serving.py``.
"""
from __future__ import annotations

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
