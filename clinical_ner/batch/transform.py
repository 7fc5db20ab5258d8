"""``AnnotateNotes``: a Beam ``PTransform`` from ``(id, text)`` to ``(id, entities)``."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from clinical_ner.batch.model_handler import (
    AnnotatedNote,
    AnnotatorHandler,
    Note,
    handler_for,
)


class AnnotateNotes(beam.PTransform):
    """Annotate a PCollection of ``(id, text)`` with a clinical-ner export.

    Gives ``(id, [Entity, ...])``, the entities ``clinical-ner predict`` gives
    for that text, through ``RunInference`` and the handler for the model
    (:func:`~clinical_ner.batch.model_handler.handler_for`: a SavedModel or a
    LiteRT export; it counts the metrics ``clinical_ner/notes``, ``tokens`` and
    ``entities``). The export is loaded once per worker process; its path is
    checked when the transform is built. A batch that fails fails its
    bundle, which the runner retries (Dataflow and the BundleBasedDirectRunner
    do; FnApiRunner fails the pipeline).

    Example::

        with beam.Pipeline() as pipeline:
            (pipeline
             | beam.Create([("n1", "Started on aspirin for chest pain.")])
             | AnnotateNotes("models/clinical_ner/1")
             | beam.MapTuple(lambda note_id, entities: print(note_id, entities)))
    """

    def __init__(self, model_path: str | None = None, *,
                 handler: AnnotatorHandler | None = None, **handler_options) -> None:
        """Give ``model_path`` (and handler options: ``batch_size``...) or a ``handler``."""
        super().__init__()
        if (model_path is None) == (handler is None):
            raise TypeError("give either model_path or handler")
        self.handler = handler or handler_for(model_path, **handler_options)

    def expand(self, notes: beam.PCollection[Note]) -> beam.PCollection[AnnotatedNote]:
        return notes | "RunInference" >> RunInference(self.handler)
