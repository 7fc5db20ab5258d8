"""The spaCy tokenizer ``clinical_ner.Tokenizer.v1``: the Doc's tokens are our model's tokens.

A pipeline built with it must give Docs whose text is the input, whose
non-space tokens are exactly :func:`clinical_ner.text.tokenizer.tokenize`'s,
whose separators follow spaCy's own convention, and on which every entity of
the ``clinical_ner`` component is exact (no widening).
"""
from __future__ import annotations

import pytest
import spacy

from clinical_ner import ClinicalNER
from clinical_ner.export.signatures import replace_lone_surrogates
from clinical_ner.integrations.spacy_tokenizer import REGISTERED_NAME, doc_text, text_length
from clinical_ner.text.tokenizer import SEPARATOR, char_class, tokenize
from helpers import CONFIDENCE_TOLERANCE, EDGE_CASES
from test_spacy_component import entry_point_path, run_fresh  # noqa: F401  (fixture)

CONFIG = {"nlp": {"tokenizer": {"@tokenizers": REGISTERED_NAME}}}


@pytest.fixture(scope="module")
def ours():
    return spacy.blank("en", config=CONFIG)


def words_and_offsets(doc) -> list[tuple[str, int, int]]:
    """The Doc's tokens but those made of separators (spaces, zero-width and control characters)."""
    return [(token.text, token.idx, token.idx + len(token)) for token in doc
            if any(char_class(char) != SEPARATOR for char in token.text)]


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_tokens_are_the_model_s_on_hostile_texts(ours, name):
    # Lone surrogates become U+FFFD, as the model reads them (test_lone_surrogates_...).
    text = replace_lone_surrogates(EDGE_CASES[name])
    doc = ours(EDGE_CASES[name])
    assert doc.text == text
    assert words_and_offsets(doc) == [(t.text, t.start, t.end) for t in tokenize(text)]


def test_lone_surrogates_become_u_fffd_at_the_same_offsets(ours):
    text = "fever \ud800 chest pain \udfff; she was started on aspirin \udbff\udc00."
    with pytest.raises(UnicodeEncodeError):
        spacy.blank("en")(text)  # spaCy's own tokenizer: docs/guide/spacy.md says so
    ours.add_pipe("clinical_ner")
    try:
        doc = ours(text)
        expected = ClinicalNER.load("clinical").annotate(text)
    finally:
        ours.remove_pipe("clinical_ner")
    assert doc.text == text.translate({0xD800: 0xFFFD, 0xDFFF: 0xFFFD, 0xDBFF: 0xFFFD,
                                       0xDC00: 0xFFFD})
    # Entities on both sides of the surrogates, at the offsets of the text given.
    assert [e.label for e in expected] == ["problem", "problem", "treatment"]
    assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == [
        (e.start, e.end, e.label) for e in expected]


# spaCy's own tokenizer refuses lone surrogates (its string store holds UTF-8).
@pytest.mark.parametrize("name", sorted(set(EDGE_CASES) - {"lone-surrogates"}))
def test_the_component_reads_each_doc_s_text_from_either_tokenizer(ours, name):
    # The component counts a batch's characters and annotates the text from these:
    # our tokenizer's Docs keep the text they were made from, spaCy's are joined.
    text = EDGE_CASES[name]
    for doc in (ours(text), spacy.blank("en")(text)):
        assert text_length(doc) == len(text)
        assert doc_text(doc) == text


def test_a_doc_refilled_with_another_text_is_read_from_its_tokens(ours):
    # spaCy fills only an empty Doc from bytes; ours remembers "" for it.
    doc = ours("")
    doc.from_bytes(spacy.blank("en")("Chest CT showed a 2 cm nodule.").to_bytes())
    assert doc_text(doc) == "Chest CT showed a 2 cm nodule."


def test_tokens_are_the_model_s_on_the_dev_notes(ours, maccrobat_dev_notes):
    for path in maccrobat_dev_notes:
        text = path.read_text(encoding="utf-8")
        doc = ours(text)
        assert doc.text == text, path.name
        assert words_and_offsets(doc) == [(t.text, t.start, t.end) for t in tokenize(text)]


@pytest.mark.parametrize("text", ["a b", "  a  b\n\nc ", "a\t b ", " ", "\n", "x", "a\n b"])
def test_separators_follow_spacy_s_convention(ours, text):
    """One space after a token is its whitespace_; other separator runs are tokens."""
    spacy_doc = spacy.blank("en")(text)
    doc = ours(text)
    assert [(t.text, t.whitespace_) for t in doc] == [
        (t.text, t.whitespace_) for t in spacy_doc]


def test_entities_on_our_tokens_are_exact(ours, maccrobat_dev_notes):
    ours.add_pipe("clinical_ner")
    try:
        ner = ClinicalNER.load("clinical")
        texts = [path.read_text(encoding="utf-8") for path in maccrobat_dev_notes[:8]]
        expected = ner.annotate(texts)
        assert sum(map(len, expected)) > 100
        for doc, entities in zip(ours.pipe(texts), expected):
            assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == [
                (e.start, e.end, e.label) for e in entities]
            for span, entity in zip(doc.ents, entities):
                assert span._.clinical_ner_confidence == pytest.approx(
                    entity.confidence, abs=CONFIDENCE_TOLERANCE)
    finally:
        ours.remove_pipe("clinical_ner")


def test_a_saved_pipeline_keeps_the_tokenizer(ours, tmp_path):
    ours.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    text = "28-year-old (BP 120/80)."
    assert [t.text for t in loaded(text)] == [t.text for t in tokenize(text)]


@pytest.mark.slow
def test_entry_point_registers_the_tokenizer(entry_point_path):  # noqa: F811
    report = run_fresh(entry_point_path, f"""
        import json
        import spacy
        nlp = spacy.blank("en", config={CONFIG!r})
        print(json.dumps({{"tokens": [t.text for t in nlp("28-year-old (BP 120/80).")]}}))
    """)
    assert report["tokens"] == ["28", "-", "year", "-", "old", "(", "BP", "120", "/", "80",
                                ")", "."]
