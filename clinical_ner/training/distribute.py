"""Where a training run executes: one device, every local device, or one process per machine.

``--distribute mirrored`` is ``tf.distribute.MirroredStrategy`` over this
machine's GPUs (or ``--cpu-devices N`` logical CPU devices, for tests and
benchmarks). ``--distribute multi-worker`` is
``tf.distribute.MultiWorkerMirroredStrategy``, configured by the standard
``TF_CONFIG`` environment variable that Kubernetes training operators,
Vertex AI and Slurm launchers set, for example::

    {"cluster": {"worker": ["trainer-0:2222", "trainer-1:2222"]},
     "task": {"type": "worker", "index": 0}}

The chief (the ``chief`` task, or worker 0 when the cluster has none) is the
only process that writes the model directory; the others write into a
temporary directory that is deleted when they finish.

Security: the workers' gRPC servers are unencrypted and listen on every
network interface of their machine (measured with TF 2.21, whatever host
``TF_CONFIG`` names); batches of the training notes' tokens travel between
them. Run them only on a private network that nobody else can reach.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from clinical_ner.errors import (
    ConfigError,
    UnavailableError,
    check_choice,
    check_host_port,
    check_integer,
    check_seconds,
    os_reason,
)
from clinical_ner.untrusted_json import UntrustedJSONError, parse_untrusted_json

DISTRIBUTE_MODES = ("none", "mirrored", "multi-worker")
MAX_CPU_DEVICES = 64
#: How long a worker waits for every other worker to start (``--connect-timeout``).
DEFAULT_CONNECT_TIMEOUT_S = 300
#: A worker that has not been heard from for this long is taken for dead.
HEARTBEAT_TIMEOUT_S = 30
TASK_TYPES = ("chief", "worker")



class ClusterError(UnavailableError):
    """A worker could not join its cluster, or lost contact with it (exit status 5)."""


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in a ``TF_CONFIG`` cluster."""

    cluster: dict[str, list[str]]
    task_type: str
    task_index: int

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or ("chief" not in self.cluster
                                             and self.task_index == 0)

    @property
    def address(self) -> str:
        return self.cluster[self.task_type][self.task_index]

    @property
    def workers(self) -> int:
        return sum(len(self.cluster.get(task_type, ())) for task_type in TASK_TYPES)


