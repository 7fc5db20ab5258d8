"""What each artifact clinical-ner writes holds on disk, and how to recognise it.

A Keras model directory (``clinical-ner train``), a SavedModel base path of
numbered versions (``clinical-ner export``) and a LiteRT export (``clinical-ner
export --format litert``) are written by ``training/`` and ``export/`` and
read by ``annotators/``, ``serving/`` and ``pretrained/``: their file names
and layout live here, below all of them, so that writer and readers agree
by construction. Nothing here imports TensorFlow at import time.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def incomplete_message(directory: str | os.PathLike, kind: str, missing: Sequence[str],
                       remedy: str) -> str:
    """The one wording of an artifact that lacks files: ``kind`` and ``remedy`` are its module's.

    >>> incomplete_message("runs/copy", "model directory", ["vocab.json"], "copy it again")
    'runs/copy: an incomplete model directory (vocab.json missing); copy it again'
    """
    return f"{os.fspath(directory)}: an incomplete {kind} ({', '.join(missing)} missing); {remedy}"


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """``path`` holds ``text`` whole, or what it held before if writing fails.

    Written to ``.NAME.partial`` beside it and renamed, so that a reader (or a
    resumed run) never finds half a file; a failed write (a full disk) leaves
    no partial file behind.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
