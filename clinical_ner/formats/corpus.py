"""What every corpus reader returns and shares: :class:`Corpus`, strict UTF-8, problem logging, file pairing.

The conventions all readers follow are in :mod:`clinical_ner.formats`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clinical_ner.text.document import Document
from clinical_ner.errors import ConfigError, DataFormatError
from clinical_ner.text.tags import OUTSIDE, entity_labels

#: A byte-order mark at the start of a text: the readers drop it (:func:`decode_utf8`).
BYTE_ORDER_MARK = "\ufeff"
_BOM = BYTE_ORDER_MARK.encode("utf-8")
#: Digits an offset or position in an annotation file may have: more than any
#: text holds, and far below Python's limit on int() (4,300 digits), which
#: ended a command with an internal error.
MAX_OFFSET_DIGITS = 100
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
#: What an annotated corpus is, in each format the readers detect.
CORPUS_LAYOUTS = ("a CoNLL file, a folder with txt/ and concept/ subfolders or .txt + .con "
                  "files (i2b2), or a folder of .txt + .ann files (brat)")


@dataclass
class Corpus:
    """What a reader returns.

    ``skipped`` lists the problems that were skipped instead of raised (with
    ``skip_invalid=True``, and brat overlaps and sentence-crossing entities
    always). ``format`` is ``"conll"``, ``"i2b2"`` or ``"brat"``. ``labels``
    are the sorted entity types that occur in the documents' tags.
    """

    documents: list[Document]
    skipped: list[DataFormatError]
    format: str
    labels: list[str]

    @classmethod
    def from_documents(
        cls, documents: list[Document], skipped: list[DataFormatError], format: str
    ) -> Corpus:
        """Build a corpus, collecting its labels from the sentences' tags."""
        labels = entity_labels(
            tag
            for document in documents
            for sentence in document.sentences
            for tag in sentence.tags or ()
        )
        return cls(documents, skipped, format, labels)


class ProblemLog:
    """Raises each problem, or collects it in ``skipped`` when skipping invalid units."""

    def __init__(self, skip_invalid: bool) -> None:
        self.skip_invalid = skip_invalid
        self.skipped: list[DataFormatError] = []

    def report(self, error: DataFormatError) -> None:
        """Raise ``error``, or record it when ``skip_invalid`` is set."""
        if not self.skip_invalid:
            raise error
        self.skipped.append(error)


def check_label_map_entries(label_map: object) -> None:
    """Raise :class:`ConfigError` unless ``label_map`` maps type names onto labels or ``None``.

    The one check of a label map given to a reader. A target that is not a
    string (``5``, a list) used to become a label of that spelling, or a
    ``TypeError``; ``O`` would become an entity type named like the outside
    tag (``B-O``), where dropping the type (``None``) was meant.
    """
    if not isinstance(label_map, dict):
        raise ConfigError("a label map must map type names onto labels")
    for source, target in label_map.items():
        if not isinstance(source, str) or not source:
            raise ConfigError("a label map's types must be non-empty names")
        if target is None:
            continue
        if not isinstance(target, str) or not target or any(c.isspace() for c in target):
            raise ConfigError(f"label map target of {source} must be a label name without "
                              "whitespace (or none, to drop the type)")
        if target == OUTSIDE:
            raise ConfigError(f"label map maps {source} onto {OUTSIDE}, the tag of text outside "
                              "every mention; map it to none to drop the type")


def read_utf8(path: Path) -> str:
    """The text of ``path``, decoded strictly as UTF-8 without its BOM (:func:`decode_utf8`)."""
    return decode_utf8(path, path.read_bytes())


def decode_utf8(path: Path, data: bytes) -> str:
    """``data``, the bytes of ``path``, decoded strictly as UTF-8 without its BOM.

    Line ends are left as they are. NUL bytes are rejected too: they never
    occur in text and are what UTF-16 without a BOM looks like.
    """
    start = len(_BOM) if data.startswith(_BOM) else 0
    expected = "expected UTF-8 text (a UTF-8 byte-order mark is allowed)"
    # Checked before decoding: UTF-16 without a BOM decodes as UTF-8 up to
    # its first non-ASCII character, and "invalid UTF-8" there would hide
    # the likelier cause.
    nul = -1 if data.startswith(_UTF16_BOMS) else data.find(b"\x00")
    if nul >= 0:
        raise DataFormatError(
            path, data.count(b"\n", 0, nul) + 1,
            f"NUL byte at byte offset {nul} (UTF-16 text?); {expected}",
        )
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start
        hint = ""
        if data.startswith(_UTF16_BOMS):
            hint = " The file starts with a UTF-16 byte-order mark."
        raise DataFormatError(
            path, data.count(b"\n", 0, offset) + 1,
            f"invalid UTF-8 at byte offset {offset}; {expected}.{hint}",
        ) from None


def files_by_stem(folder: Path, suffix: str) -> dict[str, Path]:
    """The ``*<suffix>`` files directly in ``folder``, by file stem."""
    return {path.stem: path for path in folder.glob(f"*{suffix}") if path.is_file()}


def pair_files(
    folder: Path, texts: dict[str, Path], partners: dict[str, Path], partner_suffix: str
) -> tuple[list[tuple[str, Path, Path]], list[DataFormatError]]:
    """Pair ``<name>.txt`` files with ``<name><partner_suffix>`` files.

    Returns the pairs sorted by name, and one error per file without its
    partner. No file of either kind at all is an error: a corpus path must
    hold data.
    """
    if not texts and not partners:
        raise DataFormatError(folder, None, f"no .txt or {partner_suffix} files found")
    pairs = [(name, texts[name], partners[name]) for name in sorted(texts) if name in partners]
    missing = [
        DataFormatError(texts[name], None, f"no {partner_suffix} file for this .txt file")
        for name in sorted(texts) if name not in partners
    ] + [
        DataFormatError(partners[name], None, f"no .txt file for this {partner_suffix} file")
        for name in sorted(partners) if name not in texts
    ]
    return pairs, missing
