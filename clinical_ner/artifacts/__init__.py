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


def incomplete_message(directory: str | os.PathLike, kind: str, missing: Sequence[str],
                       remedy: str) -> str:
    """The one wording of an artifact that lacks files: ``kind`` and ``remedy`` are its module's.

    >>> incomplete_message("runs/copy", "model directory", ["vocab.json"], "copy it again")
    'runs/copy: an incomplete model directory (vocab.json missing); copy it again'
    """
    return f"{os.fspath(directory)}: an incomplete {kind} ({', '.join(missing)} missing); {remedy}"
