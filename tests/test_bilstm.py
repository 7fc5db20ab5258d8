"""BiLSTM: its training loop and the fused kernel give Keras' Bidirectional(LSTM), in every mode."""
import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

from clinical_ner.export.saved_model import check_core_ops, saved_model_op_types
from clinical_ner.model.layers import bilstm as bilstm_module
from clinical_ner.model.layers.bilstm import BiLSTM

UNITS, FEATURES, FUSED_MAX_BATCH = 3, 4, 4
# Batches the fused kernel runs at inference (1, 4) and batches Keras' loop
# runs (5, 9) (training runs our loop on all of them), with sentences shorter
# and longer than the batch is wide.
SHAPES = [(1, 6), (4, 2), (4, 9), (5, 3), (9, 7)]


def padded_batch(rng, batch, tokens):
    inputs = rng.normal(size=(batch, tokens, FEATURES)).astype("float32")
    lengths = rng.integers(1, tokens + 1, size=batch)
    lengths[0] = tokens
    mask = np.arange(tokens)[None, :] < lengths[:, None]
    inputs[~mask] = rng.normal(size=inputs[~mask].shape)  # padding holds noise
    return inputs, mask


@pytest.fixture
def layer():
    layer = BiLSTM(UNITS, fused_max_batch=FUSED_MAX_BATCH)
    layer.build((None, None, FEATURES))
    rng = np.random.default_rng(0)
    layer.set_weights([rng.normal(scale=0.5, size=w.shape) for w in layer.get_weights()])
    return layer


def keras_reference(layer):
    reference = keras.layers.Bidirectional(keras.layers.LSTM(UNITS, return_sequences=True))
    reference.build((None, None, FEATURES))
    reference.set_weights(layer.get_weights())
    return reference


def test_matches_keras_bidirectional_lstm_eagerly_and_in_a_graph(layer):
    reference = keras_reference(layer)
    graph = tf.function(lambda x, mask: layer(x, mask=mask, training=False),
                        input_signature=[tf.TensorSpec([None, None, FEATURES]),
                                         tf.TensorSpec([None, None], tf.bool)])
    rng = np.random.default_rng(1)
    for shape in SHAPES:
        inputs, mask = padded_batch(rng, *shape)
        expected = reference(inputs, mask=mask).numpy()
        assert np.all(expected[~mask] == 0)
        for outputs in (layer(inputs, mask=mask), graph(inputs, mask)):
            np.testing.assert_allclose(outputs.numpy(), expected, atol=1e-5)


def test_a_sentence_gets_the_same_states_alone_and_in_a_large_batch(layer):
    rng = np.random.default_rng(2)
    inputs, mask = padded_batch(rng, 9, 8)
    together = layer(inputs, mask=mask).numpy()  # the loop
    for row in range(9):
        length = mask[row].sum()
        alone = layer(inputs[row:row + 1, :length], mask=mask[row:row + 1, :length]).numpy()
        np.testing.assert_allclose(alone[0], together[row, :length], atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 5), (6, 7)])  # sizes the fused kernel would take, and not
def test_training_gives_keras_states_and_gradients(layer, shape):
    reference = keras_reference(layer)
    inputs, mask = padded_batch(np.random.default_rng(3), *shape)
    inputs = tf.constant(inputs)
    results = []
    for model in (layer, reference):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            states = model(inputs, mask=mask, training=True)
            loss = tf.reduce_sum(states ** 2)
        results.append((states, tape.gradient(loss, [inputs] + model.trainable_weights)))
    (ours, our_gradients), (expected, keras_gradients) = results
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), atol=1e-5)
    assert len(our_gradients) == 7
    for our_gradient, keras_gradient in zip(our_gradients, keras_gradients):
        np.testing.assert_allclose(our_gradient.numpy(), keras_gradient.numpy(), atol=1e-5)


