"""A SavedModel base path as TF Serving watches it: ``<base>/<version>/saved_model.pb``.

A version is a subfolder named by a canonical positive integer that holds a
``saved_model.pb`` (``variables/`` and ``assets/`` beside it). The export
writes them (:mod:`clinical_ner.export.saved_model`), the in-process
annotator and the development server read them: this is the one place that
says which folders are versions. A path may be local or anything
``tf.io.gfile`` reads (``gs://``, ``s3://`` with its file-system plugin,
``ram://``...); a local path is read with the standard library, any other
through TensorFlow, imported only then.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tensorflow.core.protobuf.saved_model_pb2 import SavedModel

SAVED_MODEL_FILE = "saved_model.pb"
#: The variables' checkpoint prefix (tf.train.load_checkpoint reads the variables by it).
VARIABLES_PREFIX = "variables/variables"
#: The variables' index: every clinical-ner export has variables (its weights
#: and the vocabularies' lookup tables), and TensorFlow cannot load one without it.
VARIABLES_INDEX = f"{VARIABLES_PREFIX}.index"
#: What loading a version folder needs (the variables' data shards are listed in the index).
REQUIRED_FILES = (SAVED_MODEL_FILE, VARIABLES_INDEX)
#: What an incomplete one is called, and what to do about it
#: (:func:`clinical_ner.artifacts.incomplete_message`).
KIND = "SavedModel"
REMEDY = ("copy the whole folder again, or export the model again with 'clinical-ner export "
          "MODEL --output BASE'")
# Canonical positive integers only: TF Serving would read "007" as version 7,
# and two names for one version would be ambiguous.
VERSION_DIR_PATTERN = re.compile(r"[1-9][0-9]*")
# TF Serving keeps versions in an int64.
MAX_VERSION = 2**63 - 1


def is_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local path rather than a file-system URL (``gs://...``)."""
    return "://" not in os.fspath(path)


def join(base: str | os.PathLike, name: str) -> str:
    """``base/name`` for a local path or a file-system URL."""
    base = os.fspath(base)
    if is_local(base):
        return os.path.join(base, name)
    return base.rstrip("/") + "/" + name


def exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists; ``OSError`` if its file system cannot say (an unknown scheme,
    a storage service that cannot be reached)."""
    if is_local(path):
        return os.path.exists(path)
    try:
        return _gfile().exists(os.fspath(path))
    except _tf_errors().OpError as error:
        raise OSError(f"{os.fspath(path)}: cannot be read: {_one_line(error)}") from None


def holds_saved_model(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is a SavedModel (a version folder): it has a ``saved_model.pb``."""
    return exists(join(directory, SAVED_MODEL_FILE))


def missing_files(version_dir: str | os.PathLike) -> list[str]:
    """The :data:`REQUIRED_FILES` that a version folder lacks, in that order."""
    return [name for name in REQUIRED_FILES if not exists(join(version_dir, name))]


def numbered_dirs(base: str | os.PathLike) -> dict[int, str]:
    """Every subfolder of ``base`` named by a version number, complete or not, by number.

    A missing ``base`` has none. Raises ``OSError`` if ``base`` cannot be listed.
    """
    if is_local(base):
        try:
            entries = os.listdir(base)
        except FileNotFoundError:
            return {}
    else:
        gfile, errors = _gfile(), _tf_errors()
        try:
            entries = [entry.rstrip("/") for entry in gfile.listdir(os.fspath(base))]
        except errors.NotFoundError:
            return {}
        except errors.OpError as error:
            raise OSError(f"{os.fspath(base)}: cannot list it: {_one_line(error)}") from None
    numbered = {int(entry): join(base, entry) for entry in entries
                if VERSION_DIR_PATTERN.fullmatch(entry)}
    return {number: path for number, path in numbered.items() if _is_dir(path)}


def versions(base: str | os.PathLike) -> list[int]:
    """The versions under ``base``: numbered subfolders holding a ``saved_model.pb``, ascending."""
    return sorted(number for number, path in numbered_dirs(base).items()
                  if holds_saved_model(path))


def read_saved_model(directory: str | os.PathLike) -> SavedModel:
    """The parsed ``saved_model.pb`` of a version folder (no variables are read).

    Raises ``OSError`` if it cannot be read and protobuf's ``DecodeError`` if it is not a SavedModel.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = join(directory, SAVED_MODEL_FILE)
    if is_local(path):
        with open(path, "rb") as handle:
            data = handle.read()
    else:
        errors = _tf_errors()
        try:
            with _gfile().GFile(path, "rb") as handle:
                data = handle.read()
        except errors.OpError as error:
            raise OSError(f"{path}: cannot be read: {_one_line(error)}") from None
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(data)
    return saved_model


def _one_line(error) -> str:
    """A TensorFlow error's message on one line (a storage client's may hold several)."""
    return " ".join(error.message.split())


def _is_dir(path: str) -> bool:
    if is_local(path):
        return os.path.isdir(path)
    return _gfile().isdir(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _tf_errors():
    import tensorflow as tf

    return tf.errors
