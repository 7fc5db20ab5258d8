"""Beam ``ModelHandler``s that annotate ``(id, text)`` pairs with a clinical-ner export.

Two artifacts run in workers:

* the exported SavedModel (the default, and what TF Serving runs):
  :class:`SavedModelHandler` loads it with ``tf.saved_model.load`` and calls
  its ``serving_default`` signature. Beam's stock ``TFModelHandlerTensor``
  cannot load our exports under Keras 3 (it loads through Keras, which
  refuses SavedModels, and needs ``tensorflow_hub``);
* a LiteRT export (``clinical-ner export MODEL --format litert``):
  :class:`LiteRTModelHandler` copies it to the worker once (from any path
  Beam's ``FileSystems`` read) and runs it with one interpreter thread, one
  worker per core; the worker never imports TensorFlow.

``RunInference`` loads the model once per worker process and reuses it for
every batch. This module imports TensorFlow only inside
:class:`SavedModelHandler`, so that unpickling a LiteRT handler in a worker
does not.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler

from clinical_ner.annotators.base import Annotator
from clinical_ner.artifacts import litert as layout
from clinical_ner.batch import metrics
from clinical_ner.batch.worker_memory import release_free_memory
from clinical_ner.errors import ModelError, messages_withheld
from clinical_ner.quiet import quiet_tensorflow
from clinical_ner.text.document import Entity
from clinical_ner.text.tokenizer import count_tokens

Note = tuple[Any, str]
AnnotatedNote = tuple[Any, list[Entity]]

# RunInference hands the handler batches of about this many characters; the
# handler sorts each by length and runs sub-batches of at most
# NERConfig.annotate_batch_size notes and annotate_max_batch_characters
# characters (defaults 256 and 100,000), as Annotator.annotate does. A larger batch groups lengths better; this one
# holds about 2,500 one-sentence notes.
DEFAULT_RUN_INFERENCE_CHARACTERS = 400_000


def _note_weight(note: Note) -> int:
    # At least 1, so that a batch of empty notes still fills up.
    return len(note[1]) + 1


class AnnotatorHandler(ModelHandler[Note, AnnotatedNote, Annotator]):
    """What both handlers share: batching by characters, ``annotate``, the metrics."""

    #: The metric that counts the worker models of this runtime.
    workers_metric = ""

    def __init__(self, *, batch_size: int | None = None,
                 max_batch_characters: int | None = None,
                 run_inference_characters: int = DEFAULT_RUN_INFERENCE_CHARACTERS) -> None:
        super().__init__(min_batch_size=run_inference_characters,
                         max_batch_size=run_inference_characters,
                         element_size_fn=_note_weight)
        self.batch_size = batch_size
        self.max_batch_characters = max_batch_characters
        self._counters = {name: metrics.counter(name)
                          for name in (metrics.NOTES, metrics.TOKENS, metrics.ENTITIES,
                                       self.workers_metric)}
        # Models already counted in workers_metric (a counter cannot be
        # incremented in load_model: Beam has no metrics context there).
        self._counted_models: set[int] = set()

    def run_inference(self, batch: Sequence[Note], model: Annotator,
                      inference_args: Optional[dict[str, Any]] = None
                      ) -> Iterable[AnnotatedNote]:
        texts = [text for _, text in batch]
        with messages_withheld(f"annotating {len(texts)} note(s)"):
            entities = model.annotate(texts, self.batch_size, self.max_batch_characters)
        if id(model) not in self._counted_models:
            self._counted_models.add(id(model))
            self._counters[self.workers_metric].inc()
        self._counters[metrics.NOTES].inc(len(texts))
        self._counters[metrics.TOKENS].inc(sum(count_tokens(text) for text in texts))
        self._counters[metrics.ENTITIES].inc(sum(len(found) for found in entities))
        return [(note_id, found) for (note_id, _), found in zip(batch, entities)]

    def get_num_bytes(self, batch: Sequence[Note]) -> int:
        # The default pickles the whole batch just to measure it.
        return sum(len(text) for _, text in batch)

    def get_metrics_namespace(self) -> str:
        return "clinical_ner_inference"


class SavedModelHandler(AnnotatorHandler):
    """Annotates ``(id, text)`` pairs into ``(id, entities)`` inside ``RunInference``.

    ``model_path`` is checked here, in the process that builds the pipeline,
    so that a path that is not an export fails before any worker starts.
    Entities are :class:`clinical_ner.text.document.Entity` objects, the same as
    ``Annotator.annotate`` gives. It counts the Beam metrics
    ``clinical_ner/notes``, ``tokens``, ``entities`` and
    ``workers_tensorflow``.

    Example::

        import apache_beam as beam
        from apache_beam.ml.inference.base import RunInference

        with beam.Pipeline() as pipeline:
            (pipeline
             | beam.Create([("note-1", "CT of the chest showed a 2 cm nodule.")])
             | RunInference(SavedModelHandler("models/clinical_ner/1"))
             | beam.Map(print))
    """

    workers_metric = metrics.WORKERS_TENSORFLOW

    def __init__(self, model_path: str, **options) -> None:
        from clinical_ner.annotators.saved_model_annotator import resolve_loadable_export

        super().__init__(**options)
        self.export_dir = resolve_loadable_export(model_path)

    def load_model(self) -> Annotator:
        quiet = logging.getLogger().getEffectiveLevel() > logging.INFO
        if quiet and "tensorflow" not in sys.modules:
            # A worker process (multi_processing) imports TensorFlow here, and its C++
            # start-up lines went to stderr of a quiet run; the process that built the
            # pipeline imported it already. Logging above INFO is the command's level
            # (runner._worker_log_options): --verbose keeps the lines, as in the command.
            quiet_tensorflow()
        from clinical_ner.annotators.saved_model_annotator import SavedModelAnnotator

        return SavedModelAnnotator(self.export_dir)


class LiteRTModelHandler(AnnotatorHandler):
    """:class:`SavedModelHandler` for a LiteRT export: no TensorFlow in the workers.

    ``model_path`` is a LiteRT export folder, local or on any file system
    Beam's ``FileSystems`` read (``gs://``, ``s3://``, ``hdfs://`` with the
    matching Beam extra); it is checked here. Each worker process copies it
    to a local temporary folder once (unless it is local) and loads it with
    one interpreter on one thread (``LiteRTAnnotator.load(..., workers=1)``):
    the runner gives each core a worker process of its own. It counts
    ``clinical_ner/workers_litert`` instead of ``workers_tensorflow``.
    """

    workers_metric = metrics.WORKERS_LITERT

    def __init__(self, model_path: str, **options) -> None:
        super().__init__(**options)
        self.model_path = model_path.rstrip("/") or model_path
        if not is_litert_path(self.model_path):
            raise layout.LiteRTExportError(
                f"{model_path}: not a LiteRT export (no {layout.MANIFEST_FILE})")
        layout.check_complete(self.model_path, exists=_exists)
        from clinical_ner.annotators.litert.annotator import read_export

        # Every file checked here, before a worker starts: a damaged one failed in
        # each worker, with Beam's traceback and the job's temporary folders left behind.
        read_export(local_copy(self.model_path))

    def load_model(self) -> Annotator:
        from clinical_ner.annotators.litert.annotator import LiteRTAnnotator

        # The worker has parsed and shuffled notes by now: 20-35 MB of free
        # heap that would otherwise sit under the model (benchmarks/README.md).
        release_free_memory()
        return LiteRTAnnotator.load(local_copy(self.model_path), workers=1)


def is_litert_path(path: str) -> bool:
    """Whether ``path`` (anything Beam's ``FileSystems`` read) is a LiteRT export folder.

    An incomplete one counts (:class:`LiteRTModelHandler` names what it lacks).
    """
    return layout.looks_like_litert_export(path, exists=_exists)


def _exists(path: str) -> bool:
    try:
        return FileSystems.exists(path)
    # A scheme no installed Beam file system handles, or one without its client (gs://
    # without apache-beam[gcp]): no LiteRT export the workers could copy; TensorFlow may
    # still read a SavedModel there.
    except (ValueError, RuntimeError):
        return False


def handler_for(model_path: str, **options) -> AnnotatorHandler:
    """:class:`LiteRTModelHandler` for a LiteRT export, else :class:`SavedModelHandler`.

    ``options`` are the handlers' ``batch_size``, ``max_batch_characters``
    and ``run_inference_characters``.
    """
    if is_litert_path(model_path):
        return LiteRTModelHandler(model_path, **options)
    return SavedModelHandler(model_path, **options)


_copies: dict[str, str] = {}
_copies_lock = threading.Lock()


def local_copy(path: str) -> str:
    """A local folder holding the export at ``path``: ``path`` itself if local, else a copy.

    Copied once per process (later calls return the same folder); the copy
    lives in a temporary folder for the process's life.
    """
    if os.path.isdir(path):
        return path
    with _copies_lock:
        if path not in _copies:
            target = tempfile.mkdtemp(prefix="clinical-ner-litert-")
            match = FileSystems.match([FileSystems.join(path, "*")])[0]
            if not match.metadata_list:
                # The handler checked it complete: it went after the run started.
                raise ModelError(f"{path}: the LiteRT export is gone (moved or removed "
                                 "after the run started)")
            for metadata in match.metadata_list:
                name = metadata.path.rstrip("/").rsplit("/", 1)[-1]
                with FileSystems.open(metadata.path,
                                      compression_type=CompressionTypes.UNCOMPRESSED) as source, \
                        open(os.path.join(target, name), "wb") as copy:
                    while chunk := source.read(1 << 20):
                        copy.write(chunk)
            _copies[path] = target
        return _copies[path]
