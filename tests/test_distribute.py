"""``clinical-ner train --distribute``: two workers on 127.0.0.1, resume after a kill, mirrored, bad TF_CONFIG.

Every run trains the same tiny model (dropout 0, so that the replicas'
dropout masks, drawn per replica, do not enter the comparison; word dropout
is drawn on the global batch and stays) on six sample documents.

Tolerances: the distributed runs sum the replicas' gradients in another
order than one process does, so their weights differ by float32 rounding
that Adam amplifies; after three epochs (21 steps) the largest difference
measured was below 1e-3, the test allows 5e-3 on weights and 1e-4 relative on
the epoch losses. A run resumed after a kill must equal the uninterrupted
run with the same workers to 1e-6.

The workers' gRPC servers are named by 127.0.0.1 in TF_CONFIG, but TensorFlow
binds them on every interface (there is no option to restrict it); the ports
are free ones chosen at random.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from clinical_ner.config import NERConfig
from clinical_ner.training.distribute import (
    distribution_for, ignored_tf_config_warning, parse_tf_config,
)
from clinical_ner.errors import ConfigError
from clinical_ner.formats import load_corpus
from clinical_ner.formats.conll import write_conll
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.training.trainer import train

from helpers import REPO_ROOT

pytestmark = pytest.mark.slow

SAMPLE = REPO_ROOT / "samples" / "maccrobat-i2b2"
VECTORS = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"
TINY = {"embeddings": str(VECTORS), "char_dim": 8, "char_filters": 8, "lstm_units": 8,
        "batch_size": 16, "seed": 7, "dropout": 0.0, "epochs": 3}
WEIGHT_TOLERANCE = 5e-3
LOSS_TOLERANCE = 1e-4
TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


class Worker:
    """One ``clinical-ner train`` process; its stderr goes to a log file."""

    def __init__(self, data, output, *extra, config=None, kill_at=None):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        if config is not None:
            env["TF_CONFIG"] = config
        args = ["train", "--train", data / "train.conll", "--dev", data / "dev.conll",
                "--output", output, "--quiet", *extra]
        handle, name = tempfile.mkstemp(prefix="worker-", suffix=".log", dir=data)
        self.log = Path(name)
        with os.fdopen(handle, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "clinical_ner.cli", *map(str, args)], env=env,
                stdout=subprocess.DEVNULL, stderr=log, cwd=REPO_ROOT)
        if kill_at is not None:
            threading.Thread(target=self._kill_when, args=(kill_at,), daemon=True).start()

    def _kill_when(self, text: str) -> None:
        """SIGKILL the process as soon as ``text`` appears in its stderr."""
        while self.process.poll() is None:
            if text in self.stderr:
                self.process.send_signal(signal.SIGKILL)
                return
            time.sleep(0.1)

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    @property
    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def two_workers(data, outputs, *extra, kill_at=None) -> list[Worker]:
    ports = [free_port(), free_port()]
    return [Worker(data, outputs[index], "--distribute", "multi-worker", *extra,
                   config=tf_config(ports, index), kill_at=kill_at if index == 1 else None)
            for index in range(2)]


def checkpoint_weights(output):
    state = json.loads((output / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    model = keras.saving.load_model(output / "checkpoint" / state["checkpoint_model"],
                                    safe_mode=True)
    return model.get_weights(), int(model.optimizer.iterations.numpy())


def losses(output) -> list[float]:
    log = (output / "training_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["loss"] for line in log]


def assert_close(weights, reference, atol):
    assert len(weights) == len(reference)
    for mine, theirs in zip(weights, reference):
        np.testing.assert_allclose(mine, theirs, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("distribute")
    write_conll(root / "train.conll", load_corpus(SAMPLE / "train", "i2b2").documents[:6])
    write_conll(root / "dev.conll", load_corpus(SAMPLE / "dev", "i2b2").documents[:3])
    (root / "tiny.json").write_text(json.dumps(TINY), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def one_process(data):
    output = data / "one-process"
    train(data / "train.conll", output, dev_path=data / "dev.conll", config=NERConfig(**TINY),
          progress=False, emit=lambda message: None)
    return output


@pytest.fixture(scope="module")
def two_worker_run(data):
    """An uninterrupted run; worker 1 is given its own --output, which it must not create."""
    outputs = [data / "two-workers", data / "worker-1-output"]
    workers = two_workers(data, outputs, "--config", data / "tiny.json")
    codes = [worker.wait() for worker in workers]
    return outputs, workers, codes


def test_two_workers_train_the_one_process_model(data, one_process, two_worker_run):
    (chief, other), workers, codes = two_worker_run
    assert codes == [0, 0], [worker.stderr[-2000:] for worker in workers]
    assert "worker 0 of 2 workers (chief)" in workers[0].stderr
    assert "epoch 3: loss" in workers[1].stderr  # the other worker ran every epoch too
    # Only the chief wrote files a user sees.
    assert not other.exists()
    for name in ("config.json", "vocab.json", "model.keras", "training_log.jsonl",
                 "checkpoint/state.json"):
        assert (chief / name).is_file(), name
    # The chief's model loads and predicts.
    ner = KerasAnnotator.load(chief)
    entities = ner.annotate("CT of the chest showed a 2 cm nodule; she was started on aspirin.")
    assert all(entity.label in ("problem", "test", "treatment") for entity in entities)
    # The same losses and weights as one process with the same global batch and seed.
    np.testing.assert_allclose(losses(chief), losses(one_process), rtol=LOSS_TOLERANCE)
    weights, steps = checkpoint_weights(chief)
    reference, reference_steps = checkpoint_weights(one_process)
    assert steps == reference_steps
    assert_close(weights, reference, WEIGHT_TOLERANCE)
    # Best epoch and early stopping come from the chief's dev scores.
    chief_log = [json.loads(line) for line in
                 (chief / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all("dev_f1" in entry for entry in chief_log)


def test_killed_worker_then_resume_gives_the_uninterrupted_model(data, two_worker_run):
    (uninterrupted, _), _, codes = two_worker_run
    assert codes == [0, 0]
    output = data / "killed"
    # Worker 1 is SIGKILLed as soon as it starts epoch 2 (epoch 1 is checkpointed).
    started = time.monotonic()
    workers = two_workers(data, [output, output], "--config", data / "tiny.json",
                          "--connect-timeout", 60, kill_at="epoch 2/3")
    assert workers[1].wait() == -signal.SIGKILL
    # The chief loses its peer: it must end with an error, not hang.
    chief_code = workers[0].wait(timeout=180)
    assert chief_code != 0, workers[0].stderr[-2000:]
    assert time.monotonic() - started < 300
    state = json.loads((output / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert state["epoch"] in (1, 2)
    resumed = two_workers(data, [output, output], "--resume")
    codes = [worker.wait() for worker in resumed]
    assert codes == [0, 0], [worker.stderr[-2000:] for worker in resumed]
    assert f"after epoch {state['epoch']}" in resumed[0].stderr
    weights, steps = checkpoint_weights(output)
    reference, reference_steps = checkpoint_weights(uninterrupted)
    assert steps == reference_steps
    assert_close(weights, reference, 1e-6)
    assert [entry for entry in losses(output)] == pytest.approx(losses(uninterrupted), rel=1e-6)


def test_a_worker_lost_in_the_first_epoch_is_not_told_to_resume(data, tmp_path):
    # Before: "restart every worker with --resume", which then said "nothing to resume".
    workers = two_workers(data, [tmp_path / "out"] * 2, "--config", data / "tiny.json",
                          "--connect-timeout", 60, kill_at="epoch 1/3")
    assert workers[1].wait() == -signal.SIGKILL
    assert workers[0].wait(timeout=180) == 5, workers[0].stderr[-2000:]
    last_line = workers[0].stderr.strip().splitlines()[-1]
    assert last_line.startswith("clinical-ner train: error: worker 0: lost contact with the "
                                "cluster in epoch 1 (")  # then TensorFlow's error class
    assert last_line.endswith("); no epoch was completed, so there is nothing to resume: start "
                              "every worker again with the same command")


def test_mirrored_over_two_cpu_devices_equals_one_device(data, one_process):
    output = data / "mirrored"
    worker = Worker(data, output, "--config", data / "tiny.json", "--distribute", "mirrored",
                    "--cpu-devices", 2)
    assert worker.wait() == 0, worker.stderr[-2000:]
    assert "mirrored over 2 devices" in worker.stderr
    np.testing.assert_allclose(losses(output), losses(one_process), rtol=LOSS_TOLERANCE)
    assert_close(checkpoint_weights(output)[0], checkpoint_weights(one_process)[0],
                 WEIGHT_TOLERANCE)


def test_mirrored_on_one_device_says_how_to_get_several(data, monkeypatch):
    # It said only "training on one device", as if --distribute mirrored had done its part.
    import tensorflow as tf

    import clinical_ner.training.distribute as distribute

    # A machine without GPUs (whatever this one has): MirroredStrategy finds its one CPU.
    monkeypatch.setattr(distribute, "_mirrored",
                        lambda cpu_devices: tf.distribute.MirroredStrategy(["/cpu:0"]))
    messages = []
    train(data / "train.conll", data / "mirrored-alone", config=NERConfig(**{**TINY, "epochs": 1}),
          progress=False, emit=messages.append, distribute="mirrored")
    notes = [message for message in messages if "--cpu-devices" in message]
    assert notes == [distribute.one_device_note("mirrored", 1)]
    assert notes[0].startswith("note: --distribute mirrored found one device (no GPU)")
    assert "training on one device; global batch 16" in messages


NOT_HOST_PORT = r"is not host:port with a port from 1 to 65535"


@pytest.mark.parametrize("text, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{cluster: 1", "TF_CONFIG: not valid JSON"),
    ("[" * 100_000, r"TF_CONFIG: not valid JSON \(arrays or objects nested too deeply\)"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "'task' is missing"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
     "task index 1 is out of range"),
    ('{"cluster": {"ps": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}',
     "cluster job 'ps' is not supported"),
    ('{"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}',
     "must be a list of 'host:port'"),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}',
     r"cluster.worker\[0\] '127.0.0.1' " + NOT_HOST_PORT),
    ('{"cluster": {"worker": ["127.0.0.1:1", 2222]}, "task": {"type": "worker", "index": 0}}',
     r"cluster.worker\[1\] 2222 " + NOT_HOST_PORT),
    # Beyond a port number: TensorFlow's server would fail with an OverflowError.
    ('{"cluster": {"worker": ["127.0.0.1:99999"]}, "task": {"type": "worker", "index": 0}}',
     r"cluster.worker\[0\] '127.0.0.1:99999' " + NOT_HOST_PORT),
    # TensorFlow would take "http" for the host, as gRPC does.
    ('{"cluster": {"worker": ["http://trainer-0:2222"]}, "task": {"type": "worker", "index": 0}}',
     r"cluster.worker\[0\] 'http://trainer-0:2222' " + NOT_HOST_PORT),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": "0"}}',
     "task index '0' is not a whole number"),
    # A type that is no string was an internal error (TypeError: unhashable type).
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": ["worker"], "index": 0}}',
     r"task type \['worker'\] is not in the cluster \(worker\)"),
    # A worker listed twice waited for itself for ever, deaf to SIGTERM and --connect-timeout.
    ('{"cluster": {"worker": ["127.0.0.1:23481", "127.0.0.1:23481"]}, '
     '"task": {"type": "worker", "index": 0}}',
     r"cluster.worker\[1\] '127.0.0.1:23481' is also cluster.worker\[0\]"),
    ('{"cluster": {"chief": ["Trainer-0:2222"], "worker": ["trainer-0:2222"]}, '
     '"task": {"type": "worker", "index": 0}}',
     r"cluster.worker\[0\] 'trainer-0:2222' is also cluster.chief\[0\]"),
])
def test_bad_tf_config_is_named(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_tf_config(text)


@pytest.mark.parametrize("seconds", [0, float("nan"), float("inf"), True])
def test_a_connect_timeout_that_is_no_finite_positive_number_is_named(seconds):
    # NaN passed "<= 0" and infinity overflowed TensorFlow's milliseconds: internal errors.
    config = json.dumps({"cluster": {"worker": ["127.0.0.1:1"]},
                         "task": {"type": "worker", "index": 0}})
    with pytest.raises(ConfigError, match="--connect-timeout must be a number of seconds"):
        distribution_for("multi-worker", connect_timeout_s=seconds,
                         environ={"TF_CONFIG": config})


@pytest.mark.parametrize("mode", ["none", "mirrored"])
def test_a_bad_connect_timeout_is_named_in_every_mode(mode):
    # It was accepted quietly unless --distribute multi-worker.
    with pytest.raises(ConfigError, match="--connect-timeout must be a number of seconds"):
        distribution_for(mode, connect_timeout_s=-3, environ={})


@pytest.mark.parametrize("mode", ["none", "mirrored", None])
def test_a_connect_timeout_without_multi_worker_is_refused(mode):
    # It was accepted and ignored: no other mode waits for peers.
    with pytest.raises(ConfigError, match="--connect-timeout SECONDS goes with --distribute "
                                          "multi-worker"):
        distribution_for(mode, connect_timeout_s=60, environ={})


@pytest.mark.parametrize(("mode", "environ", "warned"), [
    ("none", {"TF_CONFIG": '{"cluster": {}}'}, True),
    (None, {"TF_CONFIG": '{"cluster": {}}'}, True),
    ("mirrored", {"TF_CONFIG": '{"cluster": {}}'}, True),
    ("multi-worker", {"TF_CONFIG": '{"cluster": {}}'}, False),
    ("none", {}, False),
])
def test_tf_config_without_multi_worker_is_warned_of(mode, environ, warned):
    # Else every process of a cluster trained alone, silently, each writing --output.
    warning = ignored_tf_config_warning(mode, environ)
    assert (warning is not None) == warned
    if warned:
        assert "TF_CONFIG is set but --distribute is" in warning and "\n" not in warning


@pytest.mark.parametrize(("mode", "devices", "message"), [
    ("none", 2, "--cpu-devices N goes with --distribute mirrored"),
    ("mirrored", 0, "--cpu-devices must be a positive integer, got 0"),
    ("mirrored", 100_000, "--cpu-devices must be at most 64, got 100000"),
])
def test_cpu_devices_are_checked_before_tensorflow_builds_them(mode, devices, message):
    with pytest.raises(ConfigError, match=message):
        distribution_for(mode, cpu_devices=devices)


def test_bad_tf_config_and_a_missing_worker_end_the_command_with_an_error(data, tmp_path):
    unparsable = Worker(data, tmp_path / "a", "--distribute", "multi-worker", config="{oops")
    assert unparsable.wait() == 2
    assert "clinical-ner train: error: TF_CONFIG: not valid JSON" in unparsable.stderr
    # Worker 1 of two never starts: worker 0 gives up after --connect-timeout.
    ports = [free_port(), free_port()]
    started = time.monotonic()
    alone = Worker(data, tmp_path / "b", "--config", data / "tiny.json", "--distribute",
                   "multi-worker", "--connect-timeout", 5, config=tf_config(ports, 0))
    assert alone.wait(timeout=120) == 5
    assert time.monotonic() - started < 90  # start-up, then the 5 s timeout
    assert "the cluster did not come up within 5 s" in alone.stderr
    assert f"not reachable: 127.0.0.1:{ports[1]}" in alone.stderr
    assert not (tmp_path / "b").exists()


class PortHolder:
    """Another program on a port: answers ``reply`` to each connection, or stays silent."""

    def __init__(self, reply: bytes | None) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.reply = reply
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(connection)  # kept open: silent programs hold on
            if self.reply is not None:
                connection.sendall(self.reply)

    def close(self) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()


def test_a_peer_is_told_apart_from_another_program_on_its_port():
    from clinical_ner.training.distribute import _greet, _peer_state

    web = PortHolder(b"HTTP/1.0 400 Bad Request\r\n\r\n")
    silent = PortHolder(None)
    # A waiting worker's listener, as _wait_for_peers runs it.
    listener = socket.create_server(("127.0.0.1", 0))
    waiting = threading.Event()
    waiting.set()
    greeter = threading.Thread(target=_greet, args=(listener, waiting), daemon=True)
    greeter.start()
    try:
        assert _peer_state(f"127.0.0.1:{web.port}") == "foreign"
        assert _peer_state(f"127.0.0.1:{silent.port}") == "silent"
        assert _peer_state(f"127.0.0.1:{listener.getsockname()[1]}") == "worker"
        assert _peer_state(f"127.0.0.1:{free_port()}") == "down"
    finally:
        waiting.clear()
        greeter.join()
        listener.close()
        web.close()
        silent.close()


def test_another_program_on_a_peers_port_ends_the_worker_with_an_error(data, tmp_path):
    # TensorFlow's join would wait for it without a limit, deaf to SIGTERM.
    web = PortHolder(b"HTTP/1.0 400 Bad Request\r\n\r\n")
    try:
        ports = [free_port(), web.port]
        worker = Worker(data, tmp_path / "out", "--config", data / "tiny.json", "--distribute",
                        "multi-worker", "--connect-timeout", 120, config=tf_config(ports, 0))
        assert worker.wait(timeout=100) == 5  # long before the 120 s timeout
    finally:
        web.close()
    assert worker.stderr.strip().splitlines()[-1] == (
        f"clinical-ner train: error: TF_CONFIG worker 0 (127.0.0.1:{ports[0]}): another program "
        f"answers on 127.0.0.1:{ports[1]}, not a clinical-ner worker; free that port or change "
        "TF_CONFIG")
    assert not (tmp_path / "out").exists()


def chief_and_other_worker(data, tmp_path, *other_options, other_data=None
                           ) -> tuple[Worker, Worker]:
    """Worker 0 on ``data`` and worker 1 with ``other_options`` added, or on ``other_data``."""
    ports = [free_port(), free_port()]
    options = ("--config", data / "tiny.json", "--distribute", "multi-worker",
               "--connect-timeout", 120)
    chief = Worker(data, tmp_path / "out", *options, config=tf_config(ports, 0))
    other = Worker(other_data or data, tmp_path / "other", *options, *other_options,
                   config=tf_config(ports, 1))
    return chief, other


def test_workers_started_with_other_options_than_the_chief_all_stop_with_an_error(data,
                                                                                 tmp_path):
    # Before: the worker with --epochs 1 said "the chief wrote the model" and exited 0 while
    # the chief failed with "lost contact"; without --dev, TensorFlow's collective errors.
    chief, other = chief_and_other_worker(data, tmp_path, "--epochs", 1)
    assert other.wait() == 2 and chief.wait() == 2
    assert other.stderr.strip().splitlines()[-1] == (
        "clinical-ner train: error: worker 1: its --epochs differ from the chief's (1 here, 3 on "
        "the chief); start every worker with the same command")
    assert chief.stderr.strip().splitlines()[-1] == (
        "clinical-ner train: error: worker 0: another worker was started with other options "
        "than the chief (see its error); start every worker with the same command")
    assert not (tmp_path / "out").exists()
    # A worker started without --dev (the guide once said only the chief needs it).
    ports = [free_port(), free_port()]
    chief = Worker(data, tmp_path / "out", "--config", data / "tiny.json", "--distribute",
                   "multi-worker", "--connect-timeout", 120, config=tf_config(ports, 0))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=tf_config(ports, 1))
    no_dev = subprocess.run(
        [sys.executable, "-m", "clinical_ner.cli", "train", "--train", str(data / "train.conll"),
         "--output", str(tmp_path / "other"), "--quiet", "--config", str(data / "tiny.json"),
         "--distribute", "multi-worker", "--connect-timeout", "120"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert no_dev.returncode == 2 and chief.wait() == 2
    assert no_dev.stderr.strip().splitlines()[-1] == (
        "clinical-ner train: error: worker 1: its --dev (given or not) differ from the chief's; "
        "start every worker with the same command")


def test_a_worker_given_other_training_data_of_the_same_length_stops_every_worker(data,
                                                                                tmp_path):
    # Before: only the number of sentences was compared, so a worker whose file differed in
    # one tag trained on its own data beside the chief's, and both reported success.
    other_data = tmp_path / "other-data"
    other_data.mkdir()
    text = (data / "train.conll").read_text(encoding="utf-8")
    (other_data / "train.conll").write_text(text.replace("B-problem", "B-test", 1),
                                            encoding="utf-8")
    (other_data / "dev.conll").write_bytes((data / "dev.conll").read_bytes())
    chief, other = chief_and_other_worker(data, tmp_path, other_data=other_data)
    assert other.wait() == 2 and chief.wait() == 2
    assert other.stderr.strip().splitlines()[-1] == (
        "clinical-ner train: error: worker 1: its training data (tokens, tags or assertions) "
        "differ from the chief's; start every worker with the same command")
    assert not (tmp_path / "out").exists()


VOCABULARIES_DIFFER = ("the workers' vocabularies differ (their models too): the --embeddings "
                       "files or the --init-from model differ between the machines; give every "
                       "worker the same files")
ANOTHER_WORKER_STOPPED = ("lost contact with the cluster before training began "
                          "(UnavailableError): another worker stopped; see its error, then start "
                          "every worker again")


@pytest.mark.parametrize("vectors_of_worker_1", ["two words swapped", "fewer words"])
def test_workers_whose_vectors_files_differ_all_stop_with_an_error(data, tmp_path,
                                                                   vectors_of_worker_1):
    # Before: tables of other sizes failed TensorFlow's first broadcast (internal error, exit
    # 70); of the same size (the file's order differs), each worker read a word id as
    # another word, and both reported success.
    lines = VECTORS.read_text(encoding="utf-8").splitlines(keepends=True)
    if vectors_of_worker_1 == "two words swapped":
        lines = lines[:-2] + [lines[-1], lines[-2]]
    else:
        lines = lines[:len(lines) // 2]
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("".join(lines), encoding="utf-8")
    chief, other = chief_and_other_worker(data, tmp_path, "--embeddings", vectors)
    codes = [chief.wait(), other.wait()]
    last_lines = [worker.stderr.strip().splitlines()[-1] for worker in (chief, other)]
    assert any(line.endswith(VOCABULARIES_DIFFER) for line in last_lines), last_lines
    # Tables of other sizes: the worker that sees it first stops, and the other may lose
    # contact with it before it sees it too.
    for index, (code, line) in enumerate(zip(codes, last_lines)):
        prefix = f"clinical-ner train: error: worker {index}: "
        assert (code, line) in ((2, prefix + VOCABULARIES_DIFFER),
                                (5, prefix + ANOTHER_WORKER_STOPPED)), (code, line)
    assert not (tmp_path / "out").exists()


def test_workers_whose_vectors_hold_other_values_all_stop_with_an_error(data, tmp_path):
    # Before: the same words in the same order passed the vocabulary check, and each worker
    # trained from its own table (set after the cluster's broadcast), both reporting success.
    vectors = tmp_path / "vectors.txt"
    with VECTORS.open(encoding="utf-8") as source:
        vectors.write_text("".join(f"{word} 0.5 {rest}" for word, _, rest in
                                   (line.split(" ", 2) for line in source)), encoding="utf-8")
    chief, other = chief_and_other_worker(data, tmp_path, "--embeddings", vectors)
    codes = [chief.wait(), other.wait()]
    last_lines = [worker.stderr.strip().splitlines()[-1] for worker in (chief, other)]
    assert codes == [2, 2], last_lines
    for index, line in enumerate(last_lines):
        assert line == (
            f"clinical-ner train: error: worker {index}: the workers' starting weights differ "
            "(their vocabularies agree): the --embeddings files or the --init-from model hold "
            "other values on some machines; give every worker the same files")
    assert not (tmp_path / "out").exists()


def test_a_worker_whose_chief_stops_before_training_says_so(data, tmp_path):
    # Before: the chief named its dev data, the other worker ended with "internal error
    # (UnavailableError)", exit 70.
    chief_data = tmp_path / "chief-data"
    chief_data.mkdir()
    for name in ("train.conll", "tiny.json"):
        (chief_data / name).write_bytes((data / name).read_bytes())
    dev = (data / "dev.conll").read_text(encoding="utf-8")
    (chief_data / "dev.conll").write_text(
        "\n".join(line.split("\t")[0] + "\tO" if "\t" in line else line
                  for line in dev.split("\n")), encoding="utf-8")
    chief, other = chief_and_other_worker(chief_data, tmp_path)
    assert [chief.wait(), other.wait()] == [3, 5], [chief.stderr[-2000:], other.stderr[-2000:]]
    assert chief.stderr.strip().splitlines()[-1].endswith(
        "dev.conll: no entities to score (every token is O)")
    assert other.stderr.strip().splitlines()[-1] == (
        f"clinical-ner train: error: worker 1: {ANOTHER_WORKER_STOPPED}")
