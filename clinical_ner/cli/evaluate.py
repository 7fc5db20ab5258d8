"""clinical-ner evaluate: score a model on annotated data."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clinical_ner.cli.common import (
    add_annotated_data_options, model_path, read_assertion_map, read_label_map,
)

NAME = "evaluate"
HELP = "score a model on annotated data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=model_path,
                        help="model directory, or the bundled model's name: clinical")
    parser.add_argument("--data", required=True)
    parser.add_argument("--json", help="write the scores as JSON to this file")
    add_annotated_data_options(parser)


def run(args: argparse.Namespace) -> int:
    from clinical_ner.formats import load_corpus
    from clinical_ner.annotators.load import ClinicalNER
    from clinical_ner.evaluation.scorer import format_report
    from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences, report_skipped

    ner = ClinicalNER.load(args.model)
    corpus = load_corpus(args.data, args.input_format, label_map=read_label_map(args.label_map),
                         skip_invalid=args.skip_invalid,
                         assertion_map=read_assertion_map(args.assertion_map))
    report_skipped(corpus, args.data, lambda message: print(message, file=sys.stderr))
    report = evaluate_sentences(ner, corpus_sentences(corpus))
    print(format_report(report), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0
