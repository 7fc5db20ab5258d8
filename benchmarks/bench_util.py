"""Helpers for ``benchmarks/run.py``: timing, machine facts, processes, data slices.

Nothing here imports TensorFlow, so ``tests/test_benchmarks.py`` and the
README renderer can use it cheaply.
"""
from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from clinical_ner.errors import ClinicalNERError
from clinical_ner.serving import defaults

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = defaults.MODEL_NAME  # the name the benchmark servers serve the model under
MB = 1024 * 1024
T = TypeVar("T")


# -- timing -------------------------------------------------------------------

def time_runs(function: Callable[[], object], repeats: int, warmup: int = 1) -> dict:
    """Call ``function`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns ``{"median": s, "min": s, "max": s, "runs": [s, ...]}`` (seconds).
    """
    for _ in range(warmup):
        function()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return summarize_seconds(runs)


def summarize_seconds(runs: list[float]) -> dict:
    return {
        "median": round(statistics.median(runs), 6),
        "min": round(min(runs), 6),
        "max": round(max(runs), 6),
        "runs": [round(value, 6) for value in runs],
    }


def throughput(seconds: dict, tokens: int, documents: int) -> dict:
    """Tokens/s and documents/s at the median time (and the best run's tokens/s)."""
    return {
        "tokens_per_second": round(tokens / seconds["median"], 1),
        "documents_per_second": round(documents / seconds["median"], 2),
        "tokens_per_second_best": round(tokens / seconds["min"], 1),
        "seconds": seconds,
    }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_calls(function: Callable[[str], object], texts: list[str], calls: int,
                  warmup: int) -> dict:
    """Time ``calls`` single-text calls cycling through ``texts``; p50/p99/mean in ms."""
    for index in range(warmup):
        function(texts[index % len(texts)])
    samples = []
    for index in range(calls):
        text = texts[index % len(texts)]
        started = time.perf_counter()
        function(text)
        samples.append((time.perf_counter() - started) * 1e3)
    return {
        "p50_ms": round(percentile(samples, 50), 3),
        "p90_ms": round(percentile(samples, 90), 3),
        "p99_ms": round(percentile(samples, 99), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
        "max_ms": round(max(samples), 3),
        "calls": calls,
        "warmup_calls": warmup,
    }


# -- comparing answers ------------------------------------------------------------

# How far two runtimes' (or versions') confidences of the same entity may differ.
CONFIDENCE_TOLERANCE = 1e-5


def same_entities(expected: list, actual: list) -> bool:
    """Each text's entities alike: spans and labels exactly, confidences within the tolerance."""
    import numpy as np

    for want, got in zip(expected, actual, strict=True):
        if [(e.start, e.end, e.label) for e in want] != [(e.start, e.end, e.label) for e in got]:
            return False
        if not np.allclose([e.confidence for e in want], [e.confidence for e in got],
                           atol=CONFIDENCE_TOLERANCE):
            return False
    return True


# -- processes and memory ---------------------------------------------------------

def proc_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field (``VmHWM``, ``VmRSS``) of /proc/<pid>/status, or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_timed_subprocess(command: list[str], log_path: Path, env: dict | None = None,
                         timeout_s: float | None = None) -> dict:
    """Run ``command`` with stdout+stderr to ``log_path``; wall time, exit code, peak RSS.

    The child is reaped with ``os.wait4`` so that its own ``ru_maxrss`` (peak
    resident memory) is known, not the maximum over all children so far.
    """
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=REPO_ROOT, env=env)
        deadline = None if timeout_s is None else started + timeout_s
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                process.kill()
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": process.returncode,
        "wall_seconds": round(time.perf_counter() - started, 3),
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        # CPU time of the child and its own children (user + system): on a shared
        # machine, less dependent on the other load than the wall time.
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
    }


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServerProcess:
    """``clinical-ner serve`` in a subprocess on a free loopback port (and one for REST)."""

    def __init__(self, base_path: Path, log_path: Path, extra_args: Sequence[str] = (),
                 rest: bool = False) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.rest_port = free_port() if rest else None
        self.command = [sys.executable, "-m", "clinical_ner.cli", "serve", str(base_path),
                        "--host", "127.0.0.1", "--port", str(self.port),
                        "--model-name", MODEL_NAME, *extra_args]
        if rest:
            self.command += ["--rest-port", str(self.rest_port)]
        self._log = open(log_path, "wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=REPO_ROOT, env=subprocess_env())

    def wait_ready(self, timeout_s: float = 300.0) -> float:
        """Seconds from launch until a version is AVAILABLE."""
        from clinical_ner.serving.client import ServingClient, ServingError

        with ServingClient(self.target, MODEL_NAME, timeout=2.0, deadline=2.0,
                               max_retries=0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode} "
                                       f"before serving; see {self._log.name}")
                try:
                    if any(status.state == "AVAILABLE" for status in client.status()):
                        return time.perf_counter() - self.started
                except ServingError:
                    pass
                if time.perf_counter() - self.started > timeout_s:
                    raise RuntimeError(f"the server was not ready after {timeout_s} s")
                time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.process.pid

    def memory_mb(self, field: str) -> float | None:
        kb = proc_status_kb(self.process.pid, field)
        return None if kb is None else round(kb / 1024, 1)

    def stop(self) -> int:
        """SIGTERM (in-flight requests finish), then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


# -- sizes --------------------------------------------------------------------------

def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


# -- machine facts -----------------------------------------------------------------

def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cpu_features() -> dict | None:
    """The CPU's family, model and vector extensions, from ``/proc/cpuinfo`` (Linux only).

    Two hosts may give the same model name and still differ: "AMD EPYC" has
    been a Zen 4 with AVX-512 (family 25, model 17) and a CPU without it, whose
    kernels round differently, so training is deterministic per these facts,
    not per the name (docs/design/pretrained.md).
    """
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return None
    flags = fields.get("flags", "").split()
    return {"family": fields.get("cpu family"), "model": fields.get("model"),
            "avx512": [flag for flag in flags if flag.startswith("avx512")],
            "amx": [flag for flag in flags if flag.startswith("amx")]}


def _mem_total_mb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def core_counts() -> dict:
    """The machine's cores and those this process may use (a container's or taskset's share)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {"cpu_count": os.cpu_count(), "cpus_usable": affinity}


