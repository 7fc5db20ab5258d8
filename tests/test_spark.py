"""``clinical_ner.batch.spark.annotate`` in Spark ``local[2]``: the same entities as ``predict``.

Needs the [spark] extra and Java 17 or 21 (CI installs both).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest

pytest.importorskip("pyspark", reason="the [spark] extra is not installed")

from clinical_ner.annotators.saved_model_annotator import NotAnExportError  # noqa: E402
from clinical_ner.cli import main as cli_main  # noqa: E402
from clinical_ner.batch.spark import WorkerRuntimes, annotate  # noqa: E402
from clinical_ner.errors import ConfigError, ModelError  # noqa: E402
from helpers import REPO_ROOT, assert_same_documents, assert_same_entities, spark_session  # noqa: E402

pytestmark = pytest.mark.slow


def predicted_entities(model_dir, notes, tmp_path) -> dict[str, list]:
    """``clinical-ner predict`` (the TensorFlow path) on ``notes``: entities by file stem."""
    predicted = tmp_path / "predict.jsonl"
    assert cli_main(["predict", str(model_dir), "--input", *map(str, notes),
                     "--output", str(predicted)]) == 0
    return {note.stem: json.loads(line)["entities"] for note, line in
            zip(notes, predicted.read_text(encoding="utf-8").splitlines())}


@pytest.fixture(scope="module")
def spark():
    with spark_session() as session:
        yield session


def test_annotate_gives_predicts_entities(spark, trained_model, maccrobat_dev_notes, tmp_path):
    model_dir, export_dir = trained_model
    expected = predicted_entities(model_dir, maccrobat_dev_notes, tmp_path)
    rows = [(note.stem, note.read_text(encoding="utf-8")) for note in maccrobat_dev_notes]
    rows += [("empty", ""), ("null", None), ("dup", "Chest pain."), ("dup", "Chest pain.")]
    notes = spark.createDataFrame(rows, "note string, body string").repartition(2)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        annotated = annotate(notes, str(export_dir.parent), id_col="note", text_col="body")
        result = annotated.collect()

    assert not [str(w.message) for w in caught if "pandas" in str(w.message)]
    assert annotated.columns == ["note", "entities", "error"]
    assert sorted(row.note for row in result) == sorted(note for note, _ in rows)
    by_note = {row.note: row for row in result}
    # Another batching than predict's: confidences may differ by float32 rounding.
    assert_same_documents({note: by_note[note].entities for note in expected}, expected)
    assert sum(len(found) for found in expected.values()) > 20
    assert by_note["empty"].entities == [] and by_note["empty"].error is None
    assert by_note["null"].entities is None and by_note["null"].error == "column 'body' is null"
    duplicates = [row for row in result if row.note == "dup"]
    assert len(duplicates) == 2
    assert_same_entities(duplicates[0].entities, duplicates[1].entities)  # maybe other batches


def test_the_installed_pandas_is_one_pyspark_supports_without_a_warning():
    # The check PySpark runs on the driver and in every worker that converts
    # Arrow batches; with pandas >= 3 it warns each time, which the [spark]
    # extra's pin (pandas>=2.2,<3) avoids.
    from pyspark.sql.pandas.utils import require_minimum_pandas_version

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        require_minimum_pandas_version()


def test_a_path_that_is_not_an_export_fails_on_the_driver(spark, trained_model):
    model_dir, _ = trained_model
    notes = spark.createDataFrame([("n1", "Chest pain.")], "id string, text string")
    with pytest.raises(NotAnExportError, match="not an export"):
        annotate(notes, str(model_dir))


def test_a_text_column_of_another_type_and_a_bad_batch_size_fail_on_the_driver(
        spark, trained_model):
    _, export_dir = trained_model
    numbers = spark.createDataFrame([("n1", 5)], "id string, text int")
    # Each row said "column 'text' is null" before.
    with pytest.raises(ConfigError, match="column 'text' is int, not string; cast it first"):
        annotate(numbers, str(export_dir))
    notes = spark.createDataFrame([("n1", "Chest pain.")], "id string, text string")
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        annotate(notes, str(export_dir), batch_size=0)
    with pytest.raises(ConfigError, match="id_col and text_col are both 'text'"):
        annotate(notes, export_dir, id_col="text")  # a Path, as ClinicalNER.load takes
    # An id column named like an output column failed inside Arrow, in the workers.
    for name in ("entities", "error"):
        named = spark.createDataFrame([("n1", "Chest pain.")], f"{name} string, text string")
        with pytest.raises(ConfigError, match=f"id_col '{name}' is the name of an output "
                                              "column; rename it first"):
            annotate(named, str(export_dir), id_col=name)


def test_a_model_path_may_be_a_path_object(spark, trained_litert_export, tmp_path):
    # A copy of its own name: Spark ships an export by its folder name, and the
    # workers keep it loaded for the session (another test counts their loads).
    export = shutil.copytree(trained_litert_export, tmp_path / "path-object-export")
    notes = spark.createDataFrame([("n1", "Started aspirin for fever.")], "id string, text string")
    assert annotate(notes, export).collect()[0].error is None


def test_an_incomplete_litert_export_fails_on_the_driver_by_the_path_given(
        spark, trained_litert_export, tmp_path):
    # Not by the path of Spark's copy in a worker, after the job started.
    broken = shutil.copytree(trained_litert_export, tmp_path / "broken")
    (broken / "crf.json").unlink()
    notes = spark.createDataFrame([("n1", "Chest pain.")], "id string, text string")
    with pytest.raises(ModelError, match=rf"^{broken}: an incomplete LiteRT export "
                                         r"\(crf.json missing\)"):
        annotate(notes, str(broken))


def test_a_litert_export_gives_predicts_entities(spark, trained_model, trained_litert_export,
                                                 maccrobat_dev_notes, tmp_path):
    model_dir, _ = trained_model
    expected = predicted_entities(model_dir, maccrobat_dev_notes, tmp_path)
    notes = spark.createDataFrame(
        [(note.stem, note.read_text(encoding="utf-8")) for note in maccrobat_dev_notes],
        "note string, body string").repartition(2)
    runtimes = WorkerRuntimes(spark)

    result = annotate(notes, str(trained_litert_export), id_col="note", text_col="body",
                      runtimes=runtimes).collect()

    assert_same_documents({row.note: row.entities for row in result}, expected)
    counts = runtimes.counts()
    assert counts["LiteRT"] >= 1 and counts["TensorFlow"] == 0
    assert runtimes.load_seconds() > 0


def test_a_litert_worker_never_imports_tensorflow(trained_litert_export):
    # A fresh session in a fresh process (the module's session has run the
    # SavedModel, whose workers Spark reuses), driver included.
    script = textwrap.dedent(f"""
        import json, os, sys
        import pandas as pd
        from pyspark.sql import SparkSession
        from clinical_ner.batch import spark as clinical_spark
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        session = (SparkSession.builder.master("local[1]")
                   .config("spark.ui.enabled", "false").getOrCreate())
        session.sparkContext.setLogLevel("ERROR")
        notes = session.createDataFrame([("n1", "Started on aspirin for chest pain.")],
                                        "id string, text string")
        rows = clinical_spark.annotate(notes, {str(trained_litert_export)!r}).collect()

        def probe(batches):
            for _ in batches:
                # The worker that annotated (local[1]: Spark reuses it) holds the model.
                yield pd.DataFrame({{"loaded": [len(clinical_spark._loaded)],
                                    "tensorflow": ["tensorflow" in sys.modules]}})

        worker = notes.mapInPandas(probe, "loaded long, tensorflow boolean").collect()[0]
        print(json.dumps({{"rows": len(rows), "worker_loaded": worker.loaded,
                          "worker_tensorflow": worker.tensorflow,
                          "driver_tensorflow": "tensorflow" in sys.modules}}))
        session.stop()
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO_ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"rows": 1, "worker_loaded": 1, "worker_tensorflow": False,
                      "driver_tensorflow": False}
