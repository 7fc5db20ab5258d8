"""Writers of annotated documents, registered by output format name.

``clinical-ner predict --output-format NAME`` looks the writer up in
:data:`WRITERS`; a new format is one function and one
:func:`register_writer` line, not a new branch in the command.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO

from clinical_ner.errors import ConfigError
from clinical_ner.formats.jsonl import write_json_line
from clinical_ner.text.document import Document, Sentence

if TYPE_CHECKING:
    # A writer takes any annotator (ClinicalNER.load's); only for type hints,
    # so that the formats stay below the annotators.
    from clinical_ner.annotators.base import Annotator

Writer = Callable[["Annotator", list[tuple[str, str]], "Path | None"], None]

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


def write_annotations(ner: Annotator, documents: list[tuple[str, str]], output_format: str,
                      output: Path | None) -> None:
    """Annotate ``(name, text)`` documents and write them in ``output_format``.

    ``output`` is a file (stdout when ``None``) or, for folder formats, a folder.
    """
    if output_format not in WRITERS:
        raise ConfigError(f"unknown output format {output_format!r}; "
                          f"choose one of {', '.join(WRITERS)}")
    if output_format in FOLDER_FORMATS and output is None:
        raise ConfigError(f"--output-format {output_format} needs --output DIR "
                          "(one file per document)")
    WRITERS[output_format](ner, documents, output)


class _OutputStream:
    """``output`` opened for writing, or stdout."""

    def __init__(self, output: Path | None) -> None:
        self.output = output
        self.handle: TextIO = sys.stdout

    def __enter__(self) -> TextIO:
        if self.output is not None:
            self.handle = open(self.output, "w", encoding="utf-8")
        return self.handle

    def __exit__(self, *exc_info: object) -> None:
        if self.handle is not sys.stdout:
            self.handle.close()


@register_writer("jsonl")
def write_jsonl(ner: Annotator, documents: list[tuple[str, str]], output: Path | None) -> None:
    """One ``{"text", "entities"}`` JSON line per document."""
    annotations = ner.annotate([text for _, text in documents])
    with _OutputStream(output) as handle:
        for (_, text), entities in zip(documents, annotations):
            write_json_line(handle, text, entities)


@register_writer("conll")
def write_conll_tags(ner: Annotator, documents: list[tuple[str, str]],
                     output: Path | None) -> None:
    """Tokens and predicted tags, a blank line after each sentence."""
    from clinical_ner.formats.conll import write_conll
    from clinical_ner.text.tokenizer import split_sentences

    conll_documents = []
    for name, text in documents:
        tokens = [[token.text for token in sentence]
                  for sentence in split_sentences(text, ner.config.max_sentence_tokens)]
        tagged = ner.tag(tokens)
        conll_documents.append(Document(name=name, text=text, sentences=[
            Sentence(tokens=words, tags=tags) for words, (tags, _) in zip(tokens, tagged)]))
    with _OutputStream(output) as handle:
        write_conll(handle, conll_documents)


@register_writer("i2b2", folder=True)
def write_i2b2(ner: Annotator, documents: list[tuple[str, str]], output: Path | None) -> None:
    """One i2b2 ``.con`` file per document (and its ``.txt`` when it had no file)."""
    from clinical_ner.formats.i2b2 import entities_to_con_lines

    assert output is not None
    output.mkdir(parents=True, exist_ok=True)
    annotations = ner.annotate([text for _, text in documents])
    for (name, text), entities in zip(documents, annotations):
        lines = entities_to_con_lines(text, entities)
        (output / f"{name}.con").write_text("".join(f"{line}\n" for line in lines),
                                            encoding="utf-8")
        if name.startswith(("text-", "stdin")):
            (output / f"{name}.txt").write_text(text, encoding="utf-8")


@register_writer("html")
def write_html(ner: Annotator, documents: list[tuple[str, str]], output: Path | None) -> None:
    """One self-contained page, entities highlighted by label (:mod:`clinical_ner.formats.html_page`)."""
    from clinical_ner.formats.html_page import render_html

    annotations = ner.annotate([text for _, text in documents])
    with _OutputStream(output) as handle:
        handle.write(render_html([(name, text, entities) for (name, text), entities
                                  in zip(documents, annotations)]))
