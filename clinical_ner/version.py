"""The package's version: one line that ``pyproject.toml`` reads and every module may import.

Kept apart from ``clinical_ner/__init__.py``, which reaches the annotators: a
module below them that records the version would otherwise import its own
importers.
"""

__version__ = "0.4.0"
