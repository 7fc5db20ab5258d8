"""i2b2/VA 2010 concept format: ``.txt`` + ``.con`` (+ ``.ast``).

* ``.txt``: one sentence per line. Lines are split at LF (CRLF is accepted:
  the CR is dropped from ``Document.text``, and offsets count in that
  text). A CR inside a line (old Mac CR-only line ends) is an error: the
  i2b2 tools would not split there. Tokens are maximal runs of characters
  other than space, tab, CR and LF, with code-point offsets into
  ``Document.text``. Lines without
  tokens make no sentence but still count as lines.
* ``.con``: ``c="chest pain" 12:3 12:4||t="problem"``: lines from 1, tokens
  from 0, inclusive end. The line is parsed from the right because the
  concept text may itself contain ``"``. The concept text must equal the
  tokens it points to, compared case-insensitively, with runs of
  whitespace as one space and ``"`` read as ``'`` (how the i2b2 release
  writes a quote inside concept text).
* ``.ast``: ``.con`` lines plus ``||a="present"``; each must repeat a
  concept of the ``.con`` file (same span and type) that is not a ``test``
  or ``treatment`` (only problems carry one; another type may become a
  problem through a label map), and the assertion must be one of the six
  i2b2 classes (``text.document.ASSERTION_CLASSES``). It goes to
  ``Sentence.assertions[(first_token, last_token)]``.
* Two concepts sharing a token cannot be written in IOB2: the later ``.con``
  line is the error and names the earlier one. Duplicate lines count too.
* Layouts: ``<dir>/txt/*.txt`` + ``<dir>/concept/*.con`` (+ ``<dir>/ast/*.ast``)
  as in the i2b2 release, or the files side by side in one folder, or one
  ``.txt`` file with its ``.con`` (and ``.ast``) beside it. A ``.txt``
  without ``.con``, or a ``.con``/``.ast`` without ``.txt``, is an error
  (with ``skip_invalid=True`` that document is skipped). So are ``.ast``
  files where the layout does not read them (``txt/``, ``concept/`` or the
  top folder of the release layout, an ``ast/`` folder beside side-by-side
  files), whatever ``skip_invalid``: they would leave a model without its
  assertions.
"""
from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clinical_ner.text.document import (
    ASSERTION_CLASSES, ASSERTION_LABEL, Document, Entity, Mention, Sentence,
)
from clinical_ner.errors import DataFormatError
from clinical_ner.formats.corpus import (
    BYTE_ORDER_MARK, MAX_OFFSET_DIGITS, Corpus, ProblemLog, files_by_stem, pair_files,
    read_utf8,
)
from clinical_ner.text.tags import mentions_to_tags, tags_to_mentions

_TOKEN = re.compile(r"[^ \t\r\n]+")
# A CR that does not end a line (CRs right before LF or the end are line ends).
_STRAY_CR = re.compile(r"\r(?!\r*(?:\n|\Z))")
_ASSERTION_FIELD = re.compile(r'\|\|a="([^"]*)"$')
_TYPE_FIELD = re.compile(r'\|\|t="([^"]*)"$')
# [0-9], not \d, which matches other scripts' digits ("٣"), never a position.
_POSITIONS = re.compile(r"(?<![0-9])([0-9]+):([0-9]+)[ \t]+([0-9]+):([0-9]+)$")
# Labels and assertions are written inside "..." and next to ||, and become tags.
_MARKUP_VALUE = re.compile(r'[^\s"|]+')


@dataclass(frozen=True)
class _Concept:
    """One parsed ``.con``/``.ast`` line; ``text`` is clinical text, never printed."""

    text: str
    line: int
    first: int
    last: int
    label: str
    assertion: str | None
    source_line: int

    @property
    def where(self) -> str:
        return f"{self.line}:{self.first}-{self.line}:{self.last}"


def read_i2b2(path: str | Path, skip_invalid: bool = False) -> Corpus:
    """Read an i2b2 2010 concept corpus (see the module docstring for layouts)."""
    path = Path(path)
    problems = ProblemLog(skip_invalid)
    documents = []
    for name, txt, con, ast in _find_documents(path, problems):
        try:
            documents.append(_read_document(name, txt, con, ast, problems))
        except DataFormatError as error:
            # Skipping, only whole-document problems (undecodable files) get here.
            problems.report(error)
    return Corpus.from_documents(documents, problems.skipped, "i2b2")