def parse_tf_config(text: str | None) -> ClusterTask:
    """Check a ``TF_CONFIG`` value and say what is wrong with it in one line.

    >>> parse_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, '
    ...                 '"task": {"type": "worker", "index": 1}}').is_chief
    False
    """
    if not text:
        raise ConfigError("--distribute multi-worker needs the TF_CONFIG environment variable "
                          "(a JSON object with 'cluster' and 'task')")
    try:
        value = parse_untrusted_json(text)
    except UntrustedJSONError as error:
        raise ConfigError(f"TF_CONFIG: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ConfigError("TF_CONFIG: expected a JSON object with 'cluster' and 'task'")
    cluster, task = value.get("cluster"), value.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError("TF_CONFIG: 'cluster' is missing or empty "
                          "(e.g. {\"worker\": [\"host-0:2222\", \"host-1:2222\"]})")
    for task_type, addresses in cluster.items():
        if task_type not in TASK_TYPES:
            raise ConfigError(f"TF_CONFIG: cluster job {task_type!r} is not supported "
                              f"(only {' and '.join(TASK_TYPES)})")
        if not isinstance(addresses, list) or not addresses:
            raise ConfigError(f"TF_CONFIG: cluster.{task_type} must be a list of 'host:port'")
        for index, address in enumerate(addresses):
            # Else TensorFlow fails later and obscurely (a port beyond 65535: an OverflowError).
            check_host_port(f"TF_CONFIG: cluster.{task_type}[{index}]", address)
    if len(cluster.get("chief", ())) > 1:
        raise ConfigError("TF_CONFIG: a cluster has at most one chief")
    _check_addresses_differ(cluster)
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ConfigError("TF_CONFIG: 'task' is missing; it names this process, e.g. "
                          "{\"type\": \"worker\", \"index\": 0}")
    task_type, task_index = task["type"], task["index"]
    # Not a string (a list, say) is no job's name; as a dictionary key it was a TypeError.
    if not isinstance(task_type, str) or task_type not in cluster:
        raise ConfigError(f"TF_CONFIG: task type {task_type!r} is not in the cluster "
                          f"({', '.join(cluster)})")
    if not isinstance(task_index, int) or isinstance(task_index, bool):
        raise ConfigError(f"TF_CONFIG: task index {task_index!r} is not a whole number "
                          "(e.g. \"index\": 0)")
    if not 0 <= task_index < len(cluster[task_type]):
        raise ConfigError(f"TF_CONFIG: task index {task_index!r} is out of range: the cluster "
                          f"has {len(cluster[task_type])} {task_type} task(s)")
    return ClusterTask({name: list(addresses) for name, addresses in cluster.items()},
                       task_type, task_index)


def _check_addresses_differ(cluster: dict[str, list[str]]) -> None:
    """Each task needs a port of its own: a worker listed twice would wait for itself for ever.

    Host names are compared without case, as DNS does.
    """
    seen: dict[str, str] = {}
    for task_type, addresses in cluster.items():
        for index, address in enumerate(addresses):
            where = f"cluster.{task_type}[{index}]"
            first = seen.setdefault(address.lower(), where)
            if first != where:
                raise ConfigError(f"TF_CONFIG: {where} {address!r} is also {first}; "
                                  "every task needs an address of its own")


class Distribution:
    """The strategy a run trains under, and this process's duties in it.

    Example (one process, the default strategy)::

        distribution = distribution_for("none")
        with distribution.strategy.scope():
            model = ...
        with distribution.output_dir(Path("runs/x")) as directory:
            ...  # write files there: the chief's --output, a temporary directory elsewhere
    """

    def __init__(self, strategy, task: ClusterTask | None = None) -> None:
        self.strategy = strategy
        self.task = task
        self._reductions: dict[bool, Callable] = {}

    @property
    def is_chief(self) -> bool:
        return self.task is None or self.task.is_chief

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def describe(self) -> str:
        if self.task is not None:
            role = "chief" if self.is_chief else "not the chief: writes nothing"
            return (f"{self.task.task_type} {self.task.task_index} of {self.task.workers} "
                    f"workers ({role}), {self.replicas} replicas in all")
        if self.replicas == 1:
            return "one device"
        return f"mirrored over {self.replicas} devices"

    @contextlib.contextmanager
    def output_dir(self, output: Path) -> Iterator[Path]:
        """``output`` on the chief; elsewhere a temporary directory, deleted afterwards."""
        if self.is_chief:
            yield output
            return
        scratch = Path(tempfile.mkdtemp(prefix="clinical-ner-worker-"))
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def broadcast_from_chief(self, values: Sequence[float]) -> list[float]:
        """The chief's ``values`` on every process (float64, exact).

        Every replica contributes zeros except the first, which is the
        chief's first device, and the contributions are summed.
        """
        local = values if self.is_chief else [0.0] * len(values)
        return self._summed_over_replicas(local, first_replica_only=True)

    def chief_and_agreement(self, values: Sequence[float]) -> tuple[list[float], bool]:
        """The chief's ``values``, and whether every process's own ``values`` equal them.

        Every process learns both, so that all of them stop together when one
        was started differently (which would otherwise fail later, obscurely).
        """
        chief = self.broadcast_from_chief(values)
        differs = float([float(value) for value in values] != chief)
        return chief, self._summed_over_replicas([differs], first_replica_only=False)[0] == 0

    def _summed_over_replicas(self, values: Sequence[float], first_replica_only: bool
                              ) -> list[float]:
        import tensorflow as tf

        if first_replica_only not in self._reductions:
            strategy = self.strategy

            @tf.function
            def reduce(local):
                def contribute(local):
                    if not first_replica_only:
                        return local
                    first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
                    return tf.where(first, local, tf.zeros_like(local))

                return strategy.reduce(tf.distribute.ReduceOp.SUM,
                                       strategy.run(contribute, args=(local,)), axis=None)

            self._reductions[first_replica_only] = reduce
        with self.strategy.scope():
            return [float(value) for value in self._reductions[first_replica_only](
                tf.constant(np.asarray(values, np.float64)))]


def distribution_for(mode: str | None, cpu_devices: int | None = None,
                     connect_timeout_s: float | None = None,
                     environ: Mapping[str, str] = os.environ) -> Distribution:
    """The strategy for ``--distribute MODE``. Call it before TensorFlow runs any operation.

    A multi-worker process whose cluster is not complete within
    ``connect_timeout_s`` prints why and exits with status 5: TensorFlow
    offers no way to abandon the wait (it ignores SIGTERM meanwhile).

    ``cpu_devices`` splits this machine's CPU into that many logical devices
    for ``mirrored`` (one replica each: for tests and benchmarks, no faster
    than one device). ``connect_timeout_s`` bounds how long a multi-worker
    process waits for the others to start (default ``DEFAULT_CONNECT_TIMEOUT_S``).
    """
    import tensorflow as tf

    mode = mode or "none"
    check_choice("--distribute", mode, DISTRIBUTE_MODES)
    if connect_timeout_s is not None:
        # TensorFlow takes it in int32 milliseconds: a week at most.
        check_seconds("--connect-timeout", connect_timeout_s, maximum=7 * 24 * 3600)
        # Refused elsewhere, as --cpu-devices is outside mirrored: no other mode waits for peers.
        if mode != "multi-worker":
            raise ConfigError("--connect-timeout SECONDS goes with --distribute multi-worker")
    else:
        connect_timeout_s = DEFAULT_CONNECT_TIMEOUT_S
    if cpu_devices is not None:
        if mode != "mirrored":
            raise ConfigError("--cpu-devices N goes with --distribute mirrored")
        # A few devices are enough to test with; each costs memory before training
        # starts (2,000 took 0.9 GB and 6 s to set up, measured while writing this).
        check_integer("--cpu-devices", cpu_devices, maximum=MAX_CPU_DEVICES)
    if mode == "none":
        return Distribution(tf.distribute.get_strategy())
    if mode == "mirrored":
        return Distribution(_mirrored(cpu_devices))
    task = parse_tf_config(environ.get("TF_CONFIG"))
    return _multi_worker(task, connect_timeout_s)


def ignored_tf_config_warning(mode: str | None,
                              environ: Mapping[str, str] = os.environ) -> str | None:
    """A one-line warning when ``TF_CONFIG`` is set but ``--distribute`` is not multi-worker.

    Each process of such a cluster would train alone and write its own
    ``--output``. A warning rather than an error: some launchers (Vertex AI)
    set ``TF_CONFIG`` for a job of one machine too.

    >>> ignored_tf_config_warning("multi-worker", {"TF_CONFIG": "{}"}) is None
    True
    """
    if not environ.get("TF_CONFIG") or mode == "multi-worker":
        return None
    return (f"warning: TF_CONFIG is set but --distribute is {mode or 'none'}: this process "
            "trains alone, ignoring its cluster (--distribute multi-worker joins it)")


def one_device_note(mode: str | None, replicas: int) -> str | None:
    """A one-line note when ``--distribute mirrored`` found only one device to mirror over.

    It then trains as without ``--distribute``, which "training on one device" alone did
    not explain.

    >>> one_device_note("mirrored", 2) is None, one_device_note("none", 1) is None
    (True, True)
    """
    if mode != "mirrored" or replicas != 1:
        return None
    return ("note: --distribute mirrored found one device (no GPU): it trains as without "
            "--distribute; it mirrors over every local GPU, or over --cpu-devices N logical "
            "CPU devices (for tests: no faster)")


def _mirrored(cpu_devices: int | None):
    import tensorflow as tf

    if cpu_devices is None:
        return tf.distribute.MirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    except RuntimeError:
        raise ConfigError("--cpu-devices must be set before TensorFlow starts: "
                          "this process has already run TensorFlow operations") from None
    return tf.distribute.MirroredStrategy([f"/cpu:{index}" for index in range(cpu_devices)])


def _multi_worker(task: ClusterTask, connect_timeout_s: float) -> Distribution:
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    # TensorFlow's own coordination service, configured before the strategy
    # does it with its defaults, so that a worker that never comes up, or
    # dies, ends the others with an error instead of leaving them waiting.
    # (The configuration API is not public; it is the one the strategy uses.)
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{'chief' if 'chief' in task.cluster else 'worker'}/replica:0/task:0",
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=name, num_tasks=len(hosts))
                          for name, hosts in task.cluster.items()],
        cluster_register_timeout_in_ms=int(connect_timeout_s * 1000),
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_S * 1000,
        shutdown_barrier_timeout_in_ms=int(connect_timeout_s * 1000),
    )
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(task.cluster), task_type=task.task_type, task_id=task.task_index,
        rpc_layer="grpc")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    _wait_for_peers(task, connect_timeout_s)
    # Should a peer vanish between that check and TensorFlow's own join,
    # TensorFlow waits without a limit (its registration timeout did not end
    # the wait in our measurement) and ignores SIGTERM; a watchdog ends the
    # process then, when TensorFlow lets Python threads run.
    message = (f"clinical-ner train: error: TF_CONFIG {task.task_type} {task.task_index} "
               f"({task.address}): the cluster did not come up within {connect_timeout_s:g} s "
               f"(--connect-timeout); check that every worker of {task.cluster} is started "
               "and reachable")
    watchdog = threading.Timer(connect_timeout_s, _exit_with, args=(message,))
    watchdog.daemon = True
    watchdog.start()
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(resolver, options)
        distribution = Distribution(strategy, task)
        distribution.broadcast_from_chief([0.0])  # returns once every worker is up
    except (tf.errors.OpError, RuntimeError) as error:
        raise ClusterError(f"TF_CONFIG {task.task_type} {task.task_index} ({task.address}): "
                           f"could not join the cluster: {_first_line(error)}") from None
    finally:
        watchdog.cancel()
    return distribution


