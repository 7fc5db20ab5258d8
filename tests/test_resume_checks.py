"""``--resume`` goes on only with the interrupted run's data and settings, and names what is wrong.

Audit T: a resume without --dev, or on other data, overwrote ``model.keras``;
a damaged checkpoint was an internal error; a resumed fine-tuning run lost
its provenance; a partial --config, --embeddings where there were none and
--epochs were handled wrongly.
"""
import json
import shutil

import pytest

from clinical_ner.cli import main
from clinical_ner.config import NERConfig
from clinical_ner.errors import ConfigError, ModelError
from clinical_ner.training.trainer import train

from helpers import REPO_ROOT, negation_sentences, write_i2b2

SAMPLE = REPO_ROOT / "samples" / "maccrobat-i2b2"

pytestmark = pytest.mark.slow

QUIET = dict(progress=False, emit=lambda message: None)


def tiny(**changes) -> NERConfig:
    return NERConfig(**{**dict(char_dim=8, char_filters=16, lstm_units=16, epochs=2,
                               batch_size=16, seed=7, patience=2), **changes})


def part_of(corpus, tmp_path, name, count):
    """A copy of the first ``count`` documents of an i2b2 folder."""
    target = tmp_path / name
    for sub in ("txt", "concept", "ast"):
        (target / sub).mkdir(parents=True)
    for text in sorted((corpus / "txt").glob("*.txt"))[:count]:
        for sub, suffix in (("txt", ".txt"), ("concept", ".con"), ("ast", ".ast")):
            source = corpus / sub / (text.stem + suffix)
            if source.is_file():
                shutil.copy(source, target / sub / source.name)
    return target


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Ten of the sample's 40 training notes and its dev notes, as ``train`` and ``dev``.

    Every test here resumes or fine-tunes a run for an epoch or two, and what they check
    (the recorded data and settings, the messages, the checkpoint's files) does not depend
    on how many notes it trained on.
    """
    root = tmp_path_factory.mktemp("data")
    part_of(SAMPLE / "train", root, "train", 10)
    shutil.copytree(SAMPLE / "dev", root / "dev")
    return root


@pytest.fixture(scope="module")
def run_with_dev(data, tmp_path_factory):
    output = tmp_path_factory.mktemp("resume") / "run"
    train(data / "train", output, dev_path=data / "dev", config=tiny(), **QUIET)
    return output


@pytest.fixture
def run(run_with_dev, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_with_dev, copy)
    return copy


def state_of(output):
    return json.loads((output / "checkpoint" / "state.json").read_text())


def test_resume_without_dev_or_on_other_data_is_refused_naming_the_option(data, run, tmp_path):
    kept = (run / "model.keras").read_bytes()
    with pytest.raises(ConfigError, match=r"^--resume continues .* but --dev differs \(given "
                                          r"by the interrupted run, not now\); .*another --output"):
        train(data / "train", run, config=tiny(epochs=3), resume=True, **QUIET)
    with pytest.raises(ConfigError, match=r"but --train differs \(the training sentences: \d+ "
                                          r"sentences now, \d+ in the checkpoint\)"):
        train(part_of(data / "train", tmp_path, "part", 5), run,
              dev_path=data / "dev", config=tiny(epochs=3), resume=True, **QUIET)
    with pytest.raises(ConfigError, match=r"but --dev differs \(the dev sentences"):
        train(data / "train", run, dev_path=part_of(data / "dev", tmp_path, "dev", 3),
              config=tiny(epochs=3), resume=True, **QUIET)
    assert (run / "model.keras").read_bytes() == kept
    assert state_of(run)["epoch"] == 2


def test_resume_from_moved_data_with_a_partial_config_updates_config_and_cleans_up(
        data, run, tmp_path):
    # The same data in another folder; a --config naming epochs alone; a kill during a save.
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    part = tmp_path / "part.json"
    part.write_text('{"epochs": 3}')
    partial = run / "checkpoint" / ".model-epoch3.partial.keras"
    partial.write_bytes(b"cut short")
    assert main(["train", "--train", str(moved / "train"), "--dev", str(moved / "dev"),
                 "--output", str(run), "--resume", "--config", str(part), "--quiet"]) == 0
    assert state_of(run)["epoch"] == 3
    assert json.loads((run / "config.json").read_text())["epochs"] == 3
    assert not partial.exists()


def test_an_epoch_budget_already_spent_says_nothing_was_trained(data, run):
    messages = []
    train(data / "train", run, dev_path=data / "dev", config=tiny(epochs=1), resume=True,
          progress=False, emit=messages.append)
    assert f"note: {run} has already trained 2 epochs, so --epochs 1 trains none; give more " \
           "epochs to train on" in messages
    assert state_of(run)["epoch"] == 2
    assert json.loads((run / "config.json").read_text())["epochs"] == 2


def test_a_spent_budget_of_one_epoch_is_said_in_the_singular(tmp_path):
    # Audit: "has already trained 1 epochs".
    data = write_i2b2(tmp_path / "data", negation_sentences(8, seed=3))
    train(data, tmp_path / "run", config=tiny(epochs=1), **QUIET)
    messages = []
    train(data, tmp_path / "run", config=tiny(epochs=1), resume=True, progress=False,
          emit=messages.append)
    assert f"note: {tmp_path / 'run'} has already trained 1 epoch, so --epochs 1 trains none; " \
           "give more epochs to train on" in messages


def test_an_old_checkpoint_without_its_data_resumes_with_a_warning(data, run):
    state = state_of(run)
    del state["data"]
    (run / "checkpoint" / "state.json").write_text(json.dumps(state))
    messages = []
    train(data / "train", run, config=tiny(epochs=3), resume=True, progress=False,
          emit=messages.append)
    assert f"warning: {run}'s checkpoint does not record its training data (an older version " \
           "wrote it), so resuming cannot check that the data is the same" in messages
    assert state_of(run)["data"]["dev"] is False  # checked from now on


def test_embeddings_where_the_run_had_none_are_refused(data, run, capsys):
    assert main(["train", "--train", str(data / "train"), "--dev", str(data / "dev"),
                 "--output", str(run), "--resume", "--embeddings", "/nonexist.txt",
                 "--quiet"]) == 2
    assert "but --embeddings differs from" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["empty state", "truncated state", "state without wait",
                                    "truncated model", "missing model"])
def test_a_damaged_checkpoint_is_named(data, run, damage):
    checkpoint = run / "checkpoint"
    state_file, model_file = checkpoint / "state.json", checkpoint / "model-epoch2.keras"
    if damage == "empty state":
        state_file.write_text("")
    elif damage == "truncated state":
        state_file.write_text(state_file.read_text()[:40])
    elif damage == "state without wait":
        state = state_of(run)
        del state["wait"]
        state_file.write_text(json.dumps(state))
    elif damage == "truncated model":
        model_file.write_bytes(model_file.read_bytes()[:1000])
    else:
        model_file.unlink()
    named = state_file if "state" in damage else model_file
    with pytest.raises(ModelError, match=f"^{named}: damaged or incomplete, so {run} cannot be "
                                         "resumed; restore the file, or train again into a new "
                                         "--output$"):
        train(data / "train", run, dev_path=data / "dev", config=tiny(epochs=3),
              resume=True, **QUIET)


def test_a_resumed_fine_tuning_run_keeps_its_base_model_on_the_card(data, run_with_dev,
                                                                     tmp_path):
    output = tmp_path / "fine"
    train(data / "train", output, init_from=run_with_dev, config=tiny(epochs=1), **QUIET)
    # Killed before the card was written: the checkpoint holds the record.
    (output / "model_card.json").unlink()
    train(data / "train", output, config=tiny(epochs=2), resume=True, **QUIET)
    card = json.loads((output / "model_card.json").read_text())
    assert card["training"]["fine_tuned_from"]["model"]
    assert "Fine-tuned (`--init-from`) from" in (output / "MODEL_CARD.md").read_text()
