"""``run_batch``: the whole ``clinical-ner batch`` pipeline, built and run on a Beam runner."""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.io.filesystem import BeamIOError, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from clinical_ner.batch import metrics
from clinical_ner.batch.model_handler import AnnotatorHandler, handler_for
from clinical_ner.batch.notes import (
    DEFAULT_MAX_NOTE_BYTES,
    INPUT_FORMATS,
    MAX_NOTE_BYTES,
    TEXT_FORMAT,
    NoteError,
    result_json_line,
)
from clinical_ner.batch.sources import ReadNotes
from clinical_ner.batch.transform import AnnotateNotes
from clinical_ner.errors import (
    ClinicalNERError, ConfigError, UnavailableError, check_choice, check_integer,
    check_output_folder, irregular_file,
)

# Beam 2.77's DirectRunner first tries the Prism runner, which downloads a
# program at first use; FnApiRunner runs offline, in-process or in
# --direct_num_workers processes.
DEFAULT_RUNNER = "FnApiRunner"
# What the worker processes a local runner starts (--direct_num_workers with
# --direct_running_mode=multi_processing) find in their environment, unless
# the user's environment sets it. glibc gives each thread that allocates a
# heap arena of its own (up to 8 per core), where freed memory stays; a
# worker's gRPC and bundle threads are many. Two arenas took a LiteRT
# worker's peak from 307-315 to 286 MB, at the same speed (benchmarks/README.md).
# Runners with their own workers (Dataflow, Flink) take it from the workers'
# environment: docs/guide/annotating-at-scale.md.
WORKER_ENVIRONMENT = {"MALLOC_ARENA_MAX": "2"}
# FnApiRunner hands its worker processes (multi_processing) none of the pipeline options
# (their PIPELINE_OPTIONS is "{}"), so each logged at Beam's default, INFO, on its own
# stderr: about 18 lines, --default_sdk_harness_log_level or not. A worker reads its
# options from the JSON file this variable names instead (sdk_worker_main.create_harness).
WORKER_OPTIONS_FILE = "PIPELINE_OPTIONS_FILE"
# The options of the worker's logging that such a file carries.
WORKER_LOG_OPTIONS = ("default_sdk_harness_log_level", "sdk_harness_log_level_overrides")
ENTITIES_PREFIX = "entities"
ERRORS_PREFIX = "errors"
SUFFIX = ".jsonl"
# What FnApiRunner raises when a worker process ends mid-bundle (killed; Beam logs its exit
# code from another thread).
BEAM_WORKER_LOST = "Channel closed prematurely."
# fileio.MatchAll's error for a pattern that matches no file (EmptyMatchTreatment.DISALLOW).
BEAM_NO_MATCH = "Empty match for pattern {pattern}. Disallowed."
# The steps that write the shards, and how Beam reports an OSError of theirs (its errno).
WRITE_ENTITIES = "WriteEntities"
WRITE_ERRORS = "WriteErrors"
_WRITE_FAILURE = re.compile(
    rf"Error: \[Errno ([0-9]+)\][^\n]*\[while running '(?:{WRITE_ENTITIES}|{WRITE_ERRORS})/")
# The last line of a traceback that one of our errors ended: a worker process
# (multi_processing) hands the driver its failure as text, in a RuntimeError.
_WORKER_ERROR = re.compile(r"(clinical_ner(?:\.\w+)+)\.(\w+): (.+)")
# How Beam's file sinks begin the folder of a write's temporary files, in the output folder.
BEAM_TEMP_PREFIX = "beam-temp-"


