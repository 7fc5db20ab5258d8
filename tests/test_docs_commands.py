"""The commands the docs show still run as written: options the parsers take, modules that import.

A newcomer copies commands from the README and the guides; a renamed option, or an old
spelling that now prints a deprecation notice, must fail here rather than on their screen.
Parsing only: nothing is trained or annotated.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from clinical_ner.cli import COMMANDS, _texts_after_options, build_parser

REPO_ROOT = Path(__file__).resolve().parent.parent
USER_DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs" / "guide").glob("*.md")),
             REPO_ROOT / "training" / "README.md"]
ALL_DOCS = [*USER_DOCS, *sorted((REPO_ROOT / "docs" / "design").glob("*.md")),
            REPO_ROOT / "benchmarks" / "README.md"]
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
# A command after a prompt or environment variables (TF_CONFIG='...' clinical-ner train ...),
# not an error message ("clinical-ner train: error: ...").
_COMMAND_LINE = re.compile(rf"(?:\$ )?(?:\w+=(?:'[^']*'|\S+) +)*clinical-ner "
                           rf"((?:{'|'.join(COMMANDS)})(?: .*)?)$")
_BENCHMARK = re.compile(r"python\s+-m\s+(benchmarks\.\w+)\s+(-.*)", flags=re.S)
# Elided options: a shape to complete, not a command to run.
_ELISION = re.compile(r"(?:^|\s)(?:\.\.\.|…)(?:\s|$)")


def code(doc: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The doc's code-block lines (continuations joined) and its code spans (which may run
    over lines of prose), each with the number of the line it starts on, elisions left out."""
    block_lines, prose, in_block = [], [], False
    lines = doc.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        line = lines[number].strip()
        number += 1
        if line.startswith("```") or not in_block:
            in_block ^= line.startswith("```")
            prose.append("" if line.startswith("```") else line)
            continue
        first = number
        while line.endswith("\\") and number < len(lines):
            line = line[:-1] + " " + lines[number].strip()
            number += 1
        prose += [""] * (number - first + 1)
        block_lines.append((first, line))
    text = "\n".join(prose)
    spans = [(text.count("\n", 0, span.start()) + 1, re.sub(r"\s+", " ", span[1]))
             for span in re.finditer(r"`([^`]+)`", text)]
    return tuple([(number, line) for number, line in found if not _ELISION.search(line)]
                 for found in (block_lines, spans))


def clinical_ner_commands(doc: Path) -> list[tuple[int, list[str]]]:
    """``clinical-ner COMMAND ...`` in the doc's code blocks, as argv after the program name
    (its spans are often an option or two to add, not a whole command)."""
    commands = []
    for number, line in code(doc)[0]:
        command = _COMMAND_LINE.match(line)
        if command:
            commands.append((number, shlex.split(command[1], comments=True)))
    return commands


def benchmark_commands(doc: Path) -> list[tuple[int, str, list[str]]]:
    """``python -m benchmarks.NAME OPTIONS`` in the doc's code (a bare name is a reference)."""
    block_lines, spans = code(doc)
    return [(number, command[1], shlex.split(command[2], comments=True))
            for number, line in [*block_lines, *spans]
            if (command := _BENCHMARK.fullmatch(line))]


def test_the_docs_show_commands_to_check():
    assert sum(len(clinical_ner_commands(doc)) for doc in USER_DOCS) >= 40
    assert sum(len(benchmark_commands(doc)) for doc in USER_DOCS) >= 10


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda doc: str(doc.relative_to(REPO_ROOT)))
def test_every_clinical_ner_command_in_the_guides_parses(doc, capsys):
    for line_number, argv in clinical_ner_commands(doc):
        where = f"{doc.relative_to(REPO_ROOT)}:{line_number}: clinical-ner {shlex.join(argv)}"
        try:
            args, unknown = build_parser(argv).parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"{where}\n{capsys.readouterr().err}")
        assert _texts_after_options(args, unknown) == [], where
        # An old spelling still parses, with a deprecation notice: not what a guide shows.
        assert capsys.readouterr().err == "", where


class _Parsed(Exception):
    """Raised once a benchmark's parser has read its arguments: nothing runs."""


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda doc: str(doc.relative_to(REPO_ROOT)))
def test_every_benchmark_command_in_the_guides_parses(doc, monkeypatch, capsys):
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse_args(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    environment = dict(os.environ)  # some benchmarks set thread counts when imported
    try:
        for line_number, module_name, argv in benchmark_commands(doc):
            where = f"{doc.relative_to(REPO_ROOT)}:{line_number}: {module_name} {shlex.join(argv)}"
            monkeypatch.setattr(sys, "argv", [module_name, *argv])
            main = importlib.import_module(module_name).main
            try:
                main(argv) if main.__code__.co_argcount else main()
            except _Parsed:
                continue
            except SystemExit:
                pytest.fail(f"{where}\n{capsys.readouterr().err[-500:]}")
            pytest.fail(f"{where}: its main() never parsed arguments")
    finally:
        os.environ.clear()
        os.environ.update(environment)


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
