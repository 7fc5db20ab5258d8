"""A model directory as ``clinical-ner train`` writes it: ``model.keras`` beside ``config.json`` and ``vocab.json``."""
from __future__ import annotations

import os
from pathlib import Path

#: The Keras model file; a folder holding it is a model directory.
MODEL_FILE = "model.keras"


def is_model_directory(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model directory (it holds :data:`MODEL_FILE`)."""
    return (Path(path) / MODEL_FILE).is_file()
