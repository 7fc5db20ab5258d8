"""`--init-from` and loading a model directory: each wrong thing named for what it is, exit 4."""
import json
import shutil

import pytest

from clinical_ner.cli import main
from helpers import SAMPLE, SHARED_DATA

pytestmark = pytest.mark.slow


def train_from(model, tmp_path):
    return main(["train", "--train", str(SAMPLE / "train"), "--output", str(tmp_path / "tuned"),
                 "--init-from", str(model), "--epochs", "1", "--quiet"])


def one_error_line(capsys, command):
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"clinical-ner {command}: error: ")
    return line


@pytest.mark.parametrize("what, message", [
    # All three said "config.json: missing ... copy the whole model folder again".
    ("export", ": a SavedModel export cannot be fine-tuned; give the Keras model directory it "
               "was exported from (the one with model.keras)"),
    ("missing", ": not a clinical-ner model directory or export (no such folder)"),
    ("data", ": not a clinical-ner model directory or export (no model.keras, "),
])
def test_init_from_what_is_no_model_directory(trained_model, tmp_path, capsys, what, message):
    model_dir, export_dir = trained_model
    model = {"export": export_dir, "missing": tmp_path / "nowhere",
             "data": SAMPLE / "train"}[what]
    assert train_from(model, tmp_path) == 4
    assert message in one_error_line(capsys, "train")
    assert not (tmp_path / "tuned").exists()


def test_a_truncated_model_file_is_named_so_when_fine_tuned_or_loaded(trained_model, tmp_path,
                                                                      capsys):
    # It said "weights do not fit ... models trained before 0.2.0 ... File not found".
    model = tmp_path / "model"
    shutil.copytree(trained_model[0], model)
    data = (model / "model.keras").read_bytes()
    (model / "model.keras").write_bytes(data[:len(data) // 2])
    expected = f"{model}: model.keras is not a complete Keras archive (truncated or damaged)"
    assert train_from(model, tmp_path) == 4
    assert expected in one_error_line(capsys, "train")
    assert main(["evaluate", str(model), "--data", str(SAMPLE / "dev")]) == 4
    assert expected in one_error_line(capsys, "evaluate")


@pytest.mark.parametrize("change, counts", [
    (lambda vocab: {**vocab, "words": vocab["words"] + ["zz-extra"]}, "words against the model's"),
    (lambda vocab: {**vocab, "chars": vocab["chars"][:-1]}, "characters against the model's"),
    (lambda vocab: {**vocab, "tags": list(reversed(vocab["tags"]))},
     "its tags are not the model's"),
])
def test_another_model_s_vocabulary_is_named(trained_model, tmp_path, capsys, change, counts):
    # train --init-from ended with an internal error (IndexError), evaluate with
    # TensorFlow's InvalidArgumentError.
    model = tmp_path / "model"
    shutil.copytree(trained_model[0], model)
    vocab = json.loads((model / "vocab.json").read_text(encoding="utf-8"))
    (model / "vocab.json").write_text(json.dumps(change(vocab)), encoding="utf-8")
    runs = {"train": lambda: train_from(model, tmp_path),
            "evaluate": lambda: main(["evaluate", str(model), "--data", str(SAMPLE / "dev")])}
    for command, run in runs.items():
        assert run() == 4
        line = one_error_line(capsys, command)
        assert f"{model / 'vocab.json'}: does not match model.keras's embedding tables" in line
        assert counts in line and "comes from another model" in line


@pytest.mark.parametrize("export_format", ["savedmodel", "litert"])
def test_export_of_an_export_names_it_and_what_export_needs(trained_model, trained_litert_export,
                                                            tmp_path, capsys, export_format):
    # Both said "not a clinical-ner model directory (no model.keras)" or, for a LiteRT export
    # exported as LiteRT, "already a LiteRT export" with exit 1.
    for name, export in (("SavedModel", trained_model[1]), ("LiteRT", trained_litert_export)):
        assert main(["export", str(export), "--format", export_format,
                     "--output", str(tmp_path / "out")]) == 4
        assert one_error_line(capsys, "export").endswith(
            f": {export}: a {name} export cannot be exported again; give the Keras model "
            "directory it was exported from (the one with model.keras)")
    assert not (tmp_path / "out").exists()


def test_embeddings_given_again_are_named_before_the_data_is_read(tmp_path, capsys):
    # The bundled model's own vectors, given again as its guide's users do, were refused
    # after reading all the data, as a change of "the base model's architecture".
    vectors = SHARED_DATA / "embeddings" / "glove.6B.50d.pruned.txt"
    assert main(["train", "--init-from", "clinical", "--train", str(tmp_path / "not-read"),
                 "--output", str(tmp_path / "tuned"), "--embeddings", str(vectors)]) == 2
    line = one_error_line(capsys, "train")
    assert "--embeddings: fine-tuning " in line and "keeps its word table" in line
    assert "leave out --embeddings" in line and "architecture" not in line
    assert not (tmp_path / "tuned").exists()


def test_fine_tuning_in_python_without_settings_takes_the_base_model_s(trained_model,
                                                                       tmp_path):
    # train(init_from=...) started from the defaults, so it failed on the base's
    # architecture ("these settings differ ...: embeddings, char_dim, ...").
    from clinical_ner.config import NERConfig
    from clinical_ner.training.trainer import train

    data = tmp_path / "notes.conll"
    data.write_text("Chest\tB-test\nCT\tI-test\nshowed\tO\na\tO\nnodule\tB-problem\n\n",
                    encoding="utf-8")
    result = train(data, tmp_path / "tuned", init_from=trained_model[0], progress=False,
                   emit=lambda message: None)
    assert result.epochs_completed == NERConfig.load(trained_model[0]).epochs
    assert NERConfig.load(tmp_path / "tuned") == NERConfig.load(trained_model[0])
