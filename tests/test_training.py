"""End-to-end training on the bundled sample: the model directory, resume, fine-tuning."""
import json
import re
import shutil
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from clinical_ner.config import NERConfig
from clinical_ner.vectors.reader import load_embeddings
from clinical_ner.formats import load_corpus
from clinical_ner.formats.conll import write_conll
from clinical_ner.errors import ClinicalNERError, ConfigError, DataFormatError
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.model.features import Featurizer
from clinical_ner.model.tag_space import tag_inventory
from clinical_ner.model.vocab import UNKNOWN_ID
from clinical_ner.text.tokenizer import normalize_word
from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences
from clinical_ner.training.starting_model import (
    case_only_warning, fine_tuning_model, two_cases_warning,
)
from clinical_ner.training.trainer import train

from helpers import REPO_ROOT, assert_same_entities

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


def rows_in_use(vocab, data_path) -> int:
    """Padding, <unk> and every vocabulary word that occurs in the data."""
    words = {normalize_word(token) for sentence in corpus_sentences(load_corpus(data_path))
             for token in sentence.tokens}
    return 2 + len(words & set(vocab.words))


def test_only_the_training_words_embeddings_train_the_rest_keep_their_vectors(trained):
    output, _, _ = trained
    ner = KerasAnnotator.load(output)
    rows = ner.model.trainable_word_rows
    assert rows == rows_in_use(ner.vocab, SAMPLE / "train") < len(ner.vocab.words)
    table = ner.model.get_layer("word_embedding").table()
    pretrained = dict(zip(*load_embeddings(VECTORS)))
    kept = [word_id for word_id in range(rows, len(ner.vocab.words))
            if ner.vocab.words[word_id] in pretrained]
    assert kept
    np.testing.assert_array_equal(
        table[kept], np.stack([pretrained[ner.vocab.words[word_id]] for word_id in kept]))
    trained_rows = [word_id for word_id in range(2, rows) if ner.vocab.words[word_id] in pretrained]
    moved = [not np.array_equal(table[word_id], pretrained[ner.vocab.words[word_id]])
             for word_id in trained_rows]
    assert sum(moved) > 0.9 * len(moved)


def test_saved_keras_model_loads_safely_and_fine_tunes_with_fit(trained):
    output, _, _ = trained
    model = keras.saving.load_model(output / "model.keras", safe_mode=True)
    ner = KerasAnnotator.load(output)
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
    ner = KerasAnnotator.load(output)
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
    assert_same_entities(ner.annotate(texts[0]), results[0])  # alone against in a batch


