"""``python training/build_pretrained.py``: its options are checked before it trains or deletes.

The build itself trains for minutes and is not run here: ``build`` is
replaced by a recorder, so each test sees only what ``main`` decides first.
"""
from __future__ import annotations

import importlib.util
import json

import pytest

from helpers import REPO_ROOT

BUNDLED = REPO_ROOT / "clinical_ner" / "pretrained" / "clinical"


@pytest.fixture
def build_script(monkeypatch):
    """The script as a module, its ``build`` recording its arguments instead of training."""
    spec = importlib.util.spec_from_file_location(
        "build_pretrained", REPO_ROOT / "training" / "build_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(REPO_ROOT)  # restored afterwards: main() changes to the repository
    module.builds = []
    monkeypatch.setattr(module, "build", lambda *args: module.builds.append(args))
    return module


def refusal(build_script, capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_script.main(list(argv))
    assert exit_info.value.code == 2
    assert build_script.builds == []  # nothing trained, nothing deleted
    # argparse's "PROG: error: MESSAGE", PROG being how the script was started.
    return capsys.readouterr().err.strip().splitlines()[-1].partition(": error: ")[2]


def test_a_work_folder_holding_other_files_is_refused_not_deleted(build_script, capsys,
                                                                    tmp_path):
    # It was deleted with everything in it (``--work .``: the repository), then trained into.
    work = tmp_path / "mine"
    work.mkdir()
    (work / "notes.txt").write_text("keep", encoding="utf-8")
    assert refusal(build_script, capsys, "--work", str(work)) == (
        f"--work {work}: holds 'notes.txt', not only an earlier "
        "build's joint and full, and the build deletes the folder first; give a new folder")
    assert (work / "notes.txt").read_text(encoding="utf-8") == "keep"


@pytest.mark.parametrize(("argv", "message"), [
    # Found only after the whole build had trained (minutes): the pruning refused it.
    (["--words", "0"], "--words must be a positive integer, got 0"),
    # A traceback (NotADirectoryError) from deleting it.
    (["--work", "README.md"], "--work README.md: a file; give a folder to write into"),
])
def test_bad_options_are_named_before_training(build_script, capsys, argv, message):
    assert refusal(build_script, capsys, *argv) == message


def test_a_missing_licence_file_is_named_before_training(build_script, capsys, monkeypatch,
                                                         tmp_path):
    # It failed after training, with the bundled model's folder already deleted.
    missing = tmp_path / "LICENSE-CC-BY-4.0.md"
    monkeypatch.setattr(build_script, "LICENCES", {missing: "LICENSE-X.md"})
    assert refusal(build_script, capsys, "--work", str(tmp_path / "work")) == (
        f"{missing}: missing; the model ships the licence of every "
        "corpus and of the vectors (../shared/data beside the checkout)")


def test_an_earlier_builds_work_folder_is_built_into_again(build_script, tmp_path):
    work = tmp_path / "work"
    for stage in build_script.STAGES:
        (work / stage).mkdir(parents=True)
    build_script.main(["--work", str(work), "--words", "100"])
    assert build_script.builds == [(100, work)]


@pytest.fixture
def packaging(build_script, monkeypatch, tmp_path):
    """``package`` of the bundled model, scored by stubs, into ``tmp_path/pretrained/clinical``
    holding an earlier model's files."""
    import clinical_ner.evaluation.card_facts as card_facts

    output = tmp_path / "pretrained" / "clinical"
    output.mkdir(parents=True)
    (output / "model.keras").write_bytes(b"the earlier model")
    (output / "MODEL_CARD.md").write_text("the earlier card", encoding="utf-8")
    licence = tmp_path / "LICENSE.md"
    licence.write_text("licence", encoding="utf-8")
    monkeypatch.setattr(build_script, "OUTPUT", output)
    monkeypatch.setattr(build_script, "REPO", tmp_path)  # where it says the model went
    monkeypatch.setattr(build_script, "LICENCES", {licence: "LICENSE.md"})
    monkeypatch.setattr(build_script, "dev_f1", lambda ner: 0.5)
    monkeypatch.setattr(build_script, "disease_f1", lambda ner: {"BC5CDR test": 0.4})
    recorded = json.loads((BUNDLED / "model_card.json").read_text(encoding="utf-8"))
    monkeypatch.setattr(card_facts, "evaluation_record",
                        lambda model_dir, data, card=None: recorded["evaluation"])
    return output


def earlier_files(output):
    return {path.name: path.read_bytes() for path in output.iterdir()}


def test_a_failure_writing_the_card_leaves_the_earlier_bundled_model_whole(
        build_script, packaging, monkeypatch):
    # The bundled model's folder was deleted first: a full disk while the card was written
    # left the package with a model and no card.
    import clinical_ner.evaluation.model_card as model_card

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    earlier = earlier_files(packaging)
    monkeypatch.setattr(model_card, "write_model_card", disk_full)
    with pytest.raises(OSError, match="No space left"):
        build_script.package(BUNDLED, 7000)
    assert earlier_files(packaging) == earlier
    assert sorted(path.name for path in packaging.parent.iterdir()) == ["clinical"]


def test_the_packaged_card_names_the_bundled_model_not_its_staging_folder(build_script,
                                                                          packaging):
    build_script.package(BUNDLED, 7000)
    assert sorted(path.name for path in packaging.parent.iterdir()) == ["clinical"]
    card = (packaging / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert 'ClinicalNER.load("clinical")' in card
    assert "clinical-ner evaluate clinical --data DIR" in card
    assert ".new" not in card and "the earlier" not in card
