"""Exceptions that tell the user exactly what is wrong and where.

Every error this package raises on purpose is a :class:`ClinicalNERError`;
its ``exit_code`` is what the ``clinical-ner`` command exits with, so a
script can tell a bad option from bad data from a missing model:

==== ===================================================================
code meaning
==== ===================================================================
0    success
1    any other error the package raised on purpose (a failed call, ...)
2    a bad option or configuration value (argparse's own code for usage)
3    an input file or note does not follow its format
4    the model directory or export cannot be used
5    a server or worker could not be reached, or did not answer in time
6    ``batch`` finished, but set notes aside (listed in its ``errors-*.jsonl``)
70   an unexpected internal error (a bug: please report it)
130  interrupted (Ctrl-C)
==== ===================================================================
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from numbers import Integral, Number
from pathlib import Path

EXIT_OK = 0
# Not an error: every output is complete, but a scheduler must not take the
# notes set aside for annotated ones.
EXIT_NOTES_SET_ASIDE = 6
EXIT_INTERNAL_ERROR = 70  # sysexits' EX_SOFTWARE
EXIT_INTERRUPTED = 130

MAX_PORT = 65535
# host:port, the host a name, an IPv4 address or an IPv6 one in brackets; no scheme
# (gRPC would take "http" for a host) and a port that gRPC cannot silently wrap.
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:/?#@\[\]]+):([0-9]{1,5})")


# How errors name settings, where the caller names them otherwise (settings_named).
_SETTING_NAMES: ContextVar[Mapping[str, str] | None] = ContextVar("setting_names", default=None)


class ClinicalNERError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 1


class DataFormatError(ClinicalNERError, ValueError):
    """An input file does not follow its format.

    The message names the file, the 1-based line (when there is one) and the
    problem. It never quotes clinical text beyond the annotation markup the
    user wrote (tags, offsets, labels).
    """

    exit_code = 3

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ConfigError(ClinicalNERError, ValueError):
    """A configuration value or command-line option is invalid."""

    exit_code = 2


class ModelError(ClinicalNERError):
    """A model directory or export is missing, incomplete or incompatible."""

    exit_code = 4


class UnavailableError(ClinicalNERError):
    """A server or worker could not be reached, or did not answer in time."""

    exit_code = 5


class MessageWithheldError(RuntimeError):
    """An unexpected failure on notes, its message withheld: it may quote a note.

    Raised in the place of the failure (:func:`messages_withheld`), whose traceback it keeps.
    """


@contextlib.contextmanager
def messages_withheld(doing: str) -> Iterator[None]:
    """Within it, an unexpected exception is a :class:`MessageWithheldError` naming its type.

    For code on notes run where a failure's message and traceback are logged out of our
    reach: Beam's and Spark's workers log them on their own stderr (and Spark again in the
    driver's exception), and a message may quote a note. This package's errors pass: they
    never quote one. ``doing`` says what failed (``annotating 12 note(s)``).
    """
    try:
        yield
    except ClinicalNERError:
        raise
    except Exception as error:
        raise MessageWithheldError(
            f"{doing} failed with {type(error).__name__} (message withheld: it may quote a "
            "note)").with_traceback(error.__traceback__) from None


@contextlib.contextmanager
def settings_named(names: Mapping[str, str]) -> Iterator[None]:
    """Within it, errors name each setting of ``names`` (a parameter's name) by its value.

    A command line passes its options to a library call as keyword
    arguments: the library's errors said ``ssl_cert``, ``tmp_dir``, where the
    user typed ``--ssl-cert``, ``--tmp-dir``. The command maps the parameters
    it passes to its options (``{"ssl_cert": "--ssl-cert"}``), so that the
    library names them without knowing the command line.
    """
    token = _SETTING_NAMES.set({**(_SETTING_NAMES.get() or {}), **names})
    try:
        yield
    finally:
        _SETTING_NAMES.reset(token)


def setting_name(name: str) -> str:
    """How errors name the setting (parameter) ``name``: as :func:`settings_named` says, or
    ``name`` itself.

    Every error about a setting names it through this function.
    """
    return (_SETTING_NAMES.get() or {}).get(name, name)


def os_reason(error: OSError) -> str:
    """The operating system's words for ``error`` ("No space left on device"), or its type.

    Never the file name or message that came with it: the caller's error
    names the path itself, once. An ``OSError`` raised without an errno
    (a ``BrokenPipeError`` from a library, say) has no words, so its type
    stands in.
    """
    return error.strerror or type(error).__name__


def irregular_file(path: str | os.PathLike) -> str | None:
    """What ``path``, an input to read, is if it is no regular file (``a broken symbolic
    link``, ``not a regular file``: a named pipe, a device, a folder), else ``None``.

    The one wording of what inputs refuse: a broken link's notes were left out
    without a word, and a named pipe was read until it closed. A link to a
    pipe is not broken.
    """
    if os.path.isfile(path):
        return None
    return "a broken symbolic link" if not os.path.exists(path) else "not a regular file"


def may_be_a_note(value: object) -> bool:
    """Whether ``value``, given for a setting, may be clinical text: a string with whitespace.

    No setting's value has whitespace, but a note given in its place does
    (``ner.annotate(note, other_note)`` passes ``other_note`` as ``batch_size``),
    and an error message must not quote it.
    """
    return isinstance(value, str) and any(char.isspace() for char in value)


def shown_value(value: object) -> str:
    """``repr(value)`` for an error message, unless it may hold clinical text.

    A number, ``None`` or a string that reads as a number (``"32"`` typed for
    a count) is quoted. Any other string is described only: with whitespace it
    may be a note given in a setting's place (``ner.annotate(note,
    other_note)``), and a single word may be a name, a record number or a
    one-word note. So is a container (a tokenized sentence given for a
    setting: ``ner.tag(sentences, more_sentences)``).

    >>> shown_value("32"), shown_value(0.5), shown_value("Seen for chest pain")
    ("'32'", '0.5', 'a str of 19 characters (not shown: it may be a note)')
    >>> shown_value("Smith")
    'a str of 5 characters (not shown: it may be a note)'
    >>> shown_value([["Chest", "pain"]])
    'a list (not shown: it may hold a note)'
    """
    if isinstance(value, str) and (may_be_a_note(value) or not _reads_as_number(value)):
        return f"a str of {len(value)} characters (not shown: it may be a note)"
    if value is None or isinstance(value, (str, Number)):
        return repr(value)
    return f"a {type(value).__name__} (not shown: it may hold a note)"


def _reads_as_number(text: str) -> bool:
    # float() takes what a user types for a number: "32", "0.5", "1e-3".
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``.

    The one check of a setting that takes one of some words; the value given
    is shown as :func:`shown_value` shows it (a word that is no choice is not
    quoted: it may be a note's).
    """
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{setting_name(name)} must be one of {', '.join(choices)}, "
                          f"got {shown_value(value)}")


