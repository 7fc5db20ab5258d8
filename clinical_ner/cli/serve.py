"""clinical-ner serve: a development server with TensorFlow Serving's gRPC and REST APIs."""
from __future__ import annotations

import argparse
import logging

NAME = "serve"
HELP = "development gRPC and REST server with TensorFlow Serving's APIs (not for production)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clinical_ner.serving import command

    command.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from clinical_ner.serving import command

    # A long-running server: --log-level applies to the package's own
    # loggers (DEBUG: a line per request), other libraries stay at the
    # command line's level.
    logging.getLogger("clinical_ner").setLevel(args.log_level)
    return command.run(args)
