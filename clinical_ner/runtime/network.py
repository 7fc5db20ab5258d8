"""The ``.tflite`` network behind a lock: one interpreter, resized when input shapes change.

LiteRT plans memory (and XNNPACK prepares its kernels) for one set of input
shapes, and a change of shapes costs about as much as a one-sentence call,
so callers round shapes up (:func:`clinical_ner.runtime.featurize.bucket`)
to make them repeat. One interpreter, not one per shape: each XNNPACK
interpreter holds its own packed copy of the weights (8 of them took the
process from 68 to 166 MiB, measured while writing this). An interpreter is
not thread-safe; one lock serialises calls (threads get correct answers,
not parallelism: use processes for that).
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from clinical_ner.errors import ModelError

INSTALL_HINT = ("pip install 'clinical-ner[litert]' (or, without TensorFlow: pip install "
                "--no-deps clinical-ner && pip install ai-edge-litert numpy)")


class EmissionsNetwork:
    """Runs the exported network: a dict of int32 id arrays in, emissions ``[B, T, K]`` out."""

    def __init__(self, path: str | Path, input_names: list[str], num_threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelError(
                f"{path}: running a LiteRT export needs the ai-edge-litert package: "
                f"{INSTALL_HINT}") from None
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=int(num_threads))
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"{path}: LiteRT cannot load it ({error})") from None
        # The signature runner resizes and re-plans only when shapes change.
        self._runner = interpreter.get_signature_runner()
        self._input_names = list(input_names)
        missing = set(self._input_names) - set(self._runner.get_input_details())
        if missing:
            raise ModelError(f"{path}: the network has no input(s) {sorted(missing)}")
        self.output_name = next(iter(self._runner.get_output_details()))
        self._lock = threading.Lock()

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: features[name] for name in self._input_names}
        with self._lock:
            # Copied out: the interpreter reuses its output buffer.
            return np.array(self._runner(**inputs)[self.output_name])
