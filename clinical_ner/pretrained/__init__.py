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

from pathlib import Path

from clinical_ner.errors import ModelError
from clinical_ner.annotators.litert.layout import is_litert_export

BUNDLED_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "clinical"
#: The file that makes a folder a model directory (clinical_ner.model.network.MODEL_FILE;
#: repeated here so that resolving a name does not import Keras).
MODEL_FILE = "model.keras"


def bundled_models() -> list[str]:
    """Names of the models shipped in this package, sorted."""
    return sorted(path.name for path in BUNDLED_DIR.iterdir()
                  if (path / MODEL_FILE).is_file())


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The directory of the bundled model ``name``; an error naming the choices if unknown."""
    if name not in bundled_models():
        raise ModelError(
            f"no bundled model named {name!r}; bundled: {', '.join(bundled_models()) or 'none'}")
    return BUNDLED_DIR / name


def is_model_reference(value: str | Path) -> bool:
    """Whether ``value`` names a model: a model directory, a LiteRT export or a bundled name."""
    path = Path(value)
    return ((path / MODEL_FILE).is_file() or is_litert_export(path)
            or (not path.exists() and str(value) in bundled_models()))


def resolve_model_path(value: str | Path) -> Path:
    """The model directory ``value`` means: itself if it exists, else a bundled model's.

    A value that is neither comes back unchanged, so that loading it reports
    the missing directory by the name the user gave.
    """
    path = Path(value)
    if not path.exists() and str(value) in bundled_models():
        return BUNDLED_DIR / str(value)
    return path