def run_batch(model_path: str, inputs: Sequence[str], output: str, *,
              input_format: str = TEXT_FORMAT, id_field: str = "id", text_field: str = "text",
              max_note_bytes: int = DEFAULT_MAX_NOTE_BYTES, runner: str = DEFAULT_RUNNER,
              pipeline_args: Sequence[str] = (),
              handler: AnnotatorHandler | None = None) -> dict[str, int]:
    """Annotate every note of ``inputs`` into ``output``; return the metric totals.

    Writes ``<output>/entities-SSSSS-of-NNNNN.jsonl`` (``{"id", "entities"}``
    a line) and ``<output>/errors-SSSSS-of-NNNNN.jsonl`` (``{"id", "source",
    "reason"}``): each note read lands in exactly one of them. The model path,
    the inputs and the output folder are checked before the pipeline starts.
    ``pipeline_args`` are Beam pipeline options (``--direct_num_workers=2``).
    ``model_path`` is an exported SavedModel (a version folder or a base
    path; anything ``tf.io.gfile`` reads) or a LiteRT export folder (anything
    Beam's ``FileSystems`` read), whose workers never import TensorFlow; the
    totals' ``workers_litert`` and ``workers_tensorflow`` say which ran.
    ``handler`` replaces the handler built from ``model_path``
    (:func:`clinical_ner.batch.model_handler.handler_for`). A run that fails or
    is stopped removes what it wrote into a local ``output``; an ``output`` it
    cannot write is a :class:`~clinical_ner.errors.ClinicalNERError`, a worker
    process killed mid-run an :class:`~clinical_ner.errors.UnavailableError`.

    Example::

        totals = run_batch("models/clinical_ner/1", ["notes/*.txt"], "out")
        print(totals["notes"], totals["errors"])
    """
    check_choice("input_format", input_format, INPUT_FORMATS)
    check_integer("--max-note-bytes", max_note_bytes, maximum=MAX_NOTE_BYTES)
    if id_field == text_field:
        raise ConfigError(f"the id field and the text field are both {id_field!r}; every id "
                          "would be the whole note")
    # The output first: a mistyped folder is named before the model is looked at.
    _check_output(output)
    handler = handler or handler_for(model_path)
    given_inputs = dict(zip(_input_patterns(inputs), inputs))  # each as Beam matches it
    inputs = list(given_inputs)
    pipeline = _pipeline(runner, pipeline_args)
    notes, errors = pipeline | "ReadNotes" >> ReadNotes(inputs, input_format, id_field,
                                                        text_field, max_note_bytes)
    (notes
     | "AnnotateNotes" >> AnnotateNotes(handler=handler)
     | "EntitiesJson" >> beam.MapTuple(result_json_line)
     | WRITE_ENTITIES >> beam.io.WriteToText(FileSystems.join(output, ENTITIES_PREFIX),
                                             file_name_suffix=SUFFIX, coder=BytesCoder()))
    (errors
     | "ErrorsJson" >> beam.Map(NoteError.to_json_line)
     | WRITE_ERRORS >> beam.io.WriteToText(FileSystems.join(output, ERRORS_PREFIX),
                                           file_name_suffix=SUFFIX, coder=BytesCoder()))
    with worker_environment(), _worker_log_options(pipeline), _output_left_as_found(output):
        try:
            result = pipeline.run()
            result.wait_until_finish()
        except Exception as error:
            known = _known_failure(error, output, given_inputs)
            if known is None:
                raise
            raise known from None
    return metrics.totals(result.metrics())


def _known_failure(error: Exception, output: str,
                   given_inputs: dict[str, str]) -> BaseException | None:
    """What the user is to see of a failed run (each was an internal error, exit 70), or None.

    * a stop (Ctrl-C, SIGTERM unwound as ``SystemExit``) that came while a step ran in this
      process (FnApiRunner's default), which Beam re-raised as ``RuntimeError("KeyboardInterrupt
      [while running ...]")``, the stop its context: the stop itself;
    * a step writing the shards failed with an ``OSError`` (disk full): Beam names the step
      and the errno, in a worker process's traceback too. The operating system's words only;
    * a worker process ended mid-bundle (killed: out of memory?);
    * one of this package's errors raised in a worker process (an export moved away or
      damaged after the check): raised again here, as an error of its own class;
    * an ``--input`` matched no file any more when the pipeline read it
      (:class:`~clinical_ner.batch.sources.ReadNotes`): named as the user gave it.
    """
    context = error.__context__
    while context is not None:
        if isinstance(context, (SystemExit, KeyboardInterrupt)):
            return context
        context = context.__context__
    written = _WRITE_FAILURE.search(str(error))
    if written:
        return ClinicalNERError(f"--output {output}: cannot write "
                                f"({os.strerror(int(written.group(1)))})")
    for pattern, given in given_inputs.items():
        if BEAM_NO_MATCH.format(pattern=pattern) in str(error):
            return ConfigError(f"--input {given}: no file matches any more (moved or removed "
                               "after the run started)")
    if not isinstance(error, ClinicalNERError):
        raised_in_worker = _worker_error(str(error))
        if raised_in_worker is not None:
            return raised_in_worker
    if isinstance(error, RuntimeError) and str(error) == BEAM_WORKER_LOST:
        return UnavailableError("a Beam worker process ended mid-run (killed: out of memory?); "
                                "run again, with fewer --direct_num_workers or more memory")
    return None


