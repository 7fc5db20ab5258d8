"""clinical-ner predict: annotate raw text, with the bundled model unless another is named."""
from __future__ import annotations

import argparse
import difflib
import os

from clinical_ner.annotators.load import not_a_model_message
from clinical_ner.cli.common import (
    LOADABLE_MODEL, add_format_option, check_input_files, check_text_arguments, model_path,
    non_empty, path_argument, say_when_reading_a_terminal,
)
from clinical_ner.errors import ModelError, check_output_file, check_output_folder
from clinical_ner.formats.writers import FOLDER_FORMATS, WRITERS
from clinical_ner.pretrained import DEFAULT_MODEL, bundled_models, is_model_reference

NAME = "predict"
HELP = "annotate raw text (with the bundled model clinical unless a model is named)"
TEXTS_DEST = "positionals"  # texts may also follow the options (cli.main)
DESCRIPTION = """\
Annotate texts given as arguments, files (--input) or standard input.

The first argument is the model if it is an existing model directory, an
export (SavedModel or LiteRT) or a bundled model's name (clinical); otherwise
every argument is a text and the bundled model clinical annotates it. So both
of these work:

  clinical-ner predict "CT of the chest showed a 2 cm nodule."
  clinical-ner predict runs/maccrobat "CT of the chest showed a 2 cm nodule."

A first argument that can only be a mistyped model (a word close to a bundled
model's name, or a path whose folder exists) is refused when texts follow it
or --input holds them. --model MODEL names the model explicitly (every
argument is then a text). An argument that is an existing file is refused:
give files with --input.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    output_formats = tuple(WRITERS)
    parser.add_argument("positionals", nargs="*", metavar="[MODEL] TEXT",
                        help=f"an optional model ({LOADABLE_MODEL}), then texts to "
                             "annotate (one document each)")
    parser.add_argument("--model", type=model_path,
                        help=f"{LOADABLE_MODEL} (default: the first argument if it is one, "
                             f"else {DEFAULT_MODEL})")
    parser.add_argument("--input", nargs="+", action="extend", metavar="FILE", type=non_empty,
                        help="UTF-8 text files, one document each")
    add_format_option(parser, "--output-format", output_formats, "jsonl",
                      "jsonl (default), conll (tokens and tags), i2b2 (.con files), or html "
                      "(one self-contained page, entities highlighted)")
    parser.add_argument("--output", type=path_argument,
                        help="output file (jsonl, conll, html) or folder (i2b2); default: stdout")


def run(args: argparse.Namespace) -> int:
    from clinical_ner.formats.jsonl import read_documents
    from clinical_ner.annotators.load import ClinicalNER
    from clinical_ner.formats.writers import check_output_format, write_annotations

    # Every positional: a model is a folder, never a file, and `predict note.txt TEXT`
    # would call the file a mistyped model.
    check_text_arguments(args.positionals)
    model, texts = model_and_texts(args.positionals, args.model, other_input=bool(args.input))
    check_input_files(args.input)
    check_output_format(args.output_format, args.output)
    if args.output_format in FOLDER_FORMATS:
        check_output_folder("--output", args.output)
    else:
        check_output_file("--output", args.output, inputs=args.input or ())
    # Read first: an input that is not UTF-8 is named without waiting for the model to load.
    say_when_reading_a_terminal(texts, args.input)
    documents = read_documents(texts, args.input)
    ner = ClinicalNER.load(model)
    write_annotations(ner, documents, args.output_format, args.output)
    return 0


def model_and_texts(positionals: list[str], model: str | None = None,
                    other_input: bool = False) -> tuple[str, list[str]]:
    """``clinical-ner predict``'s positional arguments split into a model and texts.

    With ``model`` (``--model``) every positional is a text. Otherwise the
    first positional is the model if it names one (:func:`is_model_reference`:
    a model directory, an export or a bundled model's name; ``predict MODEL
    TEXT...``, as before 0.3); if not,
    every positional is a text and the bundled model ``clinical`` annotates
    them. A first argument that can only be a mistyped model is an error
    rather than a text, so that a typo does not silently switch models: one
    word close to a bundled model's name, or a path (a ``/``, no space,
    nothing there but its parent folder exists), when more texts follow or
    ``other_input`` (``--input`` files) holds them.
    ``HIV/AIDS`` stays a text.

    >>> model_and_texts(["CT showed a nodule."])
    ('clinical', ['CT showed a nodule.'])
    >>> model_and_texts(["clinical", "CT showed a nodule."])
    ('clinical', ['CT showed a nodule.'])
    >>> model_and_texts(["clinical"], model="clinical")
    ('clinical', ['clinical'])
    """
    if model is not None:
        return model, list(positionals)
    if not positionals:
        return DEFAULT_MODEL, []
    first = positionals[0]
    if is_model_reference(first):
        return first, list(positionals[1:])
    # os.path, not Path: a note too long for a file name is a text, not an error.
    if os.path.isdir(first):
        raise ModelError(not_a_model_message(first))
    if (len(positionals) > 1 or other_input) and not any(c.isspace() for c in first):
        close = difflib.get_close_matches(first, bundled_models(), n=1, cutoff=0.75)
        if close:
            raise ModelError(f"{first}: no such model; did you mean {close[0]}? (to annotate "
                             f"it as text, name the model: --model {DEFAULT_MODEL})")
        if "/" in first and os.path.isdir(os.path.dirname(first.rstrip("/")) or "."):
            raise ModelError(f"{first}: no such model directory (to annotate it as text, "
                             f"name the model: --model {DEFAULT_MODEL})")
    return DEFAULT_MODEL, list(positionals)
