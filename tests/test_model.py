"""The Keras model: tiny sizes, batch invariance, CRF training through fit, save/load."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from clinical_ner.model import ClinicalNERModel

TAGS = ["O", "B-problem", "I-problem", "B-test", "I-test"]


def tiny_model(**changes):
    values = dict(num_words=30, num_chars=12, tags=TAGS, word_dim=2, char_dim=2, char_filters=2,
                  lstm_units=2, casing_dim=2, dropout=0.0)
    values.update(changes)
    return ClinicalNERModel(**values)


def batch(sentences, width=None):
    """Feature dict for sentences given as lists of word ids (chars derived from them)."""
    width = width or max(map(len, sentences))
    words = np.zeros((len(sentences), width), "int32")
    chars = np.zeros((len(sentences), width, 3), "int32")
    for row, sentence in enumerate(sentences):
        words[row, :len(sentence)] = sentence
        for col, word in enumerate(sentence):
            chars[row, col, :1 + word % 3] = 2 + word % 10
    casing = (words > 0).astype("int32") * 3
    return {"word_ids": words, "char_ids": chars, "casing_ids": casing}


def test_a_sentence_gets_the_same_scores_whatever_else_is_in_its_batch():
    model = tiny_model(lstm_units=4)
    sentence = [5, 6, 7, 8]
    alone = model(batch([sentence])).numpy()[0]
    padded = model(batch([sentence, list(range(2, 20))], width=25)).numpy()[0, :4]
    np.testing.assert_allclose(alone, padded, atol=1e-5)
    tags_alone, marginals_alone = model.decode(batch([sentence]))
    tags_padded, marginals_padded = model.decode(batch([sentence, [3] * 12]))
    np.testing.assert_array_equal(tags_alone[0], tags_padded[0, :4])
    np.testing.assert_allclose(marginals_alone[0], marginals_padded[0, :4], atol=1e-5)
    assert (tags_padded[0, 4:].numpy() == 0).all()


def test_fit_learns_tags_with_the_crf_loss_on_variable_length_batches():
    rng = np.random.default_rng(0)
    model = tiny_model(word_dim=8, lstm_units=8, char_filters=4)
    model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=False)
    # Word 3 is a one-token problem, words 4 and 5 a two-token test.
    sentences = []
    for _ in range(64):
        words = list(rng.integers(6, 30, size=rng.integers(1, 9)))
        words.insert(rng.integers(0, len(words) + 1), 3)
        position = rng.integers(0, len(words) + 1)
        words[position:position] = [4, 5]
        sentences.append(words)
    targets = [[{3: 1, 4: 3, 5: 4}.get(w, 0) for w in words] for words in sentences]

    def examples():
        for start in range(0, 64, 8):
            chunk = sentences[start:start + 8]
            features = batch(chunk)
            y = np.zeros(features["word_ids"].shape, "int32")
            for row, tags in enumerate(targets[start:start + 8]):
                y[row, :len(tags)] = tags
            yield features, y

    dataset = tf.data.Dataset.from_generator(examples, output_signature=(
        {"word_ids": tf.TensorSpec([None, None], tf.int32),
         "char_ids": tf.TensorSpec([None, None, None], tf.int32),
         "casing_ids": tf.TensorSpec([None, None], tf.int32)},
        tf.TensorSpec([None, None], tf.int32)))
    history = model.fit(dataset.repeat(), steps_per_epoch=8, epochs=15, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] / 4
    tags, _ = model.decode(batch([[9, 3, 10, 4, 5]]))
    assert tags.numpy()[0].tolist() == [0, 1, 0, 3, 4]


def test_decoding_never_produces_an_invalid_bio_sequence():
    model = tiny_model()
    # Emission weights that favour I- tags everywhere.
    kernel, bias = model.get_layer("emissions").get_weights()
    model.get_layer("emissions").set_weights([kernel, np.array([0, 0, 9, 0, 9], "float32")])
    tags, _ = model.decode(batch([[5, 6, 7]]))
    sequence = [TAGS[t] for t in tags.numpy()[0]]
    assert not sequence[0].startswith("I-")
    for previous, current in zip(sequence, sequence[1:]):
        if current.startswith("I-"):
            assert previous[2:] == current[2:]


@pytest.mark.parametrize("use_casing", [True, False])
def test_save_load_round_trip_with_safe_mode(tmp_path, use_casing):
    model = tiny_model(use_casing=use_casing, constrain_transitions=use_casing)
    features = batch([[5, 6, 7], [8]])
    if not use_casing:
        del features["casing_ids"]
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored, ClinicalNERModel)
    assert restored.get_config() == model.get_config()
    np.testing.assert_allclose(restored(features), model(features), atol=1e-6)
    np.testing.assert_array_equal(restored.decode(features)[0], model.decode(features)[0])
    clone = ClinicalNERModel.from_config(model.get_config())
    assert clone.tags == TAGS and clone.use_casing == use_casing
