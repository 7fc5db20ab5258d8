"""clinical-ner card: rewrite a model's MODEL_CARD.md, scored on data it did not train on."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clinical_ner.cli.common import (
    add_annotated_data_options, check_model_scores_assertions, model_path, non_empty,
    read_assertion_map, read_label_map,
)
from clinical_ner.errors import ConfigError
from clinical_ner.pretrained import bundled_name

NAME = "card"
HELP = "rewrite a model's MODEL_CARD.md (with --data: its scores on that data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=model_path,
                        help="model directory (not a bundled model, whose card ships with "
                             "the package)")
    parser.add_argument("--data", type=non_empty,
                        help="annotated data the model did not train on: the card's "
                             "scores become its exact and lenient scores there")
    for field in ("name", "description", "language"):
        parser.add_argument(f"--{field}", help=f"the card's {field} (kept for later rewrites)")
    add_annotated_data_options(parser)


def run(args: argparse.Namespace) -> int:
    from clinical_ner.evaluation.model_card import write_model_card

    bundled = bundled_name(args.model)
    if bundled is not None:
        # The card and its scores ship with the package: rewriting them in place
        # (with another data set's scores) would change what every user reads.
        raise ConfigError(
            f"{bundled}: the bundled model's card ships with the package "
            f"({Path(args.model) / 'MODEL_CARD.md'}); to score it on your data run 'clinical-ner "
            "evaluate', or copy the folder and write the copy's card")
    if args.data is None:
        _check_no_data_options(args)
    label_map = read_label_map(args.label_map)
    assertion_map = read_assertion_map(args.assertion_map)
    if assertion_map is not None:
        _check_assertion_map(args)
    print(write_model_card(args.model, data=args.data, data_format=args.input_format,
                           label_map=label_map, skip_invalid=args.skip_invalid,
                           assertion_map=assertion_map, name=args.name,
                           description=args.description, language=args.language,
                           emit=lambda message: print(message, file=sys.stderr)))
    return 0


def _check_no_data_options(args: argparse.Namespace) -> None:
    """Refuse the options that say how to read ``--data`` when there is none: the card would
    be written as if they had been used."""
    reads_data = [("--label-map", args.label_map is not None, "whose labels it maps"),
                  ("--assertion-map", args.assertion_map is not None, "it reads assertions of"),
                  ("--input-format", args.input_format != "auto", "whose format it names"),
                  ("--skip-invalid", args.skip_invalid, "whose invalid sentences it skips")]
    for option, given, what in reads_data:
        if given:
            raise ConfigError(f"{option} needs --data (the data {what})")


def _check_assertion_map(args: argparse.Namespace) -> None:
    """As ``evaluate`` checks it: a model without assertions has no assertion scores (the
    map is checked against the data as the card reads it)."""
    from clinical_ner.model.vocab import Vocabulary

    check_model_scores_assertions(args.model, Vocabulary.load(args.model).assertions)
