"""clinical-ner predict: annotate raw text with a model directory."""
from __future__ import annotations

import argparse
from pathlib import Path

from clinical_ner.cli.common import DeprecatedAlias, model_path

NAME = "predict"
HELP = "annotate raw text"

OUTPUT_FORMATS = ("jsonl", "conll", "i2b2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=model_path, help="model directory")
    parser.add_argument("texts", nargs="*", help="texts to annotate (one document each)")
    parser.add_argument("--input", nargs="+", metavar="FILE",
                        help="UTF-8 text files, one document each")
    parser.add_argument("--output-format", default="jsonl", choices=OUTPUT_FORMATS,
                        help="jsonl (default), conll (tokens and tags), or i2b2 (.con files)")
    parser.add_argument("--format", dest="output_format", choices=OUTPUT_FORMATS,
                        action=DeprecatedAlias, new_option="--output-format",
                        help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path,
                        help="output file (jsonl, conll) or folder (i2b2); default: stdout")


def run(args: argparse.Namespace) -> int:
    from clinical_ner.documents import read_documents
    from clinical_ner.pipeline import ClinicalNER
    from clinical_ner.writers import write_annotations

    ner = ClinicalNER.load(args.model)
    documents = read_documents(args.texts, args.input)
    write_annotations(ner, documents, args.output_format, args.output)
    return 0
