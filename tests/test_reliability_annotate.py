"""Any text through ``Annotator.annotate``: no exception, offsets always exact.

A tiny model is trained once for the module on the bundled sample. Every
entity must satisfy ``text[e.start:e.end] == e.text`` with ``0 <= start < end
<= len(text)``, whatever the input: empty, whitespace, control characters,
astral characters, combining marks, right-to-left text, every kind of line
break, lone surrogates, a 2 MB document, a 50,000-token run without
punctuation, a 10,000-character token.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinical_ner.config import NERConfig
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.training.trainer import train

from conftest import REPO_ROOT

SAMPLE = REPO_ROOT / "samples" / "maccrobat-i2b2"
VECTORS = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"
NOTE = "CT of the chest showed a 2 cm nodule; she was started on aspirin for chest pain."
TWO_MB = 2_000_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    output = tmp_path_factory.mktemp("annotate") / "tiny"
    # Small but trained enough (a high learning rate, 3 epochs) to find entities
    # in NOTE with any seed tried: the chunking tests need something to compare.
    config = NERConfig(embeddings=str(VECTORS), lstm_units=16, char_filters=8, char_dim=8,
                       epochs=3, learning_rate=0.01, seed=11)
    train(SAMPLE / "train", output, config=config, progress=False, emit=lambda message: None)
    return output


@pytest.fixture(scope="module")
def ner(model_dir):
    return KerasAnnotator.load(model_dir)


def assert_exact(text: str, entities) -> None:
    labels = {"problem", "test", "treatment"}
    for entity in entities:
        assert 0 <= entity.start < entity.end <= len(text), (entity.start, entity.end, len(text))
        assert text[entity.start:entity.end] == entity.text
        assert entity.label in labels
        assert 0.0 < entity.confidence <= 1.0
    spans = sorted((e.start, e.end) for e in entities)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), \
        "entities overlap"


PARAGRAPH = NOTE + " Fever and cough resolved.\nLabs: WBC 12.3, Hb 9.8 g/dL.\r\n"


def long_document(size: int) -> str:
    """The same paragraph again and again, cut to ``size`` characters."""
    return (PARAGRAPH * (size // len(PARAGRAPH) + 1))[:size]


EDGE_CASES = {
    "empty": "",
    "spaces": "   ",
    "whitespace-only": " \t\n\r\n\u00a0\u2028\u2029\u3000\x0b\x0c\x85 ",
    "control-characters": "Fever\x00 and\x01chest\x07pain\x1b[31m; CT\x7f\x9f showed\x08 a nodule",
    "format-characters": "chest\u200bpain\u200d \ufeffCT\u2066 aspirin\u2069 \u00adfever",
    "emoji-and-astral": "Fever \U0001f600\U0001f600 chest pain \U0001d538\U0001d539 CT "
                        "\U0001f9d1\u200d\u2695\ufe0f aspirin \U00020000\U0010ffff end.",
    "combining-marks": "Fe\u0301ver and che\u0308st pa\u0300in \u0301\u0301\u0301 CT "
                       "a\u0336s\u0336p\u0336irin Z\u0351\u0352\u0353\u0354\u0355",
    "only-combining-marks": "\u0301" * 500,
    "right-to-left": "\u0627\u0644\u0645\u0631\u064a\u0636 fever \u05d7\u05d5\u05dd "
                     "\u202eniripsa\u202c CT \u200fchest pain\u200e.",
    "mixed-newlines": "Fever\r\nchest pain\rCT showed\u2028a nodule\u2029aspirin\x85"
                      "given\x0bcough\x0c\n\n\r\r",
    "lone-surrogates": "Fever \ud800 chest pain \udfff CT \udbff\udc00 aspirin",
    "ten-thousand-char-token": "CT showed " + "a" * 10_000 + " nodule and aspirin.",
    "no-punctuation-50k-tokens": " ".join(
        ("chest", "pain", "and", "aspirin", "given", "CT")[i % 6] for i in range(50_000)),
    "only-punctuation": ".!?;:,-" * 2000,
    "digits": "1234567890 " * 3000,
}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_case_texts(ner, name):
    text = EDGE_CASES[name]
    entities = ner.annotate(text)
    assert_exact(text, entities)
    if not text.strip():
        assert entities == []


def test_padding_does_not_change_a_sentence_s_scores(ner):
    # Sentences are padded to the longest of their chunk, so padding must not
    # reach the real tokens' scores (the BiLSTM's backward pass starts at the
    # end of the padded row unless the padding is masked).
    sentence = ["Labs", ":", "WBC", "12", ".", "3", ",", "chest", "pain", "on", "aspirin", "."]
    scores = []
    for padding in (1, 8, 40):
        features = ner.module.featurizer(np.array([sentence + [""] * padding], dtype=object))
        scores.append(ner.model(features, training=False).numpy()[0, :len(sentence)])
    for other in scores[1:]:
        np.testing.assert_allclose(other, scores[0], atol=1e-5)


def test_a_batch_gives_what_each_text_gives_alone(ner):
    texts = [NOTE] + list(EDGE_CASES.values()) + [NOTE.upper(), ""]
    together = ner.annotate(texts)
    assert len(together) == len(texts)
    for text, entities in zip(texts, together):
        alone = ner.annotate(text)
        assert [(e.start, e.end, e.label) for e in entities] == \
               [(e.start, e.end, e.label) for e in alone]
        for a, b in zip(entities, alone):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-5)


def test_surrounding_noise_does_not_move_offsets(ner):
    # The same note behind a prefix of astral, combining and RTL characters
    # (a full sentence, so the note's own sentence is unchanged): every
    # entity comes back shifted by exactly the prefix length.
    prefix = "\U0001f600\u0301\u05d7 \U00020000.\r\n"
    plain = ner.annotate(NOTE)
    shifted = ner.annotate(prefix + NOTE)
    assert [(e.start - len(prefix), e.end - len(prefix), e.label, e.text) for e in shifted
            if e.start >= len(prefix)] == [(e.start, e.end, e.label, e.text) for e in plain]


def test_two_megabyte_document(ner):
    size = TWO_MB
    text = long_document(size)
    entities = ner.annotate(text)
    assert_exact(text, entities)
    # The same paragraph everywhere: the entities repeat with it (none lost
    # to chunking or padding), up to the cut-off last paragraph.
    paragraph = len(PARAGRAPH)
    first = [(e.start, e.end, e.label) for e in entities if e.end <= paragraph]
    assert first, "the tiny model found nothing in the note"
    repeats = size // paragraph
    for copy in (1, repeats // 2, repeats - 1):
        offset = copy * paragraph
        assert [(e.start - offset, e.end - offset, e.label) for e in entities
                if offset <= e.start and e.end <= offset + paragraph] == first


def test_peak_memory_of_a_two_megabyte_document(model_dir, record_property):
    # In a fresh process: peak RSS (VmHWM) is reset after loading the model
    # and a warm-up call, so the growth is what the 2 MB document costs.
    script = textwrap.dedent(f"""
        import json
        from clinical_ner.annotators.keras_annotator import KerasAnnotator

        def long_document(size, paragraph={PARAGRAPH!r}):
            return (paragraph * (size // len(paragraph) + 1))[:size]

        def status(field):
            for line in open("/proc/self/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        ner = KerasAnnotator.load({str(model_dir)!r})
        ner.annotate(long_document(20_000))
        text = long_document({TWO_MB})
        before = status("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the peak to the current RSS
        entities = ner.annotate(text)
        print(json.dumps({{"before": before, "peak": status("VmHWM"),
                          "entities": len(entities)}}))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    growth = figures["peak"] - figures["before"]
    record_property("rss_before_mb", round(figures["before"] / 2**20))
    record_property("rss_growth_2mb_document_mb", round(growth / 2**20))
    print(f"\n2 MB document: RSS before {figures['before'] / 2**20:.0f} MiB, "
          f"peak growth {growth / 2**20:.0f} MiB, {figures['entities']} entities")
    assert figures["entities"] > 0
    assert growth < 3 * 2**30


def test_evaluation_counts_gold_labels_the_model_does_not_know(ner):
    from clinical_ner.text.document import Sentence
    from clinical_ner.evaluation.evaluate import evaluate_sentences

    sentences = [Sentence(["aspirin", "for", "chest", "pain"],
                          ["B-Drug", "O", "B-problem", "I-problem"])]
    report = evaluate_sentences(ner, sentences)
    # An unknown gold label is a missed entity, never dropped from recall.
    assert report["exact"]["micro"]["gold"] == 2
    assert report["exact"]["per_label"]["Drug"]["gold"] == 1
    assert report["exact"]["per_label"]["Drug"]["recall"] == 0.0


_PIECES = st.sampled_from([
    "chest pain", "CT", "aspirin", "fever", ".", " ", "\n", "\r\n", "\r", "\u2028", "\x85",
    "\u0301", "\U0001f600", "\u05d7", "\u202e", "\u200b", "\x00", "\ud800", "\udfff",
    "\U00020000", "2.5", "-", "\t",
])
_ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
_TEXTS = st.lists(st.one_of(_PIECES, st.text(_ANY_CHAR, max_size=12)), max_size=30).map("".join)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(texts=st.lists(_TEXTS, min_size=1, max_size=4))
def test_offsets_are_exact_for_any_unicode(ner, texts):
    results = ner.annotate(texts)
    assert len(results) == len(texts)
    for text, entities in zip(texts, results):
        assert_exact(text, entities)
