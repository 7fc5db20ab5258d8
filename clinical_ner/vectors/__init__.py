"""Word vectors: reading pretrained files (``reader``), and training new ones on unlabeled notes.

Training (``clinical-ner vectors``, :func:`clinical_ner.vectors.trainer.train_vectors`) runs
``inputs`` (which files, their lines) -> ``tokens`` (the token file and word counts) ->
``gensim_training`` -> ``writer``; ``extras`` imports the optional packages it needs.
"""
