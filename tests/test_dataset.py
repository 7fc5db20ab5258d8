"""The training pipeline: every sentence once per epoch, padding, and word dropout."""
import numpy as np
import pytest

from clinical_ner.config import NERConfig
from clinical_ner.text.document import Sentence
from clinical_ner.training.dataset import training_dataset
from clinical_ner.errors import ConfigError
from clinical_ner.model.features import Featurizer
from clinical_ner.model.vocab import UNKNOWN_ID

WORDS = ["", "<unk>", "chest", "pain", "fever", "aspirin", "denies", "and"]
CHARS = ["", "<unk>", *sorted(set("chestpainfeveraspirindenies"))]


def sentences(count: int = 60) -> list[Sentence]:
    rng = np.random.default_rng(0)
    known = WORDS[2:]
    return [Sentence(tokens=[known[i] for i in rng.integers(0, len(known), rng.integers(1, 30))])
            for _ in range(count)]


def batches(data, word_dropout=0.0, seed=5, batch_size=8):
    tag_ids = [[position % 3 for position in range(len(s.tokens))] for s in data]
    dataset = training_dataset(data, tag_ids, Featurizer(WORDS, CHARS, max_word_length=10),
                               batch_size=batch_size, use_casing=True, shuffle_seed=seed,
                               word_dropout=word_dropout,
                               bucket_boundaries=NERConfig().bucket_boundaries)
    return [(features["word_ids"].numpy(), targets.numpy()) for features, targets in dataset]


def test_every_sentence_appears_once_with_its_tags_and_padding_is_zero():
    data = sentences()
    out = batches(data)
    rows = [(tuple(ids[ids > 0]), tuple(tags[ids > 0])) for word_ids, targets in out
            for ids, tags in zip(word_ids, targets)]
    expected = [(tuple(WORDS.index(t) for t in s.tokens), tuple(p % 3 for p in range(len(s.tokens))))
                for s in data]
    assert sorted(rows) == sorted(expected)
    for word_ids, targets in out:
        assert np.all(targets[word_ids == 0] == 0)
        # Real tokens come first in each row.
        assert np.all(np.diff((word_ids > 0).astype(int), axis=1) <= 0)


def test_a_batch_size_beyond_the_data_gives_the_batches_of_the_data_size():
    # tf.data reserved room for 2**40 sentences per bucket: the process ended (bad_alloc).
    data = sentences(20)
    huge, whole = batches(data, batch_size=2**40), batches(data, batch_size=len(data))
    assert len(huge) == len(whole) > 1  # one batch per length bucket
    for (huge_ids, huge_tags), (whole_ids, whole_tags) in zip(huge, whole):
        assert np.array_equal(huge_ids, whole_ids) and np.array_equal(huge_tags, whole_tags)


def test_word_dropout_replaces_that_share_of_real_tokens_with_unknown_only():
    data = sentences(400)
    clean = batches(data)
    dropped = batches(data, word_dropout=0.25)
    changed = tokens = 0
    for (clean_ids, _), (dropped_ids, _) in zip(clean, dropped):
        is_token = clean_ids > 0
        assert np.array_equal(dropped_ids > 0, is_token)  # padding stays padding
        differs = dropped_ids != clean_ids
        assert np.all(dropped_ids[differs] == UNKNOWN_ID)
        changed += differs.sum()
        tokens += is_token.sum()
    assert 0.22 < changed / tokens < 0.28


def test_word_dropout_repeats_with_the_seed_and_changes_with_it():
    data = sentences()
    first = batches(data, word_dropout=0.3, seed=11)
    again = batches(data, word_dropout=0.3, seed=11)
    other = batches(data, word_dropout=0.3, seed=12)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    unknown_positions = [np.argwhere(ids == UNKNOWN_ID).tolist() for ids, _ in first]
    assert unknown_positions != [np.argwhere(ids == UNKNOWN_ID).tolist() for ids, _ in other]


