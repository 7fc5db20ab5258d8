"""Export layout and atomicity, and the core-op check, on the toy model the serving tests share.

The toy model (``helpers.ToyNerModule``) implements the signature contract of
``clinical_ner.export.signatures`` with core string ops: it marks every
occurrence of a few keywords.
"""
from __future__ import annotations

import inspect
import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.config import model_server_config_pb2

from clinical_ner.export import signatures as sig
from clinical_ner.artifacts.saved_model import versions as existing_versions
from clinical_ner.errors import ConfigError
from clinical_ner.export.saved_model import (
    ExportError,
    check_core_ops,
    check_variables_restore,
    export_saved_model,
    saved_model_op_types,
)
from clinical_ner.serving import client, defaults
from helpers import SAMPLE, expected_entities, expected_tags, export_toy, train_sample_model


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory) -> Path:
    return export_toy(tmp_path_factory.mktemp("models") / "clinical_ner")


def test_layout_and_version_numbering(tmp_path):
    base = tmp_path / "clinical_ner"
    first = export_toy(base)
    assert first == base / "1"
    assert (first / "saved_model.pb").is_file()
    assert (first / "variables" / "variables.index").is_file()
    assert (first / "assets").is_dir()
    assert export_toy(base) == base / "2"
    assert export_toy(base, version=7) == base / "7"
    assert export_toy(base) == base / "8"
    assert existing_versions(base) == [1, 2, 7, 8]
    # No temporary directories are left beside the versions.
    assert sorted(path.name for path in base.iterdir()) == ["1", "2", "7", "8"]


def test_a_version_folder_gets_the_permissions_of_any_new_folder(tmp_path):
    """Not mkdtemp's 0700: TF Serving running as another user must read the version."""
    previous = os.umask(0o022)
    try:
        version = export_toy(tmp_path / "base")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(previous)
    assert oct(version.stat().st_mode & 0o777) == oct((tmp_path / "plain").stat().st_mode & 0o777)
    assert version.stat().st_mode & 0o005 == 0o005  # others may list and read it


def test_only_complete_canonically_numbered_directories_are_versions(tmp_path):
    for name in ["3", ".export-5-abc", "007", "v2", "1.5"]:
        (tmp_path / name).mkdir()
        if name != "3":
            (tmp_path / name / "saved_model.pb").write_bytes(b"")
    assert existing_versions(tmp_path) == []
    # The incomplete "3" still holds its number.
    assert export_toy(tmp_path) == tmp_path / "4"
    assert existing_versions(tmp_path) == [4]


def test_refuses_to_overwrite_an_existing_version(tmp_path):
    export_toy(tmp_path, version=1)
    before = (tmp_path / "1" / "saved_model.pb").read_bytes()
    with pytest.raises(ExportError, match="version 1 already exists"):
        export_toy(tmp_path, version=1, confidence_scale=0.5)
    assert (tmp_path / "1" / "saved_model.pb").read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["1"]


@pytest.mark.parametrize("version", [0, -3, True, 1.0, "2", 2**63])
def test_rejects_invalid_versions(tmp_path, version):
    with pytest.raises(ConfigError, match="version"):
        export_toy(tmp_path, version=version)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("artifact, message", [
    ("version", "a SavedModel version folder; give the base path that holds the versions "
                "({base}), as TF Serving's --model_base_path"),
    ("litert", "a LiteRT export; give the SavedModel a base path of its own"),
    ("model", "a model directory (it holds model.keras); give the SavedModel a base path of "
              "its own, e.g. models/NAME"),
])
def test_export_refuses_an_artifact_as_its_base_path(tmp_path, capsys, artifact, message):
    # Each got the new version nested inside it (base/1/1), where TF Serving never looks.
    from clinical_ner.cli import main

    if artifact == "version":
        output = export_toy(tmp_path / "base", version=1)
    else:
        output = tmp_path / artifact
        output.mkdir()
        (output / ("litert.json" if artifact == "litert" else "model.keras")).write_bytes(b"")
    before = sorted(output.iterdir())
    assert main(["export", "clinical", "--output", str(output)]) == 1
    assert capsys.readouterr().err == (
        f"clinical-ner export: error: {output}: {message.format(base=tmp_path / 'base')}\n")
    assert sorted(output.iterdir()) == before


