"""The ``clinical-ner`` command line: one module per command, as spaCy's ``cli/``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)``
(which may set ``parser.description``) and ``run(args) -> int`` (and
``TEXTS_DEST``, the dest of its list of texts, if it takes texts), and is a
thin wrapper
over a plain library function. This module builds the parser from
:data:`COMMANDS`, sets up logging once, keeps TensorFlow's start-up lines off
stderr unless ``--verbose``, and turns every error into one readable line
and an exit code (see :mod:`clinical_ner.errors`).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from typing import Any

from clinical_ner.version import __version__
from clinical_ner.quiet import quiet_tensorflow
from clinical_ner.errors import (
    EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, ClinicalNERError, shown_value,
)

#: The commands, in the order ``--help`` lists them.
COMMANDS = ("train", "evaluate", "predict", "card", "export", "serve", "client", "batch",
            "vectors")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# An option's name as typed: the only kind of leftover argument an error may quote.
_OPTION_SHAPE = re.compile(r"--?[A-Za-z][A-Za-z0-9_-]*")


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse's usage mistakes as one line, like every other error (no usage block)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)

    # argparse quotes a value it cannot convert or that is no choice, and that value may be
    # a note given in an option's place (--output-format "No fever."): shown as the
    # library's setting errors show a value (errors.shown_value), numbers only.
    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as error:
            # A type's own ArgumentTypeError (ours quote nothing) passes as it is.
            if not isinstance(error.__context__, (TypeError, ValueError)):
                raise
            name = getattr(action.type, "__name__", repr(action.type))
            raise argparse.ArgumentError(
                action, f"invalid {name} value: {shown_value(arg_string)}") from None

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(
                action, f"invalid choice: {shown_value(value)} (choose from "
                        f"{', '.join(map(repr, action.choices))})")


def _chosen_command(argv: list[str]) -> str | None:
    """The command named on the command line (the first argument that is not an option)."""
    return next((argument for argument in argv if not argument.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module adds its options.

    Commands import their library modules lazily (``serve`` and ``client``
    need TensorFlow and gRPC), so ``clinical-ner predict`` on a LiteRT export
    or ``clinical-ner --help`` never pays for the others.
    """
    chosen = _chosen_command(sys.argv[1:] if argv is None else argv)
    parser = _OneLineErrorParser(
        prog="clinical-ner",
        description="Clinical named-entity recognition: char-CNN + BiLSTM + CRF (Keras 3), "
                    "served by TensorFlow Serving.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at INFO level and show TensorFlow's own start-up lines")
    # The same option after the command (clinical-ner batch ... --verbose);
    # SUPPRESS: a command line without it keeps the value given before the command.
    verbose_after = argparse.ArgumentParser(add_help=False)
    verbose_after.add_argument("-v", "--verbose", action="store_true",
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"clinical_ner.cli.{name}")
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP,
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  parents=[verbose_after])
        if name == chosen:
            module.add_arguments(sub)
            # Each option by its dest, for errors of the library calls it is passed to.
            options = {action.dest: max(action.option_strings, key=len)
                       for action in sub._actions if action.option_strings}
            sub.set_defaults(run=module.run, texts_dest=getattr(module, "TEXTS_DEST", None),
                             options_by_dest=options)
    return parser


def configure_logging(level: int | str) -> None:
    """The one logging set-up of every command: a stderr handler and the root level.

    Like ``logging.basicConfig``, it adds no handler where one exists (an
    embedding application's, or pytest's), and it sets only the root level,
    so an in-process call leaves no package logger changed behind it.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)


def _asks_verbose(argv: list[str]) -> bool:
    """``-v``/``--verbose`` before or after the command (known before parsing, which may import TF).

    Arguments after ``--`` are values (``predict -- -v`` annotates "-v").
    """
    options = argv[:argv.index("--")] if "--" in argv else argv
    return "-v" in options or "--verbose" in options


def unrecognized_message(unknown: list[str]) -> str:
    """argparse's leftover arguments, quoting only those shaped like an option.

    A value among them may be a note (a text given beside a mistyped
    option): it is counted, not shown.

    >>> unrecognized_message(["--embedings", "y"])
    'unrecognized arguments: --embedings and 1 value not shown'
    """
    options = [item for item in unknown if _OPTION_SHAPE.fullmatch(item)]
    hidden = len(unknown) - len(options)
    shown = " ".join(options)
    if hidden:
        values = f"{hidden} value{'s' if hidden > 1 else ''} not shown"
        shown = f"{shown} and {values}" if shown else values
    return f"unrecognized arguments: {shown}"


def _texts_after_options(args: argparse.Namespace, unknown: list[str]) -> list[str]:
    """Give a command's texts that follow its options to it; return what is still unknown.

    argparse takes a list positional (``predict``'s and ``client``'s texts)
    only before the first option, and leaves the texts after one over:
    ``predict clinical --output-format conll "TEXT"`` is as valid as the
    texts first. Only when nothing left over is shaped like an option (a
    mistyped one stays an error); after ``--`` everything is a text.
    """
    dest = getattr(args, "texts_dest", None)
    cut = unknown.index("--") if "--" in unknown else len(unknown)
    before, after = unknown[:cut], unknown[cut + 1:]
    if dest is None or any(_OPTION_SHAPE.fullmatch(item) for item in before):
        return unknown
    getattr(args, dest).extend(before + after)
    return []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not _asks_verbose(argv):
        quiet_tensorflow()
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    unknown = _texts_after_options(args, unknown)
    if unknown:
        # Named by the command they were given to, not by the top-level parser.
        prog = f"{parser.prog} {args.command}"
        print(f"{prog}: error: {unrecognized_message(unknown)} (see '{prog} --help')",
              file=sys.stderr)
        return 2
    configure_logging(logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.run(args) or 0)
    except ClinicalNERError as error:
        print(f"clinical-ner {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"clinical-ner {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - the last line of defence of a command line
        if args.verbose:
            raise
        # The message of an unexpected error may quote its input, which can
        # be a note: name the error's type only.
        print(f"clinical-ner {args.command}: internal error ({type(error).__name__}); "
              "run again with --verbose for the traceback and please report it",
              file=sys.stderr)
        return EXIT_INTERNAL_ERROR
