"""Training killed with SIGKILL: the model directory still loads and ``--resume`` is exact.

Three real ``clinical-ner train --epochs 3`` processes run side by side on the
bundled sample with a tiny configuration:

* ``straight``: never interrupted, the reference;
* ``killed``: SIGKILLed from outside as soon as it prints ``epoch 2/3``
  (mid-epoch 2), then resumed with ``--resume``;
* ``torn``: killed from inside at the worst instant of the checkpoint save,
  right after the epoch-2 model ``checkpoint/model-epoch2.keras`` is in place
  and before ``checkpoint/state.json`` names it, then resumed.

After resuming, the final checkpoint weights must equal the straight run's:
the trainer reseeds dropout per epoch and shuffles with seed + epoch.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import keras
import numpy as np
import pytest

import clinical_ner.model.network  # noqa: F401  (registers the custom layers)
from clinical_ner.annotators.keras_annotator import KerasAnnotator

from helpers import REPO_ROOT

pytestmark = pytest.mark.slow

SAMPLE = REPO_ROOT / "samples" / "maccrobat-i2b2"
VECTORS = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"
TINY = {"lstm_units": 8, "char_filters": 8, "char_dim": 8, "batch_size": 16, "seed": 7,
        "embeddings": str(VECTORS)}
TIMEOUT_S = 540

# Runs the CLI, but SIGKILLs itself just after the os.replace() that puts the
# epoch-2 checkpoint model in place, before state.json is rewritten.
TORN_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    real_replace = os.replace
    def replace(source, target, *args, **kwargs):
        real_replace(source, target, *args, **kwargs)
        if str(target).endswith(os.path.join("checkpoint", "model-epoch2.keras")):
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    from clinical_ner.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


class Run:
    """A training subprocess whose stderr is collected line by line."""

    def __init__(self, output, *extra, program=("-m", "clinical_ner.cli"), kill_at=None):
        train = output.parent / "train"
        self.output = output
        self.lines: list[str] = []
        self.seen = threading.Event()
        self.kill_at = kill_at
        args = ["train", "--train", train, "--output", output, "--quiet", *extra]
        self.process = subprocess.Popen(
            [sys.executable, *program, *map(str, args)], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO_ROOT)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if self.kill_at is not None and self.kill_at in line:
                # Killed from this thread, the moment the line arrives.
                os.kill(self.process.pid, signal.SIGKILL)
                self.seen.set()

    def wait(self) -> int:
        code = self.process.wait(timeout=TIMEOUT_S)
        self.reader.join(timeout=30)
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


def fresh_run(output, **kwargs) -> Run:
    return Run(output, "--epochs", 3, "--config", output.parent / "tiny.json", **kwargs)


def resume(output) -> Run:
    return Run(output, "--resume")


def checkpoint_state(output) -> dict:
    return json.loads((output / "checkpoint" / "state.json").read_text(encoding="utf-8"))


def checkpoint_weights(output):
    checkpoint = output / "checkpoint" / checkpoint_state(output)["checkpoint_model"]
    model = keras.saving.load_model(checkpoint, safe_mode=True)
    return model.get_weights(), int(model.optimizer.iterations.numpy())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    (root / "tiny.json").write_text(json.dumps(TINY), encoding="utf-8")
    # 16 of the 40 sample documents keep each epoch short.
    for name in sorted(path.stem for path in (SAMPLE / "train" / "txt").glob("*.txt"))[:16]:
        for folder, suffix in (("txt", ".txt"), ("concept", ".con")):
            (root / "train" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(SAMPLE / "train" / folder / f"{name}{suffix}", root / "train" / folder)
    straight = fresh_run(root / "straight")
    killed = fresh_run(root / "killed", kill_at="epoch 2/3")
    torn = fresh_run(root / "torn", program=("-c", TORN_CHECKPOINT))
    codes = {name: run.wait() for name, run in
             (("straight", straight), ("killed", killed), ("torn", torn))}
    assert codes["straight"] == 0, straight.stderr[-3000:]
    for name in ("killed", "torn"):
        assert codes[name] == -signal.SIGKILL, (name, codes[name])
    # What the directories looked like right after the kills.
    for name in ("killed", "torn"):
        shutil.copytree(root / name, root / f"{name}-after-kill")
    resumed = {name: resume(root / name) for name in ("killed", "torn")}
    resume_codes = {name: run.wait() for name, run in resumed.items()}
    return {"root": root, "straight": straight, "killed": killed, "torn": torn,
            "resumed": resumed, "resume_codes": resume_codes}


def test_kill_landed_mid_epoch_two(runs):
    assert runs["killed"].seen.is_set()
    assert "epoch 1: loss" in runs["killed"].stderr
    assert "epoch 2: loss" not in runs["killed"].stderr
    assert checkpoint_state(runs["root"] / "killed-after-kill")["epoch"] == 1


@pytest.mark.parametrize("name", ["killed", "torn"])
def test_model_directory_still_loads_after_the_kill(runs, name):
    directory = runs["root"] / f"{name}-after-kill"
    ner = KerasAnnotator.load(directory)
    entities = ner.annotate("CT of the chest showed a nodule; started aspirin.")
    assert all(e.label in ("problem", "test", "treatment") for e in entities)
    checkpoint_weights(directory)
    assert checkpoint_state(directory)["epoch"] in (1, 2)


@pytest.mark.parametrize("name", ["killed", "torn"])
def test_resume_after_sigkill_equals_the_uninterrupted_run(runs, name):
    resumed = runs["resumed"][name]
    assert runs["resume_codes"][name] == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    output = runs["root"] / name
    assert checkpoint_state(output)["epoch"] == 3
    log = (output / "training_log.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]
    straight_weights, straight_steps = checkpoint_weights(runs["root"] / "straight")
    resumed_weights, resumed_steps = checkpoint_weights(output)
    assert resumed_steps == straight_steps, "optimizer steps differ: an epoch ran twice"
    for expected, actual in zip(straight_weights, resumed_weights):
        np.testing.assert_allclose(actual, expected, atol=1e-6)
