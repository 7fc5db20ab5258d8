"""brat standoff: a folder of ``<name>.txt`` + ``<name>.ann`` files.

Reading decisions:

* The ``.txt`` is read exactly as written (no newline translation), so brat
  offsets are code points of the file's text; a UTF-8 byte-order mark is
  stripped first and offsets count after it.
* ``T`` lines (``T1<TAB>Label 10 20<TAB>text``) are entities. A
  discontinuous one (``10 20;25 30``) is read as its full extent, from the
  first fragment's start to the last fragment's end (the choice the shared
  MACCROBAT conversion made). Every T line is checked, also those of types
  the label map leaves out. The text field must equal the document text
  at the fragments (joined by a space, as brat writes them), comparing runs
  of whitespace as one space; some files carry trailing whitespace after
  the text field. ``E``, ``R``, ``A``, ``M``, ``N``, ``#`` and ``*`` lines are
  checked for their syntax and otherwise ignored.
* ``label_map`` renames brat types; a type mapped to ``None``, or missing
  from a given map, is deliberately left out. Without a map every type is
  kept under its own name.
* Sentences and tokens come from :func:`clinical_ner.text.tokenizer.split_sentences`.
  A token that overlaps an entity gets its label (``B-`` on the first); so
  an entity boundary inside one of our tokens labels the whole token, and
  nothing is recorded for that.
* Overlapping entities of kept labels (sharing characters or a token)
  cannot all be tagged: the longest is kept (ties: the earlier start, then
  the earlier line) and each dropped one is listed in ``Corpus.skipped``.
  An entity that crosses a sentence boundary is clipped to the sentence
  where it starts and listed in ``Corpus.skipped`` too, and so is an entity
  that covers no token (only separators such as a zero-width space). These
  happen in real brat data (MACCROBAT) and never stop reading, even with
  ``skip_invalid=False``.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path

from clinical_ner.text.document import Document, Mention, Sentence
from clinical_ner.errors import ConfigError, DataFormatError
from clinical_ner.formats import Corpus, ProblemLog, files_by_stem, pair_files, read_utf8
from clinical_ner.text.tags import mentions_to_tags
from clinical_ner.text.tokenizer import split_sentences

_TEXT_BOUND = re.compile(r"(T\S*)\t(\S+) (\d+ \d+(?:;\d+ \d+)*)\t(.*)")
_ID = r"\S+"
_ARGUMENT = r"\S+:\S+"
# Syntax of the annotation lines that are validated and then ignored.
_OTHER_LINES = {
    "E": re.compile(rf"E\S*\t{_ARGUMENT}(?: {_ARGUMENT})*\s*"),
    "R": re.compile(rf"R\S*\t\S+ {_ARGUMENT} {_ARGUMENT}\s*"),
    "A": re.compile(rf"A\S*\t\S+ {_ID}(?: \S+)?\s*"),
    "M": re.compile(rf"M\S*\t\S+ {_ID}(?: \S+)?\s*"),
    "N": re.compile(rf"N\S*\t\S+ {_ID} {_ARGUMENT}(?:\t.*)?"),
    "#": re.compile(rf"#\S*\t\S+ {_ID}(?:\t.*)?"),
    "*": re.compile(rf"\*\t\S+ {_ID}(?: {_ID})+\s*"),
}


@dataclass(frozen=True)
class _Annotation:
    id: str
    label: str
    start: int
    end: int
    line: int


def read_brat(
    path: str | Path,
    label_map: dict[str, str | None] | None = None,
    skip_invalid: bool = False,
) -> Corpus:
    """Read a brat folder (or one ``.txt`` with its ``.ann`` beside it)."""
    path = Path(path)
    for label in (label_map or {}).values():
        if label is not None and re.fullmatch(r"\S+", label) is None:
            raise ConfigError(f"label map target {label!r} is empty or has whitespace")
    if path.is_file():
        if path.suffix != ".txt":
            raise DataFormatError(path, None, "expected a folder or a .txt file")
        anns = {k: v for k, v in files_by_stem(path.parent, ".ann").items() if k == path.stem}
        pairs, missing = pair_files(path.parent, {path.stem: path}, anns, ".ann")
    elif path.is_dir():
        pairs, missing = pair_files(
            path, files_by_stem(path, ".txt"), files_by_stem(path, ".ann"), ".ann"
        )
    else:
        raise DataFormatError(path, None, "no such file or folder")

    problems = ProblemLog(skip_invalid)
    for error in missing:
        problems.report(error)
    documents = []
    for name, txt, ann in pairs:
        try:
            text = read_utf8(txt)
            annotations = _read_annotations(ann, text, label_map, problems)
        except DataFormatError as error:
            # Skipping, only whole-document problems (undecodable files) get here.
            problems.report(error)
            continue
        documents.append(_build_document(name, txt, ann, text, annotations, problems.skipped))
    return Corpus.from_documents(documents, problems.skipped, "brat")


def _read_annotations(
    ann: Path, text: str, label_map: dict[str, str | None] | None, problems: ProblemLog
) -> list[_Annotation]:
    """The kept ``T`` annotations of an ``.ann`` file, every line checked."""
    annotations = []
    seen_ids: set[str] = set()
    for number, line in enumerate(read_utf8(ann).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            if "\r" in line:
                raise DataFormatError(
                    ann, number,
                    "carriage return without a line feed inside the line; .ann lines end with "
                    "LF or CRLF",
                )
            annotation = _parse_line(line, ann, number, text)
        except DataFormatError as error:
            problems.report(error)
            continue
        identifier = line.split("\t", 1)[0]
        if identifier != "*" and identifier in seen_ids:
            problems.report(DataFormatError(ann, number, f"duplicate annotation id {identifier}"))
            continue
        seen_ids.add(identifier)
        if annotation is None:
            continue
        label = annotation.label if label_map is None else label_map.get(annotation.label)
        if label is not None:
            annotations.append(
                _Annotation(annotation.id, label, annotation.start, annotation.end, number)
            )
    return annotations


def _parse_line(line: str, ann: Path, number: int, text: str) -> _Annotation | None:
    """Check one ``.ann`` line; a ``T`` line gives its annotation (brat label)."""

    def fail(problem: str) -> DataFormatError:
        return DataFormatError(ann, number, problem)

    kind = line[0]
    if kind != "T":
        pattern = _OTHER_LINES.get(kind)
        if pattern is None:
            raise fail(
                "unknown annotation line; expected an id starting with T, E, R, A, M, N, # or *"
            )
        if pattern.fullmatch(line) is None:
            raise fail(f"malformed {kind} annotation line")
        return None
    match = _TEXT_BOUND.fullmatch(line)
    if match is None:
        raise fail('malformed T line; expected "T<n><TAB><type> <start> <end>[;<start> <end>...]'
                   '<TAB><text>"')
    identifier, label, offsets, field = match.groups()
    fragments = [tuple(int(n) for n in pair.split()) for pair in offsets.split(";")]
    for start, end in fragments:
        if not start < end:
            raise fail(f"{identifier} ({label}): fragment {start} {end} is empty or reversed")
        if end > len(text):
            raise fail(
                f"{identifier} ({label}): offset {end} is past the end of the text "
                f"({len(text)} characters)"
            )
    expected = " ".join(text[start:end] for start, end in fragments)
    if field.split() != expected.split():
        raise fail(f"{identifier} ({label}): the annotation text does not match the document "
                   f"text at {offsets}")
    start = min(start for start, _ in fragments)
    end = max(end for _, end in fragments)
    return _Annotation(identifier, label, start, end, number)


def _build_document(
    name: str,
    txt: Path,
    ann: Path,
    text: str,
    annotations: list[_Annotation],
    skipped: list[DataFormatError],
) -> Document:
    sentences = split_sentences(text)
    tokens = [token for sentence in sentences for token in sentence]
    token_ends = [token.end for token in tokens]
    sentence_of = [index for index, sentence in enumerate(sentences) for _ in sentence]

    def token_range(annotation: _Annotation) -> tuple[int, int] | None:
        first = bisect.bisect_right(token_ends, annotation.start)
        if first == len(tokens) or tokens[first].start >= annotation.end:
            return None
        last = first
        while last + 1 < len(tokens) and tokens[last + 1].start < annotation.end:
            last += 1
        return first, last

    kept: list[tuple[_Annotation, int, int]] = []
    owner: dict[int, _Annotation] = {}
    for annotation in sorted(annotations, key=lambda a: (a.start - a.end, a.start, a.line)):
        span = token_range(annotation)
        if span is None:
            skipped.append(DataFormatError(
                ann, annotation.line,
                f"{annotation.id} ({annotation.label}) covers no token; left out",
            ))
            continue
        first, last = span
        rival = next(
            (a for a, _, _ in kept if a.start < annotation.end and annotation.start < a.end),
            None,
        ) or next((owner[i] for i in range(first, last + 1) if i in owner), None)
        if rival is not None:
            skipped.append(DataFormatError(
                ann, annotation.line,
                f"{annotation.id} ({annotation.label}) overlaps {rival.id}; kept {rival.id}, "
                "the longer annotation (ties: the earlier start)",
            ))
            continue
        kept.append((annotation, first, last))
        owner.update({i: annotation for i in range(first, last + 1)})

    mentions: list[list[Mention]] = [[] for _ in sentences]
    sentence_starts = [0]
    for sentence in sentences:
        sentence_starts.append(sentence_starts[-1] + len(sentence))
    for annotation, first, last in kept:
        index = sentence_of[first]
        if sentence_of[last] != index:
            last = sentence_starts[index + 1] - 1
            skipped.append(DataFormatError(
                ann, annotation.line,
                f"{annotation.id} ({annotation.label}) crosses a sentence boundary; clipped "
                "to the sentence where it starts",
            ))
        offset = sentence_starts[index]
        mentions[index].append(Mention(first - offset, last - offset, annotation.label))

    line_starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]
    return Document(
        name,
        [
            Sentence(
                tokens=[token.text for token in sentence],
                tags=mentions_to_tags(len(sentence), sentence_mentions),
                offsets=[(token.start, token.end) for token in sentence],
                source=f"{txt}:{bisect.bisect_right(line_starts, sentence[0].start)}",
            )
            for sentence, sentence_mentions in zip(sentences, mentions)
        ],
        text,
    )
