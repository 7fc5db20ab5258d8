"""Annotate a Spark DataFrame of notes with a clinical-ner export (``pip install "clinical-ner[spark]"``).

``annotate(df, model_path)`` runs through ``mapInPandas``: each Python worker
loads the export once (kept for the worker's life; Spark reuses Python workers
by default) and annotates Arrow batches of notes, sorted by length inside
each batch as ``Annotator.annotate`` does. The entities are those
``clinical-ner predict`` gives.

The export is the SavedModel (the default artifact) or a LiteRT export
(``clinical-ner export MODEL --format litert``): Spark ships that folder to
each executor once (``SparkContext.addFile``), and its Python workers load it
with one interpreter thread each and never import TensorFlow.
"""
from __future__ import annotations

import atexit
import filecmp
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from clinical_ner.errors import ConfigError, check_integer, messages_withheld

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from clinical_ner.annotators.base import Annotator

ENTITIES_COLUMN = "entities"
ERROR_COLUMN = "error"
# The columns the workers get: the id, the text, and which of them is not UTF-8. Names of
# our own: PySpark's mapInPandas cannot take a column whose name holds a dot ("note.id").
_ID = "__clinical_ner_id"
_TEXT = "__clinical_ner_text"
_NOT_UTF8 = "__clinical_ner_not_utf8"
# The fields of Entity.to_dict, as Spark SQL types; assertion and
# assertion_confidence are null where an entity has none.
ENTITY_FIELDS = ("start", "end", "text", "label", "confidence", "assertion",
                 "assertion_confidence")
ENTITIES_TYPE = ("array<struct<start:bigint,end:bigint,text:string,label:string,"
                 "confidence:double,assertion:string,assertion_confidence:double>>")

LITERT = "LiteRT"
TENSORFLOW = "TensorFlow"

# One loaded export per path in each Python worker.
_loaded: dict[str, "Annotator"] = {}
# The driver's copies of local LiteRT exports that Spark ships, by (application, export).
_shipped: dict[tuple[str, str], str] = {}


class WorkerRuntimes:
    """Spark accumulators: how many Python workers loaded the model, per runtime.

    Give one to :func:`annotate`; after an action on its result,
    ``runtimes.counts()`` is e.g. ``{"LiteRT": 2, "TensorFlow": 0}`` (a
    worker that Spark reuses counts once), and ``load_seconds()`` the
    slowest worker's model load (the first note follows after one call).
    """

    def __init__(self, spark: "SparkSession") -> None:
        context = spark.sparkContext
        self._workers = {LITERT: context.accumulator(0), TENSORFLOW: context.accumulator(0)}
        self._slowest_load = context.accumulator(0.0, _MaxAccumulator())

    def counts(self) -> dict[str, int]:
        return {name: accumulator.value for name, accumulator in self._workers.items()}

    def load_seconds(self) -> float:
        return self._slowest_load.value

    def _record(self, runtime: str, seconds: float) -> None:
        self._workers[runtime].add(1)
        self._slowest_load.add(seconds)


class _MaxAccumulator:
    """An accumulator parameter that keeps the largest value added (an AccumulatorParam)."""

    def zero(self, value: float) -> float:
        return 0.0

    def addInPlace(self, first: float, second: float) -> float:  # noqa: N802 (Spark's name)
        return max(first, second)


