"""The lean runtime: a LiteRT export annotated without TensorFlow or Keras.

``clinical-ner export MODEL --format litert --output DIR`` (which needs
TensorFlow) writes the network as a ``.tflite`` file of builtin ops and,
beside it, what the rest of the pipeline needs as data (see
:mod:`clinical_ner.artifacts.litert`). This package runs that directory with
the Python tokenizer (:mod:`clinical_ner.text.tokenizer`), a NumPy featurizer, the
LiteRT interpreter (the ``ai-edge-litert`` package) and a NumPy CRF; nothing
in it imports TensorFlow. ``ClinicalNER.load(DIR)`` returns a
:class:`clinical_ner.annotators.litert.annotator.LiteRTAnnotator` for such a directory.
"""
