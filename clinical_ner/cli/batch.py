"""clinical-ner batch: annotate many notes on Apache Beam into sharded JSON lines."""
from __future__ import annotations

import argparse
import logging
import sys
import time

from clinical_ner.batch.notes import (
    DEFAULT_MAX_NOTE_BYTES,
    INPUT_FORMATS,
    JSONL_FORMAT,
    TEXT_FORMAT,
)
from clinical_ner.cli.common import non_empty, unwind_on_sigterm
from clinical_ner.errors import EXIT_NOTES_SET_ASIDE, ConfigError

NAME = "batch"
HELP = "annotate many notes on Apache Beam (needs the [beam] extra)"

# Warnings Beam 2.77 logs in every run, about nothing that matters here: its
# BigQuery client without apitools, RunInference's memory probe, which imports
# torch, and (each multi_processing worker) the main session it does not use.
_HARMLESS_BEAM_WARNINGS = ("apitools not found", "Resource module is not available",
                           "No semi_persistent_directory found")
# How Beam's logging service logs here again what a worker process logged (the entry as
# protobuf text: 'severity: WARN timestamp {...} message: "..." log_location: ...').
_WORKER_ENTRY = "Worker: %s"
_ENTRY_MESSAGE = 'message: "'


class _DropHarmlessBeamWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message == _WORKER_ENTRY and record.args:
            message = str(record.args[0]).partition(_ENTRY_MESSAGE)[2]
        return not message.startswith(_HARMLESS_BEAM_WARNINGS)


class _DropBeamErrors(logging.Filter):
    """ERROR records of anything but clinical-ner: Beam's failure of a step, with its message
    and traceback, logged on ``apache_beam.*`` loggers in this process and again on the root
    logger when a worker process sent it (Beam's logging service).

    The command reports the failure in one line (the exception's type, unless
    ``--verbose``), and an exception's message may quote a note.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or record.name.startswith("clinical_ner")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=non_empty,
                        help="exported SavedModel: a version folder or a base path "
                             "(local, gs://, ...: any path tf.io.gfile reads), or a "
                             "LiteRT export folder (export --format litert; any path "
                             "Beam reads; its workers never import TensorFlow)")
    parser.add_argument("--input", required=True, action="append", metavar="PATTERN",
                        type=non_empty,
                        help="files to read (glob patterns; repeat for several): text files "
                             "(one note each, its path is its id) or JSON lines")
    parser.add_argument("--input-format", default=TEXT_FORMAT, choices=INPUT_FORMATS,
                        help="text (default) or jsonl (one JSON object a line)")
    # Defaults None: given with text files, they are refused, not ignored.
    parser.add_argument("--id-field", help="jsonl: the id field (default: id)")
    parser.add_argument("--text-field", help="jsonl: the text field (default: text)")
    parser.add_argument("--output", required=True, metavar="FOLDER",
                        help="writes entities-*.jsonl and errors-*.jsonl here")
    parser.add_argument("--max-note-bytes", type=int, default=DEFAULT_MAX_NOTE_BYTES,
                        help="set aside larger notes (a text file's size, a JSON line's "
                             f"length; default {DEFAULT_MAX_NOTE_BYTES})")
    parser.add_argument("--runner", default="FnApiRunner",
                        help="Beam runner (default FnApiRunner, offline; DataflowRunner, "
                             "FlinkRunner, SparkRunner, ...)")
    parser.usage = ("%(prog)s MODEL --input PATTERN [--input PATTERN ...] --output FOLDER "
                    "[options] [-- BEAM_OPTION ...]")
    parser.epilog = ("Arguments after '--' are Beam pipeline options, e.g. -- "
                     "--direct_num_workers=2 --direct_running_mode=multi_processing. "
                     f"Exits with {EXIT_NOTES_SET_ASIDE} when the run finished but set notes "
                     "aside (listed in errors-*.jsonl).")
    parser.set_defaults(pipeline_options=[])
    # argparse fills positionals at the first positional it meets (the model),
    # so Beam options after '--' would be "unrecognized": split them off first.
    parse_known_args = parser.parse_known_args

    def parse_with_pipeline_options(args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        pipeline_options = []
        if "--" in args:
            cut = args.index("--")
            args, pipeline_options = args[:cut], args[cut + 1:]
        namespace, extras = parse_known_args(args, namespace)
        namespace.pipeline_options = pipeline_options
        return namespace, extras

    parser.parse_known_args = parse_with_pipeline_options


def run(args: argparse.Namespace) -> int:
    # On the handlers: a logger's filter skips the records its children pass up (a worker's
    # warnings, logged again by Beam's logging service).
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropHarmlessBeamWarnings())
        if not args.verbose:
            handler.addFilter(_DropBeamErrors())
    try:
        from clinical_ner.batch.runner import run_batch
    except ModuleNotFoundError as error:
        if error.name != "apache_beam":
            raise
        raise ConfigError("needs Apache Beam: pip install 'clinical-ner[beam]'") from None

    errors_shards = f"{args.output.rstrip('/')}/errors-*.jsonl"
    # Only those given: run_batch holds the defaults.
    fields = {name: value for name, value in (("id_field", args.id_field),
                                              ("text_field", args.text_field))
              if value is not None}
    if fields and args.input_format != JSONL_FORMAT:
        # Ignored, a JSON lines file was read as one note (the file's path its id).
        given = " and ".join(f"--{name.replace('_', '-')}" for name in fields)
        raise ConfigError(f"{given} name fields of JSON lines; add --input-format jsonl")
    # So that a stopped run removes what it wrote into --output (Beam's beam-temp-* folders,
    # the folders it made), as a failed one does; Python's default ended it on the spot.
    unwind_on_sigterm()
    started = time.perf_counter()
    totals = run_batch(args.model, args.input, args.output, input_format=args.input_format,
                       **fields,
                       max_note_bytes=args.max_note_bytes, runner=args.runner,
                       pipeline_args=args.pipeline_options)
    seconds = time.perf_counter() - started
    print(f"notes annotated: {totals['notes']}, set aside: {totals['errors']} "
          f"(see {errors_shards})")
    print(f"tokens: {totals['tokens']}, entities: {totals['entities']}, "
          f"in {seconds:.1f} s ({totals['notes'] / seconds:.1f} notes/s, "
          f"{totals['tokens'] / seconds:.0f} tokens/s)")
    runtimes = [f"{name} on {totals[metric]} worker{'s' if totals[metric] != 1 else ''}"
                for name, metric in (("LiteRT", "workers_litert"),
                                     ("TensorFlow", "workers_tensorflow")) if totals[metric]]
    if runtimes:
        print(f"runtime: {', '.join(runtimes)}")
    if totals["errors"]:
        print(f"clinical-ner batch: {totals['errors']} note(s) set aside, their reasons in "
              f"{errors_shards} (exit code {EXIT_NOTES_SET_ASIDE})", file=sys.stderr)
        return EXIT_NOTES_SET_ASIDE
    return 0
