"""The ``.tflite`` network: a small pool of interpreters, each resized when input shapes change.

LiteRT plans memory (and XNNPACK prepares its kernels) for one set of input
shapes, and a change of shapes costs about as much as a one-sentence call,
so callers round shapes up (:func:`clinical_ner.annotators.litert.featurize.bucket`)
to make them repeat. One interpreter per concurrent call, not one per
shape: each XNNPACK interpreter holds its own packed copy of the weights (8
of them took a process from 68 to 166 MiB, measured while writing this).
An interpreter is not thread-safe, so each call borrows one from the pool:
with ``workers`` interpreters, that many calls run at once (LiteRT releases
the GIL while it computes), and further callers wait.
"""
from __future__ import annotations

import queue
from pathlib import Path

import numpy as np

from clinical_ner.quiet import stderr_to_buffer
from clinical_ner.errors import ModelError

INSTALL_HINT = ("pip install 'clinical-ner[litert]' (or, without TensorFlow: pip install "
                "--no-deps clinical-ner && pip install ai-edge-litert numpy)")


class EmissionsNetwork:
    """Runs the exported network: a dict of int32 id arrays in, emissions ``[B, T, K]`` out.

    ``num_threads`` is each interpreter's thread count, ``workers`` how many
    interpreters the pool holds.
    """

    def __init__(self, path: str | Path, input_names: list[str], num_threads: int = 1,
                 workers: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                f"{path}: running a LiteRT export needs the ai-edge-litert package: "
                f"{INSTALL_HINT}") from None
        self.workers = max(1, int(workers))
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
            missing = set(self._input_names) - set(runner.get_input_details())
            if missing:
                raise ModelError(f"{path}: the network has no input(s) {sorted(missing)}")
            self.output_name = next(iter(runner.get_output_details()))
            self._pool.put(runner)

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: features[name] for name in self._input_names}
        runner = self._pool.get()
        try:
            # Copied out: the interpreter reuses its output buffer.
            return np.array(runner(**inputs)[self.output_name])
        finally:
            self._pool.put(runner)

