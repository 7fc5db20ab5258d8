"""clinical-ner card: rewrite a model's MODEL_CARD.md, scored on data it did not train on."""
from __future__ import annotations

import argparse
from pathlib import Path

from clinical_ner.cli.common import (
    add_annotated_data_options, model_path, non_empty, read_assertion_map, read_label_map,
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
    print(write_model_card(args.model, data=args.data, data_format=args.input_format,
                           label_map=read_label_map(args.label_map),
                           skip_invalid=args.skip_invalid,
                           assertion_map=read_assertion_map(args.assertion_map), name=args.name,
                           description=args.description, language=args.language))
    return 0
