"""Tokenising unlabeled text into the token file gensim trains on, counting words.

Every line is tokenised exactly as the model tokenises
(:func:`clinical_ner.text.tokenizer.sentence_token_texts`) and normalised exactly as the
model looks words up (:func:`clinical_ner.text.tokenizer.normalize_word`), in ``workers``
processes; the sentences go, one a line, tokens separated by spaces, into an open file.
The counts only ever hold counts: errors name the file and line, never the text.
"""
from __future__ import annotations

import collections
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

from clinical_ner.errors import DataFormatError
from clinical_ner.export.signatures import replace_lone_surrogates
from clinical_ner.text.tokenizer import normalize_word, sentence_token_texts
from clinical_ner.untrusted_json import (
    RepeatedKeyError, UntrustedJSONError, parse_untrusted_json)
from clinical_ner.vectors.extras import progress_bar
from clinical_ner.vectors.inputs import LineBatch, line_batches


@dataclass
class _Tokenised:
    block: str  # one sentence a line, tokens separated by spaces
    counts: collections.Counter
    lines: int
    sentences: int
    tokens: int
    error: tuple[str, int, str] | None = None  # (path, line, problem): raised by the parent


def _line_text(batch: LineBatch, number: int, raw: bytes) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(batch.path, number,
                              f"not UTF-8 (invalid byte at column {error.start + 1})") from None
    if batch.text_field is None:
        return line
    if number == 1:
        # A byte-order mark (Windows tools write one) belongs to the file, as in batch input.
        line = line.removeprefix("\ufeff")
    if not line.strip():
        return ""
    try:
        record = parse_untrusted_json(line, unique_keys=(batch.text_field,))
    except RepeatedKeyError:
        # json.loads would keep the last value: maybe not the text meant.
        raise DataFormatError(batch.path, number, f"field {batch.text_field!r} appears twice "
                              "in one object") from None
    except UntrustedJSONError as error:
        raise DataFormatError(batch.path, number,
                              f"not valid JSON ({error.located(' at column {colno}')})") from None
    text = record.get(batch.text_field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise DataFormatError(batch.path, number,
                              f"expected a JSON object whose field {batch.text_field!r} is a "
                              "string (see --text-field)")
    # A JSON "\ud800" is a lone surrogate, which the UTF-8 token file cannot hold; the model
    # reads it as U+FFFD (clinical_ner.export.signatures.encode_text), so the vectors do too.
    return replace_lone_surrogates(text)


def _tokenise(batch: LineBatch) -> _Tokenised:
    """Normalised sentences of one batch of lines (runs in a worker process)."""
    out: list[str] = []
    counts: collections.Counter = collections.Counter()
    lines = sentences = tokens = 0
    for offset, raw in enumerate(batch.lines):
        try:
            text = _line_text(batch, batch.first_line + offset, raw)
        except DataFormatError as error:
            # Exceptions with their own __init__ do not cross process boundaries intact.
            return _Tokenised("", counts, lines, sentences, tokens,
                              (error.path, error.line, error.problem))
        if not text.strip():
            continue
        lines += 1
        # normalize_word maps code points one to one and never changes a code point's
        # tokenizer class (tests/test_vectors.py checks every one), so normalising the
        # whole line first gives the tokens that normalising each token would.
        for sentence in sentence_token_texts(normalize_word(text)):
            counts.update(sentence)
            out.append(" ".join(sentence))
            sentences += 1
            tokens += len(sentence)
    return _Tokenised("\n".join(out) + "\n" if out else "", counts, lines, sentences, tokens)


def _worker_signals() -> None:
    # Ctrl-C reaches every process of the terminal's group: the parent reports it
    # once and stops the workers, which printed a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def tokenise_to(handle: IO[str], files: Sequence[Path], text_field: str, workers: int,
                 progress: bool) -> tuple[collections.Counter, dict]:
    """Write every input's normalised sentences to ``handle``; the word counts and totals."""
    counts: collections.Counter = collections.Counter()
    totals = {"lines": 0, "sentences": 0, "tokens": 0}
    bar = progress_bar(sum(path.stat().st_size for path in files), "reading", "B", progress)

    def collect(result: _Tokenised) -> None:
        if result.error:
            raise DataFormatError(*result.error)
        handle.write(result.block)
        counts.update(result.counts)
        totals["lines"] += result.lines
        totals["sentences"] += result.sentences
        totals["tokens"] += result.tokens

    # The workers take SIGTERM's default action: the command turns SIGTERM into an exit
    # that cleans up, and a forked worker with that handler let a pool's shutdown wait for
    # it forever (seen: a worker blocked on the task queue's lock). An executor, not a
    # multiprocessing.Pool: the command hung on SIGTERM once in CI, likely as
    # Pool.terminate() can stop a worker in the middle of writing a result and then wait for
    # the rest of it; an executor lets the running batches finish and notices a dead worker.
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                initializer=_worker_signals)
            if workers > 1 else None)
    try:
        # At most two batches per worker in flight, in input order: Executor.map would read
        # the whole input ahead of the workers (no back-pressure), all of it in memory.
        pending: collections.deque = collections.deque()
        for batch in line_batches(files, text_field, bar):
            if pool is None:
                collect(_tokenise(batch))
                continue
            pending.append(pool.submit(_tokenise, batch))
            if len(pending) >= 2 * workers:
                collect(pending.popleft().result())
        while pending:
            collect(pending.popleft().result())
    finally:
        if pool:
            # Interrupted, the batches not yet started are dropped; at most one a worker
            # runs to its end (a fraction of a second) before the workers exit.
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    return counts, totals
