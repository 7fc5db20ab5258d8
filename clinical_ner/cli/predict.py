"""clinical-ner predict: annotate raw text, with the bundled model unless another is named."""
from __future__ import annotations

import argparse
from pathlib import Path

from clinical_ner.cli.common import add_format_option, model_path
from clinical_ner.formats.writers import WRITERS

NAME = "predict"
HELP = "annotate raw text (with the bundled model clinical unless a model is named)"
DESCRIPTION = """\
Annotate texts given as arguments, files (--input) or standard input.

The first argument is the model if it is an existing model directory or a
bundled model's name (clinical); otherwise every argument is a text and the
bundled model clinical annotates it. So both of these work:

  clinical-ner predict "CT of the chest showed a 2 cm nodule."
  clinical-ner predict runs/maccrobat "CT of the chest showed a 2 cm nodule."

--model MODEL names the model explicitly (every argument is then a text).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    output_formats = tuple(WRITERS)
    parser.add_argument("positionals", nargs="*", metavar="[MODEL] TEXT",
                        help="an optional model directory or bundled name, then texts to "
                             "annotate (one document each)")
    parser.add_argument("--model", type=model_path,
                        help="model directory or bundled model name (default: the first "
                             "argument if it is one, else clinical)")
    parser.add_argument("--input", nargs="+", metavar="FILE",
                        help="UTF-8 text files, one document each")
    add_format_option(parser, "--output-format", output_formats, "jsonl",
                      "jsonl (default), conll (tokens and tags), i2b2 (.con files), or html "
                      "(one self-contained page, entities highlighted)")
    parser.add_argument("--output", type=Path,
                        help="output file (jsonl, conll, html) or folder (i2b2); default: stdout")


def run(args: argparse.Namespace) -> int:
    from clinical_ner.formats.jsonl import read_documents
    from clinical_ner.annotators.keras_annotator import ClinicalNER
    from clinical_ner.pretrained import model_and_texts
    from clinical_ner.formats.writers import write_annotations

    model, texts = model_and_texts(args.positionals, args.model)
    ner = ClinicalNER.load(model)
    documents = read_documents(texts, args.input)
    write_annotations(ner, documents, args.output_format, args.output)
    return 0
