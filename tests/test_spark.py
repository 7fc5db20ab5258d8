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
import traceback
import warnings

import pytest

pytest.importorskip("pyspark", reason="the [spark] extra is not installed")

from clinical_ner.annotators.saved_model_annotator import NotAnExportError  # noqa: E402
from clinical_ner.cli import main as cli_main  # noqa: E402
from clinical_ner.batch.spark import WorkerRuntimes, annotate  # noqa: E402
from clinical_ner.errors import ConfigError, MessageWithheldError, ModelError  # noqa: E402
from helpers import (  # noqa: E402
    REPO_ROOT,
    assert_same_documents,
    assert_same_entities,
    expected_entities,
    export_toy,
    spark_session,
)

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


def test_a_damaged_export_fails_on_the_driver(spark, tmp_path):
    # Its variables truncated: each worker failed to load it, an IndexError in the job.
    damaged = export_toy(tmp_path / "toy", version=1)
    for data in (damaged / "variables").glob("variables.data-*"):
        os.truncate(data, 10)
    notes = spark.createDataFrame([("n1", "Chest pain.")], "id string, text string")
    with pytest.raises(NotAnExportError, match=rf"^{damaged}: a damaged SavedModel"):
        annotate(notes, str(damaged))


def test_a_failure_inside_annotation_is_raised_without_its_message():
    # Spark logs a failed task's Python traceback, message included, on the executor and in
    # the driver's exception.
    import pandas as pd

    from clinical_ner.batch import spark as spark_module

    class QuotesItsInput:
        def annotate(self, texts, *options):
            raise ValueError(f"cannot annotate {texts[0]!r}")

    batch = pd.DataFrame({spark_module._ID: ["n1"], spark_module._TEXT: ["Zanzibarian"],
                          spark_module._NOT_UTF8: [None]})
    with pytest.raises(MessageWithheldError) as raised:
        spark_module._annotate_frame(QuotesItsInput(), batch, "id", "text", None, None)
    logged = "".join(traceback.format_exception(raised.value))
    assert "Zanzibarian" not in logged and "failed with ValueError" in logged


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


def test_options_that_name_nothing_fail_on_the_driver_by_their_name(spark, trained_model):
    _, export_dir = trained_model
    notes = spark.createDataFrame([("n1", "Chest pain.")], "id string, text string")
    with pytest.raises(ConfigError, match="text_col 'body': no such column; the DataFrame "
                                          "has 'id', 'text'"):
        annotate(notes, str(export_dir), text_col="body")
    with pytest.raises(ConfigError, match="id_col 'note': no such column"):
        annotate(notes, str(export_dir), id_col="note")
    # It failed in every worker ("'str' object has no attribute '_record'").
    with pytest.raises(ConfigError, match="runtimes must be a WorkerRuntimes"):
        annotate(notes, str(export_dir), runtimes="yes")
    for path, named in ((None, "NoneType"), ("", "an empty string"), (5, "int")):
        with pytest.raises(ConfigError, match=f"model_path must be a path or URL of an export, "
                                              f"got {named}"):
            annotate(notes, path)


def test_a_note_that_is_not_utf8_is_a_row_error_not_a_failed_job(spark, trained_litert_export,
                                                                 tmp_path, capfd):
    # A binary column cast to string: Arrow failed the whole job, quoting the note.
    from pyspark.sql import functions as F

    export = shutil.copytree(trained_litert_export, tmp_path / "utf8-export")
    rows = [("good", bytearray(b"Started aspirin.")),
            ("latin-1", bytearray(b"caf\xe9 Zanzibarian chest pain")),
            ("bad-id-\udcff", bytearray(b"fever"))]
    raw = spark.createDataFrame(
        [(name.encode("utf-8", "surrogateescape"), text) for name, text in rows],
        "raw_id binary, raw binary")
    notes = raw.select(F.col("raw_id").cast("string").alias("id"),
                       F.col("raw").cast("string").alias("text"))
    result = {row.id: row for row in annotate(notes, export).collect()}
    assert result["good"].error is None and result["good"].entities is not None
    assert (result["latin-1"].error, result["latin-1"].entities) == (
        "column 'text' is not valid UTF-8", None)
    assert (result["bad-id-\ufffd"].error, result["bad-id-\ufffd"].entities) == (
        "column 'id' is not valid UTF-8", None)
    logged = capfd.readouterr()
    assert "Zanzibarian" not in logged.out + logged.err


