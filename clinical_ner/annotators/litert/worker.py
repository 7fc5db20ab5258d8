"""A LiteRT worker process: what ``processes.WorkerProcesses`` starts.

It loads the export with one interpreter (of the caller's ``num_threads``),
answers ``(READY, None)``, then reads ``(texts, batch_size,
max_batch_characters)`` requests in pickle frames from standard input and
answers each with ``(OK, entities)`` or ``(ERROR, message)``, until its
input ends.
"""
from __future__ import annotations

import os
import pickle
import sys
from typing import Any

from clinical_ner.annotators.litert.annotator import LiteRTAnnotator
from clinical_ner.annotators.litert.processes import ERROR, OK, READY
from clinical_ner.errors import ClinicalNERError


def serve(directory: str, num_threads: int = 1) -> int:
    """A worker: load the export, then annotate each group it reads until its input ends."""
    # Answers go to a copy of standard output; anything else written to file
    # descriptor 1 (LiteRT's native messages) goes to standard error instead.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    try:
        annotator = LiteRTAnnotator.load(directory, num_threads=num_threads, workers=1)
    except Exception as error:  # noqa: BLE001  (said to the parent, which raises it)
        pickle.dump((ERROR, _message(error)), answers)
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
            answer = (ERROR, _message(error))
        pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


def _message(error: Exception) -> str:
    """What the parent raises (as a ClinicalNERError, which the CLI prints whole).

    Our errors name files and fields, never the text; another exception's
    message might quote it (the texts were checked in the parent, so it is a
    bug), so only its type goes, as the CLI says of an internal error.
    """
    if isinstance(error, ClinicalNERError):
        return str(error)
    return (f"a LiteRT worker process failed ({type(error).__name__}); load the export "
            "with workers=1 and run again for the traceback")
