"""Export SavedModels in the layout TensorFlow Serving watches.

TensorFlow Serving polls ``<base_path>/`` and serves the version directories
whose names are numbers: ``<base_path>/<version>/saved_model.pb``,
``variables/``, ``assets/``. A half-written version directory would be picked
up and fail to load, so :func:`export_saved_model` writes into a hidden
temporary sibling (a name that is not a number, which both TF Serving and
:mod:`clinical_ner.serving.server` ignore) and renames it into place when it
is complete. The rename is atomic on one file system.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

from clinical_ner.artifacts.keras_model import MODEL_FILE, is_model_directory
from clinical_ner.artifacts.litert import looks_like_litert_export
from clinical_ner.artifacts.saved_model import (
    MAX_VERSION, holds_saved_model, is_local, numbered_dirs, read_saved_model,
)
from clinical_ner.errors import ClinicalNERError, check_integer, setting_name

logger = logging.getLogger(__name__)

_TEMP_PREFIX = ".export-"


class ExportError(ClinicalNERError):
    """An export could not be written, or the SavedModel is not servable."""


def export_saved_model(
    module: tf.Module,
    signatures: Mapping[str, Any],
    base_path: str | os.PathLike,
    version: int | None = None,
) -> Path:
    """Save ``module`` as ``<base_path>/<version>/`` and return that directory.

    ``signatures`` maps signature names to ``tf.function``s with an
    ``input_signature`` or to concrete functions, as for
    ``tf.saved_model.save``. ``version=None`` takes the highest existing
    version plus one (1 when there is none). An existing version is never
    overwritten. The graph must use core TensorFlow ops only (see
    :func:`check_core_ops`), since the stock TF Serving binary has no others,
    and every variable it reads must be restored the way TF Serving restores
    them (see :func:`check_variables_restore`).
    If anything fails, nothing is left behind and existing versions are
    untouched.
    """
    check_base_path(base_path, version)
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    # Again: another exporter may have taken the number since the check.
    version = _free_version(base, version)
    target = base / str(version)
    temp = base / f"{_TEMP_PREFIX}{version}-{uuid.uuid4().hex}"
    # Made with mkdir, not mkdtemp (private to its owner): the version folder gets the
    # permissions the umask gives any new folder, so a server running as another user
    # (TF Serving's service account) can read it.
    temp.mkdir()
    try:
        tf.saved_model.save(module, str(temp), signatures=dict(signatures))
        # The messages name the version being exported, not the hidden
        # temporary directory, which is gone by the time the user reads them.
        shown_as = f"the export of version {version} to {target}"
        check_core_ops(temp, name=shown_as)
        check_variables_restore(temp, name=shown_as)
        _fsync_tree(temp)
        try:
            os.rename(temp, target)
        except OSError as error:
            # Another exporter took the same version number meanwhile.
            raise ExportError(f"could not move the export into {target}: {error}") from error
        _fsync_dir(base)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    logger.info("Exported version %d to %s", version, target)
    return target


def check_base_path(base_path: str | os.PathLike, version: int | None = None) -> None:
    """Raise unless ``base_path`` can take versions and ``version`` (if given) is one.

    Checked before any work (and before ``base_path`` is made). A version folder,
    a LiteRT export or a model directory given as the base path would get the
    new version nested inside it, where TF Serving watching the real base path
    never looks; a ``version`` that exists is never overwritten, and without
    one the base path must have a number left above its highest version
    (:class:`ExportError`). A file-system URL (``gs://...``) is refused too.
    """
    if version is not None:
        # The clients' check too: one wording of the bound wherever a version is given.
        check_integer("version", version, maximum=MAX_VERSION)
    base = os.fspath(base_path)
    if not is_local(base):
        # pathlib reads gs://bucket/x as the local folder gs:/bucket/x, so the version went
        # there, where the server watching the URL never looks; and the rename that hides a
        # half-written version from TF Serving is atomic on a local file system only.
        raise ExportError(f"{base}: a file-system URL; the export writes to a local base path "
                          "only: export there, then copy the version folder it prints to the "
                          "served base path")
    if holds_saved_model(base):
        parent = os.path.dirname(os.path.normpath(base)) or os.curdir
        what = (f"a SavedModel version folder; give the base path that holds the versions "
                f"({parent}), as TF Serving's --model_base_path")
    elif looks_like_litert_export(base):
        what = "a LiteRT export; give the SavedModel a base path of its own"
    elif is_model_directory(base):
        what = (f"a model directory (it holds {MODEL_FILE}); give the SavedModel a base path "
                "of its own, e.g. models/NAME")
    else:
        _free_version(Path(base), version)
        return
    raise ExportError(f"{base}: {what}")


def _free_version(base: Path, version: int | None) -> int:
    """``version``, or the one after ``base``'s highest; :class:`ExportError` if it is taken or
    there is none after the highest."""
    if version is None:
        # Count incomplete numbered directories too: their number is taken.
        highest = max(numbered_dirs(base), default=0)
        if highest >= MAX_VERSION:
            # Not "--version must be between ...": the user gave no version.
            raise ExportError(
                f"{base}: its highest version, {highest}, leaves no number for the next one "
                f"(TF Serving's versions go up to {MAX_VERSION}); give a free one with "
                f"{setting_name('version')}, or export to a new base path")
        version = highest + 1
    target = base / str(version)
    if target.exists():
        raise ExportError(
            f"version {version} already exists at {target}; export a new version "
            "instead of overwriting one that may be serving"
        )
    return version


PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


def saved_model_op_types(export_dir: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel: graph nodes and function-library nodes.

    Calls to library functions (whose op type is the function's name) are
    left out: they are not kernels the server has to provide.
    """
    saved_model = read_saved_model(export_dir)
    ops: set[str] = set()
    functions: set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        ops.update(node.op for node in graph.node)
        for function in graph.library.function:
            functions.add(function.signature.name)
            ops.update(node.op for node in function.node_def)
    return ops - functions


def check_core_ops(export_dir: str | os.PathLike, name: str | None = None) -> None:
    """Raise :class:`ExportError` if the SavedModel uses an op outside core TensorFlow.

    ``name`` is how the message calls the SavedModel (default: ``export_dir``).

    ``tf.raw_ops`` lists the ops built into TensorFlow itself; ops that
    extension libraries register at import time are not in it, and the stock
    ``tensorflow_model_server`` could not load a graph that uses them. The
    ``py_function`` ops are in ``tf.raw_ops`` but call back into Python,
    which the server does not have, so they count as foreign too.
    """
    foreign = saved_model_op_types(export_dir) - (set(dir(tf.raw_ops)) - PYTHON_OPS)
    if foreign:
        raise ExportError(
            f"{name or export_dir} uses ops that are not core TensorFlow ops, which stock "
            f"TensorFlow Serving cannot run: {sorted(foreign)}"
        )


def check_variables_restore(export_dir: str | os.PathLike, name: str | None = None) -> None:
    """Raise :class:`ExportError` unless TF Serving's way of loading restores every variable.

    ``name`` is how the message calls the SavedModel (default: ``export_dir``).

    TF Serving (``LoadSavedModel`` in C++) does not rebuild Python objects: it
    imports the serving MetaGraph into a session, runs the SavedModel's
    restore op and its main op, and then runs the signatures. The TF1 loader
    does exactly that, so after it every variable handle in the graph must
    hold a value. A SavedModel whose object graph tracks Keras 3 layers
    fails this (its signatures read variables the restore op never fills),
    although ``tf.saved_model.load`` runs it correctly.
    """
    graph = tf.Graph()
    tf_logger = tf.get_logger()
    level = tf_logger.level
    # The TF1 loader logs a deprecation notice on its first use.
    tf_logger.setLevel(logging.ERROR)
    try:
        with tf.compat.v1.Session(graph=graph) as session:
            tf.compat.v1.saved_model.load(session, [tf.saved_model.SERVING], str(export_dir))
            handles = [op for op in graph.get_operations() if op.type == "VarHandleOp"]
            with graph.as_default():
                checks = [tf.raw_ops.VarIsInitializedOp(resource=op.outputs[0]) for op in handles]
            initialized = session.run(checks)
    finally:
        tf_logger.setLevel(level)
    missing = sorted(op.get_attr("shared_name").decode()
                     for op, is_set in zip(handles, initialized) if not is_set)
    if missing:
        raise ExportError(
            f"{name or export_dir}: TensorFlow Serving would fail every request, because "
            f"loading it as TF Serving does leaves {len(missing)} variable(s) without a value: "
            f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}. Track the "
            "tf.Variables behind Keras variables in the exported module, not Keras layers"
        )


def _fsync_tree(root: Path) -> None:
    # Without this a crash soon after the rename could leave a visible
    # version directory whose files were never written to disk.
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(directory))


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
