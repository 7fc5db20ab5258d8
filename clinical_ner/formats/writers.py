"""Writers of annotated documents, registered by output format name.

``clinical-ner predict --output-format NAME`` looks the writer up in
:data:`WRITERS`; a new format is one function and one
:func:`register_writer` line, not a new branch in the command.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections import Counter
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, TextIO

from clinical_ner.artifacts import write_text_atomically
from clinical_ner.errors import ClinicalNERError, ConfigError, os_reason, shown_value
from clinical_ner.formats.jsonl import InputDocument, write_json_line
from clinical_ner.text.document import ASSERTION_LABEL, Document, Sentence
from clinical_ner.text.tags import tags_to_mentions

# The conll assertion column's value for a token outside an entity with an assertion.
NO_ASSERTION = "_"

if TYPE_CHECKING:
    # A writer takes any annotator (ClinicalNER.load's); only for type hints,
    # so that the formats stay below the annotators.
    from clinical_ner.annotators.base import Annotator
    from clinical_ner.text.tokenizer import Token

Writer = Callable[["Annotator", Sequence[InputDocument], "Path | None"], None]

WRITERS: dict[str, Writer] = {}
#: Formats whose output is a folder, not a file.
FOLDER_FORMATS: set[str] = set()


def register_writer(name: str, *, folder: bool = False) -> Callable[[Writer], Writer]:
    def register(writer: Writer) -> Writer:
        WRITERS[name] = writer
        if folder:
            FOLDER_FORMATS.add(name)
        return writer
    return register


def write_annotations(ner: Annotator, documents: Sequence[InputDocument], output_format: str,
                      output: Path | None) -> None:
    """Annotate ``documents`` and write them in ``output_format``.

    ``output`` is a file (stdout when ``None``) or, for folder formats, a folder.
    """
    check_output_format(output_format, output)
    WRITERS[output_format](ner, documents, output)


def check_output_format(output_format: str, output: Path | None) -> None:
    """Raise :class:`ConfigError` unless ``output_format`` is a writer's and ``output`` fits
    it (a folder format needs a folder): before a model is loaded to annotate."""
    if output_format not in WRITERS:
        raise ConfigError(f"unknown output format {shown_value(output_format)}; "
                          f"choose one of {', '.join(WRITERS)}")
    if output_format in FOLDER_FORMATS and output is None:
        raise ConfigError(f"--output-format {output_format} needs --output DIR "
                          "(one file per document)")


class OutputStream:
    """Where a writer writes: ``output``, or stdout, written whole once the writer is done.

    ``output`` is written atomically, so that a failed write (a full disk)
    leaves what the file held before rather than half an output. Both are
    UTF-8, whatever the locale's encoding. A failed write, a closed stdout, or
    a reader of stdout that stops early (``| head``), is one
    :class:`ClinicalNERError` naming where, not an internal error.
    """

    def __init__(self, output: Path | None) -> None:
        self.output = output
        self.handle: TextIO = io.StringIO()

    def __enter__(self) -> TextIO:
        return self.handle

    def __exit__(self, exc_type: object, error: BaseException | None, traceback: object) -> None:
        if error is not None:
            return
        try:
            if self.output is None:
                _write_stdout(self.handle.getvalue())
            else:
                write_output_file(self.output, self.handle.getvalue())
        except OSError as failure:
            raise _write_error(self.output, failure) from None


def _write_stdout(text: str) -> None:
    """``text`` on standard output as UTF-8 bytes.

    Not in the locale's encoding: a Latin-1 or cp1252 stdout could not hold
    ``≥`` (``UnicodeEncodeError``), and wrote an HTML page that says
    ``charset="utf-8"`` in Latin-1.
    """
    if sys.stdout is None:  # closed (`>&-`), or a program started without one
        raise ClinicalNERError("standard output is closed; nothing could be written")
    buffer = getattr(sys.stdout, "buffer", None)
    sys.stdout.flush()
    if buffer is None:  # a text stream without bytes beneath (io.StringIO)
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    buffer.write(text.encode("utf-8"))
    buffer.flush()


def write_output_file(path: str | Path, text: str) -> None:
    """``text`` into ``path``, a command's output file, or one :class:`ClinicalNERError`
    naming it (a full disk, a folder that cannot be written).

    Atomically where ``path`` is a plain file or none yet, so that a failed
    write leaves what it held; through a link or into a device or pipe
    (``/dev/stdout``) as it is, which a rename would replace.
    """
    path = Path(path)
    try:
        if path.exists() and not os.access(path, os.W_OK):
            # A rename would replace a file its owner made read-only, as writing it did not.
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        if path.is_symlink() or (path.exists() and not path.is_file()):
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            write_text_atomically(path, text)
    except OSError as error:
        raise _write_error(path, error) from None


def _write_error(output: Path | None, error: OSError) -> ClinicalNERError:
    """The one-line error of a failed write to ``output`` (``None``: stdout)."""
    if output is not None:
        return ClinicalNERError(f"{output}: cannot write "
                                f"({os_reason(error)})")
    if isinstance(error, BrokenPipeError):
        # Point stdout at nothing, so that its final flush at exit does not fail again.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return ClinicalNERError("standard output was closed by its reader before the output "
                                "was all written")
    return ClinicalNERError(f"standard output: cannot write "
                            f"({os_reason(error)})")


@register_writer("jsonl")
def write_jsonl(ner: Annotator, documents: Sequence[InputDocument], output: Path | None) -> None:
    """One ``{"text", "entities"}`` JSON line per document."""
    annotations = ner.annotate([document.text for document in documents])
    with OutputStream(output) as handle:
        for document, entities in zip(documents, annotations):
            write_json_line(handle, document.text, entities)


@register_writer("conll")
def write_conll_tags(ner: Annotator, documents: Sequence[InputDocument],
                     output: Path | None) -> None:
    """Tokens and predicted tags, a blank line after each sentence.

    With a model that classifies assertions, a column between them holds each
    token's assertion: that of the problem it is part of, else ``_``.
    """
    from clinical_ner.formats.conll import write_conll
    from clinical_ner.text.tokenizer import split_sentences

    with_assertions = bool(ner.assertion_classes)
    conll_documents, assertion_rows = [], []
    for document in documents:
        name, text = document.name, document.text
        sentences = split_sentences(text, ner.config.max_sentence_tokens)
        tokens = [[token.text for token in sentence] for sentence in sentences]
        tags = [sentence_tags for sentence_tags, _ in ner.tag(tokens)]
        conll_documents.append(Document(name=name, text=text, sentences=[
            Sentence(tokens=words, tags=sentence_tags)
            for words, sentence_tags in zip(tokens, tags)]))
        if with_assertions:
            assertion_rows += _token_assertions(ner, text, sentences, tags)
    with OutputStream(output) as handle:
        write_conll(handle, conll_documents,
                    assertions_per_sentence=assertion_rows if with_assertions else None)


def _token_assertions(ner: Annotator, text: str, sentences: list[list[Token]],
                      tags: list[list[str]]) -> list[list[str]]:
    """Each token's assertion, from the problems of ``tags`` classified over their spans.

    Classifying the tagged spans (rather than taking ``annotate``'s entities)
    keeps the column in step with the tag column whatever the runtime.
    """
    rows = [[NO_ASSERTION] * len(sentence) for sentence in sentences]
    problems = [(row, mention) for row, sentence_tags in enumerate(tags)
                for mention in tags_to_mentions(sentence_tags) if mention.label == ASSERTION_LABEL]
    if not problems:
        return rows
    spans = [(sentences[row][mention.first_token].start, sentences[row][mention.last_token].end)
             for row, mention in problems]
    for (row, mention), (assertion, _) in zip(problems, ner.classify_assertions(text, spans)):
        rows[row][mention.first_token:mention.last_token + 1] = (
            [assertion] * (mention.last_token - mention.first_token + 1))
    return rows


@register_writer("i2b2", folder=True)
def write_i2b2(ner: Annotator, documents: Sequence[InputDocument], output: Path | None) -> None:
    """One i2b2 ``.con`` file per document, its ``.ast`` when it has problems with an
    assertion, and its ``.txt`` when it had no file."""
    from clinical_ner.formats.i2b2 import companion_path, write_con_entities

    assert output is not None
    # Names that differ only in case (Note, note) are one file on macOS and Windows.
    counts = Counter(document.name.casefold() for document in documents)
    repeated = next((name for name, count in counts.items() if count > 1), None)
    if repeated is not None:
        # Named by their files' stems (texts given as arguments: text-1, ...), the
        # later document's results overwrote the earlier's, without a word.
        raise ConfigError(f"{counts[repeated]} documents would all be written as "
                          f"{repeated}.con in {output}; give the input files distinct names "
                          "(not only in case) or choose another output format")
    for document in documents:
        _check_not_its_annotations(output / f"{document.name}.con", document)
    written = {document.name for document in documents}
    # Another run's files would read as this run's results (as batch's shards would).
    earlier = sorted(path.name for suffix in ("con", "ast") for path in output.glob(f"*.{suffix}")
                     if path.stem not in written)
    if earlier:
        raise ConfigError(f"{output} holds {earlier[0]}"
                          f"{f' and {len(earlier) - 1} more' if len(earlier) > 1 else ''} "
                          "of another run, which this run would not write; remove them or "
                          "choose another folder")
    annotations = ner.annotate([document.text for document in documents])
    try:
        output.mkdir(parents=True, exist_ok=True)
        for document, entities in zip(documents, annotations):
            con_path = output / f"{document.name}.con"
            write_con_entities(con_path, document.text, entities)
            if document.path is None:
                # Where the reader looks for it: txt/ beside a concept/ folder, as the .ast.
                txt_path = companion_path(con_path, "txt")
                txt_path.parent.mkdir(exist_ok=True)
                txt_path.write_text(document.text, encoding="utf-8")
    except OSError as error:
        raise _write_error(Path(error.filename or output), error) from None


def _check_not_its_annotations(con_path: Path, document: InputDocument) -> None:
    """Raise if ``con_path`` (or its ``.ast``) is the annotation file of the input text itself
    (or of a copy of it), or would lie beside another text of the document's name.

    Beside its ``.txt`` an i2b2 corpus keeps its (often gold) annotations,
    which predicting into that folder would overwrite; beside another
    ``.txt`` the new ``.con`` reads back as that text's concepts.
    """
    from clinical_ner.formats.i2b2 import companion_path

    text_path = document.path
    txt_path = companion_path(con_path, "txt")
    if text_path is None or not txt_path.is_file():
        return
    if (not os.path.samefile(txt_path, text_path)
            and txt_path.read_bytes() != document.text.encode("utf-8")):
        raise ConfigError(f"--output {con_path.parent}: {txt_path} is another text than the "
                          f"input {text_path}; {con_path.name} beside it would read back as its "
                          "annotations, so give another folder")
    for annotation_path in (con_path, companion_path(con_path, "ast")):
        if annotation_path.exists():
            raise ConfigError(f"--output {con_path.parent}: {annotation_path} holds the "
                              f"annotations of the input {text_path}; writing it would overwrite "
                              "them, so give another folder")


@register_writer("html")
def write_html(ner: Annotator, documents: Sequence[InputDocument], output: Path | None) -> None:
    """One self-contained page, entities highlighted by label (:mod:`clinical_ner.formats.html_page`)."""
    from clinical_ner.formats.html_page import render_html

    annotations = ner.annotate([document.text for document in documents])
    # Files of one stem (a/note.txt, b/note.txt) are headed by their paths, to be told apart.
    counts = Counter(document.name for document in documents)
    headings = [str(document.path) if counts[document.name] > 1 and document.path is not None
                else document.name for document in documents]
    with OutputStream(output) as handle:
        handle.write(render_html([(heading, document.text, entities) for heading, document, entities
                                  in zip(headings, documents, annotations)]))
