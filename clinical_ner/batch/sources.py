"""``ReadNotes``: files (text or JSON lines) to a PCollection of notes and one of errors."""
from __future__ import annotations

import os
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.fileio import EmptyMatchTreatment
from apache_beam.io.filesystem import CompressionTypes, FileMetadata

from clinical_ner.batch import metrics
from clinical_ner.batch.notes import (
    DEFAULT_MAX_NOTE_BYTES,
    JSONL_FORMAT,
    NoteError,
    note_from_file,
    notes_from_json_lines,
)

ERRORS_TAG = "errors"


class ReadNotes(beam.PTransform):
    """Read every file matching ``patterns``; gives ``(notes, errors)``.

    ``notes`` holds ``(id, text)``; ``errors`` a :class:`NoteError` for each
    note that could not be read (see :mod:`clinical_ner.batch.notes` for the
    rules), counted in the metric ``clinical_ner/errors``. The notes are
    reshuffled so that the notes of one large file spread over the workers.
    Paths may be anything Beam's ``FileSystems`` reads (local, ``gs://``...).
    A pattern that matches no file fails the pipeline (Beam's ``BeamIOError``).
    """

    def __init__(self, patterns: Sequence[str], input_format: str, id_field: str = "id",
                 text_field: str = "text", max_note_bytes: int = DEFAULT_MAX_NOTE_BYTES) -> None:
        super().__init__()
        self.patterns = list(patterns)
        self.parse = _ParseFile(input_format, id_field, text_field, max_note_bytes)

    def expand(self, pipeline: beam.pvalue.PBegin):
        matched = (pipeline
                   | "Patterns" >> beam.Create(self.patterns)
                   # Each pattern matched a file before the pipeline (runner._input_patterns);
                   # one that matches none now (its file moved away) was left out without a
                   # word, exit 0. (ALLOW_IF_WILDCARD raises a ValueError in Beam 2.77.)
                   | "Match" >> fileio.MatchAll(EmptyMatchTreatment.DISALLOW)
                   | "Names" >> beam.ParDo(_SetAsideUndecodableNames()).with_outputs(
                       ERRORS_TAG, main="files"))
        parsed = (matched.files
                  # Each file once, even if two patterns match it, under two spellings
                  # of a local path too (in/x.jsonl, ./in/x.jsonl: its notes came out twice).
                  | "ByPath" >> beam.Map(lambda metadata: (_file_key(metadata.path), metadata))
                  | "GroupPaths" >> beam.GroupByKey()
                  | "DistinctPaths" >> beam.MapTuple(lambda _, matches: next(iter(matches)))
                  | "Open" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
                  | "Parse" >> beam.ParDo(self.parse).with_outputs(ERRORS_TAG, main="notes"))
        errors = (matched[ERRORS_TAG], parsed[ERRORS_TAG]) | "Errors" >> beam.Flatten()
        return parsed.notes | "Spread" >> beam.Reshuffle(), errors


class _SetAsideUndecodableNames(beam.DoFn):
    """A local file whose name is not UTF-8 becomes a :class:`NoteError`.

    Python holds such a name with surrogate escapes, which no output (the
    note's id, Beam's own coders) can encode: one such file ended the whole
    batch. Its record names it with the bad bytes as ``\\xff`` escapes.
    """

    def __init__(self) -> None:
        self.errors = metrics.counter(metrics.ERRORS)

    def process(self, metadata: FileMetadata):
        try:
            metadata.path.encode("utf-8")
        except UnicodeEncodeError:
            self.errors.inc()
            name = os.fsencode(metadata.path).decode("utf-8", "backslashreplace")
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, NoteError(
                None, name, "the file name is not UTF-8, so it cannot be the note's id; "
                            "rename the file"))
        else:
            yield metadata


def _file_key(path: str) -> str:
    """One key per file: a local path made absolute and normalized, any other as matched."""
    return path if "://" in path else os.path.abspath(path)


class _ParseFile(beam.DoFn):
    def __init__(self, input_format: str, id_field: str, text_field: str,
                 max_note_bytes: int) -> None:
        self.input_format = input_format
        self.id_field = id_field
        self.text_field = text_field
        self.max_note_bytes = max_note_bytes
        self.errors = metrics.counter(metrics.ERRORS)

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        with readable.open(mime_type="application/octet-stream") as handle:
            if self.input_format == JSONL_FORMAT:
                results = notes_from_json_lines(path, handle, self.id_field, self.text_field,
                                                self.max_note_bytes)
            else:
                results = [note_from_file(path, readable.metadata.size_in_bytes, handle,
                                          self.max_note_bytes)]
            for result in results:
                if isinstance(result, NoteError):
                    self.errors.inc()
                    yield beam.pvalue.TaggedOutput(ERRORS_TAG, result)
                else:
                    yield result
