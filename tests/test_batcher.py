"""The request batcher with a fake model: no TensorFlow, no gRPC, no HTTP."""
from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from clinical_ner.serving.batcher import Batcher
from helpers import ConcurrencyProbe, wait_for


class FakeModel:
    """Doubles ``x``; records each call's rows; holds calls while ``gate`` is closed."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on: int | None = None

    def __call__(self, function, inputs):
        rows = inputs["x"]
        self.calls.append(len(rows))
        self.gate.wait(timeout=30)
        if self.fail_on is not None and self.fail_on in rows:
            raise ValueError("the model failed")
        if function == "scalar":
            return {"y": np.array(len(rows))}
        return {"y": rows * 2}


def run_while_busy(batcher, model, requests, function="double"):
    """Hold the one slot with a first call, queue ``requests`` in order, then open the gate."""
    results: dict[int, object] = {}

    def send(index, inputs, name):
        try:
            results[index] = batcher.run(name, inputs)
        except Exception as error:  # the test inspects it
            results[index] = error

    model.gate.clear()
    holder = threading.Thread(target=send, args=(-1, {"x": np.array([0])}, function))
    holder.start()
    wait_for(lambda: len(model.calls) == 1, "the first call to hold the model")
    threads = []
    for index, inputs in enumerate(requests):
        thread = threading.Thread(target=send, args=(index, inputs, function))
        thread.start()
        threads.append(thread)
        wait_for(lambda: batcher.queued() == index + 1, "the request to queue")
    model.gate.set()
    for thread in [holder, *threads]:
        thread.join(timeout=30)
    return [results[index] for index in range(len(requests))], model.calls[1:]


def test_a_request_that_finds_the_model_free_runs_alone_at_once():
    model = FakeModel()
    batcher = Batcher(1, 32, model)
    call = batcher.run("double", {"x": np.array([1, 2, 3])})
    assert call.outputs["y"].tolist() == [2, 4, 6] and call.batch_documents == 3
    assert model.calls == [3]


def test_waiting_requests_merge_up_to_the_limit_and_split_their_outputs():
    model = FakeModel()
    batcher = Batcher(1, 5, model)
    sizes = [2, 2, 2, 6, 1, 2]
    requests = [{"x": np.arange(size) + 10 * index} for index, size in enumerate(sizes)]
    results, calls = run_while_busy(batcher, model, requests)
    for inputs, result in zip(requests, results):
        assert result.outputs["y"].tolist() == (inputs["x"] * 2).tolist()
    # First come first served; a request above the limit runs alone.
    assert calls == [4, 2, 6, 3]
    assert [result.batch_documents for result in results] == [4, 4, 2, 6, 3, 3]


def test_inputs_of_different_widths_or_functions_do_not_merge():
    model = FakeModel()
    batcher = Batcher(1, 32, model)
    requests = [{"x": np.zeros((1, 3))}, {"x": np.zeros((3, 2))}, {"x": np.zeros((1, 3))}]
    results, calls = run_while_busy(batcher, model, requests)
    assert sorted(calls) == [2, 3] and results[0].batch_documents == 2


def test_a_failing_request_fails_alone_and_the_others_are_answered():
    model = FakeModel()
    model.fail_on = 99
    batcher = Batcher(1, 32, model)
    requests = [{"x": np.array([1])}, {"x": np.array([99])}, {"x": np.array([3])}]
    results, calls = run_while_busy(batcher, model, requests)
    assert isinstance(results[1], ValueError)
    assert results[0].outputs["y"].tolist() == [2] and results[2].outputs["y"].tolist() == [6]
    assert calls == [3, 1, 1, 1]  # the merged call, then each request alone


def test_outputs_without_a_row_per_document_are_recomputed_per_request():
    model = FakeModel()
    batcher = Batcher(1, 32, model)
    requests = [{"x": np.array([1, 2])}, {"x": np.array([3])}]
    results, calls = run_while_busy(batcher, model, requests, function="scalar")
    assert [int(result.outputs["y"]) for result in results] == [2, 1]
    assert calls == [3, 2, 1]


@pytest.mark.parametrize("slots", [1, 2])
def test_at_most_max_concurrent_calls_run_at_once(slots):
    requests = 6
    batcher = Batcher(slots, 1, lambda function, inputs: probe.call(
        len(inputs["x"]), lambda: {"y": inputs["x"]}))  # 1: no merging, each request a slot
    probe = ConcurrencyProbe(slots, requests, batcher.queued)
    threads = [threading.Thread(target=batcher.run, args=("f", {"x": np.array([n])}))
               for n in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert probe.most == slots and probe.rows_called == requests


def test_the_batcher_imports_neither_grpc_nor_tensorflow():
    import subprocess

    code = ("import sys, clinical_ner.serving.batcher; "
            "print(sorted(m for m in ('grpc', 'tensorflow') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "[]"
