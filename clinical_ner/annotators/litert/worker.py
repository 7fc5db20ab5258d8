"""A LiteRT worker process: what ``processes.WorkerProcesses`` starts.

It loads the export with one interpreter, answers ``(READY, None)``, then
reads ``(texts, batch_size, max_batch_characters)`` requests in pickle
frames from standard input and answers each with ``(OK, entities)`` or
``(ERROR, message)``, until its input ends.
"""
from __future__ import annotations

import os
import pickle
import sys
from typing import Any

from clinical_ner.annotators.litert.annotator import LiteRTAnnotator
from clinical_ner.annotators.litert.processes import ERROR, OK, READY


def serve(directory: str) -> int:
    """A worker: load the export, then annotate each group it reads until its input ends."""
    # Answers go to a copy of standard output; anything else written to file
    # descriptor 1 (LiteRT's native messages) goes to standard error instead.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    try:
        annotator = LiteRTAnnotator.load(directory, workers=1)
    except Exception as error:  # noqa: BLE001  (said to the parent, which raises it)
        pickle.dump((ERROR, f"{type(error).__name__}: {error}"), answers)
        answers.flush()
        return 1
    pickle.dump((READY, None), answers)
    answers.flush()
    while True:
        try:
            texts, batch_size, max_batch_characters = pickle.load(requests)
        except EOFError:
            return 0
        try:
            answer: tuple[str, Any] = (
                OK, annotator.annotate(texts, batch_size, max_batch_characters))
        except Exception as error:  # noqa: BLE001  (said to the parent, which raises it)
            # Our errors name the field, never the text (clinical text stays out of them).
            answer = (ERROR, f"{type(error).__name__}: {error}")
        pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()
