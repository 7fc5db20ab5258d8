"""What 0.3.0 wrote still works: its models load and its training runs resume.

A ``.keras`` file records the module and registered name of each custom
class (0.3.0 recorded the module ``clinical_ner.model``, now a package);
moving a class must keep what Keras resolves on load. Each check runs in a
fresh process, so that no module imported earlier hides a missing
registration. The artifact is ``tests/data/run-0.3.0``: a run written by
0.3.0 (commit 7a09b9c), made with
  ``git worktree add /tmp/v030 7a09b9c`` and, with ``PYTHONPATH=/tmp/v030``,
  ``python -m clinical_ner.cli train --train samples/maccrobat-i2b2/train
  --output run-0.3.0 --config tiny.json --quiet`` where ``tiny.json`` is
  ``{"word_dim": 8, "char_dim": 4, "char_filters": 4, "lstm_units": 4,
  "casing_dim": 2, "min_word_count": 2, "epochs": 2, "seed": 3, "batch_size": 16}``
  (its ``training_curve.png`` left out). Its ``model.keras`` is the trained
  model, its ``checkpoint/`` epoch 2 with the optimizer state. (The bundled
  model was saved by 0.3.0 too until it was rebuilt with assertions.)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

from helpers import REPO_ROOT, SAMPLE

RUN_0_3_0 = REPO_ROOT / "tests" / "data" / "run-0.3.0"
NOTE = "CT of the chest showed a 2 cm nodule; she was started on aspirin."

pytestmark = pytest.mark.slow


def keras_classes(path) -> set[tuple[str, str]]:
    """``(module, registered_name)`` of every custom (non-Keras) class a ``.keras`` file records."""
    found = set()

    def walk(value):
        if isinstance(value, dict):
            if "class_name" in value and "module" in value and value.get("registered_name"):
                if not str(value["module"]).startswith("keras"):
                    found.add((value["module"], value["registered_name"]))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    with zipfile.ZipFile(path) as archive:
        walk(json.loads(archive.read("config.json")))
    return found


def run_fresh(script: str) -> dict:
    """Run ``script`` in a new interpreter on this checkout; the JSON it prints last."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                            text=True, cwd=REPO_ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_0_3_0_model_and_the_bundled_one_load_in_a_fresh_process():
    # What makes this a test of the move: the file names 0.3.0's module.
    assert ("clinical_ner.model", "clinical_ner>ClinicalNERModel") in \
        keras_classes(RUN_0_3_0 / "model.keras")
    report = run_fresh(f"""
        import json
        from clinical_ner import ClinicalNER
        old = ClinicalNER.load({str(RUN_0_3_0)!r})
        bundled = ClinicalNER.load("clinical")
        print(json.dumps({{
            "annotators": [type(old).__name__, type(bundled).__name__],
            "old_tags": old.tag([["Chest", "pain", "."]])[0][0],
            "bundled": [[e.text, e.label] for e in bundled.annotate({NOTE!r})]}}))
    """)
    assert report["annotators"] == ["KerasAnnotator", "KerasAnnotator"]
    assert len(report["old_tags"]) == 3
    assert ["CT", "test"] in report["bundled"] and ["aspirin", "treatment"] in report["bundled"]


def test_a_0_3_0_run_resumes_with_the_current_code(tmp_path):
    checkpoint = RUN_0_3_0 / "checkpoint" / "model-epoch2.keras"
    assert ("clinical_ner.model", "clinical_ner>ClinicalNERModel") in keras_classes(checkpoint)
    run = tmp_path / "run"
    shutil.copytree(RUN_0_3_0, run)
    before = json.loads((run / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    report = run_fresh(f"""
        import json
        from clinical_ner import ClinicalNER
        from clinical_ner.cli import main
        code = main(["train", "--train", {str(SAMPLE / "train")!r}, "--output", {str(run)!r},
                     "--resume", "--epochs", "3", "--quiet"])
        ner = ClinicalNER.load({str(run)!r})
        print(json.dumps({{"code": code, "annotator": type(ner).__name__,
                          "tags": len(ner.tag([["Chest", "pain", "."]])[0][0])}}))
    """)
    assert report == {"code": 0, "annotator": "KerasAnnotator", "tags": 3}
    after = json.loads((run / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert after["epoch"] == 3 and after["checkpoint_model"] == "model-epoch3.keras"
    # The resumed run continued the recorded one: epochs 1-2 kept, epoch 3 added.
    assert after["history"][:2] == before["history"]
    assert len(after["history"]) == 3 and after["history"][2]["epoch"] == 3
    assert after["history"][2]["loss"] < before["history"][0]["loss"]
    log = (run / "training_log.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]
