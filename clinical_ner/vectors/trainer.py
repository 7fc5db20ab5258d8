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

Each step is its own module: :mod:`~clinical_ner.vectors.inputs` (which files, their
lines), :mod:`~clinical_ner.vectors.tokens` (the token file and counts),
:mod:`~clinical_ner.vectors.gensim_training` and :mod:`~clinical_ner.vectors.writer`; this
module runs them and owns the temporary file. A line break always ends a sentence.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from clinical_ner.errors import (
    ClinicalNERError, ConfigError, DataFormatError, check_choice, check_integer,
    check_output_file, check_output_folder, os_reason, setting_name)
from clinical_ner.vectors.extras import require_extra
from clinical_ner.vectors.gensim_training import METHODS, train_keyed_vectors
from clinical_ner.vectors.inputs import (
    DEFAULT_TEXT_FIELD, JSON_SUFFIXES, is_json_lines, text_files,
)
from clinical_ner.vectors.tokens import tokenise_to
from clinical_ner.vectors.writer import write_vectors

TEMP_PREFIX = "clinical-ner-vectors-"
#: Reading processes and gensim threads at most: far above any core count it helps with.
MAX_WORKERS = 1024
#: gensim keeps the window and the epochs in C ints: a larger value made its training
#: threads fail while the command waited for them forever.
MAX_GENSIM_INT = 2**31 - 1
#: Far above any useful vector size (published vectors have 50 to 1,000); a larger one ran
#: out of memory after the whole input had been read.
MAX_DIM = 10_000


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


def train_vectors(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    method: str = "word2vec",
    dim: int = 100,
    window: int = 5,
    epochs: int = 5,
    min_count: int = 5,
    workers: int = 2,
    text_field: str | None = None,
    seed: int = 42,
    tmp_dir: str | Path | None = None,
    progress: bool = True,
) -> VectorsReport:
    """Train word vectors on the unlabeled text of ``inputs`` (a path or several) and write
    them to ``output``.

    ``method``: ``word2vec`` (skip-gram, negative sampling) or ``fasttext`` (skip-gram with
    character n-grams; only the kept words' vectors are written). Words seen fewer than
    ``min_count`` times get no vector: rare words (names, identifiers) stay out of the file.
    With ``workers > 1`` gensim's threads make runs differ slightly from one to the next.
    ``text_field`` is the text's field in JSON lines inputs (default ``text``); given, at
    least one input must be JSON lines.

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
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]  # one path: a string was read as its characters' paths
    check_choice("method", method, METHODS)
    check_integer("dim", dim, maximum=MAX_DIM)
    for name, value in (("window", window), ("epochs", epochs)):
        check_integer(name, value, maximum=MAX_GENSIM_INT)
    check_integer("min_count", min_count)
    # gensim seeds NumPy, whose seeds are unsigned 32-bit.
    check_integer("seed", seed, minimum=0, maximum=2**32 - 1)
    # Each worker is a reading process (100,000 ran the machine out of memory).
    check_integer("workers", workers, maximum=MAX_WORKERS)
    models = require_extra("gensim.models")
    output = Path(output)
    files = text_files(inputs)
    if text_field is None:
        text_field = DEFAULT_TEXT_FIELD
    elif not any(is_json_lines(file) for file in files):
        # Else a JSON lines file named .txt trains on its JSON syntax, keys and all, unnoticed.
        raise ConfigError(f"{setting_name('text_field')} {text_field!r} names a field of JSON "
                          f"lines, but no input is JSON lines (named {', '.join(JSON_SUFFIXES)}, "
                          "also compressed); any other file is read as plain text")
    # Checked before reading and training, which may take an hour.
    check_output_file("output", output, inputs=files)
    if not os.access(output.parent, os.W_OK):
        raise ConfigError(f"{setting_name('output')} {output}: the folder {output.parent} is not "
                          "writable")
    check_output_folder("tmp_dir", tmp_dir)
    if tmp_dir is not None and not Path(tmp_dir).is_dir():
        raise ConfigError(f"{setting_name('tmp_dir')} {tmp_dir}: the folder for the temporary "
                          "token file does not exist")

    try:
        handle = tempfile.NamedTemporaryFile(  # mode 0600, like every mkstemp file
            "w", encoding="utf-8", prefix=TEMP_PREFIX, suffix=".txt", dir=tmp_dir, delete=False)
    except OSError as error:
        raise _token_file_error(tmp_dir, error) from None
    temp_path = Path(handle.name)
    try:
        try:
            with handle:
                started = time.perf_counter()
                counts, totals = tokenise_to(handle, files, text_field, workers, progress)
                read_seconds = time.perf_counter() - started
        except OSError as error:
            # The inputs' read errors are DataFormatErrors: this is the token file's (a full
            # disk), not a bug.
            raise _token_file_error(temp_path.parent, error) from None
        if not counts:
            raise DataFormatError(", ".join(str(i) for i in inputs), None, "no text to train on")
        kept = {word: count for word, count in counts.items() if count >= min_count}
        if not kept:
            raise ConfigError(f"no word occurs {min_count} times or more "
                              f"({setting_name('min_count')}); more text is needed")
        started = time.perf_counter()
        wv = train_keyed_vectors(models, method, temp_path, counts, totals, dim, window, epochs, min_count,
                    workers, seed, progress)
        train_seconds = time.perf_counter() - started
    finally:
        temp_path.unlink(missing_ok=True)
    try:
        write_vectors(output, wv.index_to_key, wv.vectors)
    except OSError as error:
        raise ClinicalNERError(f"output {output}: cannot write the vectors "
                               f"({os_reason(error)})") from None
    return VectorsReport(
        output=output, files=len(files), lines=totals["lines"], sentences=totals["sentences"],
        tokens=totals["tokens"], distinct_words=len(counts), vectors=len(wv.index_to_key),
        dim=dim, kept_token_share=sum(counts[w] for w in wv.index_to_key) / totals["tokens"],
        read_seconds=read_seconds, train_seconds=train_seconds,
        temp_file_deleted=not temp_path.exists(),
    )


def _token_file_error(folder: str | Path | None, error: OSError) -> ClinicalNERError:
    """Writing the temporary token file in ``folder`` (None: the system's) failed."""
    where = tempfile.gettempdir() if folder is None else folder
    return ClinicalNERError(
        f"{where}: cannot write the temporary token file "
        f"({os_reason(error)}); it takes about as much space as the "
        f"uncompressed text (see {setting_name('tmp_dir')})")
