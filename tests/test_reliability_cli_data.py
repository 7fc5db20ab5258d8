"""The command line on imperfect data: ``train --skip-invalid`` lists exactly what it skipped.

Runs the command as ``clinical_ner.cli.main`` in this process (its stderr, exit code and
files are what a user's shell sees; test_cli.py checks a real process's data error). (How
evaluation scores gold labels the model never saw is checked in-process in
test_reliability_annotate.py.)
"""
from __future__ import annotations

import json
import re

import pytest

from clinical_ner.model.tag_space import tag_inventory

from helpers import REPO_ROOT, run_cli_in_process

pytestmark = pytest.mark.slow

SECRET = "ZZSECRET"
TINY = {"lstm_units": 8, "char_filters": 8, "char_dim": 8, "word_dim": 8, "min_word_count": 2}


def run_cli(*args, check=True):
    return run_cli_in_process(*args, check=check, cwd=REPO_ROOT)


def good_sentence(n: int) -> list[str]:
    return [f"Patient{n % 3}\tO", "had\tO", "chest\tB-problem", "pain\tI-problem",
            "keptword\tO", ".\tO"]


def corpus_with_two_bad_sentences() -> tuple[str, list[int]]:
    """A CoNLL text of 12 sentences, 2 of them invalid; returns it and the bad lines."""
    lines: list[str] = []
    bad_lines = []
    for n in range(12):
        sentence = good_sentence(n)
        if n == 4:
            # A token line without its tag.
            sentence = ["skippedword\tO", f"{SECRET}", "skippedword\tO"]
            bad_lines.append(len(lines) + 2)
        if n == 9:
            # A tag that is not a tag.
            sentence = ["skippedword\tO", f"skippedword\t{SECRET}-problem", "CT\tB-test"]
            bad_lines.append(len(lines) + 2)
        lines += sentence + [""]
    return "\n".join(lines), bad_lines


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-data")
    text, bad_lines = corpus_with_two_bad_sentences()
    train = root / "train.conll"
    train.write_text(text, encoding="utf-8")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY), encoding="utf-8")
    return root, train, config, bad_lines


@pytest.fixture(scope="module")
def trained(data):
    root, train, config, _ = data
    output = root / "model"
    result = run_cli("train", "--train", train, "--output", output, "--epochs", 1,
                     "--config", config, "--skip-invalid", "--quiet")
    return output, result


def test_train_skip_invalid_trains_and_lists_exactly_the_bad_sentences(data, trained):
    _, train, _, bad_lines = data
    output, result = trained
    listed = re.findall(rf"^  {re.escape(str(train))}:(\d+): (.*)$", result.stderr, re.M)
    assert [int(line) for line, _ in listed] == bad_lines, result.stderr[-2000:]
    assert "only one column" in listed[0][1] and "invalid tag" in listed[1][1]
    assert f"{train}: 2 item(s) skipped" in result.stderr
    assert SECRET not in result.stderr
    assert (output / "model.keras").is_file()
    # The skipped sentences did not reach the vocabulary; the others did.
    vocab = json.loads((output / "vocab.json").read_text(encoding="utf-8"))
    assert "keptword" in vocab["words"] and "skippedword" not in vocab["words"]
    # "test" appears only in a skipped sentence, so it is not a tag.
    scheme = json.loads((output / "config.json").read_text(encoding="utf-8"))["tag_scheme"]
    assert vocab["tags"] == tag_inventory(["problem"], scheme)


def test_without_skip_invalid_train_stops_at_the_first_bad_line(data, tmp_path):
    _, train, config, bad_lines = data
    result = run_cli("train", "--train", train, "--output", tmp_path / "model", "--epochs", 1,
                     "--config", config, "--quiet", check=False)
    assert result.returncode == 3  # a data error
    assert f"{train}:{bad_lines[0]}: only one column" in result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr
    assert not (tmp_path / "model" / "model.keras").exists()

