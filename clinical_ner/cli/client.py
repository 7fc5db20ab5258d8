"""clinical-ner client: annotate documents through TensorFlow Serving (gRPC)."""
from __future__ import annotations

import argparse
from clinical_ner.cli.common import (
    check_input_files, check_text_arguments, options_named, path_argument,
    say_when_reading_a_terminal,
)
from clinical_ner.errors import check_host_port, check_integer, check_seconds
from clinical_ner.serving import defaults

NAME = "client"
HELP = "annotate documents with a model served by TensorFlow Serving (gRPC)"
TEXTS_DEST = "texts"  # texts may also follow the options (cli.main)
DESCRIPTION = (
    "Send documents to TensorFlow Serving (or `clinical-ner serve`) and print one JSON line per "
    'document, as `clinical-ner predict` does: {"text": ..., "entities": [{"start", "end", '
    '"text", "label", "confidence"}]}, with "assertion" and "assertion_confidence" on the '
    "entities that have one when the model classifies assertions. Documents are the TEXT "
    "arguments, then the --input "
    "files; with neither, stdin is one document."
)
# ServingClient's keyword arguments, each the dest of the option of the same name.
CLIENT_OPTIONS = ("target", "model_name", "version", "signature", "timeout", "deadline",
                  "batch_size", "root_certificates")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clinical_ner.export.signatures import SERVING_DEFAULT

    parser.description = DESCRIPTION
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="documents to annotate")
    parser.add_argument("--input", nargs="+", action="extend", default=[], metavar="FILE",
                        type=path_argument, help="UTF-8 text files, one document each")
    parser.add_argument("--target", default=defaults.TARGET,
                        help="host:port, port 1 to 65535, no scheme; [::1]:8500 for IPv6 "
                             "(default: %(default)s)")
    parser.add_argument("--model-name", default=defaults.MODEL_NAME,
                        help="the served model's name (default: %(default)s)")
    parser.add_argument("--version", type=int, help="model version (default: the highest served)")
    parser.add_argument("--signature", default=SERVING_DEFAULT,
                        help="the signature that takes the documents (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=defaults.TIMEOUT_S, metavar="SECONDS",
                        help="per attempt (default: %(default)s)")
    parser.add_argument("--deadline", type=float, default=defaults.DEADLINE_S, metavar="SECONDS",
                        help="per request, retries included (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.BATCH_DOCUMENTS,
                        help="documents per request (default: %(default)s)")
    parser.add_argument("--root-certificates", type=path_argument, metavar="PEM",
                        help="CA certificates to verify the server; enables TLS")


def run(args: argparse.Namespace) -> int:
    # ServingClient checks these too, naming its arguments; here they are named as
    # typed, and before TensorFlow is imported and stdin is read as the document.
    check_host_port("--target", args.target)
    check_integer("--batch-size", args.batch_size)
    if args.version is not None:
        check_integer("--version", args.version)
    check_seconds("--timeout", args.timeout, maximum=defaults.MAX_WAIT_S)
    check_seconds("--deadline", args.deadline, maximum=defaults.MAX_WAIT_S)
    from clinical_ner.formats.jsonl import read_documents, write_json_line
    from clinical_ner.formats.writers import OutputStream
    from clinical_ner.serving.client import ServingClient, ServingError
    from clinical_ner.serving.client_errors import request_rows

    check_input_files(args.input)
    check_text_arguments(args.texts)
    say_when_reading_a_terminal(args.texts, args.input)
    documents = read_documents(args.texts, args.input)
    with options_named(args, CLIENT_OPTIONS), ServingClient(
            **{option: getattr(args, option) for option in CLIENT_OPTIONS}) as client:
        try:
            annotations = client.annotate([document.text for document in documents])
        except ServingError as error:
            if error.rows is None:
                raise
            # The server numbers the documents of one request; name the texts and files
            # they are.
            names = ", ".join(str(documents[index].path or documents[index].name)
                              for index in error.rows)
            raise type(error)(f"{error.reason} ({request_rows(len(error.rows))}: {names})",
                              error.code) from None
    # A reader that stops early (| head) is one line, as for predict.
    with OutputStream(None) as handle:
        for document, entities in zip(documents, annotations):
            write_json_line(handle, document.text, entities)
    return 0