def _wait_for_peers(task: ClusterTask, timeout_s: float) -> None:
    """Return once every other task answers as a worker; else raise within ``timeout_s``.

    Each process listens on its own port while it waits, answering
    :data:`WAITING_GREETING` (and closes it before TensorFlow's server takes
    the port), so the processes find each other whichever starts first. A
    peer answers either that or, once its TensorFlow server runs, HTTP/2;
    another program on a peer's port is named at once, since TensorFlow's
    join would wait for it without a limit and ignore SIGTERM. This wait is
    plain Python: unlike TensorFlow's join, it can time out with a message.
    """
    port = int(task.address.rpartition(":")[2])
    try:
        listener = socket.create_server(("", port))
    except OSError as error:
        raise ClusterError(f"TF_CONFIG {task.task_type} {task.task_index}: cannot listen on "
                           f"port {port} ({os_reason(error)})") from None
    waiting = threading.Event()
    waiting.set()
    greeter = threading.Thread(target=_greet, args=(listener, waiting), daemon=True)
    greeter.start()
    others = [address for name in TASK_TYPES for address in task.cluster.get(name, ())
              if address != task.address]
    where = f"TF_CONFIG {task.task_type} {task.task_index} ({task.address})"
    deadline = time.monotonic() + timeout_s
    try:
        while others:
            states = {address: _peer_state(address) for address in others}
            foreign = [address for address, state in states.items() if state == "foreign"]
            if foreign:
                raise ClusterError(
                    f"{where}: another program answers on {foreign[0]}, not a clinical-ner "
                    "worker; free that port or change TF_CONFIG")
            others = [address for address, state in states.items() if state != "worker"]
            if others and time.monotonic() > deadline:
                silent = [address for address in others if states[address] == "silent"]
                raise ClusterError(
                    f"{where}: the cluster did not come up within {timeout_s:g} s "
                    f"(--connect-timeout); not reachable: {', '.join(others)}"
                    + (f" ({', '.join(silent)} accepts connections but does not answer as "
                       "a clinical-ner worker)" if silent else ""))
            time.sleep(0.5)
    finally:
        waiting.clear()
        greeter.join()
        listener.close()


