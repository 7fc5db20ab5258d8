"""clinical-ner export: write a SavedModel for TensorFlow Serving."""
from __future__ import annotations

import argparse

from clinical_ner.cli.common import model_path

NAME = "export"
HELP = "write a SavedModel for TensorFlow Serving"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=model_path, help="model directory")
    parser.add_argument("--output", required=True,
                        help="model base path, e.g. models/clinical_ner")
    parser.add_argument("--version", type=int,
                        help="version number (default: highest existing + 1)")


def run(args: argparse.Namespace) -> int:
    from clinical_ner.pipeline import ClinicalNER

    print(ClinicalNER.load(args.model).export(args.output, args.version))
    return 0
