"""Exceptions that tell the user exactly what is wrong and where."""
from __future__ import annotations


class ClinicalNERError(Exception):
    """Base class of every error this package raises on purpose."""


class DataFormatError(ClinicalNERError, ValueError):
    """An input file does not follow its format.

    The message names the file, the 1-based line (when there is one) and the
    problem. It never quotes clinical text beyond the annotation markup the
    user wrote (tags, offsets, labels).
    """

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ConfigError(ClinicalNERError, ValueError):
    """A configuration value or command-line option is invalid."""
