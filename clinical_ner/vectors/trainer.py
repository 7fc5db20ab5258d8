"""Word vectors trained on the user's own unlabeled notes (``clinical-ner vectors``).

The text is tokenised exactly as the model tokenises (:func:`clinical_ner.text.tokenizer.sentence_token_texts`,
the tokens and sentences of :func:`clinical_ner.text.tokenizer.split_sentences`) and normalised exactly
as the model looks words up (:func:`clinical_ner.text.tokenizer.normalize_word`: lowercase, digits to
``0``), so every vector written is found by ``clinical-ner train --embeddings``.

How it runs, and why:

1. **Read and tokenise** every input once, line by line (a corpus may be larger than
   memory), in ``workers`` processes. The tokens go, one sentence a line, into a temporary
   file, and their counts into a vocabulary. Progress counts input bytes (compressed bytes
   for ``.gz`` / ``.xz``), whose total is known before the start.
2. **Train** with gensim (word2vec or fastText) in its ``corpus_file`` mode, which reads
   that file in C threads without Python's lock; measured here much faster than feeding
   gensim a Python iterator. Progress counts epochs x words, updated after each epoch.
3. **Write** the vectors of the kept words (seen at least ``min_count`` times), most frequent
   first, in the word2vec text format that :func:`clinical_ner.vectors.reader.load_embeddings`
   reads; the file is created readable by its owner only.

The temporary file holds the notes' normalised tokens, i.e. patient text: it is created
readable by its owner only (in ``tmp_dir``, default the system's temporary folder) and
deleted when training ends, fails or is interrupted (Ctrl-C; the CLI turns SIGTERM into the
same exit). Only a process killed outright (SIGKILL, power loss) leaves it behind, as
``clinical-ner-vectors-*.txt``.

Inputs (``inputs``: files or folders): a folder means every ``.txt``, ``.jsonl`` and
``.ndjson`` file below it, also compressed (``.gz``, ``.xz``, ``.bz2``); a file is read
whatever its name. A file whose name ends in ``.jsonl``, ``.ndjson`` or ``.json`` (before
the compression suffix) is JSON lines: one object a line, its text in ``text_field``. Any
other file is text: every line is read, so one document a line and one document a file both
work (a line break always ends a sentence).
"""
from __future__ import annotations

import bz2
import collections
import gzip
import importlib
import json
import logging
import lzma
import multiprocessing
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np

from clinical_ner.errors import ClinicalNERError, ConfigError, DataFormatError
from clinical_ner.text.tokenizer import normalize_word, sentence_token_texts

logger = logging.getLogger(__name__)

METHODS = ("word2vec", "fasttext")
# Decompressing readers over an open raw file (whose position then measures progress).
COMPRESSION = {".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
               ".xz": lzma.LZMAFile, ".bz2": bz2.BZ2File}
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
FOLDER_SUFFIXES = (".txt",) + JSON_SUFFIXES[:2]
LINES_PER_BATCH = 2000
TEMP_PREFIX = "clinical-ner-vectors-"


class MissingExtraError(ClinicalNERError):
    """An optional dependency is not installed."""


@dataclass
class VectorsReport:
    """What a run read, kept and wrote (counts only: never any text)."""

    output: Path
    files: int
    lines: int
    sentences: int
    tokens: int
    distinct_words: int
    vectors: int
    dim: int
    kept_token_share: float  # share of the running tokens whose word got a vector
    read_seconds: float
    train_seconds: float
    temp_file_deleted: bool

    def summary(self) -> str:
        return (
            f"read {self.files} file(s): {self.lines} lines, {self.sentences} sentences, "
            f"{self.tokens} tokens, {self.distinct_words} distinct words "
            f"({self.read_seconds:.0f} s)\n"
            f"trained in {self.train_seconds:.0f} s; wrote {self.vectors} vectors of dimension "
            f"{self.dim} to {self.output} (their words cover {self.kept_token_share:.1%} of "
            f"the tokens)\n"
            f"temporary token file deleted: {'yes' if self.temp_file_deleted else 'NO'}"
        )