def _worker_error(traceback_text: str) -> ClinicalNERError | None:
    """The error of this package that ended ``traceback_text`` (a worker's), or None.

    Only its class and one-line message are kept: our errors never quote a note.
    """
    # The last line only: an error of ours that another one followed is not the failure.
    last_line = (traceback_text.strip().splitlines() or [""])[-1]
    found = _WORKER_ERROR.fullmatch(last_line)
    if found is None:
        return None
    module, name, message = found.groups()
    try:
        raised = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    if not (isinstance(raised, type) and issubclass(raised, ClinicalNERError)):
        return None  # MessageWithheldError too: an unexpected failure stays one
    # The nearest class that takes a message alone (DataFormatError takes its parts).
    return next(kind for kind in raised.__mro__
                if kind.__init__ is ClinicalNERError.__init__)(message)


@contextlib.contextmanager
def _output_left_as_found(output: str) -> Iterator[None]:
    """On failure, remove what the run wrote into a local ``output`` (and the folders it made).

    A run that fails (FnApiRunner does not retry a bundle) left Beam's
    ``beam-temp-*`` folders, perhaps shards, in ``output``: the next run
    carried them. The shards are this run's: :func:`_check_output` refused an
    output that held any. Other runners' outputs (``gs://...``) are left to
    them.
    """
    if "://" in output:
        yield
        return
    folder = os.path.abspath(output)
    made = None if os.path.isdir(folder) else folder  # the first folder the run makes
    while made is not None and not os.path.isdir(os.path.dirname(made)):
        made = os.path.dirname(made)
    before = set() if made is not None else set(os.listdir(folder))
    try:
        yield
    except BaseException:
        written = set(os.listdir(folder)) - before if os.path.isdir(folder) else set()
        for name in written:
            path = os.path.join(folder, name)
            if name.startswith(BEAM_TEMP_PREFIX) and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif name.startswith((f"{ENTITIES_PREFIX}-", f"{ERRORS_PREFIX}-")):
                with contextlib.suppress(OSError):
                    os.remove(path)
        # The folders the run made, up to the first, where empty (rmdir refuses others).
        while made is not None:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
            if folder == made:
                break
            folder = os.path.dirname(folder)
        raise


