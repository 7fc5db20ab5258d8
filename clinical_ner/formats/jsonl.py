"""Documents given on the command line, and the JSON lines written for them.

``clinical-ner predict`` and ``clinical-ner client`` read documents and write
results the same way, so that their outputs can be compared line by line.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, TextIO

from clinical_ner.text.document import Entity
from clinical_ner.errors import DataFormatError, os_reason


# The line breaks of str.splitlines() (and of readers built on it) that JSON does not
# escape: escaped here, so that a note holding one (pasted text) keeps its record on one line.
_LINE_SEPARATORS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028",
                                  "\u2029": "\\u2029"})


@dataclass(frozen=True)
class InputDocument:
    """A document given to ``predict`` or ``client``: its name, its text, and its file.

    ``name`` names the document's outputs: a file's stem, ``text-N`` for the
    N-th text argument, ``stdin``. ``path`` is the file as given, ``None`` for
    a text argument or stdin: the i2b2 writer copies the text of a document
    that had no file, and the HTML page heads two files of one stem by path.
    """

    name: str
    text: str
    path: Path | None = None


def decode_document(source: str, data: bytes) -> str:
    """UTF-8 text of a document, without newline translation (offsets match the file).

    A NUL byte is refused as well: no note holds one, and UTF-16 text without
    a byte-order mark decodes as UTF-8 with a NUL after each ASCII letter,
    which was annotated as such (a NUL splits words: nothing found, or ``C\\x00T``
    found as a test). Errors name the line.
    """
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataFormatError(source, data.count(b"\n", 0, nul) + 1,
                              f"not UTF-8 (NUL byte at offset {nul}: UTF-16 text?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(
            source, data.count(b"\n", 0, error.start) + 1,
            f"not UTF-8 (invalid byte at offset {error.start})"
        ) from None


def read_documents(texts: Iterable[str], paths: Iterable[str | Path] | None
                   ) -> list[InputDocument]:
    """The texts given as arguments, then the files; stdin if neither.

    Arguments are named ``text-1``, ``text-2``, ...; files by their stem. An
    argument that was not UTF-8 (Python keeps its bytes as lone surrogates,
    which no output can encode) is refused as a file that is not UTF-8 is.
    """
    documents = [InputDocument(f"text-{number}", text)
                 for number, text in enumerate(texts, start=1)]
    for number, document in enumerate(documents, start=1):
        try:
            document.text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise DataFormatError(f"text argument {number}", None,
                                  f"not UTF-8 (invalid byte at character {error.start})"
                                  ) from None
    for path in paths or []:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DataFormatError(str(path), None, os_reason(error)) from None
        documents.append(InputDocument(path.stem, decode_document(str(path), data), path))
    if not documents:
        documents.append(InputDocument("stdin", decode_document("stdin", _read_stdin())))
    return documents


def _read_stdin() -> bytes:
    """Standard input's bytes, or a :class:`DataFormatError` naming it if it cannot be read."""
    if sys.stdin is None:  # closed (`<&-`), or a program started without one
        raise DataFormatError("stdin", None, "closed; give the texts as arguments or --input "
                                             "files")
    try:
        return sys.stdin.buffer.read()
    except OSError as error:
        raise DataFormatError("stdin", None, os_reason(error)) from None


def write_json_line(handle: TextIO, text: str, entities: list[Entity]) -> None:
    """``{"text": ..., "entities": [{"start", "end", "text", "label", "confidence"}]}``.

    An entity with an assertion also has ``"assertion"`` and ``"assertion_confidence"``.
    """
    handle.write(entities_json_line({"text": text}, entities))


def entities_json_line(fields: dict[str, Any], entities: list[Entity]) -> str:
    """One JSON line: ``fields``, then ``"entities"``, each entity as ``Entity.to_dict``.

    ``clinical-ner predict`` writes ``{"text": ...}`` first, ``clinical-ner
    batch`` ``{"id": ...}``; the entity objects are the same.
    """
    return json_line({**fields, "entities": [entity.to_dict() for entity in entities]})


def json_line(record: dict[str, Any]) -> str:
    """``record`` as one JSON line (with its newline) that ``str.splitlines()`` keeps whole."""
    return json.dumps(record, ensure_ascii=False).translate(_LINE_SEPARATORS) + "\n"
