"""The inference graph: entities assembled in the graph agree with the tags it gives."""
import re

import numpy as np
import pytest

from clinical_ner.export import signatures
from clinical_ner.config import NERConfig
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.model.inference_graph import InferenceModule
from clinical_ner.text.tags import tags_to_mentions
from clinical_ner.text.tokenizer import split_sentences
from helpers import CONFIDENCE_TOLERANCE, TEXTS, assert_same_entities, tiny_model


@pytest.fixture(scope="module", params=["bio", "bioes"])
def module(request):
    model, vocab = tiny_model(request.param)
    settings = NERConfig(max_word_length=10, max_sentence_tokens=50, inference_chunk_size=3)
    return InferenceModule(model, vocab, settings)


def test_entities_match_the_tags_of_the_same_sentences(module):
    outputs = {k: v.numpy() for k, v in module.annotate_text(
        np.array([signatures.encode_text(t) for t in TEXTS], dtype=object)).items()}
    documents = signatures.entities_from_outputs(TEXTS, outputs)
    assert sum(map(len, documents)) > 5
    for text, entities in zip(TEXTS, documents):
        sentences = split_sentences(text, 50)
        expected = []
        for sentence in sentences:
            tokens = np.array([[t.text for t in sentence]], dtype=object)
            tagged = signatures.tags_from_outputs(
                {k: v.numpy() for k, v in module.tag_tokens(tokens).items()})
            tags, confidence = tagged[0]
            assert all(tag == "O" or tag[:2] in ("B-", "I-") for tag in tags)
            for mention in tags_to_mentions(tags):
                expected.append((sentence[mention.first_token].start,
                                 sentence[mention.last_token].end, mention.label,
                                 min(confidence[mention.first_token:mention.last_token + 1])))
        got = [(e.start, e.end, e.label, e.confidence) for e in entities]
        assert [g[:3] for g in got] == [e[:3] for e in expected]
        # The same graph, other batches (whole documents against single sentences).
        np.testing.assert_allclose([g[3] for g in got], [e[3] for e in expected], rtol=0,
                                   atol=CONFIDENCE_TOLERANCE)
        for entity in entities:
            assert text[entity.start:entity.end] == entity.text


def test_empty_batches(module):
    empty = module.annotate_text(np.array([], dtype=object))
    assert empty[signatures.ENTITY_COUNT].shape == (0,)
    tagged = module.tag_tokens(np.zeros((0, 0), dtype=object))
    assert tagged[signatures.TAGS].shape == (0, 0)
    padding_only = module.tag_tokens(np.array([["", ""]], dtype=object))
    assert padding_only[signatures.LENGTH].numpy().tolist() == [0]


def test_the_exported_predict_tokens_refuses_an_empty_token_before_a_token(module, tmp_path):
    """Stock TF Serving runs the signature alone: ``""`` before a token fails there, naming
    the element (``[["", "pain"]]`` got one tag, for two tokens)."""
    import tensorflow as tf
    from clinical_ner.export.saved_model import export_saved_model

    loaded = tf.saved_model.load(str(export_saved_model(module.saved_object(),
                                                        module.signatures(), tmp_path)))
    predict_tokens = loaded.signatures[signatures.PREDICT_TOKENS]
    for rows, element in (([["", "pain"]], "[0, 0]"),
                          ([["a", "b", "c"], ["chest", "", "pain"]], "[1, 1]")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
                f"input tokens element {element} is the empty string before a token of its "
                "row: tokens must be non-empty strings")):
            predict_tokens(tokens=tf.constant(rows))
    padded = predict_tokens(tokens=tf.constant([["chest", "pain", ""], ["a", "", ""]]))
    assert padded[signatures.LENGTH].numpy().tolist() == [2, 1]


def test_size_order_batches_group_similar_sizes_and_keep_the_callers_order():
    items = ["ccc", "a", "bbbb", "dd", "e"]
    batches = []

    def run_batch(batch):
        batches.append(batch)
        return [item.upper() for item in batch]

    results = signatures.in_size_order_batches(items, [len(i) for i in items], 2, run_batch)
    assert results == ["CCC", "A", "BBBB", "DD", "E"]
    assert batches == [["a", "e"], ["dd", "ccc"], ["bbbb"]]


def test_size_order_batches_close_a_batch_at_the_total_size_limit():
    items = ["a", "b", "cc", "ddd", "eeee", "f" * 9]
    batches = []

    def run_batch(batch):
        batches.append(batch)
        return [len(item) for item in batch]

    results = signatures.in_size_order_batches(items, [len(i) for i in items], 10, run_batch,
                                               max_batch_total=4)
    assert results == [1, 1, 2, 3, 4, 9]
    # Short items share a call up to the limit; an item over it goes alone.
    assert batches == [["a", "b", "cc"], ["ddd"], ["eeee"], ["f" * 9]]


def test_annotate_batches_many_short_texts_together_and_long_ones_apart():
    ner = KerasAnnotator(*tiny_model("bioes"), NERConfig(tag_scheme="bioes"))
    calls = []
    tag_call = ner._annotate_batch

    def counting(texts):
        calls.append(len(texts))
        return tag_call(texts)

    ner._annotate_batch = counting
    short = ["aspirin fever"] * 300
    long = ["aspirin fever " * 5000] * 3  # 70,000 characters each
    results = ner.annotate(short + long, max_batch_characters=100_000)
    # 256 short texts; the 44 left with the first long one (70,572 characters);
    # then each long one alone, since two would exceed 100,000 characters.
    assert calls == [256, 45, 1, 1]
    # Batching changes nothing: each text gets what it gets alone. (Confidences
    # only to float32 rounding: the BiLSTM runs a fused kernel for batches of
    # at most 8 sentences and Keras' loop for larger ones.)
    assert results[0]
    assert_same_entities(results[0], ner.annotate(short[0]))
    for entities in results[1:300]:  # two batches: the first 256, then 44 with a long text
        assert_same_entities(entities, results[0])
    assert_same_entities(results[-1], ner.annotate(long[0], batch_size=1))


def test_an_annotator_of_a_model_in_memory_refuses_a_vocabulary_that_does_not_fit_it():
    # KerasAnnotator(model, vocab, config) wraps a model fine-tuned in Python. Another
    # model's vocabulary failed only at annotate, deep in the graph, or, of the same sizes,
    # annotated with other words' rows and other labels.
    from clinical_ner.model.vocab import Vocabulary

    model, vocab = tiny_model("bioes")
    config = NERConfig(tag_scheme="bioes")
    reordered = Vocabulary(vocab.words, vocab.chars, list(reversed(vocab.tags)))
    with pytest.raises(ValueError, match=r"^vocab does not fit the model's embedding tables and "
                                         r"outputs \(its tags are not the model's\); give the "
                                         "vocabulary the model was built with$"):
        KerasAnnotator(model, reordered, config)
    longer = Vocabulary(vocab.words + ["nodule"], vocab.chars, vocab.tags)
    with pytest.raises(ValueError, match=rf"\({len(vocab.words) + 1} words against the "
                                         rf"model's {len(vocab.words)}\)"):
        KerasAnnotator(model, longer, config)
    assert KerasAnnotator(model, vocab, config).vocab is vocab
