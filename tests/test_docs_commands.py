"""The commands the docs show still run as written: options the parsers take, modules that import.

A newcomer copies commands from the README and the guides; a renamed option, or an old
spelling that now prints a deprecation notice, must fail here rather than on their screen.
Parsing only: nothing is trained or annotated.
"""
from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from clinical_ner.cli import COMMANDS, _texts_after_options, build_parser

REPO_ROOT = Path(__file__).resolve().parent.parent
USER_DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs" / "guide").glob("*.md")),
             REPO_ROOT / "training" / "README.md"]
ALL_DOCS = [*USER_DOCS, *sorted((REPO_ROOT / "docs" / "design").glob("*.md")),
            REPO_ROOT / "benchmarks" / "README.md"]
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
# A line that runs a command (not an error message such as "clinical-ner train: error: ...").
_COMMAND_LINE = re.compile(rf"^(?:\$ )?clinical-ner (?:{'|'.join(COMMANDS)}) ")
# Elided options: a shape to complete, not a command to run.
_ELISION = re.compile(r"(?:^|\s)(?:\.\.\.|…)(?:\s|$)")


def fenced_command_lines(doc: Path) -> list[tuple[int, str]]:
    """``clinical-ner COMMAND ...`` lines of the doc's code blocks, continuations joined."""
    commands, in_block, lines = [], False, doc.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        line = lines[number].strip()
        number += 1
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block or not _COMMAND_LINE.match(line):
            continue
        first = number
        while line.endswith("\\") and number < len(lines):
            line = line[:-1] + " " + lines[number].strip()
            number += 1
        if not _ELISION.search(line):
            commands.append((first, line))
    return commands


def test_the_docs_show_commands_to_check():
    assert sum(len(fenced_command_lines(doc)) for doc in USER_DOCS) >= 40


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda doc: str(doc.relative_to(REPO_ROOT)))
def test_every_clinical_ner_command_in_the_guides_parses(doc, capsys):
    for line_number, line in fenced_command_lines(doc):
        where = f"{doc.relative_to(REPO_ROOT)}:{line_number}: {line}"
        argv = shlex.split(line.removeprefix("$ "), comments=True)[1:]
        try:
            args, unknown = build_parser(argv).parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"{where}\n{capsys.readouterr().err}")
        assert _texts_after_options(args, unknown) == [], where
        # An old spelling still parses, with a deprecation notice: not what a guide shows.
        assert capsys.readouterr().err == "", where


def test_every_benchmark_the_docs_name_exists():
    named = {match.group(1) for doc in ALL_DOCS
             for match in re.finditer(r"python -m benchmarks\.(\w+)", doc.read_text("utf-8"))}
    assert named and all((BENCHMARKS_DIR / f"{name}.py").is_file() for name in named), named


@pytest.mark.parametrize("module", sorted(BENCHMARKS_DIR.glob("*.py")), ids=lambda path: path.stem)
def test_benchmarks_import_each_other_through_the_package(module):
    # `python -m benchmarks.NAME` (the docs' command) puts the repository root on sys.path,
    # not benchmarks/: a bare `from bench_util import ...` fails there.
    siblings = {path.stem for path in BENCHMARKS_DIR.glob("*.py")}
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        bare = [name for name in names if name.split(".")[0] in siblings]
        assert not bare, f"{module.name}:{node.lineno}: import benchmarks.{bare[0]}"
