"""Batch annotation of many notes on Apache Beam (``clinical-ner batch``) and Spark.

- :mod:`clinical_ner.annotators.saved_model_annotator`: load an export, annotate texts (no Beam).
- :mod:`clinical_ner.batch.notes`: reading notes and writing records (no Beam).
- :mod:`clinical_ner.batch.model_handler`: ``SavedModelHandler`` and ``LiteRTModelHandler`` for ``RunInference``.
- :mod:`clinical_ner.batch.transform`: ``AnnotateNotes``, ``(id, text)`` to ``(id, entities)``.
- :mod:`clinical_ner.batch.sources`: ``ReadNotes``, files to notes and errors.
- :mod:`clinical_ner.batch.runner`: ``run_batch``, the whole pipeline.
- :mod:`clinical_ner.batch.worker_memory`: a worker's free heap back to the OS (no Beam).

The Beam modules need ``pip install "clinical-ner[beam]"``.
"""