def _find_documents(
    path: Path, problems: ProblemLog
) -> list[tuple[str, Path, Path, Path | None]]:
    if path.is_file():
        if path.suffix != ".txt":
            raise DataFormatError(path, None, "expected a folder or a .txt file")
        folder, ast_folder = path.parent, path.parent
        texts = {path.stem: path}
        cons = {k: v for k, v in files_by_stem(folder, ".con").items() if k == path.stem}
        asts = {k: v for k, v in files_by_stem(folder, ".ast").items() if k == path.stem}
    elif path.is_dir():
        split = (path / "txt").is_dir() and (path / "concept").is_dir()
        folder = path
        texts = files_by_stem(path / "txt" if split else path, ".txt")
        cons = files_by_stem(path / "concept" if split else path, ".con")
        ast_folder = path / "ast" if split else path
        asts = files_by_stem(ast_folder, ".ast") if ast_folder.is_dir() else {}
        _check_no_misplaced_asts(path, split)
    else:
        raise DataFormatError(path, None, "no such file or folder")
    pairs, missing = pair_files(folder, texts, cons, ".con")
    for error in missing:
        problems.report(error)
    for name in sorted(set(asts) - set(texts) - set(cons)):
        problems.report(
            DataFormatError(asts[name], None, "no .txt or .con file for this .ast file")
        )
    return [(name, txt, con, asts.get(name)) for name, txt, con in pairs]


# The i2b2 2010 concept types that never carry an assertion.
_NEVER_ASSERTED = ("test", "treatment")


def _check_no_misplaced_asts(path: Path, split: bool) -> None:
    """Raise if ``.ast`` files lie in a folder of the corpus that is not read for them.

    Left there, they would be ignored and a model would train without
    assertions, with nothing to say so.
    """
    if split:
        places = [path, path / "txt", path / "concept"]
        where = f"in {path / 'ast'} (beside txt/ and concept/)"
    else:
        places = [path / "ast"]
        where = f"beside the .txt and .con files in {path}, or use the txt/, concept/, ast/ layout"
    for folder in places:
        if folder.is_dir() and files_by_stem(folder, ".ast"):
            raise DataFormatError(
                folder, None, f".ast files here are not read; put them {where}",
            )


def _read_document(
    name: str, txt: Path, con: Path, ast: Path | None, problems: ProblemLog
) -> Document:
    text = read_utf8(txt).replace("\r\n", "\n")
    stray_cr = _STRAY_CR.search(text)
    if stray_cr is not None:
        # The official tools split lines at LF only and tokens at spaces, so a
        # CR inside a line would make our tokens (and the .con positions) disagree.
        position = stray_cr.start()
        raise DataFormatError(
            txt, text.count("\n", 0, position) + 1,
            f"carriage return without a line feed at character "
            f"{position - text.rfind(chr(10), 0, position)} of the line; i2b2 .txt lines "
            "end with LF or CRLF (convert old Mac CR line ends first)",
        )
    line_spans = _line_token_spans(text)
    # A final LF ends the last line rather than starting an empty one.
    n_lines = len(line_spans) - (1 if text.endswith("\n") or not text else 0)

    def tokens_of(line: int) -> list[str]:
        return [text[start:end] for start, end in line_spans[line - 1]]

    accepted: dict[int, list[_Concept]] = {}
    for number, line in _content_lines(con):
        try:
            concept = _parse_line(line, con, number, False)
            error = _check_position(concept, n_lines, line_spans, tokens_of)
            if error is None:
                error = _check_overlap(concept, accepted.get(concept.line, []))
            if error is not None:
                raise DataFormatError(con, number, error)
        except DataFormatError as error:
            problems.report(error)
            continue
        accepted.setdefault(concept.line, []).append(concept)

    assertions: dict[tuple[int, int, int], str] = {}
    if ast is not None:
        known = {(c.line, c.first, c.last, c.label) for cs in accepted.values() for c in cs}
        for number, line in _content_lines(ast):
            try:
                concept = _parse_line(line, ast, number, True)
                key = (concept.line, concept.first, concept.last)
                error = _check_position(concept, n_lines, line_spans, tokens_of)
                if error is None and (*key, concept.label) not in known:
                    error = f"no concept {concept.where} with type {concept.label} in {con.name}"
                if error is None and concept.label in _NEVER_ASSERTED:
                    # Training and scoring would ignore it: only problems carry one. (Other
                    # types may become problems through a label map, and keep theirs.)
                    error = (f"an assertion on a {concept.label} concept; i2b2 2010 gives "
                             f"assertions to {ASSERTION_LABEL}s only")
                if error is None and key in assertions:
                    error = f"a second assertion for the concept {concept.where}"
                if error is not None:
                    raise DataFormatError(ast, number, error)
            except DataFormatError as error:
                problems.report(error)
                continue
            assertions[key] = concept.assertion

    sentences = []
    for line, spans in enumerate(line_spans, start=1):
        if not spans:
            continue
        concepts = accepted.get(line, [])
        mentions = [Mention(c.first, c.last, c.label) for c in concepts]
        sentences.append(
            Sentence(
                tokens=tokens_of(line),
                tags=mentions_to_tags(len(spans), mentions),
                offsets=spans,
                source=f"{txt}:{line}",
                assertions={
                    (c.first, c.last): assertions[(line, c.first, c.last)]
                    for c in concepts if (line, c.first, c.last) in assertions
                },
            )
        )
    return Document(name, sentences, text)


