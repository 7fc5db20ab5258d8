"""Options and argument types that several commands share."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clinical_ner.errors import ConfigError, settings_named
from clinical_ner.formats.corpus import check_label_map_entries
from clinical_ner.pretrained import resolve_model_path
from clinical_ner.untrusted_json import UntrustedJSONError, parse_untrusted_json

INPUT_FORMATS = ("auto", "conll", "i2b2", "brat")


class DeprecatedAlias(argparse.Action):
    """An old option spelling that still works for a release, with a one-line notice."""

    def __init__(self, option_strings, dest, new_option: str, **kwargs):  # type: ignore[no-untyped-def]
        self.new_option = new_option
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        print(f"clinical-ner: {option_string} is deprecated; use {self.new_option}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def unwind_on_sigterm() -> Any:
    """Make SIGTERM unwind like Ctrl-C (``SystemExit(143)``), so that ``finally`` blocks
    delete temporary files and folders; Python's default ends the process on the spot.
    Returns the previous handler, for ``signal.signal`` to put back."""
    return signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))


def options_named(args: argparse.Namespace,
                  parameters: Iterable[str]) -> contextlib.AbstractContextManager[None]:
    """Within it, the library's errors name each of ``parameters`` (a keyword argument the
    command passes, its option's dest) by that option: ``--ssl-cert``, not ``ssl_cert``."""
    return settings_named({name: args.options_by_dest[name] for name in parameters})


