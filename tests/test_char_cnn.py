"""The char-CNN must be right for any batch size and sentence length, in every mode.

Keras 3.15's TimeDistributed loops over the batch axis when the sentence
length is dynamic inside a graph; these tests use batches both wider and
narrower than their sentences, in eager calls, tf.function, fit and after
save/load.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from clinical_ner.model.layers.char_cnn import CharCNNEncoder

SHAPES = [(6, 3, 4), (2, 9, 5), (1, 1, 1), (3, 7, 2)]  # (batch, tokens, chars)


def random_char_ids(rng, batch, tokens, chars):
    ids = rng.integers(1, 12, size=(batch, tokens, chars)).astype("int32")
    # Ragged words: each token keeps a random prefix of characters; the last
    # tokens of some sentences are padding.
    word_lengths = rng.integers(1, chars + 1, size=(batch, tokens))
    ids[np.arange(chars)[None, None, :] >= word_lengths[..., None]] = 0
    sentence_lengths = rng.integers(1, tokens + 1, size=batch)
    ids[np.arange(tokens)[None, :] >= sentence_lengths[:, None]] = 0
    return ids


def token_by_token(encoder, ids):
    """Reference: every token encoded alone, in a batch of one sentence of one token."""
    batch, tokens, _ = ids.shape
    out = np.zeros((batch, tokens, encoder.filters), dtype="float32")
    for b in range(batch):
        for t in range(tokens):
            word = ids[b, t][ids[b, t] > 0]
            if word.size:
                out[b, t] = encoder(word[None, None, :]).numpy()[0, 0]
    return out


@pytest.fixture
def encoder():
    layer = CharCNNEncoder(num_chars=12, char_dim=2, filters=3, kernel_size=3)
    layer.build((None, None, None))
    return layer


def test_eager_matches_token_by_token_and_ignores_padding(encoder):
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        ids = random_char_ids(rng, *shape)
        np.testing.assert_allclose(encoder(ids).numpy(), token_by_token(encoder, ids), atol=1e-6)
        # Extra padding characters and tokens change nothing.
        wider = np.pad(ids, [(0, 0), (0, 2), (0, 3)])
        np.testing.assert_allclose(encoder(wider).numpy()[:, : shape[1]],
                                   encoder(ids).numpy(), atol=1e-6)


def test_tf_function_with_dynamic_shapes(encoder):
    rng = np.random.default_rng(1)
    compiled = tf.function(encoder, input_signature=[tf.TensorSpec([None, None, None], tf.int32)])
    for shape in SHAPES:
        ids = random_char_ids(rng, *shape)
        result = compiled(tf.constant(ids)).numpy()
        assert result.shape == (shape[0], shape[1], 3)
        np.testing.assert_allclose(result, token_by_token(encoder, ids), atol=1e-6)


def test_repeated_spellings_get_every_occurrence_gradient(encoder):
    # Each distinct spelling is convolved once; training must still see the
    # gradient of every occurrence, as if each token were encoded alone.
    rng = np.random.default_rng(3)
    ids = random_char_ids(rng, 4, 6, 2)  # two characters of 11: many repeats
    ids[1, 0], ids[2, 3] = ids[0, 0], ids[0, 0]
    upstream = rng.normal(size=(4, 6, encoder.filters)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(encoder(ids) * upstream)
    batched = tape.gradient(loss, encoder.trainable_weights)
    with tf.GradientTape() as tape:
        loss = 0.0
        for b, t in zip(*np.nonzero((ids > 0).any(-1))):
            word = ids[b, t][ids[b, t] > 0]
            loss += tf.reduce_sum(encoder(word[None, None, :])[0, 0] * upstream[b, t])
    alone = tape.gradient(loss, encoder.trainable_weights)
    for ours, reference in zip(batched, alone):
        np.testing.assert_allclose(tf.convert_to_tensor(ours).numpy(),
                                   tf.convert_to_tensor(reference).numpy(), atol=1e-5)


@pytest.mark.parametrize("shape", [(0, 0, 0), (0, 3, 2), (2, 3, 0), (2, 3, 4)])
def test_batches_without_any_token_or_character_give_zeros(encoder, shape):
    # Empty documents and all-padding batches reach the encoder at inference.
    compiled = tf.function(encoder, input_signature=[tf.TensorSpec([None, None, None], tf.int32)])
    for call in (encoder, compiled):
        result = call(tf.zeros(shape, tf.int32)).numpy()
        assert result.shape == (shape[0], shape[1], 3)
        assert not result.any()


def test_fit_on_padded_batches_of_varying_shape_and_save_load(tmp_path):
    """A model whose target is each token's first character learns it through fit."""
    rng = np.random.default_rng(2)
    ids = keras.Input(shape=(None, None), dtype="int32")
    hidden = CharCNNEncoder(num_chars=12, char_dim=4, filters=8, kernel_size=3)(ids)
    outputs = keras.layers.Dense(12)(hidden)
    model = keras.Model(ids, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    sentences = []
    for _ in range(120):
        tokens = rng.integers(1, 10)
        sentences.append([list(rng.integers(1, 12, size=rng.integers(1, 6))) for _ in range(tokens)])

    def examples():
        for sentence in sentences:
            width = max(len(word) for word in sentence)
            chars = np.array([word + [0] * (width - len(word)) for word in sentence], "int32")
            yield chars, chars[:, 0]

    dataset = tf.data.Dataset.from_generator(
        examples, output_signature=(tf.TensorSpec([None, None], tf.int32),
                                    tf.TensorSpec([None], tf.int32)))
    # Batch 6 with sentences up to 9 tokens, and batch 2 with long sentences:
    # both narrower and wider than the time axis.
    for batch in (6, 2):
        model.fit(dataset.padded_batch(batch), epochs=6, verbose=0)
    probe = random_char_ids(rng, 2, 9, 5)
    predicted = model.predict(probe, verbose=0).argmax(-1)
    real = probe[..., 0] > 0
    assert (predicted[real] == probe[..., 0][real]).mean() > 0.9

    path = tmp_path / "char_model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    for shape in SHAPES:
        batch_ids = random_char_ids(rng, *shape)
        np.testing.assert_allclose(restored(batch_ids), model(batch_ids), atol=1e-5)
    serving = tf.function(restored, input_signature=[tf.TensorSpec([None, None, None], tf.int32)])
    np.testing.assert_allclose(serving(tf.constant(probe)), model(probe), atol=1e-5)


def test_config_round_trip(encoder):
    clone = CharCNNEncoder.from_config(encoder.get_config())
    assert clone.get_config() == encoder.get_config()
    assert (clone.num_chars, clone.char_dim, clone.filters, clone.kernel_size) == (12, 2, 3, 3)
