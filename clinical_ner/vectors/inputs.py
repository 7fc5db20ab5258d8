"""The unlabeled inputs of ``clinical-ner vectors``: which files to read, and their lines.

``inputs`` are files or folders: a folder means every ``.txt``, ``.jsonl`` and
``.ndjson`` file below it, also compressed (``.gz``, ``.xz``, ``.bz2``); a file is read
whatever its name. A file whose name ends in ``.jsonl``, ``.ndjson`` or ``.json`` (before
the compression suffix) is JSON lines: one object a line, its text in ``text_field``. Any
other file is text: every line is read, so one document a line and one document a file both
work. Lines are read in batches (a corpus may be larger than memory); progress counts input
bytes (compressed bytes for ``.gz`` / ``.xz``), whose total is known before the start.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

from clinical_ner.errors import DataFormatError, irregular_file, os_reason

# Decompressing readers over an open raw file (whose position then measures progress).
COMPRESSION = {".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
               ".xz": lzma.LZMAFile, ".bz2": bz2.BZ2File}
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
FOLDER_SUFFIXES = (".txt",) + JSON_SUFFIXES[:2]
LINES_PER_BATCH = 2000
#: The text's field in JSON lines inputs unless one is named.
DEFAULT_TEXT_FIELD = "text"


def text_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The files to read: files as given, folders expanded (sorted) to their text files.

    Each file once, however often the inputs name it (a file and its folder, two spellings
    of a path, a hard link): its words counted twice would reach ``min_count`` at half
    their count, and a name seen three times would get a vector.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if _is_text_file(p) and not p.is_dir())
            if not found:
                raise DataFormatError(str(path), None, "no .txt / .jsonl / .ndjson files "
                                      "(also .gz, .xz, .bz2) in this folder")
            for file in found:
                _check_regular_file(file)
            files.extend(found)
        elif path.exists() or path.is_symlink():
            _check_regular_file(path)
            files.append(path)
        else:
            raise DataFormatError(str(path), None, "no such file or folder")
    seen: set[tuple[int, int]] = set()
    distinct: list[Path] = []
    for file in files:
        status = file.stat()
        if (status.st_dev, status.st_ino) not in seen:
            seen.add((status.st_dev, status.st_ino))
            distinct.append(file)
    return distinct


def _check_regular_file(path: Path) -> None:
    """Refuse what would be left out without a word (a broken symbolic link: its notes were
    not read) or read until it closes (a named pipe), as ``batch`` does."""
    what = irregular_file(path)
    if what is not None:
        raise DataFormatError(str(path), None, what)


def _content_suffix(path: Path) -> str:
    """The suffix that says what the file holds, under any compression: ``.jsonl`` for
    ``notes.jsonl.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _is_text_file(path: Path) -> bool:
    return _content_suffix(path) in FOLDER_SUFFIXES


def is_json_lines(path: Path) -> bool:
    return _content_suffix(path) in JSON_SUFFIXES


def _open(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """The decompressed byte stream of ``path``, and the raw file (its position = progress)."""
    raw = open(path, "rb")
    opener = COMPRESSION.get(path.suffix.lower())
    return (opener(raw) if opener else raw), raw


@dataclass
class LineBatch:
    """Consecutive lines of one input file, as raw bytes (decoded by the tokeniser)."""

    path: str
    first_line: int
    lines: list[bytes]
    text_field: str | None  # None: plain text


def line_batches(files: Sequence[Path], text_field: str, progress) -> Iterator[LineBatch]:
    """Every line of ``files`` in batches; ``progress`` (a tqdm bar or None) advances by bytes read."""
    for path in files:
        field = text_field if is_json_lines(path) else None
        try:
            stream, raw = _open(path)
        except OSError as error:
            raise DataFormatError(str(path), None, "cannot open "
                                  f"({os_reason(error)})") from None
        position = 0
        try:
            lines: list[bytes] = []
            first = 1
            try:
                for number, line in enumerate(stream, start=1):
                    lines.append(line)
                    if len(lines) >= LINES_PER_BATCH:
                        yield LineBatch(str(path), first, lines, field)
                        lines, first = [], number + 1
                        position = _advance(progress, raw, position)
            except (OSError, EOFError, lzma.LZMAError) as error:
                raise DataFormatError(str(path), None,
                                      f"cannot read ({type(error).__name__}: corrupt or "
                                      "truncated?)") from None
            if lines:
                yield LineBatch(str(path), first, lines, field)
            _advance(progress, raw, position)
        finally:
            stream.close()
            raw.close()


def _advance(progress, raw: IO[bytes], position: int) -> int:
    now = raw.tell()
    if progress is not None:
        progress.update(now - position)
    return now


