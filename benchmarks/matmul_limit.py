"""The machine's float32 matrix-product limit, the model's FLOP per token, and how close runtimes get.

    python -m benchmarks.matmul_limit --model /tmp/lr --data ../shared/data/maccrobat-i2b2/dev \\
        --tokens-per-second "LiteRT=54000" --tokens-per-second "TensorFlow=108000"

* **limit**: GFLOP/s of NumPy's float32 ``matmul`` (its BLAS) on square
  matrices of ``--size``, best of ``--repeats``, with one BLAS thread and with
  one per core of the process's affinity (each in a fresh process, the
  thread count set by ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``
  / ``MKL_NUM_THREADS``);
* **FLOP per token** (multiply-adds count 2) of the model in ``--model``'s
  ``config.json`` (a model directory or a LiteRT export): the BiLSTM (input
  kernel and recurrent kernel, both directions), the emission layer, and the
  char-CNN convolution at the mean token length in characters of ``--data``'s
  documents (capped at ``max_word_length``; the runtimes convolve each
  distinct spelling of a batch once, padded to the batch's longest, so this
  is an estimate); embedding look-ups, activations and the CRF
  (``K^2`` a step) are left out;
* **fraction**: each ``--tokens-per-second`` figure (measured by
  ``benchmarks.litert_bench`` in the same conditions) times FLOP/token over
  the limit, the larger of the two GFLOP/s figures (on an idle machine the
  all-core one; on a loaded machine more BLAS threads can be slower).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_util import (
    REPO_ROOT, check_i2b2_folder, command_line, cpu_model, load_average, output_file,
    subprocess_env,
)

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def measure_gflops(size: int, repeats: int) -> float:
    """Best GFLOP/s of ``size`` x ``size`` float32 matmul in this process."""
    import numpy as np

    rng = np.random.default_rng(0)
    left = rng.standard_normal((size, size), dtype=np.float32)
    right = rng.standard_normal((size, size), dtype=np.float32)
    left @ right  # warm-up: BLAS threads start
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        left @ right
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best / 1e9


def gflops_with_threads(threads: int, size: int, repeats: int) -> float:
    env = {**subprocess_env(), **{name: str(threads) for name in THREAD_VARIABLES}}
    command = [sys.executable, "-m", "benchmarks.matmul_limit", "--child",
               "--size", str(size), "--repeats", str(repeats)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                            check=True)
    return float(result.stdout.strip().splitlines()[-1])


def mean_token_length(data: Path) -> float:
    from clinical_ner.text.tokenizer import split_sentences

    lengths = [len(token.text) for path in sorted((data / "txt").glob("*.txt"))
               for sentence in split_sentences(path.read_text(encoding="utf-8"))
               for token in sentence]
    return sum(lengths) / len(lengths)


def flop_per_token(config: dict, tags: int, char_width: float) -> dict:
    """Matrix-product FLOP of one token, by part (see the module docstring)."""
    units = config["lstm_units"]
    features = (config["word_dim"] + config["char_filters"]
                + (config["casing_dim"] if config["use_casing"] else 0))
    parts = {
        "bilstm": 2 * 2 * (features + units) * 4 * units,
        "emissions": 2 * 2 * units * tags,
        "char_cnn": round(2 * min(char_width, config["max_word_length"]) * config["char_dim"]
                          * config["char_kernel_size"] * config["char_filters"]),
    }
    parts["total"] = sum(parts.values())
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory or LiteRT export")
    parser.add_argument("--data", type=Path, help="i2b2-layout folder (txt/), for token lengths")
    parser.add_argument("--tokens-per-second", action="append", default=[], metavar="NAME=N")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", type=output_file, help="write the results as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(measure_gflops(args.size, args.repeats))
        return 0
    check_i2b2_folder(parser, args.data)
    missing = [name for name in ("config.json", "vocab.json")
               if args.model and not (args.model / name).is_file()]
    if missing:
        # Read only after the machine is measured: a bad --model would cost that first.
        parser.error(f"argument --model: {args.model}: no {' or '.join(missing)}; give a "
                     "model directory (clinical-ner train) or a LiteRT export")
    cores = len(os.sched_getaffinity(0))
    load_start = load_average()
    limits = {"1 thread": gflops_with_threads(1, args.size, args.repeats),
              f"{cores} threads": gflops_with_threads(cores, args.size, args.repeats)}
    result = {"command": command_line("benchmarks.matmul_limit", argv),
              "cpu_model": cpu_model(), "cores": cores, "load_average_start": load_start,
              "gflops": {name: round(value, 1) for name, value in limits.items()}}
    if args.model:
        config = json.loads((args.model / "config.json").read_text(encoding="utf-8"))
        tags = len(json.loads((args.model / "vocab.json").read_text(encoding="utf-8"))["tags"])
        width = mean_token_length(args.data) if args.data else config["max_word_length"]
        flops = flop_per_token(config, tags, width)
        result.update({"mean_token_characters": round(width, 2), "flop_per_token": flops})
        limit = max(limits.values()) * 1e9
        result["tokens_per_second_limit"] = round(limit / flops["total"])
        result["fraction_of_limit"] = {}
        for spec in args.tokens_per_second:
            name, _, value = spec.partition("=")
            result["fraction_of_limit"][name] = round(float(value) * flops["total"] / limit, 4)
    result["load_average_end"] = load_average()
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
