"""Corpus readers and writers: CoNLL, i2b2/VA 2010 concepts, brat standoff.

Every reader returns a :class:`Corpus`. Conventions shared by all of them:

* Files are UTF-8. A UTF-8 byte-order mark is accepted and stripped, so
  offsets (brat) count code points after it. Anything that is not UTF-8
  (Latin-1, UTF-16 with or without BOM) raises :class:`DataFormatError`
  with the line and byte offset of the first bad byte; a NUL byte counts
  as not UTF-8, since that is how UTF-16 without a BOM decodes.
* Errors name the file, the line and the problem, never the clinical text.
* ``skip_invalid=False`` stops at the first problem. With ``True`` the
  reader skips the smallest unit that is wrong (a CoNLL sentence, an i2b2
  concept line, a brat annotation, a document whose partner file is
  missing or unreadable) and lists each problem in ``Corpus.skipped``.
  Nothing is dropped silently: what cannot be represented is an error or
  is listed in ``skipped``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clinical_ner.text.document import Document
from clinical_ner.errors import ConfigError, DataFormatError
from clinical_ner.text.tags import OUTSIDE, entity_labels, parse_tag

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
FORMATS = ("conll", "i2b2", "brat")


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


def read_utf8(path: Path) -> str:
    """The text of ``path``, decoded strictly as UTF-8 without its BOM.

    Line ends are left as they are. NUL bytes are rejected too: they never
    occur in text and are what UTF-16 without a BOM looks like.
    """
    data = path.read_bytes()
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


def detect_format(path: str | Path) -> str:
    """``"conll"``, ``"i2b2"`` or ``"brat"`` from the layout of ``path``.

    A folder with ``txt/`` and ``concept/`` subfolders, or with ``.txt`` and
    ``.con`` files side by side, is i2b2; a folder with ``.txt`` and ``.ann``
    files is brat. A ``.txt`` file with a ``.con`` (``.ann``) file beside it
    is a one-document i2b2 (brat) corpus; any other file is CoNLL.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix == ".txt" and path.with_suffix(".con").is_file():
            return "i2b2"
        if path.suffix == ".txt" and path.with_suffix(".ann").is_file():
            return "brat"
        return "conll"
    if not path.is_dir():
        raise DataFormatError(path, None, "no such file or folder")
    if (path / "txt").is_dir() and (path / "concept").is_dir():
        return "i2b2"
    has_con = any(path.glob("*.con"))
    has_ann = any(path.glob("*.ann"))
    if has_con != has_ann:
        return "i2b2" if has_con else "brat"
    problem = "has both .con and .ann files" if has_con else "is not a corpus folder"
    raise DataFormatError(
        path, None,
        f"{problem}: expected a CoNLL file, a folder with txt/ and concept/ subfolders "
        "or .txt + .con files (i2b2), or a folder of .txt + .ann files (brat)",
    )


def load_corpus(
    path: str | Path,
    format: str = "auto",
    scheme: str = "auto",
    label_map: dict[str, str | None] | None = None,
    skip_invalid: bool = False,
    assertion_map: dict | None = None,
) -> Corpus:
    """Read a corpus in any supported format (``format="auto"`` detects it).

    ``scheme`` applies to CoNLL only and ``assertion_map`` (see
    :mod:`clinical_ner.formats.brat`) to brat only; passing them for another
    format is a :class:`ConfigError` rather than being ignored.
    ``label_map`` renames source labels (``None``, or a label missing from
    the map, drops it): the brat reader maps while reading (before resolving
    overlaps), the others through :func:`apply_label_map`.
    """
    if format == "auto":
        format = detect_format(path)
    if format not in FORMATS:
        raise ConfigError(f"unknown corpus format {format!r}; expected auto or one of {FORMATS}")
    if scheme != "auto" and format != "conll":
        raise ConfigError(f"a tag scheme applies to CoNLL input only, not {format}")
    if assertion_map is not None and format != "brat":
        raise ConfigError(f"an assertion map applies to brat input only, not {format} "
                          "(i2b2 reads its assertions from .ast files)")
    if format == "brat":
        return brat.read_brat(path, label_map=label_map, skip_invalid=skip_invalid,
                              assertion_map=assertion_map)
    if format == "conll":
        corpus = conll.read_conll(path, scheme=scheme, skip_invalid=skip_invalid)
    else:
        corpus = i2b2.read_i2b2(path, skip_invalid=skip_invalid)
    return corpus if label_map is None else apply_label_map(corpus, label_map)


def apply_label_map(corpus: Corpus, label_map: dict[str, str | None]) -> Corpus:
    """Rename each mention's type by ``label_map``; an unmapped or ``None`` type becomes ``O``.

    For formats whose reader does not map labels itself (CoNLL, i2b2); the
    sentences' tags are rewritten in place and the corpus's labels updated.
    Two adjacent mentions mapped onto one label stay two mentions (each
    starts with ``B-``).
    """
    for label in label_map.values():
        if label is not None and (not label or any(c.isspace() for c in label)):
            raise ConfigError(f"label map target {label!r} is empty or has whitespace")
    for document in corpus.documents:
        for sentence in document.sentences:
            if sentence.tags is None:
                continue
            mapped = []
            for tag in sentence.tags:
                prefix, entity_type = parse_tag(tag)
                target = None if entity_type is None else label_map.get(entity_type)
                mapped.append(OUTSIDE if target is None else f"{prefix}-{target}")
            sentence.tags = mapped
    corpus.labels = entity_labels(tag for document in corpus.documents
                                  for sentence in document.sentences
                                  for tag in sentence.tags or ())
    return corpus


# Imported last because the reader modules import Corpus and the helpers above.
from clinical_ner.formats import brat, conll, i2b2  # noqa: E402
