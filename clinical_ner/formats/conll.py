"""CoNLL: one ``token ... tag`` line per token, a blank line after each sentence.

Reading:

* Columns are separated by runs of spaces and/or tabs. The token is the
  first column and the tag the last; columns in between (CoNLL-2003's part
  of speech and chunk) are ignored. A line with a single column is an
  error, and so is a token line whose number of columns differs from that
  of most token lines of the file: a token holding a space (``50 mg``), or
  a line of text, whose first and last words would otherwise be read as a
  token and its tag, dropping the rest or making a note word an entity
  type. (Splitting at tabs only would keep such a token, but misread the
  files that align their columns with spaces before a tab.)
* A line whose first column is ``-DOCSTART-`` (case-sensitive, as CoNLL
  tools read it) ends the current sentence and starts a new document; the
  documents are named ``<stem>-1``, ``<stem>-2``, ... Its columns are not
  counted, but one whose last column is an entity tag (``B-X``, ...) is an
  error: it would split an entity, or stand for a token. A file without
  ``-DOCSTART-`` is one document named ``<stem>``. An empty file is one
  document without sentences.
* Blank lines (only spaces/tabs) end sentences. Lines end with LF or CRLF;
  a file without any LF but with CRs (old Mac line ends) is split at CR. A
  CR inside a line of an LF file is an error (a token or tag cannot hold
  one).
* Tags are normalised to IOB2 by :func:`clinical_ner.text.tags.normalize_tags`.
  With ``scheme="auto"`` the scheme is decided for the whole file: if any
  tag is ``S-``/``E-``/``U-``/``L-``, every sentence must be valid BIOES, so
  that a broken BIOES sentence is not quietly read as BIO.
* With ``skip_invalid=True`` a sentence with any problem is skipped whole. A
  file that is not UTF-8 always raises: it is the only unit there is.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from clinical_ner.text.document import Document, Sentence
from clinical_ner.errors import DataFormatError
from clinical_ner.formats.corpus import CORPUS_LAYOUTS, Corpus, ProblemLog, read_utf8
from clinical_ner.text.tags import detect_scheme, is_tag, normalize_tags, parse_tag

DOCSTART = "-DOCSTART-"
_COLUMN = re.compile(r"[^ \t]+")


@dataclass
class _RawSentence:
    """A sentence as read, before its tags are checked."""

    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    error: DataFormatError | None = None


def read_conll(path: str | Path, scheme: str = "auto", skip_invalid: bool = False) -> Corpus:
    """Read a CoNLL file (see the module docstring for the rules)."""
    path = Path(path)
    if not path.is_file():
        # A folder given as CoNLL (--input-format conll, a corpus file's format) exists.
        raise DataFormatError(path, None, ("a folder" if path.is_dir() else "no such file")
                              + " (a CoNLL corpus is one file)")
    raw_documents, marked = _split_documents(path, read_utf8(path))
    if scheme == "auto" and detect_scheme(
        [tag for _, sentences in raw_documents for raw in sentences for tag in raw.tags]
    ) == "bioes":
        scheme = "bioes"

    problems = ProblemLog(skip_invalid)
    documents = []
    for name, raw_sentences in raw_documents:
        sentences = []
        for raw in raw_sentences:
            error = raw.error
            if error is None:
                try:
                    tags = normalize_tags(raw.tags, scheme, str(path), raw.lines)
                except DataFormatError as tag_error:
                    error = tag_error
            if error is not None:
                problems.report(error)
                continue
            sentences.append(
                Sentence(raw.tokens, tags, source=f"{path}:{raw.lines[0]}")
            )
        documents.append(Document(name, sentences, boundaries_marked=marked))
    return Corpus.from_documents(documents, problems.skipped, "conll")


def _split_documents(path: Path, text: str
                     ) -> tuple[list[tuple[str, list[_RawSentence]]], bool]:
    """Group lines into documents of raw sentences, noting structural errors; and whether
    ``-DOCSTART-`` lines marked the documents (else the file is one).

    Errors are only noted here, so that they are raised or skipped in file
    order together with the tag errors found later.
    """
    groups: list[list[_RawSentence]] = []
    has_docstart = False
    current: _RawSentence | None = None
    # A CR-only file would otherwise read as one line whose first token and
    # last tag stand for the whole corpus.
    lines = [line.rstrip("\r") for line in (text.split("\r") if "\n" not in text
                                              else text.split("\n"))]
    rows = [_COLUMN.findall(line) for line in lines]
    token_rows = [columns for columns in rows if columns and columns[0] != DOCSTART]
    if token_rows and not any(len(columns) > 1 and is_tag(columns[-1])
                              for columns in token_rows):
        # A plain note (a .txt file without .con or .ann beside it) was read as CoNLL:
        # "PATH:1: invalid tag", or a note word taken for a tag.
        raise DataFormatError(path, None, "not an annotated corpus (no line ends in a tag such "
                                          f"as O or B-problem); expected {CORPUS_LAYOUTS}")
    expected = _usual_column_count(rows)
    for number, (line, columns) in enumerate(zip(lines, rows), start=1):
        if not columns or columns[0] == DOCSTART:
            current = None
            if columns:
                has_docstart = True
                groups.append([])
                if len(columns) > 1 and _is_entity_tag(columns[-1]):
                    # Noted as a sentence of its own so that it is raised, or
                    # skipped and listed, in file order like any other error.
                    groups[-1].append(_RawSentence(lines=[number], error=DataFormatError(
                        path, number, f"a {DOCSTART} line tagged as part of an entity; a "
                        "document break is tagged O",
                    )))
            continue
        if current is None:
            if not groups:
                groups.append([])
            current = _RawSentence()
            groups[-1].append(current)
        current.lines.append(number)
        error = None
        if "\r" in line:
            error = DataFormatError(
                path, number, "carriage return inside the line; lines end with LF or CRLF",
            )
        elif len(columns) == 1:
            error = DataFormatError(
                path, number, "only one column; expected a token and a tag separated by "
                "tabs or spaces",
            )
        elif len(columns) != expected:
            # Counts only: the columns may be words of the note.
            error = DataFormatError(
                path, number, f"{len(columns)} columns, but the file's lines have {expected} "
                "(columns are split at spaces and tabs: a token cannot hold a space)",
            )
        if error is not None:
            current.error = current.error or error
            # Keep the placeholders aligned with lines; the sentence is skipped anyway.
            columns = ["", "O"]
        current.tokens.append(columns[0])
        current.tags.append(columns[-1])
    if not groups:
        groups.append([])
    if not has_docstart:
        return [(path.stem, groups[0])], False
    return [(f"{path.stem}-{n}", sentences) for n, sentences in enumerate(groups, start=1)], True


def _usual_column_count(rows: list[list[str]]) -> int | None:
    """The number of columns most token lines have (the first line's on a tie).

    Most, not the first line's: a stray line of text at the top would
    otherwise make every good line of the file the error.
    """
    counts = Counter(
        len(columns) for columns in rows if len(columns) > 1 and columns[0] != DOCSTART
    )
    return counts.most_common(1)[0][0] if counts else None


def _is_entity_tag(column: str) -> bool:
    try:
        return parse_tag(column)[0] != "O"
    except ValueError:
        return False


def write_conll(
    path: str | Path | TextIO,
    documents: list[Document],
    tags_per_sentence: list[list[str]] | None = None,
    assertions_per_sentence: list[list[str]] | None = None,
) -> None:
    """Write ``token<TAB>tag`` lines, a blank line after each sentence.

    ``path`` is a file name (written as UTF-8) or an open text stream such
    as ``sys.stdout``.

    ``tags_per_sentence`` (one list per sentence, all documents in order)
    replaces the sentences' own tags, e.g. to write predictions. Documents
    are separated by ``-DOCSTART- O`` lines (each followed by a blank line)
    only when there is more than one, so :func:`read_conll` reads the file
    back into the same documents. Raises ValueError for what CoNLL cannot
    hold: an empty sentence, a token or tag that is empty or has whitespace,
    a sentence without tags.

    ``assertions_per_sentence`` (one value per token, same order) adds a
    column between token and tag: ``token<TAB>assertion<TAB>tag``. It goes in
    the middle because readers, :func:`read_conll` and conlleval among them,
    take the last column as the tag, so the file still reads back with the
    same tags.
    """
    sentences = [sentence for document in documents for sentence in document.sentences]
    for name, rows in (("tag", tags_per_sentence), ("assertion", assertions_per_sentence)):
        if rows is not None and len(rows) != len(sentences):
            raise ValueError(f"{len(sentences)} sentences but {len(rows)} {name} lists")
    lines: list[str] = []
    index = 0
    for document in documents:
        if len(documents) > 1:
            lines += [f"{DOCSTART} O", ""]
        for sentence in document.sentences:
            tags = sentence.tags if tags_per_sentence is None else tags_per_sentence[index]
            _check_writable(sentence, tags, index)
            if assertions_per_sentence is None:
                lines += [f"{token}\t{tag}" for token, tag in zip(sentence.tokens, tags)]
            else:
                assertions = assertions_per_sentence[index]
                _check_writable(sentence, assertions, index)
                lines += [f"{token}\t{assertion}\t{tag}" for token, assertion, tag
                          in zip(sentence.tokens, assertions, tags)]
            lines.append("")
            index += 1
    content = "".join(line + "\n" for line in lines)
    if isinstance(path, (str, Path)):
        Path(path).write_text(content, encoding="utf-8")
    else:
        path.write(content)


def _check_writable(sentence: Sentence, tags: list[str] | None, index: int) -> None:
    where = f"sentence {index} ({sentence.source or 'no source'})"
    if not sentence.tokens:
        raise ValueError(f"{where} has no tokens; CoNLL cannot hold an empty sentence")
    if tags is None or len(tags) != len(sentence.tokens):
        raise ValueError(f"{where}: need one tag per token")
    if sentence.tokens[0] == DOCSTART:
        raise ValueError(f"{where} starts with {DOCSTART}, which would read as a document break")
    for column in (*sentence.tokens, *tags):
        if _COLUMN.fullmatch(column) is None or "\n" in column or "\r" in column:
            raise ValueError(f"{where}: a token or tag is empty or contains whitespace")