@contextlib.contextmanager
def worker_environment() -> Iterator[None]:
    """``WORKER_ENVIRONMENT`` in ``os.environ`` (where unset) while worker processes start."""
    added = {name: value for name, value in WORKER_ENVIRONMENT.items()
             if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@contextlib.contextmanager
def _worker_log_options(pipeline: beam.Pipeline) -> Iterator[None]:
    """FnApiRunner's worker processes log at the level of this process's root logger
    (``clinical-ner batch``: WARNING, INFO with ``--verbose``), or at the
    ``--default_sdk_harness_log_level`` given, with the ``--sdk_harness_log_level_overrides``
    given, through a :data:`WORKER_OPTIONS_FILE` while they start.

    A worker still logs two lines at INFO before it reads the file (its logging handler,
    the file's path). A ``PIPELINE_OPTIONS_FILE`` the user set is left alone, and so are
    other runners, whose workers are handed their options (and would take this file for
    all of them).
    """
    if not isinstance(pipeline.runner, FnApiRunner) or WORKER_OPTIONS_FILE in os.environ:
        yield
        return
    given = pipeline.options.get_all_options(drop_default=True)
    options = {name: given[name] for name in WORKER_LOG_OPTIONS if name in given}
    options.setdefault(WORKER_LOG_OPTIONS[0], str(logging.getLogger().getEffectiveLevel()))
    descriptor, path = tempfile.mkstemp(prefix="clinical-ner-worker-options-", suffix=".json")
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump({"options": options}, file)
    os.environ[WORKER_OPTIONS_FILE] = path
    try:
        yield
    finally:
        os.environ.pop(WORKER_OPTIONS_FILE, None)
        with contextlib.suppress(OSError):
            os.remove(path)


def _pipeline(runner: str, pipeline_args: Sequence[str]) -> beam.Pipeline:
    """Beam's pipeline, every option known to Beam (or to the runner) and of the right type.

    Beam logs an unknown option (``--direct_num_workes=2``) or a word that is
    no option (``direct_num_workers=2``) as a warning and runs without it, and
    a bad value exits with its 146-line usage block. Both are looked for once
    the pipeline has imported its runner, whose module may define options of
    its own.
    """
    if any(argument == "--runner" or argument.startswith("--runner=")
           for argument in pipeline_args):
        # Beam takes the last one: --runner was ignored, or named in an error it did not cause.
        raise ConfigError("--runner after '--' as well: give the runner once, as --runner RUNNER "
                          "before '--'")
    options = PipelineOptions([f"--runner={runner}", *pipeline_args])
    usage = io.StringIO()
    discarded = _DiscardedArguments()
    beam_options_log = logging.getLogger(PipelineOptions.__module__)
    beam_options_log.addFilter(discarded)
    try:
        try:
            with contextlib.redirect_stderr(usage):
                options.get_all_options()
        except SystemExit:
            reason = usage.getvalue().strip().splitlines()[-1:] or ["invalid"]
            raise ConfigError(f"Beam pipeline options: {reason[0].split('error: ', 1)[-1]}") \
                from None
        try:
            pipeline = beam.Pipeline(options=options)
        except ValueError as error:  # Beam's "Unexpected pipeline runner: ..."
            raise ConfigError(f"--runner {runner}: {error}") from None
        discarded.count = 0  # before the runner's options were known, they were unknown
        unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                         - set(options.get_all_options()))
    finally:
        beam_options_log.removeFilter(discarded)
    if unknown:
        raise ConfigError(f"unknown Beam pipeline option(s): "
                          f"{', '.join('--' + name for name in unknown)}")
    if discarded.count:
        # Not quoted: a word there may be a note's text pasted in the wrong place.
        raise ConfigError(f"{discarded.count} argument(s) after '--' that are not Beam "
                          "options, which start with -- (--direct_num_workers=2)")
    return pipeline


