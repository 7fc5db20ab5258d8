"""The jobs done after each training epoch, one class each (as Keras callbacks or Flair's plugins).

``train()`` runs them in order after every epoch: :class:`ModelSelection`
(best epoch and early stopping, from the dev F1), :class:`BestModelSaver`,
:class:`CheckpointSaver`, :class:`TrainingLog` and :class:`ProgressReport`.
Every process of a distributed run runs them with the same inputs (the
chief's dev scores are broadcast first), so all of them stop at the same
epoch; only the chief's directory is the user's ``--output``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from clinical_ner.training.checkpoints import (
    CHECKPOINT_DIR, save_checkpoint, save_inference_model,
)
from clinical_ner.artifacts import write_text_atomically
from clinical_ner.artifacts.keras_model import MODEL_FILE
from clinical_ner.model.network import ClinicalNERModel

LOG_FILE = "training_log.jsonl"
CURVE_FILE = "training_curve.png"


@dataclass
class RunState:
    """What a run has done so far; saved in ``checkpoint/state.json`` for ``--resume``."""

    epoch: int = 0  # epochs completed
    best_f1: float | None = None
    best_epoch: int = 0
    wait: int = 0  # epochs since the best one
    history: list[dict] = field(default_factory=list)  # one log entry per epoch
    # What the run trains on (:func:`clinical_ner.training.run_data.data_facts`), so that
    # --resume goes on with the same data.
    data: dict | None = None
    # The card's record of the --init-from model, kept for a resumed run's card.
    fine_tuned_from: dict | None = None

    #: Fields that checkpoints written before them lack.
    ADDED_LATER = ("data", "fine_tuned_from")

    @classmethod
    def from_dict(cls, values: dict) -> "RunState":
        """The state of ``checkpoint/state.json``; a ``KeyError`` if one it must have is missing."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)
                      if f.name in values or f.name not in cls.ADDED_LATER})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainingRun:
    """What the callbacks see: the model being trained, the state, where files go."""

    model: ClinicalNERModel
    state: RunState
    directory: Path  # the chief's --output, another process's temporary directory


class TrainingCallback:
    """One job done after every epoch."""

    def on_epoch_end(self, run: TrainingRun, entry: dict) -> None:
        """``entry`` is the epoch's log entry; ``run.state`` does not count the epoch yet."""


class ModelSelection(TrainingCallback):
    """Best epoch by dev micro F1, and early stopping after ``patience`` epochs without a gain.

    Without dev data every epoch is the best so far, so the last one is kept.
    """

    def __init__(self, patience: int, has_dev: bool) -> None:
        # 0 stops at the first epoch without a gain, as 1 does: stopping on no epoch at
        # all trained nothing and left no model.keras.
        self.patience = max(patience, 1)
        self.has_dev = has_dev

    def should_stop(self, state: RunState) -> bool:
        return self.has_dev and state.wait >= self.patience

    def on_epoch_end(self, run: TrainingRun, entry: dict) -> None:
        state = run.state
        improved = (not self.has_dev or state.best_f1 is None
                    or entry["dev_f1"] > state.best_f1)
        if improved:
            state.best_f1, state.best_epoch, state.wait = entry.get("dev_f1"), entry["epoch"], 0
        else:
            state.wait += 1
        entry["best"] = improved
        state.epoch = entry["epoch"]
        state.history.append(entry)


class BestModelSaver(TrainingCallback):
    """``model.keras``: the best epoch's weights, without the optimizer."""

    def on_epoch_end(self, run: TrainingRun, entry: dict) -> None:
        if entry["best"]:
            save_inference_model(run.model, run.directory / MODEL_FILE)


class CheckpointSaver(TrainingCallback):
    """``checkpoint/``: the last epoch with its optimizer state, for ``--resume``."""

    def on_epoch_end(self, run: TrainingRun, entry: dict) -> None:
        save_checkpoint(run.model, run.directory / CHECKPOINT_DIR, run.state.to_dict())


class TrainingLog(TrainingCallback):
    """``training_log.jsonl`` (one line per epoch) and ``training_curve.png``."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit

    def on_epoch_end(self, run: TrainingRun, entry: dict) -> None:
        write_text_atomically(run.directory / LOG_FILE,
                              "".join(json.dumps(item) + "\n" for item in run.state.history))
        plot_curve(run.state.history, run.directory / CURVE_FILE, self.emit)


class ProgressReport(TrainingCallback):
    """One line per epoch for the user: loss, dev scores, speed."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit

    def on_epoch_end(self, run: TrainingRun, entry: dict) -> None:
        dev_text = (f" dev P {entry['dev_precision']:.4f} R {entry['dev_recall']:.4f} "
                    f"F1 {entry['dev_f1']:.4f}" if "dev_f1" in entry else "")
        if "dev_corpora" in entry:  # a corpus file's dev corpora, each on its own labels
            dev_text += " (" + ", ".join(
                f"{name} F1 {scores['f1']:.4f}" + (
                    f" assertion accuracy {scores['assertion_accuracy']:.4f}"
                    if "assertion_accuracy" in scores else "")
                for name, scores in entry["dev_corpora"].items()) + ")"
        if "dev_assertion_accuracy" in entry:
            dev_text += f" assertion accuracy {entry['dev_assertion_accuracy']:.4f}"
        self.emit(f"epoch {entry['epoch']}: loss {entry['loss']:.4f}{dev_text} "
                  f"({entry['train_seconds']:.1f} s, {entry['train_tokens_per_second']:.0f} "
                  "tokens/s)" + (" *best*" if entry["best"] else ""))


def plot_curve(history: list[dict], path: Path, emit: Callable[[str], None]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        emit("matplotlib is not installed (pip install 'clinical-ner[train]'): "
             f"no {CURVE_FILE}")
        return
    epochs = [entry["epoch"] for entry in history]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(epochs, [entry["loss"] for entry in history], "o-", color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss (CRF NLL per sentence)", color="tab:blue")
    if any(entry.get("dev_f1") is not None for entry in history):
        f1_axis = loss_axis.twinx()
        f1_axis.plot(epochs, [entry.get("dev_f1") for entry in history], "s-", color="tab:red")
        f1_axis.set_ylabel("dev exact micro F1", color="tab:red")
    figure.tight_layout()
    partial = path.with_name(f".{path.stem}.partial.png")
    figure.savefig(partial, dpi=100)
    plt.close(figure)
    os.replace(partial, path)