def machine_facts() -> dict:
    """Where the figures were measured. Imports TensorFlow and Keras for their versions."""
    import grpc
    import keras
    import numpy
    import tensorflow as tf

    # What the harness itself writes (result files, the README's tables) does not
    # count as a change: an --all run rewrites them between corpora.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)benchmarks/results", ":(exclude)README.md")
    return {
        **core_counts(),
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "memory_total_mb": _mem_total_mb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "grpcio": grpc.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        # Tracked files changed since that commit, but for the harness's outputs
        # (untracked files are not counted).
        "git_dirty": None if status is None else bool(status),
        "load_average_start": load_average(),
    }


# -- data ------------------------------------------------------------------------------

def conll_sentence_blocks(path: Path) -> list[str]:
    """The sentences of a CoNLL file as raw text blocks (lines kept exactly)."""
    blocks, current = [], []
    with open(path, encoding="utf-8", newline="") as handle:
        for line in handle:
            if line.strip():
                current.append(line)
            elif current:
                blocks.append("".join(current))
                current = []
    if current:
        blocks.append("".join(current))
    return blocks


def conll_notes(path: Path) -> list[str]:
    """The sentences of a CoNLL file as notes: each sentence's tokens joined by spaces."""
    return [" ".join(line.split("\t")[0] for line in block.splitlines())
            for block in conll_sentence_blocks(path)]


