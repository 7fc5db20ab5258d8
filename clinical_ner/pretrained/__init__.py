"""Models bundled inside the package, and the model names every command accepts.

A bundled model is an ordinary model directory (``config.json``,
``vocab.json``, ``model.keras``, ``MODEL_CARD.md``, ...) shipped as package
data in ``clinical_ner/pretrained/<name>/``. Wherever a model directory is
expected, its name works too; an existing path of that name wins, so a
folder called ``clinical`` in the working directory is never shadowed.

Example:
>>> resolve_model_path("clinical") == bundled_model_path("clinical")
True
>>> str(resolve_model_path("runs/sample"))
'runs/sample'
"""
from __future__ import annotations

import os
from pathlib import Path

from clinical_ner.artifacts import saved_model
from clinical_ner.artifacts.keras_model import MODEL_FILE, is_model_directory
from clinical_ner.artifacts.litert import is_litert_export
from clinical_ner.errors import ModelError

BUNDLED_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "clinical"


def bundled_models() -> list[str]:
    """Names of the models shipped in this package, sorted."""
    return sorted(path.name for path in BUNDLED_DIR.iterdir()
                  if is_model_directory(path))


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The directory of the bundled model ``name``; an error naming the choices if unknown."""
    if name not in bundled_models():
        raise ModelError(
            f"no bundled model named {name!r}; bundled: {', '.join(bundled_models()) or 'none'}")
    return BUNDLED_DIR / name


def is_model_reference(value: str | Path) -> bool:
    """Whether ``value`` names a model: a model directory, an export or a bundled name.

    An export is a LiteRT export or a local SavedModel (a version folder or a
    base path of numbered versions): whatever ``ClinicalNER.load`` takes.
    ``False`` for a value that cannot be a path (a long note).
    """
    return (is_model_directory(value) or is_litert_export(value) or _is_saved_model(value)
            or (not os.path.exists(value) and str(value) in bundled_models()))


def _is_saved_model(value: str | Path) -> bool:
    return os.path.isdir(value) and (saved_model.holds_saved_model(value)
                                     or bool(saved_model.versions(value)))


def resolve_model_path(value: str | Path) -> Path:
    """The model directory ``value`` means: itself if it exists, else a bundled model's.

    A value that is neither comes back unchanged, so that loading it reports
    the missing directory by the name the user gave.
    """
    if not os.path.exists(value) and str(value) in bundled_models():
        return BUNDLED_DIR / str(value)
    return Path(value)


def model_and_texts(positionals: list[str], model: str | None = None) -> tuple[str, list[str]]:
    """``clinical-ner predict``'s positional arguments split into a model and texts.

    With ``model`` (``--model``) every positional is a text. Otherwise the
    first positional is the model if it names one (:func:`is_model_reference`:
    a model directory, an export or a bundled model's name; ``predict MODEL
    TEXT...``, as before 0.3); if not,
    every positional is a text and the bundled model ``clinical`` annotates
    them. A first argument that can only be a mistyped path (it has a ``/``
    and no space, more texts follow, nothing is there but its parent folder
    exists) is an error rather than a text, so that a mistyped model
    directory is not annotated as a note; ``HIV/AIDS`` stays a text.

    >>> model_and_texts(["CT showed a nodule."])
    ('clinical', ['CT showed a nodule.'])
    >>> model_and_texts(["clinical", "CT showed a nodule."])
    ('clinical', ['CT showed a nodule.'])
    >>> model_and_texts(["clinical"], model="clinical")
    ('clinical', ['clinical'])
    """
    if model is not None:
        return model, list(positionals)
    if not positionals:
        return DEFAULT_MODEL, []
    first = positionals[0]
    if is_model_reference(first):
        return first, list(positionals[1:])
    # os.path, not Path: a note too long for a file name is a text, not an error.
    if os.path.isdir(first):
        raise ModelError(f"{first}: not a clinical-ner model directory "
                               f"(no {MODEL_FILE})")
    if (len(positionals) > 1 and "/" in first and not any(c.isspace() for c in first)
            and os.path.isdir(os.path.dirname(first.rstrip("/")) or ".")):
        raise ModelError(f"{first}: no such model directory (to annotate it as text, "
                               f"name the model: --model {DEFAULT_MODEL})")
    return DEFAULT_MODEL, list(positionals)
