"""clinical-ner serve: a development server with TensorFlow Serving's gRPC and REST APIs."""
from __future__ import annotations

import argparse
import logging
import signal

from clinical_ner.cli.common import options_named, path_argument, unwind_on_sigterm
from clinical_ner.serving import defaults

NAME = "serve"
HELP = "development gRPC and REST server with TensorFlow Serving's APIs (not for production)"
DESCRIPTION = """\
Serve a SavedModel base path over TensorFlow Serving's gRPC API
(tensorflow.serving.PredictionService and ModelService) and, with
--rest-port, its REST API (/v1/models/NAME...).

This server exists for development and tests. Production uses the official
TensorFlow Serving binary (tensorflow_model_server) or the tensorflow/serving
Docker image with the files in serving/ (see serving/README.md); clients such
as `clinical-ner client` and curl work unchanged against both.

MODEL_BASE_PATH holds numbered version directories (1/, 2/, ...), as written
by the export step. Every version is loaded, new ones are picked up while
running (an empty folder is served, answering NOT_FOUND until a version
appears), and requests without a version get the highest. SIGTERM or SIGINT
stops accepting requests and lets in-flight ones finish. A model directory,
or the bundled model's name (`clinical-ner serve clinical`), is exported as
version 1 of a temporary base path first, deleted when the server stops.
"""
# ModelServer's keyword arguments, each the dest of the option of the same name.
SERVER_OPTIONS = (
    "host", "port", "rest_port", "ssl_cert", "ssl_key", "max_documents", "max_document_chars",
    "max_message_bytes", "max_workers", "max_connections", "max_concurrent_calls",
    "max_batch_documents", "poll_interval_s",
)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add = parser.add_argument
    add("model_base_path", metavar="MODEL_BASE_PATH", type=path_argument,
        help="numbered SavedModel versions (clinical-ner export); a model directory or "
             "bundled model name (clinical) is exported to a temporary base path first")
    add("--model-name", default=defaults.MODEL_NAME,
        help="name clients put in model_spec.name and REST paths (default: %(default)s)")
    add("--host", default=defaults.HOST,
        help="address to listen on; 0.0.0.0 for all interfaces (default: %(default)s)")
    add("--port", type=int, default=defaults.GRPC_PORT,
        help="gRPC port, 0 for any free port (default: %(default)s)")
    add("--rest-port", type=int, default=None, metavar="PORT",
        help=f"also answer TensorFlow Serving's REST API on this port ({defaults.REST_PORT} "
             "is TF Serving's), 0 for any free port (default: no REST)")
    add("--ssl-cert", type=path_argument, help="PEM certificate chain; with --ssl-key, enables TLS "
                                      "on both ports")
    add("--ssl-key", type=path_argument, help="PEM private key of --ssl-cert")
    add("--max-documents", type=int, default=defaults.MAX_DOCUMENTS,
        help="most documents (batch rows) per request (default: %(default)s)")
    add("--max-document-chars", type=int, default=defaults.MAX_DOCUMENT_CHARS,
        help="most characters per document (default: %(default)s)")
    add("--max-message-bytes", type=int, default=defaults.MAX_MESSAGE_BYTES,
        help="largest request message (gRPC) or body (REST) accepted (default: %(default)s)")
    add("--max-workers", type=int, default=defaults.MAX_WORKERS,
        help="requests served at once, per API; REST bodies held at once: this many times "
             "--max-message-bytes (default: %(default)s)")
    add("--max-connections", type=int, default=defaults.MAX_CONNECTIONS, metavar="N",
        help="REST connections open at once, a thread each; more get 503 with Retry-After "
             "(with TLS: closed) (default: %(default)s)")
    add("--max-concurrent-calls", type=int, default=None, metavar="N",
        help="of those, how many run the model at the same time; more use more memory "
             "without more throughput once the CPUs are busy (default: the number of CPUs)")
    add("--max-batch-documents", type=int, default=defaults.BATCH_DOCUMENTS, metavar="N",
        help="requests that wait for the model together are merged into calls of at most N "
             "documents; 1 runs every request on its own (default: %(default)s)")
    add("--poll-interval", dest="poll_interval_s", type=float,
        default=defaults.POLL_INTERVAL_S, metavar="SECONDS",
        help="how often to look for new or removed versions (default: %(default)s)")
    add("--grace", type=float, default=defaults.GRACE_S, metavar="SECONDS",
        help="how long in-flight requests may run after SIGTERM (default: %(default)s)")
    add("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG logs one line per request (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from clinical_ner.serving.serve_until_stopped import serve_until_stopped
    from clinical_ner.serving.server import check_server_options

    options = {option: getattr(args, option) for option in SERVER_OPTIONS}
    # ModelServer checks them too, but only after a model directory has been exported to
    # serve (20 s for the bundled model).
    with options_named(args, SERVER_OPTIONS):
        check_server_options(model_name=args.model_name, **options)

    # A long-running server: --log-level applies to the package's own
    # loggers (DEBUG: a line per request), other libraries stay at the
    # command line's level. Restored after, as main() promises an in-process caller.
    package_logger = logging.getLogger("clinical_ner")
    level = package_logger.level
    package_logger.setLevel(args.log_level)
    # SIGTERM while a model directory is exported (before the server's own handlers): the
    # temporary base path is deleted, not left in $TMPDIR.
    previous = unwind_on_sigterm()
    try:
        with options_named(args, SERVER_OPTIONS):
            return serve_until_stopped(args.model_base_path, args.model_name,
                                       grace_s=args.grace, exit_past_grace=True, **options)
    finally:
        package_logger.setLevel(level)
        signal.signal(signal.SIGTERM, previous)