class _DiscardedArguments(logging.Filter):
    """Beam's warning that it drops arguments it cannot read: counted, and kept off the log.

    Beam runs without them (``-- direct_num_workers=2``: one worker); the
    warning quotes them. ``count`` is that of the last such warning.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Discarding unparseable args"):
            self.count = len(record.args[0]) if record.args else 1
            return False
        return True


def _input_patterns(patterns: Sequence[str]) -> list[str]:
    """The patterns as Beam is to match them (:func:`_local_pattern`); each must match a file.

    Errors name a pattern as given.
    """
    if not patterns:
        raise ConfigError("no --input given")
    matched = [pattern if "://" in pattern else _local_pattern(pattern)
               for pattern in patterns]
    for given, pattern in zip(patterns, matched):
        if "://" not in pattern:
            _check_local_matches(given, pattern)
        if not _match(f"--input {given}", pattern):
            raise ConfigError(f"--input {given}: no file matches{_literal_name_hint(given)}")
    return matched


def _literal_name_hint(given: str) -> str:
    """What to give for ``given`` if it names a local file whose name holds a wildcard
    (``notes/note[1].txt``), which no Beam pattern escapes; else ``""``."""
    if "://" in given or not os.path.isfile(given) or not re.search(r"[\[*?]", given):
        return ""
    return (f" (its [, * and ? are wildcards, which Beam's patterns cannot escape; to read "
            f"the file {given}, put ? in their place: {re.sub(r'[][*?]', '?', given)})")


def _match(named: str, pattern: str, name: str | None = None) -> list[FileMetadata]:
    """The files that Beam matches for ``pattern`` (with ``name``: ``name`` in the folder
    ``pattern``); ``named`` (an option and its value) names the error when Beam cannot read
    its file system.

    One pattern a call: ``FileSystems.match`` matches all its patterns on the
    first one's file system. A scheme without a file system (``foo://``, or
    ``s3://`` without ``apache-beam[aws]``) and one whose client is missing
    (``gs://`` without ``apache-beam[gcp]``) were internal errors.
    """
    try:
        if name is not None:
            pattern = FileSystems.join(pattern, name)
        return FileSystems.match([pattern])[0].metadata_list
    except ValueError:  # Beam's "Unable to get filesystem from specified path"
        scheme = pattern.split("://", 1)[0]
        raise ConfigError(f"{named}: Beam has no file system for {scheme}:// here "
                          "(gs:// needs apache-beam[gcp], s3:// apache-beam[aws])") from None
    except BeamIOError as error:
        cause: BaseException = error
        while isinstance(cause, BeamIOError) and cause.exception_details:
            cause = next(iter(cause.exception_details.values()))
        raise ConfigError(f"{named}: Beam cannot reach it ({type(cause).__name__}: {cause})") \
            from None


def _local_pattern(pattern: str) -> str:
    """A local pattern as Beam can match it: a folder with its slash, a bare glob with ``./``.

    Beam matches ``notes/`` as the folder's files but ``notes`` as the folder
    itself, which the pipeline then failed to read (an internal error, and
    temporary folders left in ``--output``). It lists the folder before a
    pattern's first wildcard, and for ``*.txt`` (no folder) it listed none:
    "no file matches" beside matching files.
    """
    if os.path.isdir(pattern) and not pattern.endswith("/"):
        return pattern + "/"
    before_wildcard = re.match(r"[^[*?]*", pattern).group(0)  # as Beam's match cuts it
    if before_wildcard != pattern and not os.path.dirname(before_wildcard):
        return os.path.join(os.curdir, pattern)
    return pattern


def _local_matches(pattern: str) -> list[str]:
    """Every entry that Beam's match of the local ``pattern`` considers, readable or not.

    Beam's own listing skips an entry whose size it cannot read (a broken
    symbolic link). Beam's match rules are applied here to a listing that
    keeps it (``*`` takes hidden files, ``**`` crosses folders, ``?`` any
    character), so the entries checked are those the pipeline reads; a glob
    of our own checked others.
    """
    local = LocalFileSystem(PipelineOptions())
    local._list = lambda folder: (FileMetadata(os.path.join(root, name), 0)
                                  for root, _, names in os.walk(folder) for name in names)
    return [entry.path for entry in local.match([pattern])[0].metadata_list]


def _check_local_matches(given: str, pattern: str) -> None:
    """Refuse a local match that is no readable file, which Beam would drop or hang on.

    Beam's match leaves out a broken symbolic link without a word (its notes
    were in neither output) and would read a named pipe until it closes.
    Folders are not notes: Beam leaves them out, and so do we.
    """
    for path in _local_matches(pattern):
        what = irregular_file(path)
        if what is not None:
            raise ConfigError(f"--input {given}: {path} is {what}; remove it or narrow the "
                              "pattern")


def _check_output(output: str) -> None:
    if "://" not in output:  # "" too: refused as empty
        check_output_folder("--output", output)
    # Shards of an earlier run would mix with this run's (their shard counts
    # may differ, so they would not all be overwritten).
    for prefix in (ENTITIES_PREFIX, ERRORS_PREFIX):
        earlier = _match(f"--output {output}", output, f"{prefix}-*{SUFFIX}")
        if earlier:
            raise ConfigError(f"--output {output}: holds the results of an earlier run "
                              f"({earlier[0].path}); remove them or choose another folder")
