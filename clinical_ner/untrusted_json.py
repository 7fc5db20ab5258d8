"""Parsing JSON that comes from outside: every failure is one error type, never a traceback.

``json.loads`` raises more than :class:`json.JSONDecodeError`: a value
nested a few hundred levels deep raises :class:`RecursionError`, and an
integer of more than 4300 digits a plain :class:`ValueError` (Python's
limit on integer string conversion). Code that reads a REST body, a line of
a JSON lines input or a file a user gave us calls :func:`parse_untrusted_json`
and handles :class:`UntrustedJSONError` alone. Its message describes the
problem, never the document, which may be clinical text.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Collection
from functools import partial
from pathlib import Path
from typing import Any


class UntrustedJSONError(ValueError):
    """Text that is not JSON this process can read.

    ``msg`` says what is wrong; ``pos`` (0-based character offset),
    ``lineno`` and ``colno`` (1-based) say where, or are None when the
    parser does not tell (too deep a nesting, too long a number).
    """

    def __init__(self, msg: str, pos: int | None = None, lineno: int | None = None,
                 colno: int | None = None) -> None:
        self.msg = msg
        self.pos = pos
        self.lineno = lineno
        self.colno = colno
        super().__init__(self.located(" at line {lineno} column {colno}"))

    def located(self, where: str) -> str:
        """``msg`` and ``where`` formatted with the position (``{pos}``, ``{lineno}``,
        ``{colno}``) when it is known, else ``msg`` alone.

        >>> UntrustedJSONError("Expecting value", 4, 1, 5).located(" at offset: {pos}")
        'Expecting value at offset: 4'
        >>> UntrustedJSONError("nested too deeply").located(" at offset: {pos}")
        'nested too deeply'
        >>> UntrustedJSONError("Invalid control character at", 9, 1, 10).located(" at column {colno}")
        'Invalid control character at column 10'
        """
        if self.pos is None:
            return self.msg
        # The json module's "Invalid control character at" expects its own position after it.
        return (self.msg.removesuffix(" at")
                + where.format(pos=self.pos, lineno=self.lineno, colno=self.colno))


class RepeatedKeyError(UntrustedJSONError):
    """An object repeats ``key`` (see ``unique_keys`` of :func:`parse_untrusted_json`)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"the key {key!r} appears twice in one object")


def json_kind(value: Any, array: str = "a list") -> str:
    """What a parsed JSON value is (``a list``, ``null``), for messages that must not quote it.

    ``array`` names a list: the REST API says ``a list``, batch input JSON's own ``an array``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return array
    if isinstance(value, str):
        return "a string"
    return "an object"


def parse_untrusted_json(text: str | bytes, unique_keys: bool | Collection[str] = False) -> Any:
    """``json.loads(text)``, raising only :class:`UntrustedJSONError` for what it cannot read.

    ``unique_keys``: an object that repeats a key (``True``: any key; a
    collection: one of those) is a :class:`RepeatedKeyError` naming the key,
    where ``json.loads`` would keep the last value silently. Any key for
    files of settings a user wrote, whose keys are names, never note text;
    the id and text fields for a note, whose other keys may be anything.

    >>> parse_untrusted_json('{"id": 1}')
    {'id': 1}
    >>> try:
    ...     parse_untrusted_json("[" * 100_000)
    ... except UntrustedJSONError as error:
    ...     print(error)
    arrays or objects nested too deeply
    """
    hook = None
    if unique_keys:
        hook = partial(_unique_keys_object, None if unique_keys is True else unique_keys)
    try:
        return json.loads(text, object_pairs_hook=hook)
    except json.JSONDecodeError as error:
        # error.msg describes the syntax only; str(error) is the same, but the
        # document it was given must never reach a message.
        raise UntrustedJSONError(error.msg, error.pos, error.lineno, error.colno) from None
    except RecursionError:
        raise UntrustedJSONError(
            "arrays or objects nested too deeply") from None
    except UntrustedJSONError:  # a repeated key (unique_keys)
        raise
    except UnicodeDecodeError as error:
        # Only for bytes: json.loads guesses UTF-8, -16 or -32 and decodes.
        raise UntrustedJSONError(f"not {error.encoding} text (byte offset {error.start})") \
            from None
    except ValueError as error:
        if "digits" in str(error):  # Python's limit on integer string conversion
            raise UntrustedJSONError(
                f"a number has more than {sys.get_int_max_str_digits()} digits") from None
        raise UntrustedJSONError(f"cannot be read ({type(error).__name__})") from None


def _unique_keys_object(keys: Collection[str] | None, pairs: list[tuple[str, Any]]
                        ) -> dict[str, Any]:
    values = dict(pairs)
    if len(values) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen and (keys is None or key in keys):
                raise RepeatedKeyError(key)
            seen.add(key)
    return values


def read_json_file(path: Path, error: type[Exception], if_missing: str,
                   unique_keys: bool = False) -> Any:
    """The JSON document in the file ``path``; ``error`` naming the file (and line) otherwise.

    ``if_missing`` says what to do when the file is not there, e.g. "export
    the model again". ``unique_keys``: as for :func:`parse_untrusted_json`.
    The message never quotes the file's content.
    """
    try:
        return parse_untrusted_json(path.read_text(encoding="utf-8-sig"), unique_keys=unique_keys)
    except FileNotFoundError:
        raise error(f"{path}: missing; {if_missing}") from None
    except (OSError, UnicodeDecodeError) as reason:
        raise error(f"{path}: cannot be read ({type(reason).__name__})") from None
    except UntrustedJSONError as reason:
        where = path if reason.lineno is None else f"{path}:{reason.lineno}"
        raise error(f"{where}: not valid JSON ({reason.msg})") from None
