"""The ``.tflite`` network behind a lock, with interpreters kept per input shape.

LiteRT plans memory (and XNNPACK prepares its kernels) for one set of input
shapes: changing shapes costs more than a one-sentence call itself (about
1.3 ms against 0.4 ms, measured while writing this on the shared 2-core
machine). So a few interpreters are kept, each for the shapes it last ran,
and callers round shapes up (:func:`bucket`) so that they repeat. An
interpreter is not thread-safe; one lock serialises calls (threads get
correct answers, not parallelism; use processes for that).
"""
from __future__ import annotations

import collections
import threading
from pathlib import Path

import numpy as np

from clinical_ner.errors import ModelError

INSTALL_HINT = ("pip install 'clinical-ner[litert]' (or, without TensorFlow: pip install "
                "--no-deps clinical-ner && pip install ai-edge-litert numpy)")


def bucket(size: int, step: int = 8, limit: int | None = None) -> int:
    """``size`` rounded up to a multiple of ``step`` (at most ``limit``, at least ``size``).

    >>> bucket(1), bucket(8), bucket(9), bucket(29, limit=30), bucket(31, limit=30)
    (8, 8, 16, 30, 31)
    """
    rounded = -(-size // step) * step
    return max(size, min(rounded, limit)) if limit is not None else rounded


class EmissionsNetwork:
    """Runs the exported network: a dict of int32 id arrays in, emissions ``[B, T, K]`` out.

    ``interpreters`` bounds how many interpreters (each with its own working
    memory) are kept; the least recently used one is resized when a new
    shape needs one.
    """

    def __init__(self, path: str | Path, input_names: list[str], num_threads: int = 1,
                 interpreters: int = 8) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                f"{path}: running a LiteRT export needs the ai-edge-litert package: "
                f"{INSTALL_HINT}") from None
        self._path = str(path)
        self._interpreter_class = Interpreter
        self._input_names = list(input_names)
        self._num_threads = int(num_threads)
        self._capacity = max(1, int(interpreters))
        self._runners: collections.OrderedDict[tuple, object] = collections.OrderedDict()
        self._lock = threading.Lock()
        runner = self._new_runner()
        self.output_name = next(iter(runner.get_output_details()))
        self._spare = runner

    def _new_runner(self):
        try:
            interpreter = self._interpreter_class(model_path=self._path,
                                                  num_threads=self._num_threads)
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"{self._path}: LiteRT cannot load it ({error})") from None
        runner = interpreter.get_signature_runner()
        missing = set(self._input_names) - set(runner.get_input_details())
        if missing:
            raise ModelError(f"{self._path}: the network has no input(s) {sorted(missing)}")
        return runner

    def _runner_for(self, shapes: tuple):
        runner = self._runners.pop(shapes, None)
        if runner is None:
            if self._spare is not None:
                runner, self._spare = self._spare, None
            elif len(self._runners) < self._capacity:
                runner = self._new_runner()
            else:
                _, runner = self._runners.popitem(last=False)
        self._runners[shapes] = runner
        return runner

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: features[name] for name in self._input_names}
        shapes = tuple(inputs[name].shape for name in self._input_names)
        with self._lock:
            # The signature runner resizes and re-plans only when shapes change.
            outputs = self._runner_for(shapes)(**inputs)
            return np.array(outputs[self.output_name])
