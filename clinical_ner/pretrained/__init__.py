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
from clinical_ner.artifacts.keras_model import is_model_directory
from clinical_ner.artifacts.litert import looks_like_litert_export
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


def model_reference(model_dir: str | Path) -> str:
    """How a user names ``model_dir``: a bundled model by its name, any other by its path.

    >>> model_reference(bundled_model_path("clinical")), model_reference("runs/sample")
    ('clinical', 'runs/sample')
    """
    return bundled_name(model_dir) or str(model_dir)


def bundled_name(model: str | Path) -> str | None:
    """The bundled model that ``model`` means (by its name or a path to it), else ``None``.

    >>> bundled_name("clinical"), bundled_name(bundled_model_path("clinical")), bundled_name("x")
    ('clinical', 'clinical', None)
    """
    directory = resolve_model_path(model).resolve()
    if directory.parent == BUNDLED_DIR and directory.name in bundled_models():
        return directory.name
    return None


def is_model_reference(value: str | Path) -> bool:
    """Whether ``value`` names a model: a model directory, an export or a bundled name.

    An export is a LiteRT export (complete or not: loading it says what it
    lacks) or a local SavedModel (a version folder or a base path of numbered
    versions): whatever ``ClinicalNER.load`` takes. ``False`` for a value
    that cannot be a path (a long note).
    """
    return (is_model_directory(value) or looks_like_litert_export(value)
            or _is_saved_model(value)
            or _bundled_name_given(value) is not None)


def _is_saved_model(value: str | Path) -> bool:
    return os.path.isdir(value) and (saved_model.holds_saved_model(value)
                                     or bool(saved_model.versions(value)))


def resolve_model_path(value: str | Path) -> Path:
    """The model directory ``value`` means: itself if it exists, else a bundled model's.

    A value that is neither comes back unchanged, so that loading it reports
    the missing directory by the name the user gave.
    """
    name = _bundled_name_given(value)
    return Path(value) if name is None else BUNDLED_DIR / name


def _bundled_name_given(value: str | Path) -> str | None:
    """The bundled model's name ``value`` is, unless it is a path that exists.

    A trailing slash is allowed: ``"clinical/"`` was reported as a missing folder
    ``clinical`` (a ``Path`` drops the slash), advising the bundled model ``'clinical'``.
    """
    name = str(value).rstrip(os.sep + (os.altsep or ""))
    if os.path.exists(value) or name not in bundled_models():
        return None
    return name