def test_the_loop_runs_a_training_step_in_a_graph_with_keras_gradients(layer):
    # fit() differentiates the loop inside a tf.function, where the while
    # loop's gradient is built differently from eager mode.
    reference = keras_reference(layer)
    inputs, mask = padded_batch(np.random.default_rng(6), 7, 9)

    def gradients_of(model):
        @tf.function(input_signature=[tf.TensorSpec([None, None, FEATURES]),
                                      tf.TensorSpec([None, None], tf.bool)])
        def step(x, mask):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x, mask=mask, training=True) ** 2)
            return tape.gradient(loss, model.trainable_weights)
        return step(inputs, mask)

    for ours, keras_gradient in zip(gradients_of(layer), gradients_of(reference)):
        np.testing.assert_allclose(ours.numpy(), keras_gradient.numpy(), atol=1e-5)


def test_gradients_through_the_fused_kernel_are_keras_gradients(layer):
    # Inference mode on a small batch runs BlockLSTM; whoever differentiates
    # it (e.g. saliency over a served model) must get the LSTM's gradients.
    reference = keras_reference(layer)
    inputs, mask = padded_batch(np.random.default_rng(5), 3, 6)
    inputs = tf.constant(inputs)
    gradients = []
    for model in (layer, reference):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(model(inputs, mask=mask, training=False) ** 2)
        gradients.append(tape.gradient(loss, [inputs] + model.trainable_weights))
    for ours, keras_gradient in zip(*gradients):
        np.testing.assert_allclose(ours.numpy(), keras_gradient.numpy(), atol=1e-5)


def test_save_load_and_saved_model_with_core_ops_only(layer, tmp_path):
    inputs_spec = keras.Input(shape=(None, FEATURES))
    mask_spec = keras.Input(shape=(None,), dtype="bool")
    model = keras.Model([inputs_spec, mask_spec], layer(inputs_spec, mask=mask_spec))
    model.save(tmp_path / "bilstm.keras")
    restored = keras.saving.load_model(tmp_path / "bilstm.keras", safe_mode=True)
    assert restored.layers[-1].get_config() == layer.get_config()

    module = tf.Module()
    module.model = restored
    module.serve = tf.function(lambda x, mask: restored([x, mask], training=False),
                               input_signature=[tf.TensorSpec([None, None, FEATURES]),
                                                tf.TensorSpec([None, None], tf.bool)])
    tf.saved_model.save(module, str(tmp_path / "saved"))
    assert {"BlockLSTM", "While"} <= saved_model_op_types(tmp_path / "saved")
    check_core_ops(tmp_path / "saved")
    served = tf.saved_model.load(str(tmp_path / "saved"))
    rng = np.random.default_rng(4)
    for shape in SHAPES:
        inputs, mask = padded_batch(rng, *shape)
        expected = layer(inputs, mask=mask).numpy()
        np.testing.assert_allclose(restored([inputs, mask]).numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(served.serve(inputs, mask).numpy(), expected, atol=1e-6)


def test_a_model_with_many_bilstms_loads_each_with_its_own_lstms(tmp_path):
    """Keras' load records serialized objects by id(); a freed id reused must not alias a layer.

    Before the fix, a model with two BiLSTMs (tagger and assertion head)
    failed to load now and then, and this one with 24 failed at every load.
    """
    inputs = keras.Input(shape=(None, FEATURES))
    states = inputs
    for index in range(24):
        states = BiLSTM(2 + index % 3, fused_max_batch=0, name=f"bilstm_{index}")(states)
    model = keras.Model(inputs, states)
    model.save(tmp_path / "many.keras")
    x = np.random.default_rng(5).normal(size=(2, 5, FEATURES)).astype("float32")
    expected = model(x).numpy()
    for _ in range(3):
        restored = keras.saving.load_model(tmp_path / "many.keras", safe_mode=True)
        for layer in restored.layers[1:]:
            pair = layer.bidirectional
            assert (pair.forward_layer.go_backwards, pair.backward_layer.go_backwards) == (
                False, True)
            assert pair.forward_layer.units == pair.backward_layer.units == layer.units
        np.testing.assert_allclose(restored(x).numpy(), expected, atol=1e-6)


def test_docstring_example():
    results = doctest.testmod(bilstm_module)
    assert results.attempted > 0 and results.failed == 0
