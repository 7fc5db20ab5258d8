"""``clinical_ner.batch.spark.annotate`` in Spark ``local[2]``: the same entities as ``predict``.

Needs the [spark] extra and Java 17 or 21 (CI installs both).
"""
from __future__ import annotations

import json
import os
import sys

import pytest

pytest.importorskip("pyspark", reason="the [spark] extra is not installed")

from clinical_ner.annotators.saved_model_annotator import NotAnExportError  # noqa: E402
from clinical_ner.cli import main as cli_main  # noqa: E402
from clinical_ner.batch.spark import annotate  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    # Workers must run this interpreter (the system python3 lacks pyarrow);
    # no network beyond the loopback.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (SparkSession.builder.master("local[2]").appName("clinical-ner-test")
               .config("spark.pyspark.python", sys.executable)
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_annotate_gives_predicts_entities(spark, trained_model, maccrobat_dev_notes, tmp_path):
    model_dir, export_dir = trained_model
    predicted = tmp_path / "predict.jsonl"
    assert cli_main(["predict", str(model_dir), "--input", *map(str, maccrobat_dev_notes),
                     "--output", str(predicted)]) == 0
    expected = {note.stem: json.loads(line)["entities"] for note, line in
                zip(maccrobat_dev_notes, predicted.read_text(encoding="utf-8").splitlines())}
    rows = [(note.stem, note.read_text(encoding="utf-8")) for note in maccrobat_dev_notes]
    rows += [("empty", ""), ("null", None), ("dup", "Chest pain."), ("dup", "Chest pain.")]
    notes = spark.createDataFrame(rows, "note string, body string").repartition(2)

    annotated = annotate(notes, str(export_dir.parent), id_col="note", text_col="body")

    assert annotated.columns == ["note", "entities", "error"]
    result = annotated.collect()
    assert sorted(row.note for row in result) == sorted(note for note, _ in rows)
    by_note = {row.note: row for row in result}
    assert {note: [entity.asDict() for entity in by_note[note].entities]
            for note in expected} == expected
    assert sum(len(found) for found in expected.values()) > 20
    assert by_note["empty"].entities == [] and by_note["empty"].error is None
    assert by_note["null"].entities is None and by_note["null"].error == "column 'body' is null"
    duplicates = [row for row in result if row.note == "dup"]
    assert len(duplicates) == 2 and duplicates[0].entities == duplicates[1].entities


def test_a_path_that_is_not_an_export_fails_on_the_driver(spark, trained_model):
    model_dir, _ = trained_model
    notes = spark.createDataFrame([("n1", "Chest pain.")], "id string, text string")
    with pytest.raises(NotAnExportError, match="not an export"):
        annotate(notes, str(model_dir))
