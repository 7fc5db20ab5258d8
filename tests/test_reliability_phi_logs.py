"""Clinical text never reaches a log or an error message.

Every document, sentence and bad file here carries a marker token. Training,
evaluation, prediction and the error paths run

* in-process, with every logger (the package's, TensorFlow's, Keras's,
  absl's, ...) at DEBUG and the process's stdout/stderr captured, and
* as ``python -m clinical_ner.cli -v`` subprocesses with TensorFlow's C++
  logging fully on,

and the marker must appear in none of it (compared case-insensitively: the
vocabulary lowercases words). ``predict`` writes the text to stdout as its
output; only its stderr is a log.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest

from clinical_ner.config import NERConfig
from clinical_ner.annotators.load import ClinicalNER
from clinical_ner.errors import ClinicalNERError, ConfigError, DataFormatError
from clinical_ner.formats import load_corpus
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences
from clinical_ner.serving.rest_client import RestClient
from clinical_ner.training.trainer import train

from helpers import REPO_ROOT

pytestmark = pytest.mark.slow

MARKER = "ZZPHIMARKER"
VECTORS = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"
TINY = {"lstm_units": 8, "char_filters": 8, "char_dim": 8, "epochs": 1, "batch_size": 8,
        "embeddings": str(VECTORS)}
NOTE = f"Mr {MARKER} was seen for chest pain. CT of the chest showed a nodule; {MARKER} " \
       f"was started on aspirin.\n{MARKER}"


def conll_sentences(count: int) -> str:
    sentences = []
    for n in range(count):
        sentences.append("\n".join([
            f"{MARKER}\tO", "reports\tO", "chest\tB-problem", "pain\tI-problem", "after\tO",
            f"{MARKER}{n % 2}\tB-treatment", "CT\tB-test", f"{MARKER}\tI-test", ".\tO",
        ]))
    return "\n\n".join(sentences) + "\n"


# Two invalid sentences, each with the marker where the reader complains.
BAD_SENTENCES = f"\n{MARKER}\n\nchest\t{MARKER}\n{MARKER}\tX-{MARKER}\n"


def assert_no_marker(where: str, text: str) -> None:
    position = text.lower().find(MARKER.lower())
    assert position < 0, f"{where} holds the marker: ...{text[max(0, position - 200):position]}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    files = {
        "train": root / "train.conll",
        "dev": root / "dev.conll",
        "bad": root / "bad.conll",
        "config": root / "tiny.json",
    }
    files["train"].write_text(conll_sentences(24) + BAD_SENTENCES, encoding="utf-8")
    files["dev"].write_text(conll_sentences(4), encoding="utf-8")
    files["bad"].write_text(conll_sentences(2) + BAD_SENTENCES, encoding="utf-8")
    files["config"].write_text(json.dumps(TINY), encoding="utf-8")
    # An i2b2 note whose concept text does not match, a brat note whose
    # annotation text does not match, a note that is not UTF-8.
    (root / "i2b2").mkdir()
    (root / "i2b2" / "n.txt").write_text(f"{MARKER} has chest pain\n", encoding="utf-8")
    (root / "i2b2" / "n.con").write_text(f'c="{MARKER} pain" 1:0 1:3||t="problem"\n',
                                         encoding="utf-8")
    (root / "brat").mkdir()
    (root / "brat" / "n.txt").write_text(f"{MARKER} has chest pain", encoding="utf-8")
    (root / "brat" / "n.ann").write_text(f"T1\tSign_symptom 0 11\t{MARKER}x\n", encoding="utf-8")
    files["latin1"] = root / "latin1.txt"
    files["latin1"].write_bytes(f"{MARKER} a la fi\u00e8vre".encode("latin-1"))
    return root, files


# -- in-process, every logger at DEBUG ---------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(f"{record.name} {record.getMessage()} {record.exc_text or ''}")
        if record.exc_info:
            self.texts.append(logging.Formatter().formatException(record.exc_info))


@contextmanager
def every_logger_at_debug():
    """Collect every record of every logger (also those that do not propagate)."""
    import absl.logging

    handler = _Collect()
    names = [None, "tensorflow", "absl", "keras", "clinical_ner", "h5py", "matplotlib",
             *logging.root.manager.loggerDict]
    loggers = {logging.getLogger(name) for name in names}
    saved = {logger: (logger.level, logger.disabled) for logger in loggers}
    absl_verbosity = absl.logging.get_verbosity()
    absl.logging.set_verbosity(absl.logging.DEBUG)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, (level, disabled) in saved.items():
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.disabled = disabled
        absl.logging.set_verbosity(absl_verbosity)


def test_in_process_training_evaluation_and_prediction_log_no_text(data, capfd):
    root, files = data
    config = NERConfig(**TINY)
    with every_logger_at_debug() as logs:
        train(files["train"], root / "in-process", dev_path=files["dev"], config=config,
              skip_invalid=True, progress=True)
        ner = KerasAnnotator.load(root / "in-process")
        entities = ner.annotate([NOTE, NOTE * 50])
        ner.tag([[MARKER, "chest", "pain"]])
        report = evaluate_sentences(ner, corpus_sentences(load_corpus(files["dev"])))
    captured = capfd.readouterr()
    assert report["exact"]["micro"]["gold"] == 12
    assert len(entities) == 2
    # The skipped sentences were listed (by file and line) on stderr.
    assert "2 item(s) skipped" in captured.err
    # The capture works: the package's own INFO line was collected.
    assert any("word vectors" in text for text in logs.texts)
    assert_no_marker("the log records", "\n".join(logs.texts))
    assert_no_marker("stdout", captured.out)
    assert_no_marker("stderr", captured.err)


def test_in_process_error_messages_hold_no_text(data, capfd):
    root, files = data
    with every_logger_at_debug() as logs:
        errors = []
        for path, options in ((files["bad"], {}), (root / "i2b2", {}), (root / "brat", {}),
                              (files["latin1"], {"format": "conll"})):
            with pytest.raises(DataFormatError) as caught:
                load_corpus(path, **options)
            errors.append(caught.value)
        skipped = load_corpus(files["bad"], skip_invalid=True).skipped
        assert len(skipped) == 2
        errors += skipped
        with pytest.raises(ClinicalNERError) as caught:
            KerasAnnotator.load(root / "no-model")
        errors.append(caught.value)
    captured = capfd.readouterr()
    for error in errors:
        assert_no_marker(f"error {type(error).__name__}", str(error))
        assert_no_marker("error arguments", repr(error.args))
    assert_no_marker("the log records", "\n".join(logs.texts))
    assert_no_marker("stdout", captured.out)
    assert_no_marker("stderr", captured.err)


def test_a_note_given_for_a_setting_is_not_quoted():
    # ner.annotate(note, other_note) passes other_note as batch_size, whose error quoted it.
    ner = ClinicalNER.pretrained()
    rest = RestClient("127.0.0.1", 8501)  # refused before it connects
    calls = {
        "annotate": lambda: ner.annotate(NOTE, NOTE),
        "max_batch_characters": lambda: ner.annotate([NOTE], 8, NOTE),
        "tag": lambda: ner.tag([[MARKER, "pain"]], [[MARKER, "pain"]]),
        "classify_assertions": lambda: ner.classify_assertions(NOTE, [(3, 14)], NOTE),
        "RestClient.annotate": lambda: rest.annotate([NOTE], NOTE),
    }
    for name, call in calls.items():
        with pytest.raises(ConfigError, match=r"must be a positive integer, got a (str of "
                                              r"\d+ characters|list) \(not shown") as caught:
            call()
        assert_no_marker(f"{name}'s error", str(caught.value))


# -- command line, -v, TensorFlow's C++ logging on ---------------------------------------


def cli(*args) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")
    return subprocess.Popen([sys.executable, "-m", "clinical_ner.cli", "-v", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO_ROOT)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def cli_runs(data):
    root, files = data
    model = root / "cli-model"
    results = {"train": finish(cli(
        "train", "--train", files["train"], "--dev", files["dev"], "--output", model,
        "--config", files["config"], "--skip-invalid"))}
    assert results["train"][0] == 0, results["train"][2][-3000:]
    note = root / "note.txt"
    note.write_text(NOTE, encoding="utf-8")
    running = {
        "evaluate": cli("evaluate", model, "--data", files["dev"], "--json", root / "dev.json"),
        "predict": cli("predict", model, NOTE, "--input", note),
        "train-bad-file": cli("train", "--train", files["bad"], "--output", root / "never",
                              "--config", files["config"]),
        "evaluate-bad-i2b2": cli("evaluate", model, "--data", root / "i2b2"),
        "predict-not-utf8": cli("predict", model, "--input", files["latin1"]),
    }
    results.update({name: finish(process) for name, process in running.items()})
    return results


def test_cli_training_logs_no_text(cli_runs):
    code, out, err = cli_runs["train"]
    assert "epoch 1: loss" in err and "2 item(s) skipped" in err
    assert_no_marker("train stdout", out)
    assert_no_marker("train stderr", err)


def test_cli_evaluate_and_predict_log_no_text(cli_runs):
    code, out, err = cli_runs["evaluate"]
    assert code == 0 and "exact" in out
    assert_no_marker("evaluate stdout", out)
    assert_no_marker("evaluate stderr", err)
    code, out, err = cli_runs["predict"]
    assert code == 0
    # The output is the annotated text itself; the log is not.
    assert [json.loads(line)["text"] for line in out.splitlines()] == [NOTE, NOTE]
    assert_no_marker("predict stderr", err)


@pytest.mark.parametrize(("name", "fragment"), [
    ("train-bad-file", "bad.conll:"),
    ("evaluate-bad-i2b2", "n.con:1: concept text does not match"),
    ("predict-not-utf8", "not UTF-8"),
])
def test_cli_errors_name_the_problem_without_the_text(cli_runs, name, fragment):
    code, out, err = cli_runs[name]
    assert code == 3, err[-3000:]  # a data error (clinical_ner.errors)
    assert fragment in err and "Traceback" not in err
    assert_no_marker(f"{name} stdout", out)
    assert_no_marker(f"{name} stderr", err)