def test_columns_whose_names_spark_sql_would_parse_are_read_as_named(spark, tmp_path):
    # A dot ("note.id": a field of "note") or a backtick failed in Spark's analysis, inside
    # PySpark's mapInPandas too, though the DataFrame has those columns.
    export = export_toy(tmp_path / "toy", version=1)
    text = "Started on aspirin for fever."
    for id_col, text_col in (("note.id", "note text"), ("note`id", "text")):
        notes = spark.createDataFrame([("n1", text)], "`" + id_col.replace("`", "``")
                                      + "` string, `" + text_col + "` string")
        [row] = annotate(notes, export, id_col=id_col, text_col=text_col).collect()
        assert row.asDict()[id_col] == "n1" and row.error is None
        assert [(e.start, e.end, e.label) for e in row.entities] == [
            (e.start, e.end, e.label) for e in expected_entities(text)]


def test_a_model_path_may_be_a_path_object(spark, trained_litert_export, tmp_path):
    # A copy of its own name: Spark ships an export by its folder name, and the
    # workers keep it loaded for the session (another test counts their loads).
    export = shutil.copytree(trained_litert_export, tmp_path / "path-object-export")
    notes = spark.createDataFrame([("n1", "Started aspirin for fever.")], "id string, text string")
    assert annotate(notes, export).collect()[0].error is None


def test_a_model_path_of_dot_ships_the_export_by_its_folder_name(spark, trained_litert_export,
                                                                tmp_path, monkeypatch):
    # The driver checked ".", then every worker failed with "not a LiteRT export".
    export = shutil.copytree(trained_litert_export, tmp_path / "dot-export")
    monkeypatch.chdir(export)
    notes = spark.createDataFrame([("n1", "Started aspirin for fever.")], "id string, text string")
    assert annotate(notes, ".").collect()[0].error is None


def test_an_incomplete_litert_export_fails_on_the_driver_by_the_path_given(
        spark, trained_litert_export, tmp_path):
    # Not by the path of Spark's copy in a worker, after the job started.
    broken = shutil.copytree(trained_litert_export, tmp_path / "broken")
    (broken / "crf.json").unlink()
    notes = spark.createDataFrame([("n1", "Chest pain.")], "id string, text string")
    with pytest.raises(ModelError, match=rf"^{broken}: an incomplete LiteRT export "
                                         r"\(crf.json missing\)"):
        annotate(notes, str(broken))


def test_a_litert_export_moved_away_after_annotate_fails_no_job(spark, trained_litert_export,
                                                                tmp_path):
    # Spark fetched the export from its path again for the job: it failed with a Java
    # traceback ("... exists and does not match contents of ..."), and so did every later
    # job of the session, annotating or not.
    export = shutil.copytree(trained_litert_export, tmp_path / "moved-litert")
    notes = spark.createDataFrame([("n1", "Started aspirin for fever.")], "id string, text string")
    annotated = annotate(notes, str(export))
    shutil.move(export, tmp_path / "elsewhere")

    assert annotated.collect()[0].error is None
    assert notes.count() == 1


def test_another_or_a_changed_litert_export_under_a_shipped_name_is_refused(
        spark, trained_litert_export, tmp_path):
    # Spark ships an export by its folder name: another failed in addFile with a Java
    # traceback, and the workers kept the model they had loaded for one exported anew.
    # A copy of the same files ships as the same export.
    first = shutil.copytree(trained_litert_export, tmp_path / "a" / "twin-litert")
    same = shutil.copytree(trained_litert_export, tmp_path / "b" / "twin-litert")
    other = shutil.copytree(trained_litert_export, tmp_path / "c" / "twin-litert")
    with open(other / "config.json", "a", encoding="utf-8") as config:
        config.write("\n")
    notes = spark.createDataFrame([("n1", "Started aspirin for fever.")], "id string, text string")
    annotate(notes, str(first))
    annotate(notes, str(same))

    with pytest.raises(ConfigError, match=rf"^{other}: Spark ships a LiteRT export by its folder "
                                          rf"name, and this session shipped another export "
                                          rf"named 'twin-litert' \({first}\)"):
        annotate(notes, str(other))
    shutil.copy(other / "config.json", first / "config.json")  # exported anew
    with pytest.raises(ConfigError, match=rf"^{first}: changed since this Spark session shipped "
                                          r"it; the workers keep the export they loaded"):
        annotate(notes, str(first))


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