def check_integer(name: str, value: object, minimum: int = 1,
                  maximum: int | None = None) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an ``int`` from ``minimum`` to ``maximum``.

    The one check of a count setting, so that every option and argument says
    the same thing. ``bool`` is refused although it is an ``int`` subclass:
    ``True`` would silently become 1. ``maximum`` bounds what would exhaust
    memory or overflow a library's C integer.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        # A NumPy integer is no int (nor kept as one in config.json); said so, since "must be
        # a positive integer, got np.int64(64)" reads as a contradiction.
        hint = (f" ({type(value).__name__}, not a Python int: give int(...))"
                if isinstance(value, Integral) and not isinstance(value, int)
                and value >= minimum else "")
        raise ConfigError(f"{setting_name(name)} must be {kind}, got {shown_value(value)}{hint}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{setting_name(name)} must be at most {maximum}, got {value!r}")


def check_number(name: str, value: object, *, allow_zero: bool = False,
                 maximum: float | None = None, what: str = "a finite number") -> float:
    """``value`` as a float, or :class:`ConfigError` unless it is a finite number
    > 0 (>= 0 with ``allow_zero``) and at most ``maximum``.

    The one check of a real-valued setting. NaN is refused (``nan <= 0`` is
    false), so are infinity (it overflows the timers and counts it reaches),
    an integer beyond a float's range, and bools. ``what`` names the kind of
    number in the message.
    """
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            pass
    if not (math.isfinite(number) and (number >= 0 if allow_zero else number > 0)
            and (maximum is None or number <= maximum)):
        low = ">= 0" if allow_zero else "> 0"
        high = "" if maximum is None else f" and at most {maximum:g}"
        raise ConfigError(f"{setting_name(name)} must be {what} {low}{high}, "
                          f"got {shown_value(value)}")
    return number