class GivenOnce(argparse.Action):
    """An option that takes one value: a second one is an error, not the value used.

    argparse keeps the last: ``--dev a --dev b`` (as ``--train`` repeats) chose the
    epoch on ``b`` alone, without a word about ``a``.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        if getattr(namespace, self.dest) is not None:
            raise argparse.ArgumentError(self, "given twice; give it once")
        setattr(namespace, self.dest, values)


def check_input_files(paths: list[Path] | list[str] | None) -> None:
    """Refuse an ``--input`` argument with a space that names no file: a text it took.

    ``--input`` takes every argument after it as a file, so ``--input a.txt
    "No fever."`` read the text as a file name (a "No such file" error that
    quoted the note). Not quoted here.
    """
    for path in paths or []:
        if any(char.isspace() for char in str(path)) and not os.path.exists(path):
            raise ConfigError("--input: an argument with spaces names no file; --input "
                              "takes every argument after it as a file, so give texts "
                              "before --input, or after --")


def check_text_arguments(texts: Iterable[str]) -> None:
    """Refuse a text argument that is the path of a file: a file meant for ``--input``.

    ``clinical-ner predict note.txt`` annotated the words ``note.txt``, and printed no
    entities with exit status 0, as for a note without findings. A text that is the name
    of a file can still be annotated from standard input.
    """
    for text in texts:
        if os.path.isfile(text):
            raise ConfigError(f"{text}: a file, given as a text to annotate; give files "
                              f"with --input {text} (texts as arguments or on standard input)")


def say_when_reading_a_terminal(texts: list[str], paths: list[str] | None) -> None:
    """Without texts or ``--input`` files the note is standard input: at a terminal, say so
    on stderr, or the command waits there without a word. Nothing for a pipe or a file."""
    if texts or paths or sys.stdin is None:
        return
    try:
        at_terminal = sys.stdin.isatty()
    except ValueError:  # closed: read_documents names it
        return
    if at_terminal:
        print("reading one note from standard input; end it with Ctrl-D (texts go as "
              "arguments, files with --input)", file=sys.stderr)


def non_empty(value: str) -> str:
    """The argument type of an option that names a file or folder to read: an empty value
    (an unset variable in a script) is refused by the option's name.

    Converted to a path, ``""`` is the working directory, so that ``--root-certificates ""``
    was refused as ``.: Is a directory``, and ``serve ""`` served the working directory.
    """
    if not value:
        raise argparse.ArgumentTypeError("is empty; give a path")
    return value


def path_argument(value: str) -> Path:
    """:func:`non_empty`, as a :class:`~pathlib.Path`."""
    return Path(non_empty(value))


#: What a model argument of ``evaluate`` and ``predict`` may be: what ``ClinicalNER.load`` takes.
LOADABLE_MODEL = "model directory, export (SavedModel or LiteRT) or bundled model name"


def model_path(value: str) -> Path:
    """A model directory argument, or a bundled model's name (``clinical``).

    An existing path wins over a bundled name
    (:func:`clinical_ner.pretrained.resolve_model_path`).
    """
    return resolve_model_path(non_empty(value))


def read_label_map(value: str | None) -> dict[str, str | None] | None:
    """``--label-map``: a JSON file, or ``Type=label,Other=label`` (``Type=`` drops a type).

    Each type once, each target a label name or ``""`` (JSON ``null`` too) to
    drop the type, and at least one type kept: a map that drops every label
    would train a model of ``O`` alone, or score nothing.
    """
    if value is None:
        return None
    if value.lower().endswith(".json"):
        try:
            mapping = parse_untrusted_json(Path(value).read_text(encoding="utf-8-sig"),
                                           unique_keys=True)
        except (OSError, UnicodeDecodeError, UntrustedJSONError) as error:
            raise ConfigError(f"--label-map {value}: {error}") from None
        if not isinstance(mapping, dict):
            raise ConfigError(f"--label-map {value}: expected a JSON object")
        # "" (or null) drops a type; any other value is checked below.
        mapping = {key: (None if label == "" else label) for key, label in mapping.items()}
    else:
        mapping = {}
        for item in value.split(","):
            source, separator, label = item.partition("=")
            source = source.strip()
            if not separator or not source:
                raise ConfigError(f"--label-map: {item!r} is not TYPE=LABEL")
            if source in mapping:
                raise ConfigError(f"--label-map: {source} is mapped twice")
            mapping[source] = label.strip() or None
    try:
        check_label_map_entries(mapping)
    except ConfigError as error:
        raise ConfigError(f"--label-map: {error}") from None
    if not any(mapping.values()):
        raise ConfigError("--label-map drops every type; map at least one onto a label")
    return mapping


def add_format_option(parser: argparse.ArgumentParser, option: str, choices: tuple[str, ...],
                      default: str, help: str) -> None:
    """``--input-format`` or ``--output-format``, and the old ``--format`` spelling of it."""
    dest = option.lstrip("-").replace("-", "_")
    parser.add_argument(option, default=default, choices=choices, help=help)
    parser.add_argument("--format", dest=dest, choices=choices, action=DeprecatedAlias,
                        new_option=option, help=argparse.SUPPRESS)


def read_assertion_map(value: str | None) -> dict | None:
    """``--assertion-map FILE.json``: brat attribute values -> assertions (formats.brat)."""
    if value is None:
        return None
    from clinical_ner.formats.brat import read_assertion_map as read_map

    return read_map(value, f"--assertion-map {value}")


def check_model_scores_assertions(model: str | Path, assertion_classes: list[str]) -> None:
    """``--assertion-map`` asks for assertion scores: refused for a model without assertions,
    rather than printing none (``evaluate``, ``card``)."""
    if not assertion_classes:
        raise ConfigError(f"--assertion-map asks for assertion scores, but the model {model} "
                          "has no assertions")


def add_annotated_data_options(parser: argparse.ArgumentParser) -> None:
    """How to read annotated data: ``train`` and ``evaluate``."""
    add_format_option(parser, "--input-format", INPUT_FORMATS, "auto",
                      "data format; auto: a folder with txt/ and concept/ (or .txt + .con "
                      "files) is i2b2, .txt + .ann is brat, a file is CoNLL")
    parser.add_argument("--label-map", metavar="JSON_OR_PAIRS", action=GivenOnce,
                        help="map source labels, e.g. 'Sign_symptom=problem,Medication="
                             "treatment' (labels it does not map become O)")
    parser.add_argument("--assertion-map", metavar="FILE.json", type=non_empty,
                        help="brat: attribute values -> assertions, e.g. {\"POLARITY\": "
                             "{\"NEG\": \"absent\"}} (training/configs/"
                             "maccrobat-assertion-map.json; docs/guide/assertions.md)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip invalid sentences/annotations and list them, instead of "
                             "stopping at the first")
