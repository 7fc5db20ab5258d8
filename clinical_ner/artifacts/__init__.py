"""What each artifact clinical-ner writes holds on disk, and how to recognise it.

A Keras model directory (``clinical-ner train``), a SavedModel base path of
numbered versions (``clinical-ner export``) and a LiteRT export (``clinical-ner
export --format litert``) are written by ``training/`` and ``export/`` and
read by ``annotators/``, ``serving/`` and ``pretrained/``: their file names
and layout live here, below all of them, so that writer and readers agree
by construction. Nothing here imports TensorFlow at import time.
"""
