"""Annotate a Spark DataFrame of notes with a clinical-ner export (``pip install "clinical-ner[spark]"``).

``annotate(df, model_path)`` runs through ``mapInPandas``: each Python worker
loads the export once (kept for the worker's life; Spark reuses Python workers
by default) and annotates Arrow batches of notes, sorted by length inside
each batch as ``ClinicalNER.annotate`` does. The entities are those
``clinical-ner predict`` gives.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

    from clinical_ner.annotators.saved_model_annotator import ExportedModel

ENTITIES_COLUMN = "entities"
ERROR_COLUMN = "error"
# The fields of Entity.to_dict, as Spark SQL types.
ENTITIES_TYPE = ("array<struct<start:bigint,end:bigint,text:string,label:string,"
                 "confidence:double>>")

# One loaded export per path in each Python worker.
_loaded: dict[str, "ExportedModel"] = {}


def annotate(df: "DataFrame", model_path: str, id_col: str = "id", text_col: str = "text", *,
             batch_size: int | None = None, max_batch_characters: int | None = None
             ) -> "DataFrame":
    """``df``'s ``id_col``, an ``entities`` column and an ``error`` column.

    ``entities`` is an array of ``struct<start, end, text, label,
    confidence>`` (code-point offsets into the note, as ``clinical-ner
    predict`` writes them); a row whose text is null gets null entities and
    ``error`` says why (``error`` is null otherwise). Every row gives one
    row; duplicate ids are annotated independently. ``batch_size`` and
    ``max_batch_characters`` are ``ClinicalNER.annotate``'s (``None``: the
    default configuration's). ``model_path`` (a
    version folder or a base path, anything ``tf.io.gfile`` reads that the
    executors can reach) is checked on the driver first.

    Example::

        from pyspark.sql import SparkSession
        from clinical_ner.batch.spark import annotate

        spark = SparkSession.builder.master("local[2]").getOrCreate()
        notes = spark.createDataFrame([("n1", "Started on aspirin.")], "id string, text string")
        annotate(notes, "models/clinical_ner/1").show(truncate=False)
    """
    from clinical_ner.annotators.saved_model_annotator import resolve_export

    export_dir = resolve_export(model_path)
    id_type = df.schema[id_col].dataType.simpleString()
    df.schema[text_col]  # noqa: B018 (a missing column fails here, naming it)
    schema = (f"`{id_col}` {id_type}, {ENTITIES_COLUMN} {ENTITIES_TYPE}, "
              f"{ERROR_COLUMN} string")

    def annotate_batches(batches: Iterator["pd.DataFrame"]) -> Iterator["pd.DataFrame"]:
        model = _model(export_dir)
        for batch in batches:
            yield _annotate_frame(model, batch, id_col, text_col, batch_size,
                                  max_batch_characters)

    return df.select(id_col, text_col).mapInPandas(annotate_batches, schema)


def _model(export_dir: str) -> "ExportedModel":
    from clinical_ner.annotators.saved_model_annotator import ExportedModel

    if export_dir not in _loaded:
        _loaded[export_dir] = ExportedModel(export_dir)
    return _loaded[export_dir]


def _annotate_frame(model: "ExportedModel", batch: "pd.DataFrame", id_col: str, text_col: str,
                    batch_size: int | None, max_batch_characters: int | None
                    ) -> "pd.DataFrame":
    import pandas as pd

    texts = batch[text_col].tolist()
    present = [index for index, text in enumerate(texts) if isinstance(text, str)]
    found = model.annotate([texts[index] for index in present], batch_size,
                           max_batch_characters)
    entities: list[list[dict] | None] = [None] * len(texts)
    errors: list[str | None] = [f"column '{text_col}' is null"] * len(texts)
    for index, note_entities in zip(present, found):
        entities[index] = [entity.to_dict() for entity in note_entities]
        errors[index] = None
    return pd.DataFrame({id_col: batch[id_col], ENTITIES_COLUMN: entities,
                         ERROR_COLUMN: errors})
