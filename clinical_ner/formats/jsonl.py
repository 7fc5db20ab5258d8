"""Documents given on the command line, and the JSON lines written for them.

``clinical-ner predict`` and ``clinical-ner client`` read documents and write
results the same way, so that their outputs can be compared line by line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterable, TextIO

from clinical_ner.text.document import Entity
from clinical_ner.errors import DataFormatError, os_reason


class FileStem(str):
    """The name of a document read from a file: the file's stem; ``path`` is the file as given.

    A ``str``, so that a writer names the document's outputs by it as by any
    name; the writers that must tell a text from a file (the i2b2 writer's
    ``.txt`` copy) or two files of one stem apart (the HTML page's headings)
    look at its type and ``path``.
    """

    path: Path

    def __new__(cls, path: Path) -> "FileStem":
        name = super().__new__(cls, path.stem)
        name.path = path
        return name

    def __reduce__(self) -> tuple:
        # Copied or pickled as made: from its path, not its text (the stem).
        return FileStem, (self.path,)


def decode_document(source: str, data: bytes) -> str:
    """UTF-8 text of a document, without newline translation (offsets match the file)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(
            source, None, f"not UTF-8 (invalid byte at offset {error.start})"
        ) from None


def read_documents(texts: Iterable[str], paths: Iterable[str | Path] | None
                   ) -> list[tuple[str, str]]:
    """``(name, text)`` of the texts given as arguments, then of the files; stdin if neither.

    Arguments are named ``text-1``, ``text-2``, ...; files by their stem (a
    :class:`FileStem`). An
    argument that was not UTF-8 (Python keeps its bytes as lone surrogates,
    which no output can encode) is refused as a file that is not UTF-8 is.
    """
    documents = [(f"text-{number}", text) for number, text in enumerate(texts, start=1)]
    for number, (_, text) in enumerate(documents, start=1):
        try:
            text.encode("utf-8")
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
        documents.append((FileStem(path), decode_document(str(path), data)))
    if not documents:
        documents.append(("stdin", decode_document("stdin", sys.stdin.buffer.read())))
    return documents


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
    record = {**fields, "entities": [entity.to_dict() for entity in entities]}
    return json.dumps(record, ensure_ascii=False) + "\n"