def test_resume_continues_exactly_where_an_interrupted_run_stopped(trained, tmp_path):
    # With word dropout, whose draws must repeat too. The uninterrupted run is the module's
    # `trained` (read only): the same data, dev data and configuration, whose default
    # word_dropout is the 0.1 given here; training it again cost a 3-epoch run.
    straight, straight_result, _ = trained
    assert NERConfig.load(straight) == tiny_config(epochs=3, word_dropout=0.1)
    assert straight_result.epochs_completed == 3
    interrupted = tmp_path / "interrupted"
    train(SAMPLE / "train", interrupted, dev_path=SAMPLE / "dev",
          config=tiny_config(epochs=2, word_dropout=0.1), progress=False, emit=lambda m: None)
    messages = []
    result = train(SAMPLE / "train", interrupted, dev_path=SAMPLE / "dev",
                   config=tiny_config(epochs=3, word_dropout=0.1), resume=True, progress=False,
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


def test_weights_ema_scores_and_keeps_the_average_and_resumes_exactly(tmp_path):
    config = dict(weights_ema=0.9, patience=5, learning_rate=0.01)
    # Two epochs, interrupted after the first: resuming needs one epoch on each side.
    straight = tmp_path / "straight"
    train(SAMPLE / "train", straight, dev_path=SAMPLE / "dev",
          config=tiny_config(epochs=2, **config), progress=False, emit=lambda m: None)
    interrupted = tmp_path / "interrupted"
    train(SAMPLE / "train", interrupted, dev_path=SAMPLE / "dev",
          config=tiny_config(epochs=1, **config), progress=False, emit=lambda m: None)
    train(SAMPLE / "train", interrupted, dev_path=SAMPLE / "dev",
          config=tiny_config(epochs=2, **config), resume=True, progress=False,
          emit=lambda m: None)
    log = [json.loads(line) for line in (straight / "training_log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2]
    assert log[-1]["best"]  # so that model.keras is the last epoch's average
    # The checkpoint holds the raw weights and, in the optimizer, their average;
    # model.keras holds the average, and the dev F1 logged is the average's.
    state = json.loads((straight / "checkpoint" / "state.json").read_text())
    checkpoint = keras.saving.load_model(straight / "checkpoint" / state["checkpoint_model"],
                                         safe_mode=True)
    averages = {variable.path: variable.numpy() for variable in checkpoint.optimizer.variables
                if variable.path.endswith("_average")}
    kept = keras.saving.load_model(straight / "model.keras", safe_mode=True)
    assert len(averages) == len(kept.trainable_weights) > 0
    for raw, average in zip(checkpoint.trainable_weights, kept.trainable_weights):
        stored = [value for path, value in averages.items()
                  if path.endswith("/" + raw.path.replace("/", "_") + "_average")]
        assert len(stored) == 1, raw.path
        np.testing.assert_allclose(average.numpy(), stored[0], atol=1e-7)
        assert not np.allclose(average.numpy(), raw.numpy())
    sentences = corpus_sentences(load_corpus(SAMPLE / "dev"))
    report = evaluate_sentences(KerasAnnotator.load(straight), sentences)
    assert report["exact"]["micro"]["f1"] == pytest.approx(log[-1]["dev_f1"], abs=1e-9)
    # Resumed: the same raw weights, the same average.
    for name in ("checkpoint", "model"):
        left = weights_of(straight)[0] if name == "checkpoint" else kept.get_weights()
        right = (weights_of(interrupted)[0] if name == "checkpoint" else keras.saving.load_model(
            interrupted / "model.keras", safe_mode=True).get_weights())
        for a, b in zip(left, right):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_existing_output_is_not_overwritten_and_resume_needs_a_checkpoint(trained, tmp_path):
    output, _, _ = trained
    with pytest.raises(ClinicalNERError, match="already holds a model"):
        train(SAMPLE / "train", output, config=tiny_config(), progress=False)
    with pytest.raises(ClinicalNERError, match="nothing to resume"):
        train(SAMPLE / "train", tmp_path / "new", resume=True, progress=False)


def test_an_empty_dev_file_is_refused_instead_of_choosing_on_nothing(tmp_path):
    # It trained with dev F1 0.0 every epoch, kept epoch 1 and stopped early.
    empty = tmp_path / "empty.conll"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"^{empty}: no sentences to score"):
        train(SAMPLE / "train", tmp_path / "never", dev_path=empty, config=tiny_config(),
              progress=False)


def test_repeated_train_paths_and_a_dev_path_trained_on_are_refused(tmp_path, capsys):
    # Audit: accepted silently (a corpus file refuses both): a path given twice counted its
    # sentences twice, and a --dev among the --train paths chose the epoch on training data.
    from clinical_ner.cli import main

    train_file = tmp_path / "train.conll"
    train_file.write_text("Fever\tB-problem\n.\tO\n\n", encoding="utf-8")
    never = str(tmp_path / "never")
    assert main(["train", "--train", str(train_file), "--train", str(tmp_path / "." /
                 "train.conll"), "--output", never]) == 2
    assert capsys.readouterr().err == (
        f"clinical-ner train: error: --train {train_file}: given twice (its sentences would "
        "count twice); to draw a corpus more often give it a weight in a corpus file "
        "(--corpus)\n")
    assert main(["train", "--train", str(SAMPLE / "train"), "--train", str(train_file),
                 "--dev", str(train_file), "--output", never]) == 2
    assert capsys.readouterr().err.startswith(
        f"clinical-ner train: error: --dev {train_file} is one of the --train paths: the epoch "
        "would be chosen on training data;")
    assert not (tmp_path / "never").exists()


def test_data_without_entities_is_refused_instead_of_training_or_choosing_on_it(tmp_path):
    # Training data of O alone trained a model that finds nothing, as a success; a dev file
    # of O alone scored F1 0.0 every epoch, kept epoch 1 and stopped early.
    plain = tmp_path / "plain.conll"
    plain.write_text("The\tO\npatient\tO\nis\tO\nwell\tO\n\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"^{plain}: no entities to train on"):
        train(plain, tmp_path / "never", config=tiny_config(), progress=False)
    with pytest.raises(DataFormatError, match=rf"^{plain}: no entities to score"):
        train(SAMPLE / "train", tmp_path / "never", dev_path=plain, config=tiny_config(),
              progress=False)
    assert not (tmp_path / "never").exists()


def test_patience_0_stops_at_the_first_epoch_without_a_dev_gain(tmp_path):
    # It stopped before the first epoch: nothing trained, and no model.keras (exit 4).
    from clinical_ner.training.callbacks import ModelSelection, RunState, TrainingRun

    selection, state = ModelSelection(patience=0, has_dev=True), RunState()
    run = TrainingRun(model=None, state=state, directory=tmp_path)
    assert not selection.should_stop(state)
    selection.on_epoch_end(run, {"epoch": 1, "dev_f1": 0.5})
    assert not selection.should_stop(state)
    selection.on_epoch_end(run, {"epoch": 2, "dev_f1": 0.4})
    assert selection.should_stop(state) and state.best_epoch == 1


def test_training_that_diverges_stops_instead_of_keeping_a_model_of_nan(tmp_path):
    # The weights became NaN in an epoch; the run went on (loss nan) and kept the last
    # epoch's NaN model, which finds nothing, as a success.
    data = tmp_path / "tiny.conll"
    data.write_text("Fever\tB-problem\nand\tO\nchest\tB-problem\npain\tI-problem\n\n"
                    "CT\tB-test\nshowed\tO\nit\tO\n\n", encoding="utf-8")
    config = tiny_config(embeddings=None, learning_rate=1e6, epochs=3)
    # Which epoch diverges may differ between CPUs; an epoch before it is kept.
    with pytest.raises(ClinicalNERError, match=r"^epoch \d: training diverged \(loss [^;]*; "
                                               r"the weights are no longer finite numbers\); "
                                               "train again with a lower learning_rate or "
                                               "clip_norm"):
        train(data, tmp_path / "run", config=config, progress=False, emit=lambda message: None)
    if (tmp_path / "run" / "model.keras").exists():
        kept = keras.saving.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
        assert all(np.isfinite(weight).all() for weight in kept.get_weights())


def test_resume_accepts_the_first_commands_options_and_names_one_that_changes(
        trained, tmp_path, capsys):
    # A restarted worker runs its first command again, with --resume added.
    from clinical_ner.cli import main

    output = tmp_path / "run"
    shutil.copytree(trained[0], output)
    first = ["train", "--train", str(SAMPLE / "train"), "--dev", str(SAMPLE / "dev"),
             "--output", str(output), "--quiet",
             "--embeddings", str(VECTORS), "--batch-size", "16", "--seed", "7", "--resume"]
    assert main(first + ["--batch-size", "8"]) == 2
    assert capsys.readouterr().err == (
        "clinical-ner train: error: --resume continues with the saved configuration, but "
        f"--batch-size differs from {output / 'config.json'}; leave it out (only the epochs and "
        "the embeddings' path may change)\n")
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({**tiny_config().to_dict(), "lstm_units": 32}))
    assert main(first + ["--config", str(changed)]) == 2
    assert "but the --config setting 'lstm_units' differs from" in capsys.readouterr().err
    same = tmp_path / "same.json"
    same.write_text(json.dumps(tiny_config().to_dict()))
    # A worker on another machine has the embeddings at another path: resuming does
    # not read them, and config.json keeps the path that trained the model.
    elsewhere = tmp_path / "elsewhere.txt"
    shutil.copy(VECTORS, elsewhere)
    saved_embeddings = json.loads((output / "config.json").read_text())["embeddings"]
    moved = [str(elsewhere) if argument == str(VECTORS) else argument for argument in first]
    assert main(moved + ["--config", str(same), "--epochs", "4"]) == 0
    # (The run stops early: its dev F1 has not risen for `patience` epochs.)
    saved = json.loads((output / "config.json").read_text())
    assert saved["epochs"] == 4 and saved["embeddings"] == saved_embeddings


def test_resume_in_the_library_refuses_other_settings_instead_of_ignoring_them(
        trained, tmp_path):
    output = tmp_path / "run"
    shutil.copytree(trained[0], output)
    with pytest.raises(ConfigError, match=re.escape(
            "--resume continues with the saved configuration, but its lstm_units (32 given, 16 "
            f"saved) differs from {output / 'config.json'}; leave it out (only the epochs and the "
            "embeddings' path may change)")):
        train(SAMPLE / "train", output, config=tiny_config(epochs=4, lstm_units=32),
              resume=True, progress=False)
    assert json.loads((output / "checkpoint" / "state.json").read_text())["epoch"] == 3


def test_a_model_file_whose_weights_do_not_fit_is_refused_with_its_path(trained, tmp_path):
    output, _, _ = trained
    copy = tmp_path / "old-model"
    shutil.copytree(output, copy)
    # What a model saved before 0.2.0 looks like to this version: the weights
    # hold a word table the architecture in its config does not have.
    with zipfile.ZipFile(output / "model.keras") as source, \
            zipfile.ZipFile(copy / "model.keras", "w") as target:
        for name in source.namelist():
            content = source.read(name)
            if name == "config.json":
                config = json.loads(content)
                config["config"]["trainable_word_rows"] = None
                content = json.dumps(config)
            target.writestr(name, content)
    with pytest.raises(ClinicalNERError, match=r"old-model/model.keras: .*retrain it"):
        KerasAnnotator.load(copy)


def test_training_on_several_corpora_is_training_on_them_together(tmp_path):
    # The final model of a benchmark is fit on train and dev together: given
    # as two paths, they must train exactly the model their concatenation does.
    # Ten of the sample's 40 notes (each run trains an epoch on them): the comparisons are
    # exact whatever the number.
    documents = load_corpus(SAMPLE / "train", "i2b2").documents[:10]
    assert len(documents) == 10
    write_conll(tmp_path / "first.conll", documents[:6])
    write_conll(tmp_path / "second.conll", documents[6:])
    write_conll(tmp_path / "both.conll", documents)
    config = tiny_config(epochs=1)
    together = train([tmp_path / "first.conll", tmp_path / "second.conll"], tmp_path / "two",
                     config=config, progress=False, emit=lambda message: None)
    concatenated = train(tmp_path / "both.conll", tmp_path / "one", config=config,
                         progress=False, emit=lambda message: None)
    assert together.epochs_completed == concatenated.epochs_completed == 1
    assert together.best_dev_f1 is None and together.best_epoch == 1
    two, one = KerasAnnotator.load(tmp_path / "two"), KerasAnnotator.load(tmp_path / "one")
    assert two.vocab == one.vocab
    for trained_apart, trained_together in zip(two.model.get_weights(), one.model.get_weights()):
        np.testing.assert_array_equal(trained_apart, trained_together)
    # Labels of every corpus are learnt, whatever their formats.
    extra = tmp_path / "extra.conll"
    extra.write_text("Aspirin\tB-Drug\ngiven\tO\n\n", encoding="utf-8")
    notes = tmp_path / "notes"  # i2b2, ten of the sample's notes
    for name in sorted(path.stem for path in (SAMPLE / "train" / "txt").glob("*.txt"))[:10]:
        for folder, suffix in (("txt", ".txt"), ("concept", ".con")):
            (notes / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(SAMPLE / "train" / folder / f"{name}{suffix}", notes / folder)
    mixed = train([notes, extra], tmp_path / "mixed", config=config,
                  progress=False, emit=lambda message: None)
    assert "B-Drug" in KerasAnnotator.load(mixed.output).vocab.tags
    # A path without sentences is named, not silently skipped.
    empty = tmp_path / "empty.conll"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ClinicalNERError, match="empty.conll: no sentences to train on"):
        train([SAMPLE / "train", empty], tmp_path / "none", config=config, progress=False,
              emit=lambda message: None)


def test_fine_tuning_on_a_different_label_set(trained, tmp_path, shared_data):
    base, _, _ = trained
    messages = []
    output = tmp_path / "finetuned"
    # A negligible learning rate keeps the weights where fine-tuning started.
    result = train(shared_data / "ncbi-disease" / "dev.conll", output,
                   config=NERConfig.load(base).replace(epochs=1, learning_rate=1e-9),
                   init_from=base, progress=False, emit=messages.append)
    assert result.epochs_completed == 1
    # The labels lost were left to be spotted in two lists of tags.
    [relabelled] = [message for message in messages if "label set differs" in message]
    assert ("(problem, test, treatment -> Disease; added: Disease; dropped: problem, test, "
            "treatment, which the new data does not mark, so the fine-tuned model will not find "
            "them)") in relabelled
    tuned = KerasAnnotator.load(output)
    original = KerasAnnotator.load(base)
    assert tuned.vocab.tags == tag_inventory(["Disease"], original.config.tag_scheme)
    # The base's words and vectors plus the new data's frequent words, reordered so
    # that the new data's words are the trainable rows.
    assert set(original.vocab.words) < set(tuned.vocab.words)
    assert tuned.model.trainable_word_rows == rows_in_use(
        tuned.vocab, shared_data / "ncbi-disease" / "dev.conll")
    tuned_ids = {word: word_id for word_id, word in enumerate(tuned.vocab.words)}
    np.testing.assert_allclose(
        tuned.model.get_layer("word_embedding").table()[
            [tuned_ids[word] for word in original.vocab.words]],
        original.model.get_layer("word_embedding").table(),
        atol=1e-5)
    for name in ("char_encoder", "bilstm"):
        for kept, start in zip(tuned.model.get_layer(name).get_weights(),
                               original.model.get_layer(name).get_weights()):
            # (The char table's first rows: the new data's new characters follow them.)
            np.testing.assert_allclose(kept[:len(start)], start, atol=1e-5)
    assert tuned.model.get_layer("crf").get_weights()[0].shape == (len(tuned.vocab.tags),) * 2
    with pytest.raises(ConfigError, match="lstm_units"):
        train(SAMPLE / "train", tmp_path / "other", init_from=base,
              config=NERConfig.load(base).replace(lstm_units=8), progress=False)


# "zorblaxin", a word the base model lacks, twice; "qwertyx" once (under min_word_count 2);
# "≥", a character it lacks.
NEW_WORDS_CONLL = ("She\tO\ngot\tO\nzorblaxin\tB-drug\nfor\tO\nfever\tB-problem\n\n"
                   "Zorblaxin\tB-drug\nstopped\tO\nqwertyx\tO\n≥2\tO\n.\tO\n\n")


def fine_tuning_start(base, tmp_path, labels, **settings):
    """``(model, vocab, messages)`` that fine-tuning ``base`` on NEW_WORDS_CONLL starts from."""
    data = tmp_path / "new-words.conll"
    data.write_text(NEW_WORDS_CONLL, encoding="utf-8")
    config = NERConfig.load(base).replace(**settings)
    messages = []
    model, vocab = fine_tuning_model(base, config, corpus_sentences(load_corpus(data, "conll")),
                                     tag_inventory(labels, config.tag_scheme), messages.append)
    return model, vocab, messages


def test_fine_tuning_adds_the_new_data_s_frequent_words(trained, tmp_path):
    base, _, _ = trained
    original = KerasAnnotator.load(base)
    assert "zorblaxin" not in original.vocab.words
    model, vocab, messages = fine_tuning_start(base, tmp_path, ["problem", "test", "treatment"])
    # It stayed an unknown word for ever: the word table was the base model's alone.
    assert set(vocab.words) == set(original.vocab.words) | {"zorblaxin"}
    assert any("1 new word of the data (seen at least 2 times" in message
               for message in messages)
    ids = {word: word_id for word_id, word in enumerate(vocab.words)}
    assert ids["zorblaxin"] < model.trainable_word_rows
    # The base model's words start from their own vectors.
    table = model.get_layer("word_embedding").table()
    np.testing.assert_array_equal(table[[ids[word] for word in original.vocab.words[1:]]],
                                  original.model.get_layer("word_embedding").table()[1:])
    # Its own row, not <unk>'s: the model can tell it from an unknown word of the same letters.
    features = Featurizer(vocab.words, vocab.chars, original.config.max_word_length)(
        tf.constant([["zorblaxin", "stopped"]]))
    assert features["word_ids"][0, 0] == ids["zorblaxin"] != UNKNOWN_ID
    word_ids = features["word_ids"].numpy()
    word_ids[0, 0] = UNKNOWN_ID
    emissions, _ = model.split_outputs(model(features, training=False))
    as_unknown, _ = model.split_outputs(model(dict(features, word_ids=tf.constant(word_ids)),
                                               training=False))
    assert not np.allclose(emissions[0, 0], as_unknown[0, 0])
    # Likewise a new character: it was read as <unk> for good.
    assert vocab.chars == original.vocab.chars + ["≥"]
    assert any(f"its {len(original.vocab.chars)} characters and 1 new character of the data"
               in message for message in messages)
    char_table = model.get_layer("char_encoder").get_weights()[0]
    np.testing.assert_array_equal(char_table[:-1],
                                  original.model.get_layer("char_encoder").get_weights()[0])
    # min_word_count says which words join (it was refused as a change of architecture).
    _, every_word, _ = fine_tuning_start(base, tmp_path, ["problem", "test", "treatment"],
                                         min_word_count=1)
    assert {"zorblaxin", "qwertyx"} <= set(every_word.words)
    # Frozen, its random row would never learn: it stays <unk>, which the base trained.
    _, frozen, messages = fine_tuning_start(base, tmp_path, ["problem", "test", "treatment"],
                                            trainable_embeddings=False)
    assert "zorblaxin" not in frozen.words
    assert any("new words are not added, as trainable_embeddings is false" in message
               for message in messages)


@pytest.mark.parametrize("labels", [["drug", "problem", "test", "treatment"],
                                    ["problem", "test"]])
def test_fine_tuning_keeps_the_weights_of_the_tags_both_models_have(trained, tmp_path, labels):
    base, _, _ = trained
    original = KerasAnnotator.load(base)
    model, vocab, messages = fine_tuning_start(base, tmp_path, labels)
    # The output layer and the CRF were re-initialised whole, even for the tags kept.
    shared = [tag for tag in vocab.tags if tag in original.vocab.tags]
    new, old = ([vocab.tags.index(tag) for tag in shared],
                [original.vocab.tags.index(tag) for tag in shared])
    kernel, bias = model.get_layer("emissions").get_weights()
    base_kernel, base_bias = original.model.get_layer("emissions").get_weights()
    np.testing.assert_array_equal(kernel[:, new], base_kernel[:, old])
    np.testing.assert_array_equal(bias[new], base_bias[old])
    transitions, start, end = model.get_layer("crf").get_weights()
    base_transitions, base_start, base_end = original.model.get_layer("crf").get_weights()
    np.testing.assert_array_equal(transitions[np.ix_(new, new)],
                                  base_transitions[np.ix_(old, old)])
    np.testing.assert_array_equal(start[new], base_start[old])
    np.testing.assert_array_equal(end[new], base_end[old])
    added = [vocab.tags.index(tag) for tag in vocab.tags if tag not in original.vocab.tags]
    # A new tag's weights start as a new model's: zero bias, start and end, random columns.
    assert not np.any(bias[added]) and not np.any(start[added]) and not np.any(end[added])
    for tag_id in added:
        assert not any(np.allclose(kernel[:, tag_id], column) for column in base_kernel.T)
    [relabelled] = [message for message in messages if "label set differs" in message]
    assert "keep the base model's weights for the tags both have" in relabelled
    assert ("the added labels' tags start as in a new model" in relabelled) == bool(added)


def test_a_base_label_in_other_letter_case_is_named_with_the_label_map_that_keeps_it(
        trained, tmp_path):
    base, _, _ = trained
    # "Problem" for the base's "problem" trained a new label from scratch, and the bundled
    # model's assertion output gave its entities no assertion, with nothing said.
    _, _, messages = fine_tuning_start(base, tmp_path, ["Problem", "drug", "test", "treatment"])
    [warning] = [message for message in messages if message.startswith("warning:")]
    assert warning == (
        "warning: labels that differ from the base model's only in letter case are new labels, "
        "and the base's weights for them are not used: Problem (base: problem); to keep them, "
        "give a label map that names every label (those it does not name become O): "
        "--label-map 'Problem=problem,drug=drug,test=test,treatment=treatment'")
    assert "Problem entities get no assertion (the assertion output is for problem)" in (
        case_only_warning(["Problem"], ["problem"], base_has_assertions=True))
    assert case_only_warning(["drug", "problem"], ["problem", "test"], True) is None


def test_a_base_label_in_two_letter_cases_at_once_is_warned_about():
    # "Problem" beside "problem" in the same data split the problems between two labels, the
    # new one trained from scratch, with nothing said: only "added: Problem".
    warning = case_only_warning(["Problem", "problem", "test"], ["problem", "test"], True)
    assert "Problem (base: problem, which the data has too: their mentions train two labels)" \
        in warning
    assert warning.endswith("--label-map 'Problem=problem,problem=problem,test=test'")


def test_fine_tuning_warns_of_a_new_label_in_two_letter_cases(trained, tmp_path):
    base, _, _ = trained
    # "Drug" beside "drug", neither a base label, trained two labels from part of the drug
    # mentions each, silently: the warning was a new model's alone.
    _, _, messages = fine_tuning_start(base, tmp_path, ["Drug", "drug", "problem", "test"])
    warnings = [message for message in messages if message.startswith("warning:")]
    assert warnings == [two_cases_warning(["Drug", "drug", "problem", "test"])]
    assert warnings[0].endswith("--label-map 'Drug=drug,drug=drug,problem=problem,test=test'")
    # A base label in two cases is case_only_warning's alone.
    assert two_cases_warning(["Problem", "problem"], ["problem"]) is None


def test_a_new_model_warns_of_a_label_in_two_letter_cases(tmp_path):
    # "Drug" beside "drug" trained two labels, each from part of the drug mentions, silently.
    data = tmp_path / "mixed.conll"
    data.write_text("aspirin B-Drug\ngiven O\n\nheparin B-drug\ngiven O\n\n"
                    "fever B-problem\n\n")
    messages = []
    train(data, tmp_path / "model", config=NERConfig(epochs=1, word_dim=4, char_dim=4,
                                                     char_filters=4, lstm_units=4),
          emit=messages.append)
    [warning] = [message for message in messages if message.startswith("warning:")]
    assert warning == (
        "warning: labels that differ only in letter case are trained as different labels, each "
        "from part of the mentions: Drug, drug; to merge them, give a label map that names "
        "every label (those it does not name become O): "
        "--label-map 'Drug=drug,drug=drug,problem=problem'")
    assert two_cases_warning(["drug", "problem"]) is None


def test_fine_tuning_on_the_same_labels_starts_from_every_weight(trained, tmp_path):
    base, _, _ = trained
    original = KerasAnnotator.load(base)
    model, _, messages = fine_tuning_start(base, tmp_path, ["problem", "test", "treatment"])
    assert not any("label set differs" in message for message in messages)
    for name in ("emissions", "crf", "bilstm", "char_encoder"):
        for start, base_weight in zip(model.get_layer(name).get_weights(),
                                      original.model.get_layer(name).get_weights()):
            # (The char table's first rows: "≥" follows them.)
            np.testing.assert_array_equal(start[:len(base_weight)], base_weight)
