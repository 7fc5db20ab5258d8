"""Worker processes for large LiteRT batches: every core, without Python's GIL between them.

With interpreters in threads only the network runs in parallel: tokenizing,
featurizing, the NumPy CRF and building the entities hold the GIL, 38 % of a
batch's time (benchmarks/README.md, "Where the LiteRT batch time goes"). A
:class:`WorkerProcesses` runs ``count`` processes, each with the export
loaded with one interpreter, and annotates one group of texts in each.

The processes are plain ``python -c`` children that run
:func:`clinical_ner.annotators.litert.worker.serve`, rather than
:mod:`multiprocessing`'s: its ``spawn`` and ``forkserver``
re-import the caller's main script in every child (a script without an
``if __name__ == "__main__"`` guard would run again there), and ``fork``
copies whatever threads and runtimes the caller holds. They talk over their
standard input and a duplicate of their standard output (LiteRT's own
messages go to standard error), in :mod:`pickle` frames: the parent's own
child, on pipes only the two hold. A worker that loses its parent reads the
end of its input and exits.
"""
from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

from clinical_ner.errors import ClinicalNERError

# A worker's answers (clinical_ner.annotators.litert.worker): READY once the export
# is loaded, then (OK, entities) or (ERROR, message) for each request.
READY, OK, ERROR = "ready", "ok", "error"
# What to do when the processes cannot run the batch.
IN_THIS_PROCESS = "Load the export with workers=1 to annotate in this process"


class WorkerProcesses:
    """``count`` processes with ``directory``'s export loaded, started at the first use.

    Each loads it with one interpreter of ``num_threads`` threads.
    """

    def __init__(self, directory: Path, count: int, num_threads: int = 1) -> None:
        # Absolute: the processes start at the first large batch (and again after one
        # dies), by when the caller may have changed its working directory.
        self.directory = Path(directory).absolute()
        self.count = count
        self.num_threads = num_threads
        # One list for the object's life (emptied, never replaced), for the finalizer.
        self._processes: list[subprocess.Popen] = []
        # Dropped without close() (a notebook cell run again, a model reloaded), the
        # processes ran until the caller exited: subprocess keeps a running child's Popen,
        # and so the pipe to it, open. Closed here, each ends at the end of its input.
        weakref.finalize(self, _close_pipes, self._processes)
        # One batch at a time: each process answers the request it was sent.
        self._lock = threading.Lock()
        _INSTANCES.add(self)

    def annotate(self, requests: list[tuple[list[str], int | None, int | None]]
                 ) -> list[list[Any]] | None:
        """``annotate(texts, batch_size, max_batch_characters)`` of each request, one per process.

        At most ``count`` requests; the answers in their order, or ``None``
        when another thread's batch holds the processes (the caller then
        annotates in its own process rather than wait).
        """
        if len(requests) > self.count:
            raise ValueError(f"{len(requests)} requests for {self.count} worker processes")
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self._start()
            try:
                used = self._processes[:len(requests)]
                for process, request in zip(used, requests):
                    pickle.dump(request, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    process.stdin.flush()
                answers = [self._read(process) for process in used]
            except BaseException as error:
                # Answers left in the pipes (an interrupted batch: Ctrl-C in a notebook)
                # would be read as the next batch's: the next batch starts new processes.
                codes = [process.poll() for process in self._processes]
                self._stop(kill=True)
                if not isinstance(error, (OSError, EOFError, pickle.UnpicklingError)):
                    raise
                raise ClinicalNERError(
                    f"{self.directory}: a LiteRT worker process stopped (exit codes {codes}); "
                    f"the batch was not annotated. {IN_THIS_PROCESS}") from None
        finally:
            self._lock.release()
        results = []
        for status, value in answers:
            if status != OK:
                raise ClinicalNERError(value)
            results.append(value)
        return results

    @property
    def pids(self) -> list[int]:
        """The running processes' ids (none before the first batch and after ``close``)."""
        return [process.pid for process in self._processes if process.poll() is None]

    def close(self) -> None:
        """Stop the processes (a later batch starts them again)."""
        with self._lock:
            self._stop()

    def _start(self) -> None:
        if self._processes and all(process.poll() is None for process in self._processes):
            return
        self._stop()
        for _ in range(self.count):
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_SCRIPT, _PACKAGE_ROOT, str(self.directory),
                 str(self.num_threads)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self._processes.append(process)
        for process in self._processes:
            try:
                status, value = self._read(process)
            except (EOFError, pickle.UnpicklingError):
                status, value = ERROR, f"exit code {process.wait()}"
            if status != READY:
                self._stop()
                # (An embedding host's sys.executable may be no Python: uWSGI, say.)
                raise ClinicalNERError(f"{self.directory}: a LiteRT worker process could "
                                       f"not load the export ({value}). {IN_THIS_PROCESS}")

    @staticmethod
    def _read(process: subprocess.Popen) -> tuple[str, Any]:
        return pickle.load(process.stdout)

    def _stop(self, kill: bool = False) -> None:
        """End the processes: at the end of their input, or at once with ``kill``."""
        for process in self._processes:
            if kill:
                process.kill()
            try:
                process.stdin.close()  # the worker exits at the end of its input
            except OSError:
                pass  # it had already gone
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        self._processes.clear()


def character_groups(texts: list[str], groups: int) -> list[list[int]]:
    """The indices of ``texts`` in at most ``groups`` lists of about equal characters.

    Longest text first, each to the group with the fewest characters so far;
    each list in text order.

    >>> character_groups(["aaaa", "b", "cc", "ddd"], 2)
    [[0, 1], [2, 3]]
    """
    members: list[list[int]] = [[] for _ in range(groups)]
    sizes = [0] * groups
    for index in sorted(range(len(texts)), key=lambda i: -len(texts[i])):
        smallest = sizes.index(min(sizes))
        members[smallest].append(index)
        sizes[smallest] += len(texts[index])
    return [sorted(group) for group in members if group]


# Every WorkerProcesses, to stop their processes at exit and to let go of them in
# a forked copy of the caller (nlp.pipe(n_process=...) forks): a copy holding the
# pipes open would keep the workers from seeing the end of their input.
_INSTANCES: "weakref.WeakSet[WorkerProcesses]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for workers in list(_INSTANCES):
        # A daemon thread may still hold a batch at exit: then the processes are killed.
        if workers._lock.acquire(timeout=1):
            try:
                workers._stop()
            finally:
                workers._lock.release()
        else:
            workers._stop(kill=True)


def _close_pipes(processes: list[subprocess.Popen]) -> None:
    """Let go of the processes: each ends at the end of its input, unless another copy holds it."""
    for process in processes:
        for pipe in (process.stdin, process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _let_go_in_forked_child() -> None:
    for workers in list(_INSTANCES):
        _close_pipes(workers._processes)
        workers._processes.clear()
        workers._lock = threading.Lock()


os.register_at_fork(after_in_child=_let_go_in_forked_child)


# The worker imports clinical_ner as the caller did: through the same environment
# and working directory, and failing those from the folder the caller's copy is in
# (appended to its path, so that nothing there can shadow the standard library).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])
_WORKER_SCRIPT = ("import sys; sys.path.append(sys.argv[1]); "
                  "from clinical_ner.annotators.litert.worker import serve; "
                  "raise SystemExit(serve(sys.argv[2], int(sys.argv[3])))")
