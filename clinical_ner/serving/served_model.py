"""What ``clinical-ner serve MODEL`` serves: a base path of numbered versions, made if need be."""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from clinical_ner.artifacts.keras_model import is_model_directory
from clinical_ner.pretrained import resolve_model_path

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def served_base_path(value: str | os.PathLike) -> Iterator[Path]:
    """The model base path to serve for ``value``, for as long as the context lasts.

    A base path (numbered versions) is itself. A model directory or a bundled
    model's name (``clinical``) is exported first, as version 1 of a
    temporary base path that is deleted when the context ends: serving needs
    a SavedModel, and a fresh export always matches the model.
    """
    if not is_model_directory(resolve_model_path(value)):
        yield Path(value)
        return
    from clinical_ner.annotators.keras_annotator import KerasAnnotator

    with tempfile.TemporaryDirectory(prefix="clinical-ner-serve-") as scratch:
        base = Path(scratch) / "model"
        version = KerasAnnotator.load(value).export(base, 1)
        logger.info("serving %s, exported to %s", value, version)
        yield base