def check_seconds(name: str, value: object, maximum: float, allow_zero: bool = False) -> None:
    """:func:`check_number` for a number of seconds up to ``maximum``."""
    check_number(name, value, allow_zero=allow_zero, maximum=maximum,
                 what="a number of seconds")


def check_output_file(name: str, path: str | Path | None,
                      inputs: Iterable[str | Path] = ()) -> None:
    """Raise :class:`ConfigError` unless ``path`` is a file to write in an existing folder,
    and none of the command's ``inputs``.

    ``name`` is the option or argument that gave it (``--output``). Checked
    before any work, so that a mistyped path does not end a long run
    (``None``: standard output), and so that the output never replaces the
    note or data it was made from.
    """
    if path is None:
        return
    name = setting_name(name)
    if not os.fspath(path):
        # Path("") is the working directory, which was named as "--json .: a folder".
        raise ConfigError(f"{name} is empty; give the file to write")
    path = Path(path)
    with _unusable_path(name, path):
        if path.is_dir():
            raise ConfigError(f"{name} {path}: a folder; give the file to write")
        if not path.parent.is_dir():
            raise ConfigError(f"{name} {path}: the folder {path.parent} does not exist")
        for source in inputs:
            if path.exists() and os.path.exists(source) and os.path.samefile(path, source):
                raise ConfigError(f"{name} {path}: also an input ({source}); writing it would "
                                  "overwrite it, so give another file")


def check_output_folder(name: str, path: str | Path | None) -> None:
    """Raise :class:`ConfigError` if ``path``, a folder to write into, is empty (an unset
    variable in a script: ``Path("")`` is the working directory), an existing file, or would
    be made inside one.

    See :func:`check_output_file`.
    """
    if path is None:
        return
    name = setting_name(name)
    if not os.fspath(path):
        raise ConfigError(f"{name} is empty; give the folder to write into")
    path = Path(path)
    with _unusable_path(name, path):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{name} {path}: a file; give a folder to write into")
        existing = next((parent for parent in path.parents if parent.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ConfigError(f"{name} {path}: {existing} is a file, so the folder cannot be "
                              "made")


@contextlib.contextmanager
def _unusable_path(name: str, path: Path) -> Iterator[None]:
    """A path the file system refuses (a name longer than it allows), named as ``name``'s.

    ``Path.exists`` raises ``OSError`` for it, which ended a command as an
    internal error before any work.
    """
    try:
        yield
    except OSError as error:
        raise ConfigError(f"{name} {path}: cannot be written there ({os_reason(error)})"
                          ) from None


def check_host_port(name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is ``host:port`` with a port from 1 to 65535.

    The one check of an address to connect to (a server's, a training peer's),
    made before connecting: gRPC reads ``http://host:8500`` as the host
    ``http``, wraps ``host:99999`` round to another port, and fails on the
    others only after its retries. ``name`` is the setting or option that
    gave the value.
    """
    match = _HOST_PORT.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(1)) <= MAX_PORT:
        # A note taken for an address (an option's value forgotten) is not quoted.
        shown = "" if may_be_a_note(value) else f" {value!r}"
        raise ConfigError(f"{setting_name(name)}{shown} is not host:port with a port from 1 to "
                          f"{MAX_PORT} (e.g. 'localhost:8500' or '[::1]:8500'; no scheme such "
                          "as http://)")