def test_the_pipeline_runs_without_tf_data_autotuning():
    # An autotuned pipeline's spent iterator took 3-5 s to be garbage-collected
    # about every other epoch (benchmarks/README.md, "What was tried").
    tag_ids = [[0] * len(s.tokens) for s in sentences(4)]
    dataset = training_dataset(sentences(4), tag_ids, Featurizer(WORDS, CHARS, 10),
                               batch_size=8, use_casing=True, shuffle_seed=1,
                               word_dropout=0.0, bucket_boundaries=NERConfig().bucket_boundaries)
    assert dataset.options().autotune.enabled is False


@pytest.mark.parametrize("rate", [-0.1, 1.0, True, "0.1"])
def test_word_dropout_must_be_a_probability(rate):
    with pytest.raises(ConfigError, match="word_dropout"):
        NERConfig(word_dropout=rate)


@pytest.mark.parametrize("count", [1, 7, 60, 200])
def test_the_number_of_batches_is_known_before_the_epoch(count):
    # The progress bar shows "3/12", not "3/Unknown", and the count is exact.
    data = sentences(count)
    tag_ids = [[0] * len(s.tokens) for s in data]
    dataset = training_dataset(data, tag_ids, Featurizer(WORDS, CHARS, max_word_length=10),
                               batch_size=8, use_casing=True, shuffle_seed=1, word_dropout=0.0,
                               bucket_boundaries=NERConfig().bucket_boundaries)
    assert int(dataset.cardinality()) == len(list(dataset))


@pytest.mark.parametrize("tag_ids, message", [
    ([[0, 0], [0]], r"tag_ids\[1\] has 1 entries for the 3 tokens of sentence 1 \(notes.conll:4\)"),
    ([[0, 0]], "tag_ids has 1 rows for 2 sentences"),
])
def test_tag_ids_that_do_not_fit_the_sentences_are_refused_not_shifted(tag_ids, message):
    # They were concatenated and cut at the sentences' lengths: the second sentence took
    # the first's leftover ids, and the model trained on tags of other tokens in silence.
    data = [Sentence(tokens=["chest", "pain"], source="notes.conll:1"),
            Sentence(tokens=["denies", "fever", "and"], source="notes.conll:4")]
    with pytest.raises(ValueError, match=message):
        training_dataset(data, tag_ids, Featurizer(WORDS, CHARS, max_word_length=10),
                         batch_size=8, use_casing=True, shuffle_seed=1, word_dropout=0.0,
                         bucket_boundaries=NERConfig().bucket_boundaries)


def test_assertion_ids_that_do_not_fit_the_sentences_are_refused():
    data = [Sentence(tokens=["chest", "pain"], source="notes.conll:1")]
    with pytest.raises(ValueError, match=r"assertion_ids\[0\] has 3 entries for the 2 tokens"):
        training_dataset(data, [[0, 0]], Featurizer(WORDS, CHARS, max_word_length=10),
                         batch_size=8, use_casing=True, shuffle_seed=1, word_dropout=0.0,
                         bucket_boundaries=NERConfig().bucket_boundaries,
                         assertion_ids=[[0, 0, 0]])


def test_untagged_sentences_and_no_sentences_are_refused_with_what_is_missing():
    # A TypeError ("object of type 'NoneType' has no len()") and tf.data's
    # InvalidArgumentError (a shuffle buffer of 0) before.
    from clinical_ner.training.dataset import encode_tags

    untagged = Sentence(tokens=["fever"], source="notes.txt:3")
    with pytest.raises(ValueError, match=r"^notes.txt:3: no tags \(text without annotations\)"):
        encode_tags([untagged], ["O", "B-problem", "I-problem"], "bio")
    with pytest.raises(ValueError, match="^no sentences to train on$"):
        training_dataset([], [], Featurizer(WORDS, CHARS, max_word_length=10), batch_size=8,
                         use_casing=True, shuffle_seed=1, word_dropout=0.0,
                         bucket_boundaries=NERConfig().bucket_boundaries)