@pytest.mark.parametrize("url", ["ram://models/clinical_ner", "gs://bucket/models/clinical_ner"])
def test_export_refuses_a_file_system_url_as_its_base_path(tmp_path, capsys, monkeypatch, url):
    # ram://... was written to the local folder ram:/models/clinical_ner/1 (pathlib's reading
    # of the URL), where a server watching the URL never looked; gs://... offline ended in
    # "internal error (OSError)".
    from clinical_ner.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["export", "clinical", "--output", url]) == 1
    assert capsys.readouterr().err == (
        f"clinical-ner export: error: {url}: a file-system URL; the export writes to a local "
        "base path only: export there, then copy the version folder it prints to the served "
        "base path\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("version", ["0", "-3", "9223372036854775808"])
def test_export_refuses_a_bad_version_naming_the_option_and_makes_no_folder(tmp_path, capsys,
                                                                           version):
    # It loaded the model, made the base path, then said "version must be ...".
    from clinical_ner.cli import main

    assert main(["export", "clinical", "--output", str(tmp_path / "base"),
                 f"--version={version}"]) == 2
    assert capsys.readouterr().err.startswith(
        "clinical-ner export: error: --version must be ")
    assert not (tmp_path / "base").exists()


def test_a_version_past_int64_is_refused_in_the_clients_words(tmp_path):
    # export said "must be between 1 and ...", both clients "must be at most ..."
    # (test_rest.py: test_both_clients_refuse_a_version_past_int64).
    from clinical_ner.errors import ConfigError
    from clinical_ner.export.saved_model import check_base_path

    message = r"^version must be at most 9223372036854775807, got 9223372036854775808$"
    with pytest.raises(ConfigError, match=message):
        check_base_path(tmp_path / "base", 2**63)


@pytest.mark.parametrize("existing, option, message", [
    ("1", ["--version", "1"], "version 1 already exists at {base}/1; export a new version "
                              "instead of overwriting one that may be serving"),
    # No --version given: it said "--version must be between 1 and ..., got 2**63".
    (str(2**63 - 1), [], f"{{base}}: its highest version, {2**63 - 1}, leaves no number for "
                         f"the next one (TF Serving's versions go up to {2**63 - 1}); give a "
                         "free one with --version, or export to a new base path"),
], ids=["version exists", "versions exhausted"])
def test_export_refuses_a_version_it_cannot_write_before_the_model_loads(tmp_path, capsys,
                                                                        monkeypatch, existing,
                                                                        option, message):
    # Both were refused only once the model had loaded (seconds, minutes for a large one).
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.cli import main

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(KerasAnnotator, "load", no_load)
    base = tmp_path / "base"
    (base / existing).mkdir(parents=True)
    assert main(["export", "clinical", "--output", str(base), *option]) == 1
    assert capsys.readouterr().err == (
        f"clinical-ner export: error: {message.format(base=base)}\n")
    assert [path.name for path in base.iterdir()] == [existing]


@pytest.mark.slow
def test_export_of_a_training_run_that_has_not_finished_says_so(tmp_path, capsys, monkeypatch):
    # Stopped in its first epoch, it was "an incomplete model directory (model.keras missing);
    # copy the whole model folder again, or train it again"; stopped later, its best epoch so
    # far was exported without a word. (A run in progress leaves the same files.)
    from clinical_ner.cli import main
    from clinical_ner.training.steps import EpochTrainer
    from clinical_ner.training.trainer import train

    train_epoch = EpochTrainer.train_epoch
    epochs_left = {"count": 0}

    def stopped_after_the_epochs_left(self, *args, **kwargs):
        if epochs_left["count"] == 0:
            raise KeyboardInterrupt
        epochs_left["count"] -= 1
        return train_epoch(self, *args, **kwargs)

    monkeypatch.setattr(EpochTrainer, "train_epoch", stopped_after_the_epochs_left)
    settings = dict(dev=False, lstm_units=4, char_filters=2, char_dim=2, epochs=2)
    warning = "a training run that has not finished (in progress, or stopped)"
    for run, epochs in (("first", 0), ("second", 1)):
        epochs_left["count"] = epochs
        with pytest.raises(KeyboardInterrupt):
            train_sample_model(tmp_path / run, **settings)
    assert main(["export", str(tmp_path / "first"), "--output", str(tmp_path / "base")]) == 4
    assert capsys.readouterr().err == (
        f"clinical-ner export: error: {tmp_path / 'first'}: a training run that has not "
        "finished its first epoch, so it has no model.keras yet (training is in progress, or "
        "stopped before the epoch ended); wait for the epoch to end, or train it again if it "
        "stopped\n")
    assert main(["export", str(tmp_path / "second"), "--output", str(tmp_path / "base")]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {tmp_path / 'second'}: {warning}: this exports its best "
                          "epoch so far") and err.count("\n") == 1
    epochs_left["count"] = 1
    train(SAMPLE / "train", tmp_path / "second", resume=True, progress=False,
          emit=lambda message: None)
    assert main(["export", str(tmp_path / "second"), "--output", str(tmp_path / "base")]) == 0
    assert warning not in capsys.readouterr().err


def test_export_refuses_an_empty_output(tmp_path, monkeypatch, capsys):
    # --output "$UNSET" exported into the working directory (./1) as the base path.
    from clinical_ner.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["export", "clinical", "--output", ""]) == 2
    assert capsys.readouterr().err == (
        "clinical-ner export: error: --output is empty; give the folder to write into\n")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_no_trace_and_keeps_old_versions(tmp_path, monkeypatch):
    export_toy(tmp_path, version=1)

    def failing_save(module, export_dir, signatures):
        # While it is written, the export is invisible to TF Serving's poller.
        assert Path(export_dir).parent == tmp_path and not Path(export_dir).name.isdigit()
        Path(export_dir, "saved_model.pb").write_bytes(b"partial")
        assert existing_versions(tmp_path) == [1]
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_toy(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["1"]
    assert existing_versions(tmp_path) == [1]


def test_read_only_base_path_fails_cleanly(tmp_path, monkeypatch):
    export_toy(tmp_path, version=1)

    def read_only(*args, **kwargs):
        # What a read-only file system answers (chmod is no help: root may write anyway).
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(OSError, match="Read-only"):
        export_toy(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["1"]
    assert existing_versions(tmp_path) == [1]


def test_toy_export_uses_core_ops_only(toy_export):
    ops = saved_model_op_types(toy_export)
    # Both the graph and the function library are read.
    assert {"UnicodeDecode", "RaggedTensorToTensor", "While", "RestoreV2"} <= ops
    check_core_ops(toy_export)


def test_core_op_check_rejects_unknown_ops(tmp_path, toy_export):
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((toy_export / "saved_model.pb").read_bytes())
    function = saved_model.meta_graphs[0].graph_def.library.function[0]
    function.node_def.add(name="custom", op="SentencepieceOp")
    (tmp_path / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    with pytest.raises(ExportError, match="SentencepieceOp"):
        check_core_ops(tmp_path)


class KerasLayerModule(tf.Module):
    """Holds a Keras layer as an attribute: the pattern TF Serving cannot restore."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(2, name="projection")
        self.dense.build((None, 3))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def project(self, x):
        return {"y": self.dense(x)}


def test_export_refuses_a_model_tf_serving_would_not_restore(tmp_path):
    module = KerasLayerModule()
    with pytest.raises(ExportError, match="TensorFlow Serving would fail every request") as error:
        export_saved_model(module, {sig.SERVING_DEFAULT: module.project}, tmp_path, 1)
    assert "projection/kernel" in str(error.value)
    # The message names the version the user asked for, not the temporary
    # directory it was written to, which is removed.
    assert f"version 1 to {tmp_path / '1'}" in str(error.value)
    assert ".export-" not in str(error.value)
    assert list(tmp_path.iterdir()) == []
    # The same model loads and runs with tf.saved_model.load, which is why
    # only loading it TF Serving's way shows the fault.
    tf.saved_model.save(module, str(tmp_path / "plain"), signatures={"serving_default": module.project})
    restored = tf.saved_model.load(str(tmp_path / "plain")).signatures["serving_default"]
    np.testing.assert_allclose(restored(x=tf.ones([1, 3]))["y"], module.project(tf.ones([1, 3]))["y"])
    with pytest.raises(ExportError, match="projection/kernel"):
        check_variables_restore(tmp_path / "plain")


def test_toy_export_restores_every_variable_the_way_tf_serving_loads(toy_export):
    check_variables_restore(toy_export)


def test_core_op_check_rejects_python_callbacks(tmp_path, toy_export):
    # tf.py_function is in tf.raw_ops, but TF Serving has no Python to call.
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((toy_export / "saved_model.pb").read_bytes())
    saved_model.meta_graphs[0].graph_def.node.add(name="callback", op="EagerPyFunc")
    (tmp_path / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    with pytest.raises(ExportError, match="EagerPyFunc"):
        check_core_ops(tmp_path)


class PythonCallbackModule(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def double(self, x):
        return {"y": tf.py_function(lambda value: value * 2, [x], tf.float32)}


def test_export_refuses_python_callbacks_naming_the_version_and_leaves_nothing(tmp_path):
    module = PythonCallbackModule()
    with pytest.raises(ExportError, match="EagerPyFunc") as error:
        export_saved_model(module, {sig.SERVING_DEFAULT: module.double}, tmp_path, 3)
    assert f"the export of version 3 to {tmp_path / '3'}" in str(error.value)
    assert ".export-" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_decoding_helpers_on_in_process_outputs(toy_export):
    """The same decoding the client uses, applied to an in-process call."""
    loaded = tf.saved_model.load(str(toy_export))
    texts = ["😀 aspirin, fever", "nothing here", "fièvre après aspirin"]
    outputs = loaded.signatures[sig.SERVING_DEFAULT](text=tf.constant(texts))
    assert sig.entities_from_outputs(texts, outputs) == [expected_entities(t) for t in texts]
    tokens = [["aspirin", "for", "fever"], ["ok", "", ""]]
    outputs = loaded.signatures[sig.PREDICT_TOKENS](tokens=tf.constant(tokens))
    assert sig.tags_from_outputs(outputs) == [
        expected_tags(["aspirin", "for", "fever"]),
        expected_tags(["ok"]),
    ]


def test_decoding_rejects_outputs_that_break_the_contract():
    outputs = {
        sig.ENTITY_START: np.array([[0]]),
        sig.ENTITY_END: np.array([[40]]),
        sig.ENTITY_LABEL: np.array([[b"DRUG"]], dtype=object),
        sig.ENTITY_CONFIDENCE: np.array([[0.5]], dtype=np.float32),
        sig.ENTITY_COUNT: np.array([1], dtype=np.int32),
    }
    with pytest.raises(sig.ModelOutputError, match=r"span \[0, 40\)") as raised:
        sig.entities_from_outputs(["SECRET-MARKER text"], outputs)
    assert "SECRET-MARKER" not in str(raised.value)
    with pytest.raises(sig.ModelOutputError, match="missing outputs"):
        sig.entities_from_outputs(["x"], {sig.ENTITY_COUNT: np.array([0])})


@pytest.mark.slow
def test_export_runs_in_a_process_that_imports_only_tensorflow(toy_export):
    script = textwrap.dedent(
        """
        import sys
        import tensorflow as tf
        loaded = tf.saved_model.load(sys.argv[1])
        out = loaded.signatures["serving_default"](text=tf.constant(["x aspirin"]))
        assert out["entity_count"].numpy().tolist() == [1], out
        assert out["entity_start"].numpy().tolist() == [[2]], out
        out = loaded.signatures["predict_tokens"](tokens=tf.constant([["fever", ""]]))
        assert out["tags"].numpy().tolist() == [[b"B-PROBLEM", b""]], out
        assert out["length"].numpy().tolist() == [1], out
        print(sorted(loaded.signatures), sorted(m for m in sys.modules if m.startswith("clinical")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(toy_export)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "['predict_tokens', 'serving_default'] []"


SERVING_DIR = Path(__file__).resolve().parent.parent / "serving"


def test_models_config_parses_with_the_stock_proto():
    config = text_format.Parse(
        (SERVING_DIR / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (model,) = config.model_config_list.config
    assert model.name == "clinical_ner"
    assert model.base_path == "/models/clinical_ner"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert model.model_version_policy.latest.num_versions == 2
    # The Docker commands in the README mount the export at that base path.
    readme = (SERVING_DIR / "README.md").read_text()
    assert "-v $PWD/models/clinical_ner:/models/clinical_ner" in readme
    assert "--model_config_file=/config/models.config" in readme
    # Each command that serves with models.config has the export at its base_path: mounted
    # there (Docker), or exported there (the binary, which read the config's /models/... and
    # found no versions, while the guide's export was in ./models).
    blocks = readme.split("```sh")[1:]
    with_config = [block.split("```")[0] for block in blocks if "--model_config_file=" in block]
    assert len(with_config) == 2
    for block in with_config:
        assert (f":{model.base_path} " in block or f"--output {model.base_path}\n" in block), block


def _batching_parameters_class():
    """The stock BatchingParameters message, or the same fields built from the .proto text.

    ``tensorflow-serving-api`` does not ship session_bundle_config_pb2; the
    fallback declares the fields of BatchingParameters exactly as
    tensorflow_serving/servables/tensorflow/session_bundle_config.proto does
    (names, numbers, types), so text-format parsing is as strict as the server's.
    """
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    except ImportError:
        pass
    else:
        return session_bundle_config_pb2.BatchingParameters
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="batching_parameters_test.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, name, wrapper in [
        (1, "max_batch_size", "Int64Value"),
        (2, "batch_timeout_micros", "Int64Value"),
        (3, "max_enqueued_batches", "Int64Value"),
        (4, "num_batch_threads", "Int64Value"),
        (5, "thread_pool_name", "StringValue"),
    ]:
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE,
                          type_name=f".google.protobuf.{wrapper}", label=field.LABEL_OPTIONAL)
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64,
                      label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL,
                      label=field.LABEL_OPTIONAL)
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


def test_batching_parameters_parse_and_fit_the_clients():
    params = text_format.Parse(
        (SERVING_DIR / "batching_parameters.txt").read_text(), _batching_parameters_class()()
    )
    max_batch = params.max_batch_size.value
    assert params.batch_timeout_micros.value > 0
    assert params.num_batch_threads.value >= 1
    assert params.max_enqueued_batches.value >= 1
    sizes = list(params.allowed_batch_sizes)
    assert sizes == sorted(set(sizes)) and sizes[-1] == max_batch
    # What the client sends by default fits in one batch, and the
    # development server refuses what TF Serving with batching would refuse.
    client_batch = inspect.signature(client.ServingClient).parameters["batch_size"].default
    assert client_batch <= max_batch == defaults.MAX_DOCUMENTS
    # TF Serving would pad token rows with their first token, not "" (see the README).
    assert params.pad_variable_length_inputs is False


SIGTERM_DURING_SAVE = """
import signal, sys
import tensorflow as tf
from clinical_ner.cli import main

def save(*args, **kwargs):  # the stop comes while the SavedModel is written
    signal.raise_signal(signal.SIGTERM)
    raise AssertionError("SIGTERM did not stop the export")

tf.saved_model.save = save
sys.exit(main(["export", "clinical", "--output", sys.argv[1], "--version", "1"]))
"""


def test_export_stopped_by_sigterm_leaves_nothing_in_the_base_path(tmp_path):
    # Python's default SIGTERM ended the process on the spot, leaving the half-written
    # export's hidden folder (.export-1-*) in the base path.
    base = tmp_path / "models"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", SIGTERM_DURING_SAVE, str(base)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 143, result.stderr[-2000:]
    assert list(base.iterdir()) == []
