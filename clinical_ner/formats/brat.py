"""brat standoff: a folder of ``<name>.txt`` + ``<name>.ann`` files.

Reading decisions:

* The ``.txt`` is read exactly as written (no newline translation), so brat
  offsets are code points of the file's text; a UTF-8 byte-order mark is
  stripped first and offsets count after it. brat's own server counts the
  mark, so its offsets for such a file are one too high: when an
  annotation's text matches one character earlier, the error says so.
* ``T`` lines (``T1<TAB>Label 10 20<TAB>text``) are entities. A
  discontinuous one (``10 20;25 30``) is read as its full extent, from the
  first fragment's start to the last fragment's end (the choice the shared
  MACCROBAT conversion made). Every T line is checked, also those of types
  the label map leaves out. The text field must equal the document text
  at the fragments (joined by a space, as brat writes them), comparing runs
  of whitespace as one space; some files carry trailing whitespace after
  the text field. ``E``, ``R``, ``A``, ``M``, ``N``, ``#`` and ``*`` lines are
  checked for their syntax and otherwise ignored, except for assertions.
* Assertions (with ``assertion_map``, ``--assertion-map FILE.json``): an
  ``A`` (attribute) line, or ``M`` (brat's older prefix for one, as the BioNLP
  shared tasks write ``Negation`` and ``Speculation``), whose type is in the
  map gives the assertion of the annotation it is on; an attribute on an
  event (``E`` line) belongs to the event's trigger, its first argument's
  text-bound annotation (MACCROBAT puts its ``POLARITY`` on events). The
  map gives each attribute type its values' assertions, ``{"POLARITY":
  {"NEG": "absent", "UNCERTAIN": "possible"}}``, or, for a binary attribute
  (no value), the assertion itself: ``{"Negated": "absent"}``. A value the
  map does not list, an attribute on an unknown id, on an event whose
  trigger is not defined or on anything but an entity or event (a
  relation), or two different assertions for one annotation are errors
  naming the line. Every kept ``problem`` without a mapped attribute is
  ``present`` (the i2b2 2010 default); other labels carry no assertion.
  Without a map nothing of this is read.
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
import codecs
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from clinical_ner.text.document import (
    ASSERTION_CLASSES, ASSERTION_LABEL, Document, Mention, Sentence,
)
from clinical_ner.errors import ConfigError, DataFormatError
from clinical_ner.formats.corpus import (
    MAX_OFFSET_DIGITS, Corpus, ProblemLog, check_label_map_entries, decode_utf8, files_by_stem,
    pair_files, read_utf8,
)
from clinical_ner.text.tags import mentions_to_tags
from clinical_ner.text.tokenizer import split_sentences
from clinical_ner.untrusted_json import UntrustedJSONError, parse_untrusted_json

# [0-9], not \d, which matches other scripts' digits ("٣"), never an offset.
_TEXT_BOUND = re.compile(r"(T\S*)\t(\S+) ([0-9]+ [0-9]+(?:;[0-9]+ [0-9]+)*)\t(.*)")
#: ``--assertion-map``: attribute type -> {value -> assertion}, or -> assertion
#: for a binary attribute (one without a value).
AssertionMap = dict[str, "dict[str, str] | str"]
_DEFAULT_ASSERTION = "present"
#: The id prefixes of attribute lines: ``M`` is the older one, which brat still reads.
ATTRIBUTE_PREFIXES = "AM"
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
    assertion: str | None = None


def check_assertion_map(assertion_map: AssertionMap) -> None:
    """ConfigError unless every target of ``assertion_map`` is an i2b2 assertion class."""
    if not isinstance(assertion_map, dict):
        raise ConfigError("an assertion map must be a JSON object of attribute types")
    for attribute, values in assertion_map.items():
        targets = values.values() if isinstance(values, dict) else [values]
        for target in targets:
            if target not in ASSERTION_CLASSES:
                raise ConfigError(
                    f"assertion map: {attribute} maps to {target!r}, which is not an assertion "
                    f"class ({', '.join(ASSERTION_CLASSES)})")


def read_assertion_map(path: str | Path, name: str) -> AssertionMap:
    """The assertion map of a JSON file, checked; a mistake is a ConfigError starting ``name``
    (``--assertion-map FILE``, or a corpus file's corpus)."""
    try:
        mapping = parse_untrusted_json(Path(path).read_text(encoding="utf-8-sig"),
                                       unique_keys=True)
    except (OSError, UnicodeDecodeError, UntrustedJSONError) as error:
        raise ConfigError(f"{name}: {error}") from None
    try:
        check_assertion_map(mapping)
    except ConfigError as error:
        raise ConfigError(f"{name}: {error}") from None
    return mapping


def read_brat(
    path: str | Path,
    label_map: dict[str, str | None] | None = None,
    skip_invalid: bool = False,
    assertion_map: AssertionMap | None = None,
) -> Corpus:
    """Read a brat folder (or one ``.txt`` with its ``.ann`` beside it)."""
    path = Path(path)
    if assertion_map is not None:
        check_assertion_map(assertion_map)
    if label_map is not None:
        check_label_map_entries(label_map)
    if path.is_file():
        if path.suffix != ".txt":
            raise DataFormatError(path, None, "expected a folder or a .txt file")
        anns = {k: v for k, v in files_by_stem(path.parent, ".ann").items() if k == path.stem}
        pairs, missing = pair_files(path.parent, {path.stem: path}, anns, ".ann")
    elif path.is_dir():
        nested = next((ann for ann in path.glob("*/**/*.ann") if not any(
            part.startswith(".") for part in ann.relative_to(path).parts)), None)
        if nested is not None:
            # brat keeps collections in folders; this reader reads one folder, and
            # documents below it would be left out without a word.
            raise DataFormatError(
                nested.parent, None, "brat documents in a subfolder are not read; give each "
                "folder of .txt + .ann files as a corpus of its own (--train repeats)")
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
            data = txt.read_bytes()
            text = decode_utf8(txt, data)
            bom = data.startswith(codecs.BOM_UTF8)
            annotations = _read_annotations(ann, text, bom, label_map, problems, assertion_map)
        except DataFormatError as error:
            # Skipping, only whole-document problems (undecodable files) get here.
            problems.report(error)
            continue
        documents.append(_build_document(name, txt, ann, text, annotations, problems.skipped))
    return Corpus.from_documents(documents, problems.skipped, "brat")


def _read_annotations(
    ann: Path, text: str, bom: bool, label_map: dict[str, str | None] | None,
    problems: ProblemLog, assertion_map: AssertionMap | None = None,
) -> list[_Annotation]:
    """The kept ``T`` annotations of an ``.ann`` file, every line checked.

    ``bom``: the ``.txt`` started with a byte-order mark (stripped from ``text``).
    """
    annotations = []
    seen_ids: set[str] = set()
    triggers: dict[str, str] = {}  # event id -> its trigger's T id
    attributes: list[tuple[int, str, str, str | None]] = []  # line, type, target id, value
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
            annotation = _parse_line(line, ann, number, text, bom)
        except DataFormatError as error:
            problems.report(error)
            continue
        identifier = line.split("\t", 1)[0]
        if identifier != "*" and identifier in seen_ids:
            problems.report(DataFormatError(ann, number, f"duplicate annotation id {identifier}"))
            continue
        seen_ids.add(identifier)
        if assertion_map is not None and line[0] == "E":
            triggers[identifier] = line.split("\t")[1].split()[0].split(":", 1)[1]
        elif assertion_map is not None and line[0] in ATTRIBUTE_PREFIXES:
            fields = line.split("\t")[1].split()
            if fields[0] in assertion_map:
                attributes.append((number, fields[0], fields[1],
                                   fields[2] if len(fields) > 2 else None))
        if annotation is None:
            continue
        label = annotation.label if label_map is None else label_map.get(annotation.label)
        if label is not None:
            annotations.append(
                _Annotation(annotation.id, label, annotation.start, annotation.end, number)
            )
    if assertion_map is None:
        return annotations
    assertions = _assertions_of_attributes(ann, assertion_map, attributes, triggers, seen_ids,
                                           problems)
    return [dataclasses.replace(a, assertion=assertions.get(a.id, _DEFAULT_ASSERTION))
            if a.label == ASSERTION_LABEL else a for a in annotations]


def _assertions_of_attributes(
    ann: Path, assertion_map: AssertionMap, attributes: list[tuple[int, str, str, str | None]],
    triggers: dict[str, str], ids: set[str], problems: ProblemLog,
) -> dict[str, str]:
    """The assertion of each text-bound annotation id that a mapped attribute is on."""
    assertions: dict[str, tuple[str, int]] = {}
    for number, attribute, target, value in attributes:
        mapping = assertion_map[attribute]
        if isinstance(mapping, dict):
            assertion = mapping.get(value) if value is not None else None
            listed = ", ".join(mapping)
        else:
            assertion = mapping if value is None else None
            listed = "none (a binary attribute)"
        try:
            if assertion is None:
                raise DataFormatError(
                    ann, number, f"{attribute} value {value!r} is not in the assertion map "
                    f"(it lists {listed})")
            if target not in ids:
                raise DataFormatError(ann, number,
                                      f"{attribute} is on {target}, which is not defined")
            text_bound = triggers.get(target, target)
            # brat's id prefix says what a line is; only a T line has a span to assert.
            if not text_bound.startswith("T"):
                raise DataFormatError(
                    ann, number, f"{attribute} is on {target}, which is neither an entity (T) "
                    "nor an event (E); an assertion needs a text-bound annotation")
            if text_bound not in ids:
                raise DataFormatError(
                    ann, number, f"{attribute} is on {target}, whose trigger {text_bound} is "
                    "not defined")
            earlier = assertions.get(text_bound)
            if earlier is not None and earlier[0] != assertion:
                raise DataFormatError(
                    ann, number, f"{attribute} makes {text_bound} {assertion}, but line "
                    f"{earlier[1]} made it {earlier[0]}")
        except DataFormatError as error:
            problems.report(error)
            continue
        assertions[text_bound] = (assertion, number)
    return {identifier: assertion for identifier, (assertion, _) in assertions.items()}


def _parse_line(line: str, ann: Path, number: int, text: str, bom: bool) -> _Annotation | None:
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
    if any(len(number) > MAX_OFFSET_DIGITS for number in re.split("[ ;]", offsets)):
        raise fail(f"{identifier} ({label}): an offset of more than {MAX_OFFSET_DIGITS} digits")
    fragments = [tuple(int(n) for n in pair.split()) for pair in offsets.split(";")]
    for start, end in fragments:
        if not start < end:
            raise fail(f"{identifier} ({label}): fragment {start} {end} is empty or reversed")
    for start, end in fragments:
        if end > len(text):
            raise fail(
                f"{identifier} ({label}): offset {end} is past the end of the text "
                f"({len(text)} characters){_counted_bom_hint(text, fragments, field, bom)}"
            )
    expected = " ".join(text[start:end] for start, end in fragments)
    if field.split() != expected.split():
        raise fail(f"{identifier} ({label}): the annotation text does not match the document "
                   f"text at {offsets}{_counted_bom_hint(text, fragments, field, bom)}")
    start = min(start for start, _ in fragments)
    end = max(end for _, end in fragments)
    return _Annotation(identifier, label, start, end, number)


def _counted_bom_hint(text: str, fragments: list[tuple[int, int]], field: str, bom: bool) -> str:
    """A hint for an error when the offsets fit only if the ``.txt``'s byte-order mark counts.

    brat's server reads the ``.txt`` with Python's utf-8 codec, which keeps
    the mark as a character, so its offsets are one more than this reader's.
    """
    if not bom or any(start == 0 or end > len(text) + 1 for start, end in fragments):
        return ""
    if field.split() != " ".join(text[start - 1:end - 1] for start, end in fragments).split():
        return ""
    return ("; it matches one character earlier: the .txt starts with a byte-order mark, which "
            "brat counts in its offsets and this reader does not (subtract one from every "
            "offset)")


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
    assertions: list[dict[tuple[int, int], str]] = [{} for _ in sentences]
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
        if annotation.assertion is not None:
            assertions[index][(first - offset, last - offset)] = annotation.assertion

    line_starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]
    return Document(
        name,
        [
            Sentence(
                tokens=[token.text for token in sentence],
                tags=mentions_to_tags(len(sentence), sentence_mentions),
                offsets=[(token.start, token.end) for token in sentence],
                source=f"{txt}:{bisect.bisect_right(line_starts, sentence[0].start)}",
                assertions=sentence_assertions,
            )
            for sentence, sentence_mentions, sentence_assertions
            in zip(sentences, mentions, assertions)
        ],
        text,
    )