def i2b2_documents(folder: Path) -> list[str]:
    """The texts of an i2b2 split (``folder/txt/*.txt``), in file-name order.

    A missing ``txt/`` is a FileNotFoundError, as a missing CoNLL file is: read as no
    documents, it would be found out only as an IndexError or ZeroDivisionError later.
    """
    if not (folder / "txt").is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(folder / "txt"))
    return [path.read_text(encoding="utf-8") for path in sorted((folder / "txt").glob("*.txt"))]


def read_data(parser: argparse.ArgumentParser, option: str, read: Callable[[], T]) -> T:
    """``read()``, or ``parser``'s one-line error naming the file that ``option``'s folder
    lacks, or the reader's error (its file and line) for a corpus it cannot read.

    Called before the model is loaded or exported, so that wrong data stops at once,
    not after that work in a traceback.
    """
    try:
        return read()
    except FileNotFoundError as error:
        parser.error(f"argument {option}: {error.filename}: no such file or folder; give the "
                     "shared data folder (../shared/data) or one laid out as it is")
    except ClinicalNERError as error:
        parser.error(f"argument {option}: {error}")


def slice_conll(source: Path, target: Path, sentences: int) -> int:
    """Write the first ``sentences`` sentences of a CoNLL file; return how many were written."""
    blocks = conll_sentence_blocks(source)[:sentences]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(block + "\n" for block in blocks), encoding="utf-8")
    return len(blocks)


def slice_i2b2(source: Path, target: Path, sentences: int) -> int:
    """Copy whole documents (in name order) of an i2b2 ``txt/`` + ``concept/`` folder
    until at least ``sentences`` non-empty lines are copied; return the line count."""
    (target / "txt").mkdir(parents=True, exist_ok=True)
    (target / "concept").mkdir(parents=True, exist_ok=True)
    copied = 0
    for text_file in sorted((source / "txt").glob("*.txt")):
        if copied >= sentences:
            break
        shutil.copyfile(text_file, target / "txt" / text_file.name)
        concept = source / "concept" / (text_file.stem + ".con")
        shutil.copyfile(concept, target / "concept" / concept.name)
        text = text_file.read_text(encoding="utf-8")
        copied += sum(1 for line in text.splitlines() if line.strip())
    return copied


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command a result file records: ``python -m <module>`` and the arguments given."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def check_litert_export(parser: argparse.ArgumentParser, export: Path) -> None:
    """Stop with ``parser``'s one-line error unless ``export`` is a LiteRT export.

    Called after parsing, not as a ``type=``: the docs' commands with a placeholder
    ``--export DIR`` must still parse (tests/test_docs_commands.py).
    """
    from clinical_ner.annotators.litert.annotator import read_export
    from clinical_ner.artifacts.litert import LiteRTExportError

    try:
        read_export(export)
    except LiteRTExportError as error:
        parser.error(f"argument --export: {error}")


def check_i2b2_folder(parser: argparse.ArgumentParser, folder: Path | None) -> None:
    """Stop with ``parser``'s one-line error unless ``--data`` holds an i2b2 split's texts.

    A missing folder reads as no documents, found out only after the model is loaded
    (or the machine measured) as an IndexError or ZeroDivisionError.
    """
    if folder is not None and not any((folder / "txt").glob("*.txt")):
        parser.error(f"argument --data: {folder}: no txt/*.txt; give an i2b2-layout folder "
                     "such as ../shared/data/maccrobat-i2b2/dev")


def output_file(value: str) -> Path:
    """``type=`` of a result file's ``--output``: checked before the run, not after its minutes."""
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A file made and removed in the folder: os.access says yes to root on a
        # read-only mount, and creating the output itself would leave it empty on failure.
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(
            f"{value}: cannot write there ({error.strerror}: {error.filename})") from None
    return path


def write_json(path: Path, report: dict) -> None:
    """Write a result file (its folder made as needed), indented as every result here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)