def text_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The files to read: files as given, folders expanded (sorted) to their text files."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_text_file(p))
            if not found:
                raise DataFormatError(str(path), None, "no .txt / .jsonl / .ndjson files "
                                      "(also .gz, .xz, .bz2) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataFormatError(str(path), None, "no such file or folder")
    return files


def _content_suffix(path: Path) -> str:
    """The suffix that says what the file holds, under any compression: ``.jsonl`` for
    ``notes.jsonl.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _is_text_file(path: Path) -> bool:
    return _content_suffix(path) in FOLDER_SUFFIXES


def _is_json_lines(path: Path) -> bool:
    return _content_suffix(path) in JSON_SUFFIXES


def _open(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """The decompressed byte stream of ``path``, and the raw file (its position = progress)."""
    raw = open(path, "rb")
    opener = COMPRESSION.get(path.suffix.lower())
    return (opener(raw) if opener else raw), raw


@dataclass
class _Batch:
    path: str
    first_line: int
    lines: list[bytes]
    text_field: str | None  # None: plain text


@dataclass
class _Tokenised:
    block: str  # one sentence a line, tokens separated by spaces
    counts: collections.Counter
    lines: int
    sentences: int
    tokens: int
    error: tuple[str, int, str] | None = None  # (path, line, problem): raised by the parent


def _line_text(batch: _Batch, number: int, raw: bytes) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(batch.path, number,
                              f"not UTF-8 (invalid byte at column {error.start + 1})") from None
    if batch.text_field is None:
        return line
    if not line.strip():
        return ""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataFormatError(batch.path, number,
                              f"not valid JSON (column {error.colno}: {error.msg})") from None
    text = record.get(batch.text_field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise DataFormatError(batch.path, number,
                              f"expected a JSON object whose field {batch.text_field!r} is a "
                              "string (see --text-field)")
    return text


def _tokenise(batch: _Batch) -> _Tokenised:
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


def _batches(files: Sequence[Path], text_field: str, progress) -> Iterator[_Batch]:
    for path in files:
        field = text_field if _is_json_lines(path) else None
        stream, raw = _open(path)
        position = 0
        try:
            lines: list[bytes] = []
            first = 1
            try:
                for number, line in enumerate(stream, start=1):
                    lines.append(line)
                    if len(lines) >= LINES_PER_BATCH:
                        yield _Batch(str(path), first, lines, field)
                        lines, first = [], number + 1
                        position = _advance(progress, raw, position)
            except (OSError, EOFError, lzma.LZMAError) as error:
                raise DataFormatError(str(path), None,
                                      f"cannot read ({type(error).__name__}: corrupt or "
                                      "truncated?)") from None
            if lines:
                yield _Batch(str(path), first, lines, field)
            _advance(progress, raw, position)
        finally:
            stream.close()
            raw.close()


def _advance(progress, raw: IO[bytes], position: int) -> int:
    now = raw.tell()
    if progress is not None:
        progress.update(now - position)
    return now


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{module} is not installed; install the extra: pip install 'clinical-ner[vectors]'"
        ) from None


def _progress_bar(total: int, description: str, unit: str, enabled: bool, **options):
    if not enabled:
        return None
    tqdm = _require("tqdm")
    return tqdm.tqdm(total=total, desc=description, unit=unit, unit_scale=True,
                     dynamic_ncols=True, **options)


def train_vectors(
    inputs: Sequence[str | Path],
    output: str | Path,
    method: str = "word2vec",
    dim: int = 100,
    window: int = 5,
    epochs: int = 5,
    min_count: int = 5,
    workers: int = 2,
    text_field: str = "text",
    seed: int = 42,
    tmp_dir: str | Path | None = None,
    progress: bool = True,
) -> VectorsReport:
    """Train word vectors on the unlabeled text of ``inputs`` and write them to ``output``.

    ``method``: ``word2vec`` (skip-gram, negative sampling) or ``fasttext`` (skip-gram with
    character n-grams; only the kept words' vectors are written). Words seen fewer than
    ``min_count`` times get no vector: rare words (names, identifiers) stay out of the file.
    With ``workers > 1`` gensim's threads make runs differ slightly from one to the next.

    Example:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> notes = os.path.join(folder, "notes.txt")
    >>> _ = open(notes, "w").write("Chest pain. No fever.\\n" * 20)
    >>> report = train_vectors([notes], os.path.join(folder, "v.txt"), dim=8, epochs=1,
    ...                        min_count=5, workers=1, progress=False)
    >>> report.vectors, report.dim, report.temp_file_deleted
    (5, 8, True)
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    for name, value in (("dim", dim), ("window", window), ("epochs", epochs),
                        ("min_count", min_count), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    models = _require("gensim.models")
    output = Path(output)
    files = text_files(inputs)
    if not output.parent.is_dir():
        raise ConfigError(f"{output.parent}: output folder does not exist")

    handle = tempfile.NamedTemporaryFile(  # mode 0600, like every mkstemp file
        "w", encoding="utf-8", prefix=TEMP_PREFIX, suffix=".txt", dir=tmp_dir, delete=False)
    temp_path = Path(handle.name)
    try:
        with handle:
            started = time.perf_counter()
            counts, totals = _tokenise_to(handle, files, text_field, workers, progress)
            read_seconds = time.perf_counter() - started
        if not counts:
            raise DataFormatError(", ".join(str(i) for i in inputs), None, "no text to train on")
        kept = {word: count for word, count in counts.items() if count >= min_count}
        if not kept:
            raise ConfigError(f"no word occurs {min_count} times or more (--min-count); "
                              "more text is needed")
        started = time.perf_counter()
        wv = _train(models, method, temp_path, counts, totals, dim, window, epochs, min_count,
                    workers, seed, progress)
        train_seconds = time.perf_counter() - started
    finally:
        temp_path.unlink(missing_ok=True)
    write_vectors(output, wv.index_to_key, wv.vectors)
    return VectorsReport(
        output=output, files=len(files), lines=totals["lines"], sentences=totals["sentences"],
        tokens=totals["tokens"], distinct_words=len(counts), vectors=len(wv.index_to_key),
        dim=dim, kept_token_share=sum(counts[w] for w in wv.index_to_key) / totals["tokens"],
        read_seconds=read_seconds, train_seconds=train_seconds,
        temp_file_deleted=not temp_path.exists(),
    )


def _tokenise_to(handle: IO[str], files: Sequence[Path], text_field: str, workers: int,
                 progress: bool) -> tuple[collections.Counter, dict]:
    """Write every input's normalised sentences to ``handle``; the word counts and totals."""
    counts: collections.Counter = collections.Counter()
    totals = {"lines": 0, "sentences": 0, "tokens": 0}
    bar = _progress_bar(sum(path.stat().st_size for path in files), "reading", "B", progress)

    def collect(result: _Tokenised) -> None:
        if result.error:
            raise DataFormatError(*result.error)
        handle.write(result.block)
        counts.update(result.counts)
        totals["lines"] += result.lines
        totals["sentences"] += result.sentences
        totals["tokens"] += result.tokens

    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        # At most two batches per worker in flight, in input order: Pool.imap would read
        # the whole input ahead of the workers (no back-pressure), all of it in memory.
        pending: collections.deque = collections.deque()
        for batch in _batches(files, text_field, bar):
            if pool is None:
                collect(_tokenise(batch))
                continue
            pending.append(pool.apply_async(_tokenise, (batch,)))
            if len(pending) >= 2 * workers:
                collect(pending.popleft().get())
        while pending:
            collect(pending.popleft().get())
    finally:
        if pool:
            pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()
    return counts, totals


def _train(models, method: str, corpus: Path, counts: collections.Counter, totals: dict,
           dim: int, window: int, epochs: int, min_count: int, workers: int, seed: int,
           progress: bool):
    """gensim on the token file; the trained ``KeyedVectors``."""
    model_class = models.Word2Vec if method == "word2vec" else models.FastText
    model = model_class(vector_size=dim, window=window, min_count=min_count, workers=workers,
                        sg=1, seed=seed, epochs=epochs)
    # The counts are already known: no second pass over the file to build the vocabulary.
    model.build_vocab_from_freq(counts, corpus_count=totals["sentences"])
    bar = _progress_bar(epochs * totals["tokens"], f"training {method}", "word", progress)
    callbacks = [] if bar is None else [_EpochProgress(bar, totals["tokens"])]
    ticking = _Ticker(bar)
    try:
        model.train(corpus_file=str(corpus), total_words=totals["tokens"], epochs=epochs,
                    callbacks=callbacks)
    finally:
        ticking.stop()
        if bar is not None:
            bar.close()
    return model.wv


class _EpochProgress:
    """A gensim callback: ``corpus_file`` mode reports progress only once per epoch."""

    def __init__(self, bar, words_per_epoch: int) -> None:
        self.bar = bar
        self.words_per_epoch = words_per_epoch

    def on_epoch_begin(self, model) -> None:
        pass

    def on_epoch_end(self, model) -> None:
        self.bar.update(self.words_per_epoch)

    def on_batch_begin(self, model) -> None:
        pass

    def on_batch_end(self, model) -> None:
        pass

    def on_train_begin(self, model) -> None:
        pass

    def on_train_end(self, model) -> None:
        pass


class _Ticker:
    """Refreshes a progress bar every second, so that the elapsed time moves within an epoch."""

    def __init__(self, bar) -> None:
        self._stop = threading.Event()
        self._thread = None
        if bar is not None:
            self._thread = threading.Thread(target=self._run, args=(bar,), daemon=True)
            self._thread.start()

    def _run(self, bar) -> None:
        while not self._stop.wait(1.0):
            bar.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def write_vectors(path: str | Path, words: Sequence[str], vectors: np.ndarray) -> None:
    """The word2vec text format: a ``count dim`` line, then ``word v1 … vd`` per line.

    Written to a temporary name beside ``path`` and renamed, readable by its owner only
    (the words come from patient notes).
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    row = " ".join(["%.6f"] * vectors.shape[1]) + "\n"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(descriptor, "w", encoding="utf-8") as handle:
            handle.write(f"{len(words)} {vectors.shape[1]}\n")
            for word, vector in zip(words, vectors):
                handle.write(word + " " + row % tuple(vector.tolist()))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
