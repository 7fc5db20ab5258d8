"""End-to-end training on the bundled sample: the model directory, resume, fine-tuning."""
import json

import keras
import numpy as np
import pytest

from clinical_ner.config import NERConfig
from clinical_ner.errors import ClinicalNERError, ConfigError
from clinical_ner.pipeline import ClinicalNER
from clinical_ner.tags import tag_inventory
from clinical_ner.trainer import train

from conftest import REPO_ROOT

SAMPLE = REPO_ROOT / "samples" / "maccrobat-i2b2"
VECTORS = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"

pytestmark = pytest.mark.slow


def tiny_config(**changes) -> NERConfig:
    values = dict(embeddings=str(VECTORS), char_dim=8, char_filters=16, lstm_units=16,
                  epochs=2, batch_size=16, seed=7, patience=2)
    values.update(changes)
    return NERConfig(**values)


def weights_of(directory):
    state = json.loads((directory / "checkpoint" / "state.json").read_text())
    model = keras.saving.load_model(directory / "checkpoint" / state["checkpoint_model"],
                                    safe_mode=True)
    return model.get_weights(), model.optimizer.iterations.numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output = tmp_path_factory.mktemp("run") / "sample"
    messages = []
    result = train(SAMPLE / "train", output, dev_path=SAMPLE / "dev", config=tiny_config(epochs=3),
                   progress=False, emit=messages.append)
    return output, result, messages


def test_model_directory_holds_everything_to_reload(trained):
    output, result, messages = trained
    assert result.epochs_completed == 3
    for name in ("config.json", "vocab.json", "model.keras", "training_log.jsonl",
                 "training_curve.png", "checkpoint/model-epoch3.keras", "checkpoint/state.json"):
        assert (output / name).is_file(), name
    # Only the last epoch's checkpoint is kept.
    assert [p.name for p in (output / "checkpoint").glob("*.keras")] == ["model-epoch3.keras"]
    assert NERConfig.load(output) == tiny_config(epochs=3)
    log = [json.loads(line) for line in (output / "training_log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2, 3]
    for entry in log:
        assert entry["loss"] > 0 and 0 <= entry["dev_f1"] <= 1
        assert entry["train_tokens_per_second"] > 0
    best = max(log, key=lambda entry: entry["dev_f1"])
    assert result.best_epoch == best["epoch"] and result.best_dev_f1 == best["dev_f1"]
    # The learning rate decays as NerDL's lr / (1 + 0.005 * epoch).
    assert log[2]["learning_rate"] == pytest.approx(0.001 / 1.01)
    assert any("epoch 3: loss" in message for message in messages)


def test_saved_keras_model_loads_safely_and_fine_tunes_with_fit(trained):
    output, _, _ = trained
    model = keras.saving.load_model(output / "model.keras", safe_mode=True)
    ner = ClinicalNER.load(output)
    sentence = [["CT", "showed", "a", "nodule", "."]]
    features = ner.module.featurizer(np.array(sentence, dtype=object))
    np.testing.assert_allclose(model(features), ner.model(features), atol=1e-6)
    model.compile(optimizer="adam", jit_compile=False)
    target = np.array([[1, 0, 0, 1, 0]])
    before = float(model.compute_loss(features, target, model(features)))
    model.fit(features, target, epochs=10, verbose=0)
    assert float(model.compute_loss(features, target, model(features))) < before


def test_annotate_offsets_are_exact(trained):
    output, _, _ = trained
    ner = ClinicalNER.load(output)
    texts = ["CT of the chest showed a 2 cm nodule; she was started on aspirin.",
             "", "   \n", "Fever.\r\nChest pain 😀 and héadache", "x" * 5000,
             "Lone \ud800 surrogate. Fever"]
    results = ner.annotate(texts)
    assert len(results) == len(texts) and results[1] == [] and results[2] == []
    for text, entities in zip(texts, results):
        for entity in entities:
            assert text[entity.start:entity.end] == entity.text
            assert entity.label in ("problem", "test", "treatment")
            assert 0.0 < entity.confidence <= 1.0
    assert ner.annotate(texts[0]) == results[0]


def test_resume_continues_exactly_where_an_interrupted_run_stopped(tmp_path):
    straight = tmp_path / "straight"
    train(SAMPLE / "train", straight, dev_path=SAMPLE / "dev", config=tiny_config(epochs=3),
          progress=False, emit=lambda m: None)
    interrupted = tmp_path / "interrupted"
    train(SAMPLE / "train", interrupted, dev_path=SAMPLE / "dev", config=tiny_config(epochs=2),
          progress=False, emit=lambda m: None)
    messages = []
    result = train(SAMPLE / "train", interrupted, dev_path=SAMPLE / "dev",
                   config=tiny_config(epochs=3), resume=True, progress=False,
                   emit=messages.append)
    assert result.epochs_completed == 3
    assert any("resuming" in message and "after epoch 2" in message for message in messages)
    straight_weights, straight_steps = weights_of(straight)
    resumed_weights, resumed_steps = weights_of(interrupted)
    assert straight_steps == resumed_steps
    for a, b in zip(straight_weights, resumed_weights):
        np.testing.assert_allclose(a, b, atol=1e-6)
    log = (interrupted / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]


def test_existing_output_is_not_overwritten_and_resume_needs_a_checkpoint(trained, tmp_path):
    output, _, _ = trained
    with pytest.raises(ClinicalNERError, match="already holds a model"):
        train(SAMPLE / "train", output, config=tiny_config(), progress=False)
    with pytest.raises(ClinicalNERError, match="nothing to resume"):
        train(SAMPLE / "train", tmp_path / "new", resume=True, progress=False)


def test_fine_tuning_on_a_different_label_set(trained, tmp_path, shared_data):
    base, _, _ = trained
    messages = []
    output = tmp_path / "finetuned"
    # A negligible learning rate keeps the weights where fine-tuning started.
    result = train(shared_data / "ncbi-disease" / "dev.conll", output,
                   config=NERConfig.load(base).replace(epochs=1, learning_rate=1e-9),
                   init_from=base, progress=False, emit=messages.append)
    assert result.epochs_completed == 1
    assert any("re-initialised" in message for message in messages)
    tuned = ClinicalNER.load(output)
    original = ClinicalNER.load(base)
    assert tuned.vocab.tags == tag_inventory(["Disease"], original.config.tag_scheme)
    assert tuned.vocab.words == original.vocab.words
    for name in ("word_embedding", "char_encoder", "bilstm"):
        for kept, start in zip(tuned.model.get_layer(name).get_weights(),
                               original.model.get_layer(name).get_weights()):
            np.testing.assert_allclose(kept, start, atol=1e-5)
    assert tuned.model.get_layer("crf").get_weights()[0].shape == (len(tuned.vocab.tags),) * 2
    with pytest.raises(ConfigError, match="lstm_units"):
        train(SAMPLE / "train", tmp_path / "other", init_from=base,
              config=NERConfig.load(base).replace(lstm_units=8), progress=False)
