"""A Beam ``ModelHandler`` that annotates ``(id, text)`` pairs with a clinical-ner export.

Beam's stock ``TFModelHandlerTensor`` cannot load our exports under Keras 3
(it loads through Keras, which refuses SavedModels, and needs
``tensorflow_hub``), so this handler loads the SavedModel with
``tf.saved_model.load`` and calls its ``serving_default`` signature.
``RunInference`` loads it once per worker process and reuses it for every
batch.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional

from apache_beam.ml.inference.base import ModelHandler

from clinical_ner.batch import metrics
from clinical_ner.annotators.saved_model_annotator import ExportedModel, resolve_export
from clinical_ner.text.document import Entity
from clinical_ner.text.tokenizer import count_tokens

Note = tuple[Any, str]
AnnotatedNote = tuple[Any, list[Entity]]

# RunInference hands the handler batches of about this many characters; the
# handler sorts each by length and runs sub-batches of at most
# NERConfig.annotate_batch_size notes and annotate_max_batch_characters
# characters (defaults 256 and 100,000), as ClinicalNER.annotate does. A larger batch groups lengths better; this one
# holds about 2,500 one-sentence notes.
DEFAULT_RUN_INFERENCE_CHARACTERS = 400_000


def _note_weight(note: Note) -> int:
    # At least 1, so that a batch of empty notes still fills up.
    return len(note[1]) + 1


class SavedModelHandler(ModelHandler[Note, AnnotatedNote, ExportedModel]):
    """Annotates ``(id, text)`` pairs into ``(id, entities)`` inside ``RunInference``.

    ``model_path`` is checked here, in the process that builds the pipeline,
    so that a path that is not an export fails before any worker starts.
    Entities are :class:`clinical_ner.text.document.Entity` objects, the same as
    ``ClinicalNER.annotate`` gives. It counts the Beam metrics
    ``clinical_ner/notes``, ``tokens`` and ``entities``.

    Example::

        import apache_beam as beam
        from apache_beam.ml.inference.base import RunInference

        with beam.Pipeline() as pipeline:
            (pipeline
             | beam.Create([("note-1", "CT of the chest showed a 2 cm nodule.")])
             | RunInference(SavedModelHandler("models/clinical_ner/1"))
             | beam.Map(print))
    """

    def __init__(self, model_path: str, *, batch_size: int | None = None,
                 max_batch_characters: int | None = None,
                 run_inference_characters: int = DEFAULT_RUN_INFERENCE_CHARACTERS) -> None:
        super().__init__(min_batch_size=run_inference_characters,
                         max_batch_size=run_inference_characters,
                         element_size_fn=_note_weight)
        self.export_dir = resolve_export(model_path)
        self.batch_size = batch_size
        self.max_batch_characters = max_batch_characters
        self._counters = {name: metrics.counter(name)
                          for name in (metrics.NOTES, metrics.TOKENS, metrics.ENTITIES)}

    def load_model(self) -> ExportedModel:
        return ExportedModel(self.export_dir)

    def run_inference(self, batch: Sequence[Note], model: ExportedModel,
                      inference_args: Optional[dict[str, Any]] = None
                      ) -> Iterable[AnnotatedNote]:
        texts = [text for _, text in batch]
        entities = model.annotate(texts, self.batch_size, self.max_batch_characters)
        self._counters[metrics.NOTES].inc(len(texts))
        self._counters[metrics.TOKENS].inc(sum(count_tokens(text) for text in texts))
        self._counters[metrics.ENTITIES].inc(sum(len(found) for found in entities))
        return [(note_id, found) for (note_id, _), found in zip(batch, entities)]

    def get_num_bytes(self, batch: Sequence[Note]) -> int:
        # The default pickles the whole batch just to measure it.
        return sum(len(text) for _, text in batch)

    def get_metrics_namespace(self) -> str:
        return "clinical_ner_inference"
