"""Pretrained word vectors: GloVe / word2vec / fastText text files and word2vec binary."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from clinical_ner.config import EMBEDDINGS_FORMATS as FORMATS
from clinical_ner.errors import DataFormatError
from clinical_ner.text.tokenizer import normalize_word

logger = logging.getLogger(__name__)

# What the numbers of a text vectors file are written with.
_TEXT_VECTOR_BYTES = b"0123456789.-+eE \r\n"


def load_embeddings(path: str | Path, format: str = "auto") -> tuple[list[str], np.ndarray]:
    """Read word vectors and key them by :func:`clinical_ner.text.tokenizer.normalize_word`.

    ``format``: ``text`` covers GloVe (no header), word2vec text and fastText
    ``.vec`` (a ``count dim`` header line, detected automatically);
    ``word2vec-binary`` is the original word2vec ``.bin``; ``auto`` picks
    binary for a ``.bin`` suffix, text otherwise.

    When several words normalise to the same key (``The`` and ``the``,
    ``1990`` and ``2010``), the first one in the file wins: these files list
    frequent words first, so the key gets the vector of its most frequent form.

    Returns ``(words, vectors)`` with ``vectors.shape == (len(words), dim)``.

    Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "v.txt")
    >>> _ = open(path, "w").write("the 0.1 0.2\\nThe 0.3 0.4\\n2010 1 2\\n")
    >>> words, vectors = load_embeddings(path)
    >>> words, vectors.shape
    (['the', '0000'], (2, 2))
    """
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"unknown embeddings format {format!r}; expected one of {FORMATS}")
    if path.is_dir():
        raise DataFormatError(str(path), None, "a folder, not an embeddings file")
    if not path.is_file():
        raise DataFormatError(str(path), None, "embeddings file not found")
    if format == "word2vec-binary" or (format == "auto" and path.suffix == ".bin"):
        pairs = _read_word2vec_binary(path)
    else:
        pairs = _read_text(path)
    words: list[str] = []
    vectors: list[np.ndarray] = []
    seen: set[str] = set()
    dim = None
    for line, word, vector in pairs:
        if dim is None:
            dim = len(vector)
        elif len(vector) != dim:
            raise DataFormatError(
                str(path), line, f"vector has {len(vector)} dimensions, expected {dim}"
            )
        if not np.isfinite(vector).all():
            # A NaN or infinite value makes every loss NaN.
            raise DataFormatError(str(path), line, "vector values are not all finite numbers")
        key = normalize_word(word)
        if key and key not in seen:
            seen.add(key)
            words.append(key)
            vectors.append(vector)
    if not words:
        raise DataFormatError(str(path), None, "no word vectors found")
    logger.info("read %d word vectors of dimension %d from %s", len(words), dim, path)
    return words, np.stack(vectors).astype(np.float32)


def _read_text(path: Path):
    # Bytes, decoded line by line, so that an error names its line.
    with open(path, "rb") as handle:
        header_count = header_dim = None
        rows = 0
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFormatError(str(path), number, "not UTF-8 text (invalid byte at "
                                      f"column {error.start + 1})") from None
            parts = line.rstrip("\r\n").rstrip(" ").split(" ")
            # isascii: int() would read "²" as well as "2" ("²".isdigit() is true) and fail.
            if number == 1 and len(parts) == 2 and all(
                    p.isascii() and p.isdigit() and len(p) <= 18 for p in parts):
                # word2vec / fastText header: "count dim"
                header_count, header_dim = int(parts[0]), int(parts[1])
                continue
            if len(parts) < 2:
                if not line.strip():
                    continue
                raise DataFormatError(str(path), number, "expected a word followed by numbers")
            try:
                vector = np.asarray(parts[1:], dtype=np.float32)
            except ValueError:
                raise DataFormatError(
                    str(path), number, "vector values are not all numbers"
                ) from None
            if header_dim is not None and len(vector) != header_dim:
                raise DataFormatError(str(path), number, f"vector has {len(vector)} "
                                      f"dimensions, but the header (line 1) says {header_dim}")
            rows += 1
            yield number, parts[0], vector
    if header_count is not None and rows < header_count:
        # A copy cut short at a line break reads as a smaller, valid file. (Rows beyond the
        # count, words added to a file, have always been read.)
        raise DataFormatError(str(path), None, f"{rows} vectors, but the header (line 1) says "
                              f"{header_count} (a file cut short?)")


def _read_word2vec_binary(path: Path):
    with open(path, "rb") as handle:
        header = handle.readline().split()
        if len(header) != 2 or not all(part.isdigit() and len(part) <= 18 for part in header):
            raise DataFormatError(str(path), 1, "word2vec binary header 'count dim' expected")
        count, dim = int(header[0]), int(header[1])
        for index in range(count):
            word = bytearray()
            while True:
                char = handle.read(1)
                if not char:
                    raise DataFormatError(str(path), None, f"file ends inside vector {index + 1}")
                if char == b" ":
                    break
                if char != b"\n":
                    word.extend(char)
            data = handle.read(4 * dim)
            if len(data) != 4 * dim:
                raise DataFormatError(str(path), None, f"file ends inside vector {index + 1}")
            if index == 0 and not data.strip(_TEXT_VECTOR_BYTES):
                # Written digits where binary floats belong: a text file named .bin.
                raise DataFormatError(str(path), None, "a text vectors file, not word2vec "
                                      "binary; read it with --embeddings-format text")
            try:
                text = word.decode("utf-8")
            except UnicodeDecodeError:
                raise DataFormatError(str(path), None, f"word {index + 1} is not UTF-8") from None
            # Binary files have no lines; report the entry number instead.
            yield index + 1, text, np.frombuffer(data, dtype="<f4")


def load_embedding_files(
    paths: Sequence[str | Path], format: str = "auto"
) -> tuple[list[str], np.ndarray]:
    """Read one or several vector files; several are concatenated, word by word.

    A word's vector is its vector from the first file, then from the second, and
    so on (dimension: the sum of the files'). Where a file lacks the word, its
    part is zeros: "not in this file" is then one consistent value the model can
    learn, while a random part would look like a real vector. Words keep the
    first file's order, then each later file's new words in that file's order.
    One file gives exactly :func:`load_embeddings`.

    Example:
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, "a.txt"), "w").write("fever 1 2\\ncough 3 4\\n")
    >>> _ = open(os.path.join(folder, "b.txt"), "w").write("1 1\\ncough 5\\n")
    >>> words, vectors = load_embedding_files(
    ...     [os.path.join(folder, "a.txt"), os.path.join(folder, "b.txt")])
    >>> words, vectors.tolist()
    (['fever', 'cough'], [[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]])
    """
    if not paths:
        raise ValueError("no embeddings files given")
    loaded = [load_embeddings(path, format) for path in paths]
    if len(loaded) == 1:
        return loaded[0]
    words: list[str] = []
    row_of: dict[str, int] = {}
    for file_words, _ in loaded:
        for word in file_words:
            if word not in row_of:
                row_of[word] = len(words)
                words.append(word)
    dims = [vectors.shape[1] for _, vectors in loaded]
    table = np.zeros((len(words), sum(dims)), dtype=np.float32)
    start = 0
    for (file_words, vectors), dim in zip(loaded, dims):
        rows = np.fromiter((row_of[word] for word in file_words), dtype=np.int64,
                           count=len(file_words))
        table[rows, start:start + dim] = vectors
        start += dim
    logger.info("concatenated %d files: %d words, dimension %d", len(loaded), len(words),
                sum(dims))
    return words, table
