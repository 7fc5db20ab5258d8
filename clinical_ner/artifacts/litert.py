"""The files of a LiteRT export directory, and how to tell one apart.

A LiteRT export holds:

* ``litert.json``, the manifest: format name and version, the network's
  file, its input names in order, its weight type, how closely the network
  matched the Keras model when it was exported, and the SHA-256 of the files
  that hold what the model learnt (:data:`CHECKSUMMED_FILES`);
* ``model.tflite``: word, character and casing ids in, CRF emission scores out
  (and, for a model with assertions, each token's assertion probabilities);
* ``crf.json``: the CRF's transition scores and the transitions, first and
  last tags that decoding forbids (saved as data, so the runtime needs no
  tag-scheme code);
* ``vocab.json`` and ``config.json``, as in a model directory.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Callable

from clinical_ner.artifacts import incomplete_message
from clinical_ner.artifacts.keras_model import CONFIG_FILE, VOCAB_FILE
from clinical_ner.errors import ModelError
from clinical_ner.untrusted_json import read_json_file

MANIFEST_FILE = "litert.json"
NETWORK_FILE = "model.tflite"
CRF_FILE = "crf.json"
FORMAT_NAME = "clinical-ner-litert"
FORMAT_VERSION = 1
# An export whose network also returns assertion probabilities. Its own
# version, so that a runtime before 0.4.0 (which reads the network's first
# output and knows version 1 only) refuses it instead of misreading it, while
# exports without assertions stay readable by it.
ASSERTIONS_FORMAT_VERSION = 2
READABLE_VERSIONS = (FORMAT_VERSION, ASSERTIONS_FORMAT_VERSION)
WEIGHT_TYPES = ("float32", "float16", "int8")
#: Every file of an export, the manifest first.
REQUIRED_FILES = (MANIFEST_FILE, NETWORK_FILE, CRF_FILE, VOCAB_FILE, CONFIG_FILE)
#: The files whose SHA-256 the manifest records (``"sha256"``): the weights, the
#: CRF's scores and the vocabularies, where a changed byte would give other
#: answers without an error. Not ``config.json``: its runtime settings may be
#: edited (docs/guide/settings.md), and a damaged one fails its own checks.
CHECKSUMMED_FILES = (NETWORK_FILE, CRF_FILE, VOCAB_FILE)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: What an incomplete one is called, and what to do about it
#: (:func:`clinical_ner.artifacts.incomplete_message`).
KIND = "LiteRT export"
REMEDY = ("copy the whole folder again, or export the model again with 'clinical-ner export "
          "MODEL --format litert --output DIR'")


class LiteRTExportError(ModelError, ValueError):
    """A LiteRT export directory is incomplete, damaged or of an unknown version."""


def is_litert_export(directory: str | Path) -> bool:
    """Whether ``directory`` is a LiteRT export (it has a manifest).

    ``False``, never an error, for a value that cannot be a path (a note too
    long for a file name, as ``predict``'s first argument may be).
    """
    return os.path.isfile(os.path.join(os.fspath(directory), MANIFEST_FILE))


def looks_like_litert_export(directory: str | Path,
                              exists: Callable[[str], bool] = os.path.isfile) -> bool:
    """Whether ``directory`` holds a LiteRT export's manifest or network, complete or not.

    ``exists`` tells whether a file is there (for a path on another file
    system: Beam's ``FileSystems.exists``, say).
    """
    return any(exists(_join(directory, name)) for name in (MANIFEST_FILE, NETWORK_FILE))


def check_complete(directory: str | Path,
                   exists: Callable[[str], bool] = os.path.isfile) -> None:
    """Raise :class:`LiteRTExportError` naming the files of :data:`REQUIRED_FILES` that are missing.

    Cheap (no file is read), so that a batch job checks its export before
    any worker starts; ``exists`` as in :func:`looks_like_litert_export`.
    """
    missing = [name for name in REQUIRED_FILES if not exists(_join(directory, name))]
    if missing:
        raise LiteRTExportError(incomplete_message(directory, KIND, missing, REMEDY))


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_checksums(directory: str | Path, manifest: dict[str, Any]) -> None:
    """Raise :class:`LiteRTExportError` naming each file that differs from its recorded SHA-256.

    A flipped byte in ``model.tflite`` still loads and annotates, with other
    weights: only the checksum tells. Exports written before clinical-ner
    0.4.0 record none and are not checked.
    """
    directory = Path(directory)
    recorded = manifest.get("sha256")
    if recorded is None:
        return
    path = directory / MANIFEST_FILE
    if not isinstance(recorded, dict) or not all(
            isinstance(name, str) and Path(name).name == name and name not in ("", ".", "..")
            and isinstance(value, str) and _SHA256_HEX.fullmatch(value)
            for name, value in recorded.items()):
        raise LiteRTExportError(f"{path}: 'sha256' must map file names of the export to hex "
                                "SHA-256 digests; export the model again")
    changed = [name for name, value in recorded.items()
               if not (directory / name).is_file() or file_sha256(directory / name) != value]
    if changed:
        raise LiteRTExportError(
            f"{directory}: {', '.join(changed)} differ{'s' if len(changed) == 1 else ''} from "
            f"the SHA-256 that {MANIFEST_FILE} recorded at export (changed or damaged since); "
            f"{REMEDY}")


def _join(directory: str | Path, name: str) -> str:
    # A URL (gs://...) joins with "/" whatever the local system's separator.
    directory = os.fspath(directory)
    return (directory.rstrip("/") + "/" + name if "://" in directory
            else os.path.join(directory, name))


def read_json(path: Path) -> Any:
    """A JSON file of an export, with a one-line error naming the file if it cannot be read."""
    return read_json_file(path, LiteRTExportError, "export the model again with "
                          "'clinical-ner export MODEL --format litert'")


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a LiteRT export, checked for format name and version."""
    path = directory / MANIFEST_FILE
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise LiteRTExportError(f"{path}: not a {FORMAT_NAME} manifest")
    version = manifest.get("version")
    # (True == 1 and 2.0 == 2 in Python: only an int is a version.)
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise LiteRTExportError(
            f"{path}: format version {version!r}, this clinical-ner reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}; export the model again")
    network = manifest.get("network")
    # The network is a file of the export itself, never a path elsewhere.
    if not isinstance(network, str) or Path(network).name != network or network in ("", ".", ".."):
        raise LiteRTExportError(f"{path}: 'network' must name a file of the export; export "
                                "the model again")
    for field, optional in (("inputs", False), ("network_outputs", True)):
        names = manifest.get(field)
        if names is None and optional:
            continue
        if not isinstance(names, list) or not names or not all(
                isinstance(name, str) for name in names):
            raise LiteRTExportError(f"{path}: '{field}' must be a list of tensor names; export "
                                    "the model again")
    return manifest
