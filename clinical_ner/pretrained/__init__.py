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
# The file that makes a folder a model directory (clinical_ner.model.network.MODEL_FILE;
# repeated here so that resolving a name does not import Keras).
_MODEL_FILE = "model.keras"


def bundled_models() -> list[str]:
    """Names of the models shipped in this package, sorted."""
    return sorted(path.name for path in BUNDLED_DIR.iterdir()
                  if (path / _MODEL_FILE).is_file())


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The directory of the bundled model ``name``; an error naming the choices if unknown."""
    if name not in bundled_models():
        raise ModelError(
            f"no bundled model named {name!r}; bundled: {', '.join(bundled_models()) or 'none'}")
    return BUNDLED_DIR / name


def is_model_reference(value: str | Path) -> bool:
    """Whether ``value`` names a model: a model directory, a LiteRT export or a bundled name."""
    path = Path(value)
    return ((path / _MODEL_FILE).is_file() or is_litert_export(path)
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


def model_and_texts(positionals: list[str], model: str | None = None) -> tuple[str, list[str]]:
    """``clinical-ner predict``'s positional arguments split into a model and texts.

    With ``model`` (``--model``) every positional is a text. Otherwise the
    first positional is the model if it is an existing model directory or a
    bundled model's name (``predict MODEL TEXT...``, as before 0.3); if not,
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
    path = Path(first)
    if path.is_dir():
        raise ModelError(f"{first}: not a clinical-ner model directory "
                               f"(no {_MODEL_FILE})")
    if (len(positionals) > 1 and "/" in first and not any(c.isspace() for c in first)
            and path.parent.is_dir()):
        raise ModelError(f"{first}: no such model directory (to annotate it as text, "
                               f"name the model: --model {DEFAULT_MODEL})")
    return DEFAULT_MODEL, list(positionals)
