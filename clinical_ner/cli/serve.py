"""clinical-ner serve: a development server with TensorFlow Serving's gRPC and REST APIs."""
from __future__ import annotations

import argparse

NAME = "serve"
HELP = "development gRPC and REST server with TensorFlow Serving's APIs (not for production)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clinical_ner.serving import command

    command.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from clinical_ner.cli import configure_logging
    from clinical_ner.serving import command

    configure_logging(args.log_level)
    return command.run(args)