def annotate(df: "DataFrame", model_path: str | os.PathLike, id_col: str = "id",
             text_col: str = "text", *,
             batch_size: int | None = None, max_batch_characters: int | None = None,
             runtimes: WorkerRuntimes | None = None) -> "DataFrame":
    """``df``'s ``id_col``, an ``entities`` column and an ``error`` column.

    ``entities`` is an array of ``struct<start, end, text, label,
    confidence, assertion, assertion_confidence>`` (code-point offsets into
    the note, as ``clinical-ner predict`` writes them; the assertion fields
    are null where the model gives an entity none); a row whose text is
    null or not valid UTF-8 (a binary column cast to string) gets null
    entities and ``error`` says why (``error`` is null otherwise; an id that
    is not valid UTF-8 comes back with U+FFFD for its bad bytes);
    ``text_col`` must be a string column (another type is refused on the
    driver: cast it first). Every row gives one row; duplicate ids are
    annotated independently. ``batch_size`` and
    ``max_batch_characters`` are ``Annotator.annotate``'s (``None``: the
    default configuration's). ``model_path`` is a SavedModel export (a
    version folder or a base path, anything ``tf.io.gfile`` reads that the
    executors can reach) or a LiteRT export folder (anything Spark's
    ``addFile`` reads: local, ``hdfs://``, ``s3a://``...; shipped by its
    folder name, so two LiteRT exports of one session need different
    names); it is checked on the driver first. ``runtimes`` counts the
    workers of each runtime (:class:`WorkerRuntimes`).

    Example::

        from pyspark.sql import SparkSession
        from clinical_ner.batch.spark import annotate

        spark = SparkSession.builder.master("local[2]").getOrCreate()
        notes = spark.createDataFrame([("n1", "Started on aspirin.")], "id string, text string")
        annotate(notes, "models/clinical_ner/1").show(truncate=False)
    """
    # Checked on the driver, before a worker starts (a batch size of 0 never ends a batch).
    for name, value in (("batch_size", batch_size), ("max_batch_characters", max_batch_characters)):
        if value is not None:
            check_integer(name, value)
    if not isinstance(model_path, (str, os.PathLike)) or not os.fspath(model_path):
        raise ConfigError(f"model_path must be a path or URL of an export, got "
                          f"{'an empty string' if model_path == '' else type(model_path).__name__}")
    model_path = os.fspath(model_path)
    if runtimes is not None and not isinstance(runtimes, WorkerRuntimes):
        # It failed in every worker ("'str' object has no attribute '_record'").
        raise ConfigError(f"runtimes must be a WorkerRuntimes(spark), got "
                          f"{type(runtimes).__name__}")
    for option, column in (("id_col", id_col), ("text_col", text_col)):
        if column not in df.columns:
            raise ConfigError(f"{option} '{column}': no such column; the DataFrame has "
                              f"{', '.join(repr(name) for name in df.columns) or 'none'}")
    if id_col == text_col:
        raise ConfigError(f"id_col and text_col are both '{text_col}'; the output keeps the id "
                          "beside the entities: give an id column of its own")
    if id_col in (ENTITIES_COLUMN, ERROR_COLUMN):
        # The output would hold two columns of one name (Arrow failed in the workers).
        raise ConfigError(f"id_col '{id_col}' is the name of an output column; rename it first "
                          f"(df.withColumnRenamed('{id_col}', 'note_id'))")
    text_type = df.schema[text_col].dataType.simpleString()
    if text_type != "string":
        raise ConfigError(f"column '{text_col}' is {text_type}, not string; cast it first "
                          f"(df.withColumn('{text_col}', df['{text_col}'].cast('string')))")
    load = _litert_loader(df.sparkSession, model_path) or _saved_model_loader(model_path)
    id_type = df.schema[id_col].dataType.simpleString()
    schema = (f"{_quoted(id_col)} {id_type}, {ENTITIES_COLUMN} {ENTITIES_TYPE}, "
              f"{ERROR_COLUMN} string")

    def annotate_batches(batches: Iterator["pd.DataFrame"]) -> Iterator["pd.DataFrame"]:
        started = time.perf_counter()
        model, loaded_now = _model(load)
        if loaded_now and runtimes is not None:
            runtimes._record(load.runtime, time.perf_counter() - started)
        for batch in batches:
            yield _annotate_frame(model, batch, id_col, text_col, batch_size,
                                  max_batch_characters)

    return _readable(df, id_col, id_type, text_col).mapInPandas(annotate_batches, schema)


