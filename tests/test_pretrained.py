"""The bundled model `clinical`: in the package, found by name, right on the example, card true."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from clinical_ner.errors import ClinicalNERError
from clinical_ner.cli.predict import model_and_texts
from clinical_ner.pretrained import (BUNDLED_DIR, bundled_model_path, bundled_models,
                                     resolve_model_path)
from helpers import REPO_ROOT, assert_same_entities, run_cli_in_process

NOTE = "CT of the chest showed a 2 cm nodule; she was started on aspirin."
EXPECTED = [("CT", "test"), ("nodule", "problem"), ("aspirin", "treatment")]
BUNDLED = BUNDLED_DIR / "clinical"


def test_the_bundled_model_ships_in_the_package_under_10_mb():
    assert bundled_models() == ["clinical"]
    files = {path.name for path in BUNDLED.iterdir()}
    assert {"model.keras", "vocab.json", "config.json", "MODEL_CARD.md", "model_card.json",
            "LICENSE-MACCROBAT-CC-BY-4.0.md", "LICENSE-BC5CDR-CC-BY-4.0.md",
            "LICENSE-NCBI-disease-CC-BY-4.0.md", "THIRD-PARTY-GloVe-PDDL-1.0.txt"} <= files
    assert all(path.is_file() for path in BUNDLED.iterdir())  # package_data "clinical/*"
    assert sum(path.stat().st_size for path in BUNDLED.iterdir()) <= 10_000_000
    # A regular (not editable) install carries the folder as package data.
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    build = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert build["tool"]["setuptools"]["package-data"]["clinical_ner.pretrained"] == ["clinical/*"]
    card = (BUNDLED / "MODEL_CARD.md").read_text(encoding="utf-8")
    # Every corpus it learnt from is attributed (the build trains on all three).
    assert "CC BY 4.0" in card and "PDDL" in card
    assert all(author in card for author in ("Caufield", "Li J", "Doğan", "Crichton"))


def test_names_resolve_to_the_bundled_model_unless_a_path_of_that_name_exists(tmp_path,
                                                                               monkeypatch):
    assert resolve_model_path("clinical") == bundled_model_path() == BUNDLED
    with pytest.raises(ClinicalNERError, match="no bundled model named 'nope'; bundled: clinical"):
        bundled_model_path("nope")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clinical").mkdir()
    assert resolve_model_path("clinical") == Path("clinical")
    from clinical_ner import ClinicalNER

    with pytest.raises(ClinicalNERError, match="^clinical: not a clinical-ner model directory"):
        ClinicalNER.load("clinical")


def test_predict_arguments_split_into_model_and_texts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert model_and_texts([NOTE]) == ("clinical", [NOTE])
    assert model_and_texts(["clinical", NOTE, "x"]) == ("clinical", [NOTE, "x"])
    assert model_and_texts([]) == ("clinical", [])
    assert model_and_texts(["clinical"], model=str(BUNDLED)) == (str(BUNDLED), ["clinical"])
    assert model_and_texts([str(BUNDLED), NOTE]) == (str(BUNDLED), [NOTE])
    assert model_and_texts(["b/l effusion"]) == ("clinical", ["b/l effusion"])
    assert model_and_texts(["HIV/AIDS", NOTE]) == ("clinical", ["HIV/AIDS", NOTE])
    (tmp_path / "runs").mkdir()
    with pytest.raises(ClinicalNERError, match="^runs/typo: no such model directory"):
        model_and_texts(["runs/typo", NOTE])
    (tmp_path / "notes").mkdir()
    with pytest.raises(ClinicalNERError, match="^notes: not a clinical-ner model directory"):
        model_and_texts(["notes", NOTE])
    # A note longer than a file name may be is a text, not an OS error.
    long_note = NOTE * 10
    assert model_and_texts([long_note]) == ("clinical", [long_note])
    # Every artifact ClinicalNER.load takes is a model here too: a SavedModel
    # base path (numbered versions) or version folder, and a LiteRT export.
    (tmp_path / "models" / "2").mkdir(parents=True)
    (tmp_path / "models" / "2" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "lite").mkdir()
    (tmp_path / "lite" / "litert.json").write_text("{}")
    for model in ("models", "models/2", "lite"):
        assert model_and_texts([model, NOTE]) == (model, [NOTE])


@pytest.fixture(scope="module")
def bundled():
    from clinical_ner import ClinicalNER

    return ClinicalNER.pretrained()


@pytest.mark.slow
def test_the_bundled_model_finds_the_entities_of_the_example(bundled):
    entities = bundled.annotate(NOTE)
    assert [(e.text, e.label) for e in entities] == EXPECTED
    assert all(NOTE[e.start:e.end] == e.text and e.confidence > 0.5 for e in entities)


@pytest.mark.slow
def test_the_cards_scores_equal_a_fresh_evaluation(bundled, shared_data):
    from clinical_ner.formats import load_corpus
    from clinical_ner.evaluation.card_render import score_table
    from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences

    dev = shared_data / "maccrobat-i2b2" / "dev"
    report = evaluate_sentences(bundled, corpus_sentences(load_corpus(dev)))
    facts = json.loads((BUNDLED / "model_card.json").read_text(encoding="utf-8"))
    assert facts["evaluation"]["data"]["path"] == "../shared/data/maccrobat-i2b2/dev"
    assert facts["evaluation"]["report"] == report
    card = (BUNDLED / "MODEL_CARD.md").read_text(encoding="utf-8")
    for row in score_table(report):
        assert row in card
    assert "the model did not train on this data" in card


class Marks(HTMLParser):
    def __init__(self):
        super().__init__()
        self.marks = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        # Entities only: the assertion legend's marks carry no offsets.
        if tag == "mark" and "entity" in attrs.get("class", "").split():
            self.marks.append((int(attrs["data-start"]), int(attrs["data-end"]),
                               attrs["data-label"]))


@pytest.mark.slow
def test_predict_without_a_model_uses_the_bundled_one(tmp_path):
    result = run_cli_in_process("predict", NOTE)
    record = json.loads(result.stdout)
    assert [(e["text"], e["label"]) for e in record["entities"]] == EXPECTED
    page = tmp_path / "page.html"
    run_cli_in_process("predict", "clinical", NOTE, "--format", "html", "--output", page)
    reader = Marks()
    reader.feed(page.read_text(encoding="utf-8"))
    assert [(NOTE[start:end], label) for start, end, label in reader.marks] == EXPECTED


@pytest.mark.slow
def test_export_and_serve_the_bundled_model_by_name(bundled, tmp_path):
    from clinical_ner.export.saved_model import check_core_ops
    from clinical_ner.serving.client import ServingClient

    run_cli_in_process("export", "clinical", "--output", tmp_path / "models", "--version", "1")
    check_core_ops(tmp_path / "models" / "1")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    server = subprocess.Popen(
        [sys.executable, "-m", "clinical_ner.cli", "serve", "clinical", "--port", str(port)],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        with ServingClient(f"127.0.0.1:{port}", "clinical_ner", deadline=300.0,
                               max_retries=1000) as client:
            served = client.annotate(NOTE)
        assert_same_entities(served, bundled.annotate(NOTE))
    finally:
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=120)
    assert server.returncode == 0, log[-2000:]
    exported = Path(re.search(r"serving clinical, exported to (\S+)", log).group(1))
    assert exported.name == "1" and not exported.parent.parent.exists()  # cleaned up


SIGTERM_DURING_EXPORT = """
import signal, sys
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.cli import main