#: What a worker's port answers while it waits for its peers (see :func:`_wait_for_peers`).
WAITING_GREETING = b"clinical-ner worker waiting\n"
# An HTTP/2 client's first bytes and an empty SETTINGS frame: a TensorFlow (gRPC)
# server answers with its own SETTINGS frame (frame type 4, the fourth byte).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4


def _greet(listener: socket.socket, waiting: threading.Event) -> None:
    listener.settimeout(0.2)  # to see ``waiting`` cleared
    while waiting.is_set():
        try:
            connection, _ = listener.accept()
        except OSError:
            continue
        with connection:
            with contextlib.suppress(OSError):
                connection.sendall(WAITING_GREETING)


def _peer_state(address: str) -> str:
    """``"worker"`` (waiting, or its TensorFlow server runs), ``"down"`` (nothing there yet),
    ``"silent"`` (accepts, answers nothing) or ``"foreign"`` (answers something else)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as connection:
            connection.sendall(_HTTP2_PREFACE)
            answer = connection.recv(len(WAITING_GREETING))
    except socket.timeout:
        return "silent"
    except OSError:
        return "down"
    if not answer:
        return "down"  # closed at once: a peer between its wait and its server, say
    if WAITING_GREETING.startswith(answer) or (len(answer) > 3
                                               and answer[3] == _HTTP2_SETTINGS):
        return "worker"
    return "foreign"


def _exit_with(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(ClusterError.exit_code)


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
