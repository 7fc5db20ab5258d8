"""Notes read for batch annotation, and the JSON lines written for them (no Beam here).

Every input note becomes exactly one of two things: a note ``(id, text)`` to
annotate, or a :class:`NoteError` (its id when known, where it came from, and
why), never both. Reasons name positions and sizes, never note text.

- A text file is one note; its id is its path. Its bytes must be UTF-8.
- A JSON lines file holds one note a line: an object with an id field (a
  string or an integer) and a text field (a string), each once. Blank lines
  are not notes and are skipped.
- Lone surrogates (JSON ``"\\ud800"`` escapes) in a text become U+FFFD,
  as the model reads them (offsets unchanged); in an id they are an error.
- A note larger than ``max_note_bytes`` (a text file's size, a JSON line's
  length) is set aside unread.
"""
from __future__ import annotations

import codecs
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Union

from clinical_ner.text.document import Entity
from clinical_ner.formats.jsonl import decode_document, entities_json_line, json_line
from clinical_ner.errors import DataFormatError
from clinical_ner.export.signatures import replace_lone_surrogates
from clinical_ner.untrusted_json import (
    RepeatedKeyError,
    UntrustedJSONError,
    json_kind,
    parse_untrusted_json,
)

TEXT_FORMAT = "text"
JSONL_FORMAT = "jsonl"
INPUT_FORMATS = (TEXT_FORMAT, JSONL_FORMAT)
# 2.5 times the 2 MB notes the in-process API is tested with; the reading
# worker holds one whole note in memory and the model one note at a time.
DEFAULT_MAX_NOTE_BYTES = 5_000_000
# The most a line may be read up to: readline takes a C ssize_t, and _lines asks for two
# bytes more (a CRLF). A larger limit failed in the reading worker (OverflowError).
MAX_NOTE_BYTES = sys.maxsize - 2
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class NoteError:
    """A note that was not annotated: ``id`` (``None`` if unreadable), ``source``, ``reason``."""

    id: Union[str, int, None]
    source: str
    reason: str

    def to_json_line(self) -> bytes:
        """``{"id", "source", "reason"}`` as one UTF-8 JSON line, without the newline."""
        record = {"id": self.id, "source": self.source, "reason": self.reason}
        return json_line(record).rstrip("\n").encode("utf-8")


Note = tuple[Any, str]
ReadResult = Union[Note, NoteError]


def result_json_line(note_id: Any, entities: list[Entity]) -> bytes:
    """``{"id", "entities"}`` as one UTF-8 JSON line (no newline); entities as ``predict`` writes them."""
    return entities_json_line({"id": note_id}, entities).rstrip("\n").encode("utf-8")


def note_from_file(path: str, size: int, handle: BinaryIO, max_note_bytes: int) -> ReadResult:
    """The note in a text file (``size`` bytes, read from ``handle`` unless too large)."""
    if size > max_note_bytes:
        return NoteError(path, path, _too_large(size, max_note_bytes))
    try:
        return path, decode_document(path, handle.read())
    except DataFormatError as error:
        return NoteError(path, path, error.problem)


def notes_from_json_lines(source: str, handle: BinaryIO, id_field: str, text_field: str,
                          max_note_bytes: int) -> Iterator[ReadResult]:
    """The notes of a JSON lines file, and a :class:`NoteError` for each bad line.

    A bad line's ``source`` is ``<path>:<line number>``; its id is the id
    field when the line could be read that far.
    """
    for number, line, length in _lines(handle, max_note_bytes):
        where = f"{source}:{number}"
        if number == 1 and line is not None:
            # A byte-order mark (Windows tools write one) belongs to the file, not the note.
            line = line.removeprefix(codecs.BOM_UTF8)
        if line is None:
            yield NoteError(None, where, _too_large(length, max_note_bytes))
        elif line.strip():
            yield _note_from_json_line(where, line, id_field, text_field)


def _note_from_json_line(where: str, line: bytes, id_field: str, text_field: str) -> ReadResult:
    try:
        record = parse_untrusted_json(decode_document(where, line),
                                      unique_keys=(id_field, text_field))
    except DataFormatError as error:
        return NoteError(None, where, error.problem)
    except RepeatedKeyError as error:
        # json.loads would keep the last value: maybe not the note or id meant.
        return NoteError(None, where, f"field '{error.key}' appears twice in one object")
    except UntrustedJSONError as error:
        return NoteError(None, where, f"not JSON ({error.located(' at column {colno}')})")
    if not isinstance(record, dict):
        return NoteError(None, where, f"not a JSON object ({_json_type(record)})")
    note_id = record.get(id_field)
    if note_id is None or isinstance(note_id, bool) or not isinstance(note_id, (str, int)):
        return NoteError(None, where, f"field '{id_field}' is {_describe(note_id, id_field in record)}, "
                                      "expected a string or an integer")
    if isinstance(note_id, str) and replace_lone_surrogates(note_id) != note_id:
        return NoteError(None, where, f"field '{id_field}' holds a lone surrogate (a "
                                      "\\ud800-\\udfff escape), which is not Unicode text")
    text = record.get(text_field)
    if not isinstance(text, str):
        return NoteError(note_id, where, f"field '{text_field}' is "
                                         f"{_describe(text, text_field in record)}, expected a string")
    # Beam cannot encode lone surrogates; the model reads them as U+FFFD anyway.
    return note_id, replace_lone_surrogates(text)


def _describe(value: Any, present: bool) -> str:
    return _json_type(value) if present else "missing"


def _json_type(value: Any) -> str:
    """What ``value`` was in the JSON text, in JSON's words ("an array", not "a list")."""
    return json_kind(value, array="an array")


def _too_large(size: int, max_note_bytes: int) -> str:
    return f"note of {size} bytes is over the limit of {max_note_bytes} bytes (--max-note-bytes)"


def _lines(handle: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """``(line number, line, length)``; ``line`` is None for a line over ``max_bytes``.

    An over-long line is skipped in chunks, never held whole.
    """
    number = 0
    while True:
        line = handle.readline(max_bytes + 2)  # room for "\r\n"
        if not line:
            return
        number += 1
        content = line.rstrip(b"\r\n") if line.endswith(b"\n") else line
        if len(content) <= max_bytes:
            yield number, content, len(content)
            continue
        length = len(line)
        while not line.endswith(b"\n"):
            line = handle.readline(_CHUNK_BYTES)
            if not line:
                break
            length += len(line)
        # The length of the note, as for a line within the limit: without its line end.
        yield number, None, length - (len(line) - len(line.rstrip(b"\r\n")))