def export(self, base_path, version):  # the stop comes while the model is exported
    signal.raise_signal(signal.SIGTERM)
    raise AssertionError("SIGTERM did not stop the export")

KerasAnnotator.export = export
sys.exit(main(["serve", "clinical", "--port", "0"]))
"""


def test_serve_stopped_while_it_exports_deletes_its_temporary_base_path(tmp_path):
    # Python's default SIGTERM ended the process on the spot, leaving the model's
    # temporary base path (clinical-ner-serve-*) behind in $TMPDIR.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", SIGTERM_DURING_EXPORT], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-2000:]
    assert list(tmp_path.glob("clinical-ner-serve-*")) == []


@pytest.mark.slow
def test_fine_tune_the_bundled_model_by_name(tmp_path):
    from clinical_ner.cli import main

    sample = REPO_ROOT / "samples" / "maccrobat-i2b2"
    # A --config file changes the settings it names; the rest are the base model's.
    (tmp_path / "slower.json").write_text('{"learning_rate": 0.0005}', encoding="utf-8")
    assert main(["train", "--init-from", "clinical", "--train", str(sample / "train"),
                 "--output", str(tmp_path / "tuned"), "--epochs", "1", "--quiet",
                 "--config", str(tmp_path / "slower.json")]) == 0
    from clinical_ner.config import NERConfig

    assert NERConfig.load(tmp_path / "tuned") == NERConfig.load(BUNDLED).replace(
        epochs=1, learning_rate=0.0005)
    # The card says what every stage learnt from: the sample, then the bundled model's own
    # stages (its first stage's three corpora).
    card = (tmp_path / "tuned" / "MODEL_CARD.md").read_text(encoding="utf-8")
    facts = json.loads((tmp_path / "tuned" / "model_card.json").read_text(encoding="utf-8"))
    base = facts["training"]["fine_tuned_from"]
    bundled = json.loads((BUNDLED / "model_card.json").read_text(encoding="utf-8"))
    assert base == {"model": "clinical", "training": bundled["training"]}
    assert "Fine-tuned (`--init-from`) from `clinical`, which was trained on:" in card
    assert card.index(str(sample / "train")) < card.index("from `clinical`")
    for corpus in ("maccrobat", "bc5cdr", "ncbi"):
        assert f"| {corpus} |" in card
