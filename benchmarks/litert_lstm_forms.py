"""Three builtin-only TFLite forms of one BiLSTM, timed against each other (issue 26).

    python -m benchmarks.litert_lstm_forms --shape 1x25 --shape 32x30 \\
        --output benchmarks/results/litert-lstm-forms.json

Each form runs a bidirectional LSTM of the bundled model's sizes (183 input
features, 100 units a direction; random weights, seed 0) over a ``[batch,
tokens]`` shape with per-row lengths, the backward direction reversed within
each row's length (``REVERSE_SEQUENCE``) so that padding never reaches a real
token, and is converted with ``TFLITE_BUILTINS`` only:

* **loop**: today's export (``BiLSTM._builtin_loop``): a ``WHILE`` loop, one
  iteration a token position, the input projection done once before it;
* **fused**: TFLite's ``UNIDIRECTIONAL_SEQUENCE_LSTM`` kernel, one per
  direction, obtained from a ``tf.function`` marked as a Keras LSTM
  (``api_implements="lstm_..."``, time-major), which the converter replaces
  by the fused op; it needs a static batch size, and no mask (hence the
  reversal). Converted without freezing: ``convert_variables_to_constants_v2``
  inlines the marked function and the fusion no longer happens;
* **unrolled**: a static length, one copy of the step's ops a position
  (no control flow, so XNNPACK can take every op);
* **merged**: the loop, with both directions in one ``WHILE`` loop (their
  states stacked, ``BATCH_MATMUL`` with the two recurrent kernels): half the
  loop iterations and op dispatches;
* **blockdiag**: both directions in one loop as one ``[batch, 2 * units]``
  state, one ``FULLY_CONNECTED`` with a block-diagonal recurrent kernel
  (twice the recurrent multiply-adds, half of them by zeros) and the gates of
  both directions side by side;
* **numpy**: no TFLite at all: the same BiLSTM in NumPy (:func:`numpy_bilstm`:
  both directions stacked, one batched ``matmul`` and eight in-place ufuncs a
  position), on one OpenBLAS thread, as a bound on what leaving the loop
  to the interpreter costs. Checked against the loop form's TensorFlow
  function like the others.

Per form and shape: the op list, the largest difference from TensorFlow's
own output at real tokens, and the median of ``--calls`` timed invokes (one
interpreter a form, one thread), the forms taking turns call by call so that
a loaded machine's changing load falls on all of them alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The numpy form on one thread, as every interpreter here (before NumPy loads OpenBLAS).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks.bench_util import (  # noqa: E402
    command_line, cpu_model, load_average, output_file,
)

FEATURES, UNITS = 183, 100
FORMS = ("loop", "fused", "unrolled", "merged", "blockdiag", "numpy")


def gates_step(projected_step, state, carry, recurrent):
    """One LSTM step (Keras' gate order on the last axis); ``tf.matmul`` batches any leading axes."""
    import tensorflow as tf

    input_gate, forget_gate, candidate, output_gate = tf.split(
        projected_step + tf.matmul(state, recurrent), 4, axis=-1)
    carry = tf.sigmoid(forget_gate) * carry + tf.sigmoid(input_gate) * tf.tanh(candidate)
    return tf.sigmoid(output_gate) * tf.tanh(carry), carry


def update_slice_loop(projected, recurrent, state_shape, count):
    """The states of every step ``[T, *state_shape]``, written in place (``DYNAMIC_UPDATE_SLICE``)."""
    import tensorflow as tf
    from tensorflow.compiler.tf2xla.python import xla

    zeros = tf.zeros(state_shape)

    def step(time_, state, carry, outputs):
        state, carry = gates_step(projected[time_], state, carry, recurrent)
        start = tf.stack([time_] + [0] * len(state_shape))
        return time_ + 1, state, carry, xla.dynamic_update_slice(outputs, state[tf.newaxis], start)

    _, _, _, outputs = tf.while_loop(
        lambda time_, *_: time_ < count, step,
        (0, zeros, zeros, tf.zeros(tf.concat([[count], state_shape], 0))))
    return outputs


def numpy_weights(weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernels, recurrent kernels and biases of both directions stacked, as an export keeps them.

    ``weights``: kernel, recurrent kernel and bias of the forward direction,
    then of the backward one (Keras' gate order i, f, c, o). The candidate's
    columns are scaled by 2, so that one sigmoid serves all four gates
    (``tanh(x) = 2 sigmoid(2x) - 1``).
    """
    scale = np.ones(4 * UNITS, np.float32)
    scale[2 * UNITS:3 * UNITS] = 2
    kernels, recurrent, biases = (np.stack([weights[i], weights[i + 3]]) * scale
                                  for i in range(3))
    return kernels, recurrent, biases


def numpy_bilstm(inputs: np.ndarray, lengths: np.ndarray,
                 weights: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The BiLSTM's states ``[B, T, 2U]`` in NumPy (float32), padding after each row's length.

    ``weights`` from :func:`numpy_weights`. The backward direction reads each
    row reversed within its length, so padding never reaches a real token.
    """
    batch, tokens, _ = inputs.shape
    kernels, recurrent, biases = weights
    positions = np.arange(tokens)[np.newaxis, :]
    reverse = np.where(positions < lengths[:, np.newaxis],
                       lengths[:, np.newaxis] - 1 - positions, positions)
    rows = np.arange(batch)[:, np.newaxis]
    both = np.stack([inputs, inputs[rows, reverse]])                       # [2, B, T, F]
    projected = np.matmul(both, kernels[:, np.newaxis]) + biases[:, np.newaxis, np.newaxis]
    projected = np.ascontiguousarray(projected.transpose(2, 0, 1, 3))     # [T, 2, B, 4U]
    state = np.zeros((2, batch, UNITS), np.float32)
    carry = np.zeros_like(state)
    gates = np.empty((2, batch, 4 * UNITS), np.float32)
    outputs = np.empty((tokens, 2, batch, UNITS), np.float32)
    input_gate, forget_gate, candidate, output_gate = (
        gates[..., k * UNITS:(k + 1) * UNITS] for k in range(4))
    for time_ in range(tokens):
        np.matmul(state, recurrent, out=gates)
        gates += projected[time_]
        np.negative(gates, out=gates)
        np.exp(gates, out=gates)
        gates += 1
        np.reciprocal(gates, out=gates)
        candidate *= 2
        candidate -= 1
        candidate *= input_gate
        carry *= forget_gate
        carry += candidate
        np.tanh(carry, out=state)
        state *= output_gate
        outputs[time_] = state
    outputs = outputs.transpose(1, 2, 0, 3)                                # [2, B, T, U]
    return np.concatenate([outputs[0], outputs[1][rows, reverse]], axis=-1)


def lstm_function(form: str):
    """``(steps [T, B, F], h, c, kernel, recurrent, bias) -> outputs [T, B, U]`` for ``form``."""
    import tensorflow as tf

    def project(steps, kernel, bias):
        count, batch = tf.shape(steps)[0], tf.shape(steps)[1]
        return tf.reshape(tf.matmul(tf.reshape(steps, [count * batch, -1]), kernel) + bias,
                          [count, batch, 4 * UNITS])

    if form == "fused":
        # The Keras 2 LSTM's composite-function contract: 6 arguments, 5
        # results, of which only the first two may be used.
        @tf.function(experimental_attributes={
            "api_implements": f"lstm_{uuid.uuid4().hex}", "api_preferred_device": "CPU",
            "time_major": True, "go_backwards": False})
        def marked(steps, state, carry, kernel, recurrent, bias):
            projected = project(steps, kernel, bias)
            count = tf.shape(steps)[0]

            def step(time_, state, carry, outputs):
                state, carry = gates_step(projected[time_], state, carry, recurrent)
                return time_ + 1, state, carry, outputs.write(time_, state)

            _, state, carry, outputs = tf.while_loop(
                lambda time_, *_: time_ < count, step,
                (0, state, carry, tf.TensorArray(tf.float32, size=count)))
            return state, outputs.stack(), state, carry, tf.constant(0.0)

        return lambda *args: marked(*args)[1]
    if form == "unrolled":
        def unrolled(steps, state, carry, kernel, recurrent, bias):
            projected = project(steps, kernel, bias)
            outputs = []
            for time_ in range(steps.shape[0]):
                state, carry = gates_step(projected[time_], state, carry, recurrent)
                outputs.append(state)
            return tf.stack(outputs)

        return unrolled

    def loop(steps, state, carry, kernel, recurrent, bias):
        return update_slice_loop(project(steps, kernel, bias), recurrent, tf.shape(state),
                                 tf.shape(steps)[0])

    return loop


def measure(form: str, batch: int, tokens: int):
    """The form's converted network checked against TensorFlow: (row, a call to time)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from clinical_ner.export.litert import builtin_operators

    rng = np.random.default_rng(0)
    weights = [tf.constant(rng.normal(size=shape).astype(np.float32) * 0.1) for shape in (
        (FEATURES, 4 * UNITS), (UNITS, 4 * UNITS), (4 * UNITS,))] * 2
    lstm = (lstm_function("loop" if form == "numpy" else form)
            if form not in ("merged", "blockdiag") else None)

    def interleaved(forward, backward):
        """Gate columns [i_f, i_b, f_f, f_b, c_f, c_b, o_f, o_b] from two [..., 4U] tensors."""
        shape = tf.shape(forward)
        parts = tf.stack([tf.reshape(forward, [-1, 4, UNITS]),
                          tf.reshape(backward, [-1, 4, UNITS])], axis=2)
        return tf.reshape(parts, tf.concat([shape[:-1], [8 * UNITS]], 0))

    def blockdiag_bilstm(inputs, lengths):
        steps = tf.transpose(inputs, [1, 0, 2])
        reverse = tf.reverse_sequence(steps, lengths, seq_axis=0, batch_axis=1)
        flat = [tf.reshape(x, [tokens * batch, FEATURES]) for x in (steps, reverse)]
        projected = tf.reshape(interleaved(tf.matmul(flat[0], weights[0]) + weights[2],
                                           tf.matmul(flat[1], weights[3]) + weights[5]),
                               [tokens, batch, 8 * UNITS])
        zeros_block = tf.zeros([UNITS, 4 * UNITS])
        recurrent = tf.concat([interleaved(weights[1], zeros_block),
                               interleaved(zeros_block, weights[4])], axis=0)

        outputs = update_slice_loop(projected, recurrent, [batch, 2 * UNITS], tokens)
        backward = tf.reverse_sequence(outputs[:, :, UNITS:], lengths, seq_axis=0, batch_axis=1)
        return {"states": tf.transpose(tf.concat([outputs[:, :, :UNITS], backward], -1),
                                       [1, 0, 2])}

    def merged_bilstm(inputs, lengths):
        steps = tf.transpose(inputs, [1, 0, 2])
        reverse = tf.reverse_sequence(steps, lengths, seq_axis=0, batch_axis=1)
        both = tf.reshape(tf.stack([steps, reverse]), [2, tokens * batch, FEATURES])
        kernels = tf.stack([weights[0], weights[3]])
        recurrent = tf.stack([weights[1], weights[4]])
        biases = tf.stack([weights[2], weights[5]])[:, tf.newaxis, :]
        projected = tf.transpose(tf.reshape(tf.matmul(both, kernels) + biases,
                                            [2, tokens, batch, 4 * UNITS]), [1, 0, 2, 3])

        outputs = update_slice_loop(projected, recurrent, [2, batch, UNITS], tokens)
        backward = tf.reverse_sequence(outputs[:, 1], lengths, seq_axis=0, batch_axis=1)
        return {"states": tf.transpose(tf.concat([outputs[:, 0], backward], -1), [1, 0, 2])}

    @tf.function(input_signature=[tf.TensorSpec([batch, tokens, FEATURES], tf.float32),
                                  tf.TensorSpec([batch], tf.int32)])
    def bilstm(inputs, lengths):
        if form == "merged":
            return merged_bilstm(inputs, lengths)
        if form == "blockdiag":
            return blockdiag_bilstm(inputs, lengths)
        steps = tf.transpose(inputs, [1, 0, 2])
        zeros = tf.zeros([batch, UNITS])
        forward = lstm(steps, zeros, zeros, *weights[:3])
        reverse = tf.reverse_sequence(steps, lengths, seq_axis=0, batch_axis=1)
        backward = tf.reverse_sequence(lstm(reverse, zeros, zeros, *weights[3:]), lengths,
                                       seq_axis=0, batch_axis=1)
        return {"states": tf.transpose(tf.concat([forward, backward], -1), [1, 0, 2])}

    if form == "numpy":
        inputs = rng.normal(size=(batch, tokens, FEATURES)).astype(np.float32)
        lengths = rng.integers(1, tokens + 1, size=batch).astype(np.int32)
        lengths[0] = tokens
        arrays = numpy_weights([weight.numpy() for weight in weights])
        actual = numpy_bilstm(inputs, lengths, arrays)
        expected = bilstm.python_function(tf.constant(inputs), tf.constant(lengths))["states"]
        real = np.arange(tokens)[np.newaxis, :] < lengths[:, np.newaxis]
        row = {"form": form, "batch": batch, "tokens": tokens, "operators": [],
               "max_abs_difference": float(np.abs(actual - expected.numpy())[real].max())}
        return row, lambda: numpy_bilstm(inputs, lengths, arrays)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [bilstm.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    network = converter.convert()
    interpreter = Interpreter(model_content=network, num_threads=1)
    runner = interpreter.get_signature_runner()
    inputs = rng.normal(size=(batch, tokens, FEATURES)).astype(np.float32)
    lengths = rng.integers(1, tokens + 1, size=batch).astype(np.int32)
    lengths[0] = tokens
    actual = runner(inputs=inputs, lengths=lengths)["states"]
    expected = bilstm.python_function(tf.constant(inputs), tf.constant(lengths))["states"]
    real = np.arange(tokens)[np.newaxis, :] < lengths[:, np.newaxis]
    row = {"form": form, "batch": batch, "tokens": tokens,
           "operators": builtin_operators(network),
           "max_abs_difference": float(np.abs(actual - expected.numpy())[real].max())}
    return row, lambda: runner(inputs=inputs, lengths=lengths)


def time_round_robin(calls: dict[str, object], rounds: int) -> dict[str, float]:
    """Median ms of each call, the calls taking turns so that they share the machine's load."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - started)
    return {name: round(1000 * statistics.median(values), 3) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", metavar="BATCHxTOKENS",
                        help="repeatable; default 1x25 and 32x30")
    parser.add_argument("--forms", default=",".join(FORMS))
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--output", type=output_file)
    args = parser.parse_args(argv)
    load_start = load_average()
    rows = []
    for shape in args.shape or ["1x25", "32x30"]:
        batch, tokens = (int(part) for part in shape.split("x"))
        built = {form: measure(form, batch, tokens) for form in args.forms.split(",")}
        medians = time_round_robin({form: call for form, (_, call) in built.items()},
                                   args.calls)
        for form, (row, _) in built.items():
            rows.append({**row, "median_ms": medians[form]})
            print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"command": command_line("benchmarks.litert_lstm_forms", argv),
              "cpu_model": cpu_model(), "load_average_start": load_start,
              "load_average_end": load_average(), "rows": rows}
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("| shape | form | median ms | max diff | LSTM op |")
    print("|---|---|---|---|---|")
    for row in rows:
        kind = ("NumPy" if row["form"] == "numpy" else "fused"
                if "UNIDIRECTIONAL_SEQUENCE_LSTM" in row["operators"] else "builtin ops")
        print(f"| {row['batch']}x{row['tokens']} | {row['form']} | {row['median_ms']} | "
              f"{row['max_abs_difference']:.1e} | {kind} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
