"""Any text through ``Annotator.annotate``: no exception, offsets always exact.

A tiny model trained on the bundled sample (conftest's ``tiny_model_dir``). Every
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
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinical_ner.annotators.keras_annotator import KerasAnnotator

from helpers import (
    EDGE_CASES, NOTE, REPO_ROOT, assert_exact, assert_same_entities, assert_same_tags,
)

TWO_MB = 2_000_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ner(tiny_model_dir):
    return KerasAnnotator.load(tiny_model_dir)


PARAGRAPH = NOTE + " Fever and cough resolved.\nLabs: WBC 12.3, Hb 9.8 g/dL.\r\n"


def long_document(size: int) -> str:
    """The same paragraph again and again, cut to ``size`` characters."""
    return (PARAGRAPH * (size // len(PARAGRAPH) + 1))[:size]


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
        assert_same_entities(entities, ner.annotate(text))


def test_threads_share_an_annotator(ner):
    # A web framework's thread pool calls one annotator: each call gives what it gives alone.
    texts = [NOTE, NOTE.upper(), PARAGRAPH * 3, "Fever and cough resolved."]
    alone = [(ner.annotate(text), ner.tag([text.split()])) for text in texts]
    start = threading.Barrier(len(texts))
    answers: dict[int, tuple] = {}

    def annotate(index: int) -> None:
        start.wait()
        answers[index] = (ner.annotate(texts[index]), ner.tag([texts[index].split()]))

    threads = [threading.Thread(target=annotate, args=(index,)) for index in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == list(range(len(texts)))
    for index, (entities, tags) in enumerate(alone):
        assert_same_entities(answers[index][0], entities, texts[index][:20])
        assert_same_tags(answers[index][1], tags)


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


def test_peak_memory_of_a_two_megabyte_document(tiny_model_dir, record_property):
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
        ner = KerasAnnotator.load({str(tiny_model_dir)!r})
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
