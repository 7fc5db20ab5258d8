"""Merging requests that wait for the model into fewer, larger model calls.

No gRPC, HTTP or TensorFlow here: the batcher runs whatever ``call_model``
does with whatever ``function`` a request names, so it is tested with a fake
model (``tests/test_batcher.py``), and both APIs of the server share it.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


@dataclass(eq=False)
class QueuedCall:
    """One request's inputs waiting for a model call, and what the call gave it."""

    inputs: Arrays
    documents: int
    taken: bool = False  # by a model call, its own or another request's
    finished: bool = False
    outputs: Arrays | None = None
    error: BaseException | None = None
    batch_documents: int = 0


class Batcher:
    """Runs model calls, at most ``max_concurrent_calls`` at once, merging those that wait.

    Requests that wait for a call while every slot is busy are merged, as
    TensorFlow Serving's batching merges them: requests for the same
    function whose inputs have the same shape after the first dimension
    queue together, and a waiting request that gets the next slot runs the
    queue (first come first served, up to ``max_batch_documents`` rows; a
    larger request runs alone) as one call and splits the outputs along the
    first dimension, so they keep the merged call's padded width. A request
    that finds a free slot runs at once: nothing waits for a batch to fill.
    Slots go to the oldest waiting request, whatever its function, and a
    request taken into another's call only waits for that call, never runs
    a further one, so its answer leaves as soon as it is ready. Fewer,
    larger calls are what makes it worth it: the model's time loops cost
    about the same per step for one sentence as for thirty.

    A merged call that raises, or whose outputs do not have one row per
    document, is rerun request by request, so one bad request fails alone.

    >>> def double(function, inputs):
    ...     return {"y": inputs["x"] * 2}
    >>> batcher = Batcher(max_concurrent_calls=1, max_batch_documents=32, call_model=double)
    >>> batcher.run("model", {"x": np.array([1, 2])}).outputs["y"].tolist()
    [2, 4]
    """

    def __init__(
        self,
        max_concurrent_calls: int,
        max_batch_documents: int,
        call_model: Callable[[Any, Arrays], Arrays],
    ) -> None:
        # Each model call running at once holds its own intermediate tensors and
        # warms per-thread kernel caches, so calls beyond the cores the CPU
        # kernels can use add memory without adding throughput.
        self._free_slots = max_concurrent_calls
        self._max_batch_documents = max_batch_documents
        self._call_model = call_model
        self._lock = threading.Lock()
        # Signalled when a slot is freed (which is when calls finish) and when
        # the oldest waiting request changes.
        self._turn = threading.Condition(self._lock)
        self._queues: dict[tuple, deque[QueuedCall]] = {}
        self._waiting: deque[QueuedCall] = deque()  # not taken yet, oldest first

    def queued(self) -> int:
        """Requests waiting to be taken into a model call."""
        with self._lock:
            return len(self._waiting)

    def run(self, function: Any, inputs: Arrays) -> QueuedCall:
        """Call ``function`` on ``inputs`` (alone or merged); raises what the call raised."""
        call = QueuedCall(inputs, next(iter(inputs.values())).shape[0])
        # The function object is held by the call, so its id stays unique.
        key = (id(function),) + tuple(
            (name, value.shape[1:]) for name, value in sorted(inputs.items())
        )
        with self._lock:
            self._queues.setdefault(key, deque()).append(call)
            self._waiting.append(call)
        while True:
            with self._turn:
                while not call.finished and (
                    call.taken or self._free_slots == 0 or self._waiting[0] is not call
                ):
                    self._turn.wait()
                if call.finished:
                    break
                self._free_slots -= 1
                batch = self._take(key)
                self._turn.notify_all()
            try:
                self._run_batch(function, batch)
            finally:
                with self._turn:
                    self._free_slots += 1
                    self._turn.notify_all()
        if call.error is not None:
            raise call.error
        return call

    def _take(self, key: tuple) -> list[QueuedCall]:
        """The next batch of ``key``'s queue (never empty); the lock is held."""
        queue = self._queues[key]
        batch: list[QueuedCall] = []
        documents = 0
        while queue and (
            not batch or documents + queue[0].documents <= self._max_batch_documents
        ):
            call = queue.popleft()
            call.taken = True
            self._waiting.remove(call)
            batch.append(call)
            documents += call.documents
        if not queue:
            del self._queues[key]
        return batch

    def _run_batch(self, function: Any, batch: list[QueuedCall]) -> None:
        if len(batch) == 1:
            self._run_alone(function, batch[0])
            return
        sizes = [call.documents for call in batch]
        total = sum(sizes)
        try:
            outputs = self._call_model(function, {
                name: np.concatenate([call.inputs[name] for call in batch])
                for name in batch[0].inputs
            })
            if any(value.ndim == 0 or value.shape[0] != total for value in outputs.values()):
                raise _NotBatchMajor()
            boundaries = np.cumsum(sizes)[:-1]
            parts = {name: np.split(value, boundaries) for name, value in outputs.items()}
        except Exception:
            # One request's failure must not fail the others, and outputs that
            # are not one row per document cannot be split: each runs alone
            # (and a bug then fails each request on its own).
            for call in batch:
                self._run_alone(function, call)
            return
        for index, call in enumerate(batch):
            call.outputs = {name: pieces[index] for name, pieces in parts.items()}
            call.batch_documents = total
            call.finished = True

    def _run_alone(self, function: Any, call: QueuedCall) -> None:
        try:
            call.outputs = self._call_model(function, call.inputs)
            call.batch_documents = call.documents
        except Exception as error:
            call.error = error
        finally:
            call.finished = True


class _NotBatchMajor(Exception):
    """A merged call's outputs do not have one row per document."""