def _readable(df: "DataFrame", id_col: str, id_type: str, text_col: str) -> "DataFrame":
    """``id_col`` and ``text_col`` as :data:`_ID` and :data:`_TEXT`, and :data:`_NOT_UTF8`:
    what Arrow can carry to the workers.

    A string of invalid UTF-8 (a binary column cast to string) failed the
    whole job in Arrow, with the note's text in the error and the executor's
    log. Such a text becomes null, and such an id its bytes with U+FFFD;
    :data:`_NOT_UTF8` names the column, and the row gets that as its error.
    """
    from pyspark.sql import functions as F

    text, note_id = F.col(_quoted(text_col)), F.col(_quoted(id_col))
    bad_text = F.coalesce(~F.is_valid_utf8(text), F.lit(False))
    columns = [note_id.alias(_ID), F.when(bad_text, F.lit(None)).otherwise(text).alias(_TEXT)]
    not_utf8 = F.when(bad_text, F.lit(text_col))
    if id_type == "string":
        bad_id = F.coalesce(~F.is_valid_utf8(note_id), F.lit(False))
        columns[0] = F.when(bad_id, F.make_valid_utf8(note_id)).otherwise(note_id).alias(_ID)
        not_utf8 = F.when(bad_id, F.lit(id_col)).otherwise(not_utf8)
    return df.select(*columns, not_utf8.alias(_NOT_UTF8))


def _quoted(column: str) -> str:
    """``column`` as Spark SQL reads one name: unquoted, ``note.id`` is a field of ``note``
    and a backtick a syntax error (columns of ``df.columns`` that failed in Spark's analysis)."""
    return "`" + column.replace("`", "``") + "`"


class _Loader:
    """A picklable way for a worker to load the model: its runtime, a key, a function."""

    def __init__(self, runtime: str, key: str, load: Callable[[], "Annotator"]) -> None:
        self.runtime, self.key, self.load = runtime, key, load


def _litert_loader(spark: "SparkSession", model_path: str) -> _Loader | None:
    """A loader of the LiteRT export at ``model_path`` (shipped with addFile), or None.

    The export is checked to be complete here, on the driver (and, when local,
    every file read and checked), so that a missing or damaged file is named by
    the path the caller gave before any worker starts.
    """
    from clinical_ner.artifacts import litert as layout

    def exists(path: str) -> bool:
        return _exists(spark, path)

    if not layout.looks_like_litert_export(model_path, exists=exists):
        return None
    layout.check_complete(model_path, exists=exists)
    folder = model_path.rstrip("/") or model_path
    if os.path.isdir(folder):
        from clinical_ner.annotators.litert.annotator import read_export

        read_export(folder)  # a damaged file named here, not in every worker's traceback
        folder = _shipped_copy(spark, folder)
    spark.sparkContext.addFile(folder, recursive=True)
    return _Loader(LITERT, f"litert:{folder}", _LoadShippedLiteRT(os.path.basename(folder)))


def _shipped_copy(spark: "SparkSession", given: str) -> str:
    """A copy of the local export ``given``, under its folder's name, for Spark to ship.

    Spark fetches an added file from its path again for each job: an export
    moved away or exported anew after ``annotate`` failed that job and every
    later job of the session, even those that never used it ("... exists and
    does not match contents of ..."). One copy per application (a session
    reuses it, as Spark ignored the same path added again), kept for the
    driver's life. Another export of the same folder name and other files, or
    the same folder exported anew, is refused: the workers find an export by
    its name and keep the one they loaded.
    """
    # Absolute, so that "." or "exports/x/." ships by the folder's own name (as
    # ".", the workers looked for the export in Spark's file root).
    folder = os.path.abspath(given)
    key = (spark.sparkContext.applicationId, folder)
    name = os.path.basename(folder)
    for (application, other), copy in _shipped.items():
        if (application != key[0] or os.path.basename(other) != name
                or _same_files(copy, folder)):
            continue
        if other == folder:  # the workers kept the export they had loaded, without a word
            raise ConfigError(f"{given}: changed since this Spark session shipped it; the "
                              "workers keep the export they loaded: stop the session "
                              "(spark.stop()) to annotate with the new one")
        # Spark refused it with a Java traceback (local mode: "... exists and does not
        # match contents of ...").
        raise ConfigError(f"{given}: Spark ships a LiteRT export by its folder name, and "
                          f"this session shipped another export named '{name}' ({other}); "
                          "copy this one to a folder of another name")
    if key not in _shipped:
        parent = tempfile.mkdtemp(prefix="clinical-ner-spark-")
        atexit.register(shutil.rmtree, parent, ignore_errors=True)
        _shipped[key] = shutil.copytree(folder, os.path.join(parent, name))
    return _shipped[key]


