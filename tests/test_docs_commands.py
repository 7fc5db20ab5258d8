"""The commands the docs show still run as written: benchmark modules that import.

Parsing only: nothing is trained or annotated.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ALL_DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs" / "guide").glob("*.md")),
            REPO_ROOT / "training" / "README.md",
            *sorted((REPO_ROOT / "docs" / "design").glob("*.md")),
            REPO_ROOT / "benchmarks" / "README.md"]
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"


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
