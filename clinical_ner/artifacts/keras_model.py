"""A model directory as ``clinical-ner train`` writes it: ``model.keras`` beside ``config.json`` and ``vocab.json``."""
from __future__ import annotations

import json
import os
import zipfile

#: The Keras model file; a folder holding it is a model directory.
MODEL_FILE = "model.keras"
#: The settings the model was trained with (:class:`clinical_ner.config.NERConfig`);
#: a LiteRT export keeps it too.
CONFIG_FILE = "config.json"
#: The vocabularies of words, characters, tags and assertions
#: (:class:`clinical_ner.model.vocab.Vocabulary`); a LiteRT export keeps it too.
VOCAB_FILE = "vocab.json"
#: What annotating needs of a model directory.
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, VOCAB_FILE)
#: What an incomplete one is called, and what to do about it
#: (:func:`clinical_ner.artifacts.incomplete_message`).
KIND = "model directory"
REMEDY = "copy the whole model folder again, or train it again with 'clinical-ner train'"
#: The model's description inside a Keras 3 archive (not :data:`CONFIG_FILE`, the settings).
ARCHIVE_CONFIG = "config.json"
#: What every Keras 3 archive (``model.save``) holds: the model's config and its weights.
ARCHIVE_ENTRIES = (ARCHIVE_CONFIG, "model.weights.h5")
#: The trainer's resumable state (``--resume``); not needed to annotate.
CHECKPOINT_DIR = "checkpoint"
#: The model card's facts, which ``clinical-ner train`` writes once the run has finished.
CARD_DATA_FILE = "model_card.json"


def is_model_directory(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model directory (it holds :data:`MODEL_FILE`).

    ``False``, never an error, for a value that cannot be a path (a note too
    long for a file name, as ``predict``'s first argument may be).
    """
    return os.path.isfile(os.path.join(os.fspath(path), MODEL_FILE))


def is_unfinished_training(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is the output of a ``clinical-ner train`` run that has not finished:
    one in progress, or stopped (its :data:`CHECKPOINT_DIR` is made before the first epoch,
    its :data:`CARD_DATA_FILE` written last).

    Its :data:`MODEL_FILE`, if there is one yet, is the best epoch so far.
    """
    directory = os.fspath(directory)
    return (os.path.isdir(os.path.join(directory, CHECKPOINT_DIR))
            and not os.path.isfile(os.path.join(directory, CARD_DATA_FILE)))


def missing_files(directory: str | os.PathLike) -> list[str]:
    """The :data:`REQUIRED_FILES` that ``directory`` lacks, in that order."""
    return [name for name in REQUIRED_FILES
            if not os.path.isfile(os.path.join(os.fspath(directory), name))]


def is_complete_archive(directory: str | os.PathLike, name: str = MODEL_FILE) -> bool:
    """Whether ``directory``'s :data:`MODEL_FILE` (or ``name``) is a whole zip archive that
    holds what Keras writes (:data:`ARCHIVE_ENTRIES`), its ``config.json`` a serialized
    model (a JSON object with ``class_name`` and ``config``).

    A truncated or emptied copy lacks the archive's directory at its end, which
    Keras then reports as weights that do not fit the model, and a zip of other
    files ended loading with an internal error (``KeyError``); so did a damaged
    ``config.json`` inside it (Keras' ``JSONDecodeError`` is a ``ValueError``).
    This reads that directory and the small ``config.json``, without TensorFlow.
    """
    path = os.path.join(os.fspath(directory), name)
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            if not all(entry in archive.namelist() for entry in ARCHIVE_ENTRIES):
                return False
            config = json.loads(archive.read(ARCHIVE_CONFIG))
    except (OSError, zipfile.BadZipFile, ValueError):  # ValueError: JSON's and UTF-8's
        return False
    return isinstance(config, dict) and {"class_name", "config"} <= config.keys()


def truncated_archive_message(directory: str | os.PathLike) -> str:
    """The error for a :data:`MODEL_FILE` that fails :func:`is_complete_archive`."""
    return (f"{os.fspath(directory)}: {MODEL_FILE} is not a complete Keras archive "
            "(truncated or damaged); copy the model again")