def _line_token_spans(text: str) -> list[list[tuple[int, int]]]:
    """Per line (split at LF), the code-point spans of its whitespace tokens."""
    result = []
    line_start = 0
    for line in text.split("\n"):
        result.append(
            [(line_start + m.start(), line_start + m.end()) for m in _TOKEN.finditer(line)]
        )
        line_start += len(line) + 1
    return result


def _content_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of a ``.con``/``.ast`` file with their 1-based numbers."""
    return [
        (number, line)
        for number, line in enumerate(read_utf8(path).split("\n"), start=1)
        if line.strip()
    ]


def _parse_line(line: str, path: Path, number: int, with_assertion: bool) -> _Concept:
    """Parse one concept line from the right; errors quote markup only."""

    def fail(problem: str) -> DataFormatError:
        return DataFormatError(path, number, problem)

    rest = line.strip()
    if "\r" in rest:
        raise fail("carriage return without a line feed inside the line; lines end with LF "
                   "or CRLF")
    assertion = None
    if with_assertion:
        match = _ASSERTION_FIELD.search(rest)
        if match is None:
            raise fail('expected ||a="<assertion>" at the end of the line')
        assertion, rest = match.group(1), rest[:match.start()]
        if _MARKUP_VALUE.fullmatch(assertion) is None:
            raise fail("the assertion is empty or contains whitespace or |")
        if assertion not in ASSERTION_CLASSES:
            raise fail(f"unknown assertion {assertion!r}; expected one of the i2b2 2010 "
                       f"classes: {', '.join(ASSERTION_CLASSES)}")
    match = _TYPE_FIELD.search(rest)
    if match is None:
        where = "before ||a=" if with_assertion else "at the end of the line"
        raise fail(f'expected ||t="<type>" {where}')
    label, rest = match.group(1), rest[:match.start()]
    if _MARKUP_VALUE.fullmatch(label) is None:
        raise fail("the concept type is empty or contains whitespace or |")
    match = _POSITIONS.search(rest)
    if match is None:
        raise fail('expected "<line>:<token> <line>:<token>" before ||t=')
    if any(len(group) > MAX_OFFSET_DIGITS for group in match.groups()):
        raise fail(f"a position of more than {MAX_OFFSET_DIGITS} digits")
    line_1, first, line_2, last = (int(group) for group in match.groups())
    rest = rest[:match.start()].rstrip(" \t")
    if not rest.startswith('c="'):
        raise fail('expected c="<concept text>" at the start of the line')
    if len(rest) < 4 or not rest.endswith('"'):
        raise fail('unbalanced quotes: the concept text must be closed by " before the positions')
    if line_1 != line_2:
        raise fail(f"the concept spans lines {line_1} to {line_2}; a concept must lie on one line")
    return _Concept(rest[3:-1], line_1, first, last, label, assertion, number)


def _check_position(
    concept: _Concept,
    n_lines: int,
    line_spans: list[list[tuple[int, int]]],
    tokens_of: Callable[[int], list[str]],
) -> str | None:
    """The problem with where a concept points, or None."""
    if concept.line < 1 or concept.line > n_lines:
        return f"line {concept.line} is not a line of the .txt file (it has {n_lines} lines)"
    if concept.last < concept.first:
        return f"concept {concept.where} ends before it starts"
    n_tokens = len(line_spans[concept.line - 1])
    if concept.last >= n_tokens:
        return (
            f"concept {concept.where} goes past the end of line {concept.line} "
            f"({n_tokens} tokens)"
        )
    tokens = tokens_of(concept.line)[concept.first:concept.last + 1]
    if _comparable(concept.text) != _comparable(" ".join(tokens)):
        return f"concept text does not match tokens {concept.where}"
    return None


def _comparable(text: str) -> str:
    return " ".join(text.split()).lower().replace('"', "'")


def _check_overlap(concept: _Concept, earlier: list[_Concept]) -> str | None:
    for other in earlier:
        if concept.first <= other.last and other.first <= concept.last:
            return (
                f"concept {concept.where} overlaps concept {other.where} on line "
                f"{other.source_line}; IOB2 cannot represent overlapping concepts"
            )
    return None


def entities_to_con_lines(text: str, entities: list[Entity]) -> list[str]:
    """i2b2 ``.con`` lines for character-span entities over any text.

    Lines are the text's lines (split at LF) and tokens the whitespace
    tokens of a line (runs without space, tab, CR). An entity that starts
    or ends inside a token grows to the whole token, and whitespace at its
    edges is dropped. Entities that so come to share a token (``pain/fever``,
    two problems inside one whitespace token) are one concept, the first's
    label (and assertion) over the tokens of both: i2b2 concepts cannot
    share a token, and its reader refuses the file otherwise. Raises
    ValueError for an entity outside the text, empty, covering only
    whitespace, or crossing a line break (i2b2 concepts lie on one line).
    """
    return [_format(position, entity.label) for position, entity in _positions(text, entities)]


@dataclass(frozen=True)
class _Position:
    line: int
    first: int
    last: int
    text: str


def _positions(text: str, entities: list[Entity]) -> list[tuple[_Position, Entity]]:
    line_starts = [0] + [index + 1 for index, char in enumerate(text) if char == "\n"]
    # The reader drops a leading byte-order mark (read_utf8), so it is no part of line
    # 1's tokens: counted as one, the concepts of that line read back one token off.
    text_start = 1 if text.startswith(BYTE_ORDER_MARK) else 0
    result = []
    for entity in entities:
        if not 0 <= entity.start < entity.end <= len(text):
            raise ValueError(
                f"entity {entity.start}-{entity.end} is empty or outside the text "
                f"({len(text)} characters)"
            )
        if "\n" in text[entity.start:entity.end]:
            raise ValueError(f"entity {entity.start}-{entity.end} crosses a line break")
        line = bisect.bisect_right(line_starts, entity.start)
        line_start = max(line_starts[line - 1], text_start)
        line_end = line_starts[line] - 1 if line < len(line_starts) else len(text)
        spans = [m.span() for m in _TOKEN.finditer(text, line_start, line_end)]
        covered = [
            index for index, (start, end) in enumerate(spans)
            if start < entity.end and entity.start < end
        ]
        if not covered:
            raise ValueError(f"entity {entity.start}-{entity.end} covers only whitespace")
        first, last = covered[0], covered[-1]
        # Merged into the first concept it shares a token with (the union may reach more).
        at = len(result)
        while (joined := next((index for index, (position, _) in enumerate(result)
                               if position.line == line and first <= position.last
                               and position.first <= last), None)) is not None:
            position, earlier = result.pop(joined)
            first, last = min(first, position.first), max(last, position.last)
            if joined < at:
                at, entity = joined, earlier
        concept_text = " ".join(text[start:end] for start, end in spans[first:last + 1])
        result.insert(at, (_Position(line, first, last, concept_text), entity))
    return result


def _format(position: _Position, label: str, assertion: str | None = None) -> str:
    for value in (label, assertion):
        if value is not None and _MARKUP_VALUE.fullmatch(value) is None:
            raise ValueError(f"label or assertion {value!r} is empty or has whitespace, \" or |")
    concept_text = position.text.lower().replace('"', "'")
    line = (
        f'c="{concept_text}" {position.line}:{position.first} '
        f'{position.line}:{position.last}||t="{label}"'
    )
    return line if assertion is None else f'{line}||a="{assertion}"'


def write_con(
    path: str | Path,
    document: Document,
    mentions_per_sentence: list[list[Mention]] | None = None,
) -> None:
    """Write the ``.con`` file of ``document`` (and its ``.ast`` if it has assertions).

    The document needs its text and token offsets (as :func:`read_i2b2`
    gives them); concepts are placed with :func:`entities_to_con_lines`, so
    the ``.con`` fits the document text written as the ``.txt``. The concept
    text is the tokens lowercased, joined by single spaces, with ``"``
    written as ``'`` as in the i2b2 release. ``mentions_per_sentence``
    defaults to the sentences' own tags and assertions.

    The ``.ast`` file (lines for the mentions with an assertion) is written
    only when there is at least one (else an earlier one is removed): into
    ``../ast/`` when ``path`` is in a folder named ``concept`` (the release
    layout), else beside ``path``.
    """
    path = Path(path)
    if document.text is None or any(s.offsets is None for s in document.sentences):
        raise ValueError(
            f"document {document.name} has no text or token offsets; write_con places "
            "concepts by their character offsets in the document text"
        )
    if mentions_per_sentence is None:
        mentions_per_sentence = [
            [
                Mention(m.first_token, m.last_token, m.label,
                        sentence.assertions.get((m.first_token, m.last_token)))
                for m in tags_to_mentions(sentence.tags or [])
            ]
            for sentence in document.sentences
        ]
    if len(mentions_per_sentence) != len(document.sentences):
        raise ValueError(
            f"{len(document.sentences)} sentences but {len(mentions_per_sentence)} mention lists"
        )
    entities = []
    for sentence, mentions in zip(document.sentences, mentions_per_sentence):
        for mention in sorted(mentions, key=lambda m: (m.first_token, m.last_token)):
            start = sentence.offsets[mention.first_token][0]
            end = sentence.offsets[mention.last_token][1]
            entities.append(
                Entity(start, end, document.text[start:end], mention.label,
                       assertion=mention.assertion)
            )
    write_con_entities(path, document.text, entities)


def companion_path(con_path: Path, kind: str) -> Path:
    """Where the ``.txt`` or ``.ast`` (``kind``) of ``con_path`` belongs, for :func:`read_i2b2`.

    In ``../txt/`` or ``../ast/`` when ``con_path`` is in a folder named
    ``concept`` (the release layout), else beside it.
    """
    if con_path.parent.name == "concept":
        return con_path.parent.parent / kind / f"{con_path.stem}.{kind}"
    return con_path.with_suffix(f".{kind}")


def write_con_entities(path: str | Path, text: str, entities: list[Entity]) -> None:
    """Write the ``.con`` file of ``entities`` over ``text`` (and its ``.ast``, as :func:`write_con`).

    Concepts are placed as :func:`entities_to_con_lines` places them; the
    ``.ast`` file holds the entities with an ``assertion``, and is written
    only when there is at least one (else an earlier ``.ast`` is removed).
    """
    path = Path(path)
    positions = _positions(text, entities)
    path.write_text(
        "".join(_format(p, e.label) + "\n" for p, e in positions), encoding="utf-8"
    )
    asserted = [(p, e) for p, e in positions if e.assertion is not None]
    ast_path = companion_path(path, "ast")
    if asserted:
        ast_path.parent.mkdir(exist_ok=True)
        ast_path.write_text(
            "".join(_format(p, e.label, e.assertion) + "\n" for p, e in asserted),
            encoding="utf-8",
        )
    else:
        # An earlier .ast beside the new .con would be read as its assertions.
        ast_path.unlink(missing_ok=True)
