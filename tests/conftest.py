"""Fixtures the test modules share; plain helpers are in helpers.py."""
import os
from pathlib import Path

import pytest

# Before helpers imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Before any test module imports grpc (test modules import it before our package):
# this turns gRPC's fork support off, which PySpark's JVM start needs in a process
# with live channels (clinical_ner/serving/__init__.py says why).
import clinical_ner.serving  # noqa: E402,F401

from helpers import (  # noqa: E402
    SHARED_DATA, export_toy, negation_sentences, tiny_assertion_config, train_sample_model,
    write_i2b2,
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared public corpora beside the checkout (present here and in CI)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def model_base(tmp_path_factory) -> Path:
    """A toy model exported as version 1 of ``<tmp>/clinical_ner``, one per test module."""
    base = tmp_path_factory.mktemp("models") / "clinical_ner"
    export_toy(base, version=1)
    return base


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> tuple[Path, Path]:
    """``(model directory, export version folder)`` of a tiny model trained on the sample.

    Small but trained enough (a high learning rate) to find entities in the
    MACCROBAT dev notes, so that comparisons of annotators compare something.
    """
    from clinical_ner.annotators.keras_annotator import KerasAnnotator

    root = tmp_path_factory.mktemp("trained")
    train_sample_model(root / "model", dev=False, lstm_units=16, char_filters=8, char_dim=8,
                       epochs=2, learning_rate=0.01, seed=11)
    export_dir = KerasAnnotator.load(root / "model").export(root / "export")
    return root / "model", export_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny model trained for three epochs on the sample, without a dev split.

    Small but trained enough (a high learning rate, 3 epochs) to find entities
    in ``helpers.NOTE`` with any seed tried: the chunking tests and the LiteRT
    comparisons need something to compare.
    """
    return train_sample_model(tmp_path_factory.mktemp("annotate") / "tiny", dev=False,
                              lstm_units=16, char_filters=8, char_dim=8, epochs=3,
                              learning_rate=0.01, seed=11)


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


# The tiny negation model ("No X was seen ." absent, "She has X ..." present,
# "Possible X ." possible), trained once for the session: test_assertions and
# test_assertion_serving both use it.
@pytest.fixture(scope="session")
def negation_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("negation")
    return (write_i2b2(root / "train", negation_sentences(160, seed=1)),
            write_i2b2(root / "dev", negation_sentences(40, seed=2)))


@pytest.fixture(scope="session")
def negation_model(negation_data, tmp_path_factory):
    # No dev data: the tags are learnt in an epoch or two, and a dev F1 of
    # 1.0 that early would choose an epoch before the assertions are learnt.
    train_dir, _ = negation_data
    output = tmp_path_factory.mktemp("model") / "negation"
    messages = []
    from clinical_ner.training.trainer import train

    train(train_dir, output, config=tiny_assertion_config(), progress=False, emit=messages.append)
    return output, messages
