"""Which reader reads a path: :func:`detect_format` and :func:`load_corpus`, over every format."""
from __future__ import annotations

from pathlib import Path

from clinical_ner.errors import ConfigError, DataFormatError, shown_value
from clinical_ner.formats import brat, conll, i2b2
from clinical_ner.formats.corpus import CORPUS_LAYOUTS, Corpus, check_label_map_entries
from clinical_ner.text.tags import OUTSIDE, entity_labels, parse_tag

FORMATS = ("conll", "i2b2", "brat")


def detect_format(path: str | Path) -> str:
    """``"conll"``, ``"i2b2"`` or ``"brat"`` from the layout of ``path``.

    A folder with ``txt/`` and ``concept/`` subfolders, or with ``.txt`` and
    ``.con`` files side by side, is i2b2; a folder with ``.txt`` and ``.ann``
    files is brat. A ``.txt`` file with a ``.con`` (``.ann``) file beside it
    is a one-document i2b2 (brat) corpus; a ``.con``, ``.ast`` or ``.ann``
    file, or a ``.txt`` file of an i2b2 folder's ``txt/``, is refused
    (:func:`_corpus_part`); any other file is CoNLL.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix == ".txt" and path.with_suffix(".con").is_file():
            return "i2b2"
        if path.suffix == ".txt" and path.with_suffix(".ann").is_file():
            return "brat"
        part = _corpus_part(path)
        if part is not None:
            raise DataFormatError(path, None, part)
        return "conll"
    if not path.is_dir():
        raise DataFormatError(path, None, "no such file or folder")
    has_ann = any(path.glob("*.ann"))
    if (path / "txt").is_dir() and (path / "concept").is_dir():
        if has_ann:
            # Read as i2b2, the brat documents beside it would be left out.
            raise DataFormatError(path, None, "has both the i2b2 txt/ + concept/ layout and "
                                              "brat .ann files; keep one corpus per folder")
        return "i2b2"
    has_con = any(path.glob("*.con"))
    if has_con != has_ann:
        return "i2b2" if has_con else "brat"
    problem = "has both .con and .ann files" if has_con else "is not a corpus folder"
    raise DataFormatError(
        path, None,
        f"{problem}: expected {CORPUS_LAYOUTS}",
    )


# The files of an i2b2 or brat corpus that hold no document's text, by suffix.
_ANNOTATION_FILES = {".con": ("an i2b2 concept file", "i2b2"),
                     ".ast": ("an i2b2 assertion file", "i2b2"),
                     ".ann": ("a brat annotation file", "brat")}


def _corpus_part(path: Path) -> str | None:
    """What the file ``path`` is, if it is a part of an i2b2 or brat corpus that is read only
    with the rest, and what to give instead; ``None`` for any other file.

    Read as CoNLL, each said ``PATH:1: 21 columns, but the file's lines have 14``.
    """
    if path.suffix in _ANNOTATION_FILES:
        kind, data_format = _ANNOTATION_FILES[path.suffix]
        # The i2b2 layout keeps them in concept/ and ast/ beside txt/.
        split = path.parent.name in ("concept", "ast") and (path.parent.parent / "txt").is_dir()
        folder = path.parent.parent if split else path.parent
        text = path.with_suffix(".txt")
        alone = f", or its document's text {text} for that document alone" if (
            text.is_file()) else ""
        return (f"{kind}, not a corpus; give the {data_format} folder that holds it "
                f"({folder}){alone}")
    folder = path.parent.parent
    if path.suffix == ".txt" and path.parent.name == "txt" and (folder / "concept").is_dir():
        return (f"a document's text in an i2b2 folder (txt/ + concept/), not a corpus; give "
                f"the folder ({folder})")
    return None


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
    if label_map is not None:
        check_label_map_entries(label_map)
    if format == "auto":
        format = detect_format(path)
    if format not in FORMATS:
        raise ConfigError(f"unknown corpus format {shown_value(format)}; expected auto or one "
                          f"of {FORMATS}")
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
    check_label_map_entries(label_map)
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
