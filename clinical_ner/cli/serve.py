"""clinical-ner serve: a development server with TensorFlow Serving's API."""
from __future__ import annotations

import argparse

NAME = "serve"
HELP = "development gRPC server with TensorFlow Serving's API (not for production)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clinical_ner.serving import server

    parser.description = server.SERVE_DESCRIPTION
    server.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from clinical_ner.cli import configure_logging
    from clinical_ner.serving import server

    configure_logging(args.log_level)
    return server.run(args)
