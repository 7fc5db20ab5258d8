"""clinical-ner client: annotate documents through TensorFlow Serving (gRPC)."""
from __future__ import annotations

import argparse

NAME = "client"
HELP = "annotate documents with a model served by TensorFlow Serving (gRPC)"
DESCRIPTION = (
    "Send documents to TensorFlow Serving (or `clinical-ner serve`) and print one JSON line per "
    'document, as `clinical-ner predict` does: {"text": ..., "entities": [{"start", "end", '
    '"text", "label", "confidence"}]}, with "assertion" and "assertion_confidence" on the '
    "entities that have one when the model classifies assertions. Documents are the TEXT "
    "arguments, then the --input "
    "files; with neither, stdin is one document."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clinical_ner.serving import client

    parser.description = DESCRIPTION
    client.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from clinical_ner.serving import client

    return client.run(args)