def _same_files(folder: str, other: str) -> bool:
    """Whether the folders hold the same file names with the same bytes."""
    names = sorted(os.listdir(folder))
    return names == sorted(os.listdir(other)) and all(
        filecmp.cmp(os.path.join(folder, name), os.path.join(other, name), shallow=False)
        for name in names)


class _LoadShippedLiteRT:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self) -> "Annotator":
        from pyspark import SparkFiles

        from clinical_ner.annotators.litert.annotator import LiteRTAnnotator

        # One interpreter thread: Spark runs a worker per core.
        return LiteRTAnnotator.load(SparkFiles.get(self.name), workers=1)


def _exists(spark: "SparkSession", path: str) -> bool:
    """Whether the file ``path`` exists, asked of Spark's own (Hadoop) file systems for a URL."""
    if "://" not in path:
        return os.path.isfile(path)
    from py4j.protocol import Py4JJavaError

    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    try:
        return bool(hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
                    .exists(hadoop_path))
    except Py4JJavaError:  # no Hadoop file system for the scheme
        return False


def _saved_model_loader(model_path: str) -> _Loader:
    from clinical_ner.annotators.saved_model_annotator import resolve_loadable_export

    export_dir = resolve_loadable_export(model_path)
    return _Loader(TENSORFLOW, f"saved_model:{export_dir}", _LoadSavedModel(export_dir))


class _LoadSavedModel:
    def __init__(self, export_dir: str) -> None:
        self.export_dir = export_dir

    def __call__(self) -> "Annotator":
        from clinical_ner.annotators.saved_model_annotator import SavedModelAnnotator

        return SavedModelAnnotator(self.export_dir)


def _model(loader: _Loader) -> tuple["Annotator", bool]:
    """The worker's model, and whether this call loaded it."""
    if loader.key in _loaded:
        return _loaded[loader.key], False
    _loaded[loader.key] = loader.load()
    return _loaded[loader.key], True


def _annotate_frame(model: "Annotator", batch: "pd.DataFrame", id_col: str, text_col: str,
                    batch_size: int | None, max_batch_characters: int | None
                    ) -> "pd.DataFrame":
    import pandas as pd

    texts = batch[_TEXT].tolist()
    not_utf8 = batch[_NOT_UTF8].tolist()
    present = [index for index, text in enumerate(texts)
               if isinstance(text, str) and not isinstance(not_utf8[index], str)]
    with messages_withheld(f"annotating {len(present)} note(s)"):
        found = model.annotate([texts[index] for index in present], batch_size,
                               max_batch_characters)
    entities: list[list[dict] | None] = [None] * len(texts)
    errors: list[str | None] = [
        f"column '{column}' is not valid UTF-8" if isinstance(column, str)
        else f"column '{text_col}' is null" for column in not_utf8]
    for index, note_entities in zip(present, found):
        # Every field named, null included: to_dict leaves out an absent assertion.
        entities[index] = [{field: getattr(entity, field) for field in ENTITY_FIELDS}
                           for entity in note_entities]
        errors[index] = None
    return pd.DataFrame({id_col: batch[_ID], ENTITIES_COLUMN: entities,
                         ERROR_COLUMN: errors})
