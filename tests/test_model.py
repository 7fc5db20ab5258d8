"""The Keras model: tiny sizes, batch invariance, CRF training through fit, save/load."""
import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf

from clinical_ner.model import network as model_module
from clinical_ner.config import NERConfig
from clinical_ner.model.network import ClinicalNERModel
from clinical_ner.model.tag_space import transition_mask
from clinical_ner.model.vocab import Vocabulary

TAGS = ["O", "B-problem", "I-problem", "B-test", "I-test"]
TINY = NERConfig(tag_scheme="bio", word_dim=2, char_dim=2, char_filters=2, lstm_units=2,
                 casing_dim=2, dropout=0.0)


def tiny_model(tags=TAGS, assertions=(), **changes):
    vocab = Vocabulary(words=[""] * 30, chars=[""] * 12, tags=tags, assertions=list(assertions))
    return ClinicalNERModel.from_settings(TINY.replace(**changes), vocab)


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


def test_fit_of_a_model_with_assertions_names_its_targets_when_given_tag_ids_alone():
    # README's Python API: model.fit(x, tag_ids); a model with assertions (the bundled
    # one) failed with a slicing error from deep in the graph.
    model = tiny_model(assertions=["present", "absent"])
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    features = batch([[5, 6, 7], [8, 9, 0], [3, 4, 0]])
    tag_ids = np.zeros(features["word_ids"].shape, "int32")
    with pytest.raises(ValueError, match=r"targets are \(tag_ids, assertion_ids\)"):
        model.fit(features, tag_ids, epochs=1, verbose=0)
    assertion_ids = np.full_like(tag_ids, model_module.NO_ASSERTION)
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)  # a new step
    history = model.fit(features, (tag_ids, assertion_ids), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# Run in a fresh process: logical CPU devices must be set before TensorFlow starts.
FIT_ON_ONE_AND_TWO_DEVICES = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
sys.path.insert(0, sys.argv[1])
from test_model import batch, tiny_model

features = batch([[5, 6, 7, 8], [8, 9, 3, 0], [3, 4, 0, 0], [7, 7, 2, 9]])
tag_ids = np.array([[0, 1, 2, 0], [3, 4, 0, 0], [1, 0, 0, 0], [0, 0, 3, 4]], "int32")

def fitted(strategy):
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = tiny_model(lstm_units=4)
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    data = tf.data.Dataset.from_tensor_slices((features, tag_ids)).batch(4)
    history = model.fit(data, epochs=2, verbose=0, shuffle=False)
    return history.history["loss"], [w.numpy().tolist() for w in model.trainable_weights]

print(json.dumps([fitted(tf.distribute.get_strategy()),
                  fitted(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]))
"""


@pytest.mark.slow
def test_fit_mirrored_over_two_devices_trains_as_on_one():
    # Audit: the model's own loss was not divided by the replica count, as Keras' losses
    # are, so fit under a MirroredStrategy summed the replicas' gradients: twice the step
    # of one device, and twice the loss reported.
    import json
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "-c", FIT_ON_ONE_AND_TWO_DEVICES,
                             str(Path(__file__).parent)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (one_loss, one), (two_loss, two) = json.loads(result.stdout.splitlines()[-1])
    np.testing.assert_allclose(two_loss, one_loss, rtol=1e-5)
    assert one_loss[1] < one_loss[0]  # it trained
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(np.array(b), np.array(a), atol=1e-6)


@pytest.mark.parametrize("weighting", [{"sample_weight": np.array([1.0, 0.0, 0.0])},
                                       {"class_weight": {0: 1.0, 1: 5.0, 2: 5.0}}])
def test_fit_refuses_sample_and_class_weights_instead_of_ignoring_them(weighting):
    # The CRF loss ignored them: the model trained unweighted, as if they were not given.
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    features = batch([[5, 6, 7], [8, 9, 0], [3, 4, 0]])
    tag_ids = np.zeros(features["word_ids"].shape, "int32")
    with pytest.raises(ValueError, match="sample_weight and class_weight are not supported"):
        model.fit(features, tag_ids, epochs=1, verbose=0, **weighting)


def test_fit_refuses_a_compiled_loss_instead_of_ignoring_it(tmp_path):
    # The CRF loss was used whatever compile(loss=...) said, without a word; a model saved
    # after such a compile must still load (Keras replays the compile).
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", jit_compile=False)
    features = batch([[5, 6, 7], [8, 9, 0], [3, 4, 0]])
    tag_ids = np.zeros(features["word_ids"].shape, "int32")
    with pytest.raises(ValueError, match=r"compile\(loss=\.\.\.\) is not supported"):
        model.fit(features, tag_ids, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded(features), model(features), atol=1e-6)
    loaded.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    assert np.isfinite(loaded.fit(features, tag_ids, epochs=1, verbose=0).history["loss"][0])


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


def test_layers_frozen_to_fine_tune_stay_frozen_after_save_and_load(tmp_path):
    # The model's config held its constructor's arguments alone: reloaded, every layer
    # trained again, and the optimizer's saved state no longer fitted its weights.
    model = tiny_model()
    for name in ("char_encoder", "bilstm"):
        model.get_layer(name).trainable = False
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    features = batch([[5, 6, 7], [8]])
    model.fit(features, np.zeros(features["word_ids"].shape, "int32"), epochs=1, verbose=0)
    model.save(tmp_path / "frozen.keras")
    loaded = keras.saving.load_model(tmp_path / "frozen.keras", safe_mode=True)
    assert [layer.name for layer in loaded.layers if not layer.trainable] == [
        "char_encoder", "bilstm"]
    assert len(loaded.trainable_weights) == len(model.trainable_weights)
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    # A model without layers frozen by hand keeps the config it always had.
    assert "frozen_layers" not in tiny_model().get_config()


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


def test_every_setting_comes_from_the_configuration():
    settings = TINY.replace(char_filters=3, lstm_units=5, casing_dim=4, word_dim=6,
                            fused_lstm_max_batch=2, constrain_transitions=False,
                            trainable_embeddings=False)
    model = ClinicalNERModel.from_settings(
        settings, Vocabulary(words=[""] * 30, chars=[""] * 12, tags=TAGS))
    config = model.get_config()
    for name in ("tag_scheme", "word_dim", "char_dim", "char_filters", "char_kernel_size",
                 "use_casing", "casing_dim", "lstm_units", "dropout", "constrain_transitions",
                 "fused_lstm_max_batch", "trainable_embeddings"):
        assert config[name] == getattr(settings, name), name
    assert model.get_layer("char_encoder").filters == 3
    assert model.get_layer("bilstm").units == 5
    assert model.get_layer("bilstm").fused_max_batch == 2
    assert model.get_layer("crf").allowed_transitions is None
    # The constructor has no defaults: a forgotten setting is an error, not 50 filters.
    arguments = {key: value for key, value in config.items() if key != "char_filters"}
    with pytest.raises(TypeError, match="char_filters"):
        ClinicalNERModel(**arguments)


@pytest.mark.parametrize("scheme", ["bio", "bioes"])
def test_the_crf_gets_the_mask_of_the_stated_scheme(scheme):
    tags = ["O", "B-x", "I-x"] + (["E-x", "S-x"] if scheme == "bioes" else [])
    crf = tiny_model(tags=tags, tag_scheme=scheme).get_layer("crf")
    mask = transition_mask(tags, scheme)
    np.testing.assert_array_equal(crf.allowed_transitions, mask.allowed)
    np.testing.assert_array_equal(crf.allowed_start, mask.start)
    np.testing.assert_array_equal(crf.allowed_end, mask.end)
    # Tags of another scheme are refused rather than read as some scheme.
    if scheme == "bioes":
        with pytest.raises(ValueError, match="not a BIO tag"):
            tiny_model(tags=tags, tag_scheme="bio")


@pytest.mark.parametrize("tags, scheme", [(TAGS, "bio"),
                                          (["O", "B-x", "I-x", "E-x", "S-x"], "bioes")])
def test_a_model_saved_before_the_scheme_and_fused_limit_were_stored_loads(tmp_path, tags,
                                                                            scheme):
    model = tiny_model(tags=tags, tag_scheme=scheme)
    old_config = {key: value for key, value in model.get_config().items()
                  if key not in ("tag_scheme", "fused_lstm_max_batch")}
    restored = ClinicalNERModel.from_config(old_config)
    assert restored.get_config() == model.get_config()
    restored.set_weights(model.get_weights())
    features = batch([[5, 6, 7], [8]])
    np.testing.assert_array_equal(restored.decode(features)[0], model.decode(features)[0])


def test_runtime_settings_apply_to_a_built_model():
    model = tiny_model()
    model.apply_runtime_settings(TINY.replace(fused_lstm_max_batch=0))
    assert model.get_layer("bilstm").fused_max_batch == 0
    assert model.get_config()["fused_lstm_max_batch"] == 0


def test_docstring_examples():
    results = doctest.testmod(model_module)
    assert results.attempted > 0
    assert results.failed == 0
