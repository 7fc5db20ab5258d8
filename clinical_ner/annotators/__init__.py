"""Every way of annotating a text: the Keras model, a SavedModel export, a LiteRT export.

Each is a :class:`~clinical_ner.annotators.base.Annotator`; ``ClinicalNER.load(path)``
(:mod:`clinical_ner.annotators.load`) picks the one that fits ``path``.
"""
