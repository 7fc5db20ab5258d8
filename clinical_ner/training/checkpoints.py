"""Files of a model directory written so that a crash never leaves a torn one.

``checkpoint/state.json`` is the one place a checkpoint becomes real: it
names the epoch's model file, and is replaced only after that file is in
place. A crash before leaves the previous epoch's state and model, a crash
after leaves the new ones, never a model of one epoch with the state of
another.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import keras

from clinical_ner.artifacts import write_text_atomically
from clinical_ner.artifacts.keras_model import CHECKPOINT_DIR, is_complete_archive
from clinical_ner.errors import ClinicalNERError, ModelError
from clinical_ner.model.network import ClinicalNERModel

STATE_FILE = "state.json"


def save_keras_atomically(model: keras.Model, path: Path) -> None:
    partial = path.with_name(f".{path.stem}.partial.keras")
    model.save(partial)
    os.replace(partial, path)


def save_inference_model(model: ClinicalNERModel, path: Path) -> None:
    """Save the weights without the optimizer state (a third of the size)."""
    inference_model = ClinicalNERModel.from_config(model.get_config())
    inference_model.set_weights(model.get_weights())
    save_keras_atomically(inference_model, path)


def save_checkpoint(model: keras.Model, checkpoint_dir: Path, state: dict) -> None:
    """Save the epoch's model with its optimizer, then commit it in ``state.json``."""
    model_name = f"model-epoch{state['epoch']}.keras"
    save_keras_atomically(model, checkpoint_dir / model_name)
    write_text_atomically(checkpoint_dir / STATE_FILE,
                          json.dumps({**state, "checkpoint_model": model_name}, indent=1) + "\n")
    for old in checkpoint_dir.glob("model-epoch*.keras"):
        if old.name != model_name:
            old.unlink()


def has_checkpoint(output: Path) -> bool:
    return (output / CHECKPOINT_DIR / STATE_FILE).is_file()


def damaged_checkpoint(path: Path, output: Path) -> ModelError:
    """The error for a checkpoint file that is torn, emptied or edited (named, not a traceback)."""
    return ModelError(f"{path}: damaged or incomplete, so {output} cannot be resumed; restore "
                      "the file, or train again into a new --output")


def load_checkpoint(output: Path) -> tuple[keras.Model, dict]:
    """The last committed epoch's model (with optimizer state) and training state.

    A state file or model file that cannot be read is a :class:`ModelError`
    naming it (a disk filled up, a copy cut short, a hand edit).
    """
    checkpoint_dir = output / CHECKPOINT_DIR
    if not has_checkpoint(output):
        raise ClinicalNERError(f"{output}: nothing to resume (no {CHECKPOINT_DIR}/{STATE_FILE})")
    state_path = checkpoint_dir / STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except ValueError:  # JSON's and UTF-8's errors alike
        raise damaged_checkpoint(state_path, output) from None
    model_name = state.get("checkpoint_model") if isinstance(state, dict) else None
    # A plain file name in the checkpoint folder, as save_checkpoint writes it.
    if not isinstance(model_name, str) or Path(model_name).name != model_name:
        raise damaged_checkpoint(state_path, output)
    model_path = checkpoint_dir / model_name
    # A truncated archive reads as weights that do not fit the model; say what it is.
    if not is_complete_archive(checkpoint_dir, model_name):
        raise damaged_checkpoint(model_path, output)
    try:
        model = keras.saving.load_model(model_path, safe_mode=True)
    except (ValueError, OSError, KeyError):
        raise damaged_checkpoint(model_path, output) from None
    return model, state


def remove_partial_files(checkpoint_dir: Path) -> None:
    """Delete what a save cut short left (the atomic writes' ``.NAME.partial*`` files)."""
    for partial in checkpoint_dir.glob(".*.partial*"):
        partial.unlink()
