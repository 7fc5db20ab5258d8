import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared public corpora beside the checkout (present here and in CI)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def model_base(tmp_path_factory) -> Path:
    """A toy model exported as version 1 of ``<tmp>/clinical_ner``, one per test module."""
    from test_export import export_toy

    base = tmp_path_factory.mktemp("models") / "clinical_ner"
    export_toy(base, version=1)
    return base


SAMPLE = REPO_ROOT / "samples" / "maccrobat-i2b2"
SAMPLE_VECTORS = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"


def train_sample_model(output: Path, **settings) -> Path:
    """A small model trained quietly on the bundled sample (train, dev chooses the epoch)."""
    from clinical_ner.config import NERConfig
    from clinical_ner.training.trainer import train

    config = NERConfig(embeddings=str(SAMPLE_VECTORS), **settings)
    train(SAMPLE / "train", output, dev_path=SAMPLE / "dev", config=config, progress=False,
          emit=lambda message: None)
    return output


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> tuple[Path, Path]:
    """``(model directory, export version folder)`` of a tiny model trained on the sample.

    Small but trained enough (a high learning rate) to find entities in the
    MACCROBAT dev notes, so that comparisons of annotators compare something.
    """
    from clinical_ner.config import NERConfig
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.training.trainer import train

    root = tmp_path_factory.mktemp("trained")
    config = NERConfig(embeddings=str(REPO_ROOT / "samples" / "embeddings"
                                      / "glove.6B.50d.sample.txt"),
                       lstm_units=16, char_filters=8, char_dim=8, epochs=2,
                       learning_rate=0.01, seed=11)
    train(REPO_ROOT / "samples" / "maccrobat-i2b2" / "train", root / "model", config=config,
          progress=False, emit=lambda message: None)
    export_dir = KerasAnnotator.load(root / "model").export(root / "export")
    return root / "model", export_dir


@pytest.fixture(scope="session")
def trained_litert_export(trained_model, tmp_path_factory) -> Path:
    """``trained_model``'s model as a LiteRT export (needs the [litert] extra)."""
    pytest.importorskip("ai_edge_litert", reason="the [litert] extra is not installed")
    from clinical_ner.export.litert import export_litert

    model_dir, _ = trained_model
    return export_litert(model_dir, tmp_path_factory.mktemp("litert") / "tiny-litert")


@pytest.fixture(scope="session")
def maccrobat_dev_notes(shared_data) -> list[Path]:
    """The shared MACCROBAT dev documents (24 notes), sorted by name."""
    return sorted((shared_data / "maccrobat-i2b2" / "dev" / "txt").glob("*.txt"))
