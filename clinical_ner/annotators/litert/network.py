"""The ``.tflite`` network: a small pool of interpreters, each resized when input shapes change.

LiteRT plans memory (and XNNPACK prepares its kernels) for one set of input
shapes. An interpreter is resized and re-planned only when its inputs'
shapes differ from its previous call's (LiteRT's signature runner re-plans
at every call). Callers pass exact shapes, no padding: re-planning costs
less than padded steps do (one sentence, the issue-26 harness: p50
0.57-0.60 ms against 0.63-0.69 ms with shapes rounded up to multiples of 8
so that they repeat; benchmarks/README.md, "Exact shapes"). One interpreter
per concurrent call, not one per shape: each XNNPACK interpreter holds its
own packed copy of the weights (8 of them took a process from 68 to 166
MiB, measured while writing this). An interpreter is not thread-safe, so
each call borrows one from the pool: with ``workers`` interpreters, that
many calls run at once (LiteRT releases the GIL while it computes), and
further callers wait.
"""
from __future__ import annotations

import queue
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clinical_ner.quiet import stderr_to_buffer
from clinical_ner.errors import ModelError

INSTALL_HINT = ("pip install 'clinical-ner[litert]' (or, without TensorFlow: pip install "
                "--no-deps clinical-ner && pip install ai-edge-litert numpy)")


class EmissionsNetwork:
    """Runs the exported network: a dict of int32 id arrays in, its outputs out.

    The outputs are the emissions ``[B, T, K]`` and, for a model with
    assertions, the assertion probabilities ``[B, T, N]``: the network's
    outputs named by ``output_names`` in that order (``None``: the first
    output alone, as in exports of format version 1). ``num_threads`` is
    each interpreter's thread count, ``workers`` how many interpreters the
    pool holds.
    """

    def __init__(self, path: str | Path, input_names: list[str], num_threads: int = 1,
                 workers: int = 1, output_names: Sequence[str] | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                f"{path}: running a LiteRT export needs the ai-edge-litert package: "
                f"{INSTALL_HINT}") from None
        self.workers = max(1, int(workers))
        self.num_threads = int(num_threads)
        self._input_names = list(input_names)
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.workers):
            try:
                interpreter = Interpreter(model_path=str(path), num_threads=int(num_threads))
            except (ValueError, RuntimeError) as error:
                raise ModelError(f"{path}: LiteRT cannot load it ({error})") from None
            # The signature runner resizes and re-plans only when shapes change.
            # Planned once here, with LiteRT's start-up banner ("Created
            # TensorFlow Lite XNNPACK delegate") kept off stderr, as the
            # command line keeps TensorFlow's; errors still reach it.
            with stderr_to_buffer():
                interpreter.allocate_tensors()
            runner = interpreter.get_signature_runner()
            inputs = runner.get_input_details()
            missing = set(self._input_names) - set(inputs)
            if missing:
                raise ModelError(f"{path}: the network has no input(s) {sorted(missing)}")
            outputs = runner.get_output_details()
            self.output_names = (list(outputs)[:1] if output_names is None
                                 else list(output_names))
            missing = set(self.output_names) - set(outputs)
            if missing:
                raise ModelError(f"{path}: the network has no output(s) {sorted(missing)}")
            self._pool.put(_PlannedInterpreter(
                interpreter, [inputs[name]["index"] for name in self._input_names],
                [outputs[name]["index"] for name in self.output_names]))

    def __call__(self, features: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = [features[name] for name in self._input_names]
        planned = self._pool.get()
        try:
            return planned(inputs)
        finally:
            self._pool.put(planned)


class _PlannedInterpreter:
    """One interpreter of the model's single signature, and the input shapes it is planned for."""

    def __init__(self, interpreter, input_indices: list[int], output_indices: list[int]) -> None:
        self.interpreter = interpreter
        self.input_indices = input_indices
        self.output_indices = output_indices
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        interpreter = self.interpreter
        shapes = [value.shape for value in inputs]
        if shapes != self.shapes:
            for index, shape in zip(self.input_indices, shapes):
                interpreter.resize_tensor_input(index, shape)
            interpreter.allocate_tensors()
            self.shapes = shapes
        for index, value in zip(self.input_indices, inputs):
            interpreter.set_tensor(index, value)
        interpreter.invoke()
        # get_tensor copies: the interpreter reuses its output buffers.
        return [interpreter.get_tensor(index) for index in self.output_indices]

