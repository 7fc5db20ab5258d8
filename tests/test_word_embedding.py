"""PartlyTrainableEmbedding: the same lookups and the same training as one trainable table."""
import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

from clinical_ner.model.layers import word_embedding
from clinical_ner.model.layers.word_embedding import PartlyTrainableEmbedding


def table(rows=7, dim=3):
    return np.random.default_rng(0).normal(size=(rows, dim)).astype("float32")


@pytest.mark.parametrize("trainable_rows", [None, 1, 4, 7])
def test_lookup_matches_the_whole_table_in_eager_and_graph(trainable_rows):
    layer = PartlyTrainableEmbedding(7, 3, trainable_rows=trainable_rows)
    layer.set_table(table())
    np.testing.assert_array_equal(layer.table(), table())
    lookup = tf.function(layer, input_signature=[tf.TensorSpec([None, None], tf.int32)])
    for ids in (np.array([[0, 6, 3, 3]]), np.arange(7).reshape(7, 1), np.zeros((2, 0), "int32")):
        expected = table()[ids]
        np.testing.assert_array_equal(layer(ids).numpy(), expected)
        np.testing.assert_array_equal(lookup(tf.constant(ids, tf.int32)).numpy(), expected)
    trained_shapes = [tuple(w.shape) for w in layer.trainable_weights]
    frozen_shapes = [tuple(w.shape) for w in layer.non_trainable_weights]
    assert trained_shapes == [(trainable_rows or 7, 3)]
    assert frozen_shapes == ([(7 - trainable_rows, 3)] if trainable_rows not in (None, 7) else [])


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError, match="trainable_rows"):
        PartlyTrainableEmbedding(5, 2, trainable_rows=6)
    with pytest.raises(ValueError, match="trainable_rows"):
        PartlyTrainableEmbedding(5, 2, trainable_rows=0)
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        PartlyTrainableEmbedding(5, 2, trainable_rows=3).set_table(np.zeros((4, 2)))


def tagger(trainable_rows):
    """A tiny model whose only word information is the embedding under test."""
    ids = keras.Input(shape=(None,), dtype="int32")
    vectors = PartlyTrainableEmbedding(7, 2, trainable_rows=trainable_rows, name="words")(ids)
    model = keras.Model(ids, keras.layers.Dense(3, name="out")(vectors))
    model.get_layer("words").set_table(table(7, 2))
    model.get_layer("out").set_weights([np.full((2, 3), 0.1, "float32"), np.zeros(3, "float32")])
    model.compile(optimizer=keras.optimizers.Adam(0.05, global_clipnorm=5.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    return model


def test_training_gives_the_same_weights_as_one_trainable_table():
    # The training data uses ids 0-3 only: rows 4-6 get no gradient, so with
    # Adam (and global gradient clipping) they never move, and splitting them
    # off changes nothing in what is learnt.
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 4, size=(16, 5)).astype("int32")
    targets = rng.integers(0, 3, size=(16, 5))
    whole, split = tagger(None), tagger(4)
    for model in (whole, split):
        model.fit(ids, targets, batch_size=4, epochs=3, shuffle=False, verbose=0)
    learnt = whole.get_layer("words").table()
    assert not np.allclose(learnt[:4], table(7, 2)[:4])
    np.testing.assert_array_equal(learnt[4:], table(7, 2)[4:])
    np.testing.assert_allclose(split.get_layer("words").table(), learnt, atol=1e-6)
    np.testing.assert_allclose(split.get_layer("out").get_weights()[0],
                               whole.get_layer("out").get_weights()[0], atol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    model = tagger(4)
    path = tmp_path / "tagger.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.get_layer("words").get_config() == model.get_layer("words").get_config()
    np.testing.assert_array_equal(loaded.get_layer("words").table(), table(7, 2))
    ids = np.array([[0, 5, 6, 2]])
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())



def test_docstring_example():
    results = doctest.testmod(word_embedding)
    assert results.attempted > 0 and results.failed == 0
