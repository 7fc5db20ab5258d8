"""Training tokens/s of ``clinical-ner train`` on one device, mirrored over logical CPUs, and two workers.

    python -m benchmarks.distributed_training                      # NCBI-disease, 2,000 sentences
    python -m benchmarks.distributed_training --sentences 500 --epochs 2   # a smoke run

Three runs of the same configuration (the default one, GloVe 50d, global batch 32), one after
the other, each a real ``clinical-ner train`` process (or two):

* ``one-process``: ``--distribute none``;
* ``mirrored-2-cpu``: ``--distribute mirrored --cpu-devices 2`` (two replicas in one process);
* ``two-workers``: ``--distribute multi-worker``, two processes on 127.0.0.1 (``TF_CONFIG``).

The figure is the chief's ``train_tokens_per_second`` of each epoch after the first (the first
traces the step function), median over those epochs; wall time includes start-up and joining.
On one 2-core machine this measures the overhead of distribution (splitting batches, summing
gradients, gRPC between workers on the same cores), not a speed-up: every configuration has
the same two cores. Writes ``results/distributed_training.json``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_util import (
    REPO_ROOT, command_line, free_port, load_average, log, machine_facts, output_file,
    slice_conll, subprocess_env, write_json,
)

DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
CONFIGURATIONS = ("one-process", "mirrored-2-cpu", "two-workers")


def train_command(data: Path, output: Path, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "clinical_ner.cli", "train", "--train", str(data),
            "--output", str(output), "--epochs", str(epochs), "--embeddings",
            str(DATA_ROOT / "embeddings" / "glove.6B.50d.pruned.txt"), "--quiet", *extra]


def run_configuration(name: str, data: Path, work: Path, epochs: int) -> dict:
    output = work / name
    shutil.rmtree(output, ignore_errors=True)
    env = subprocess_env()
    if name == "one-process":
        commands = [(train_command(data, output, epochs), env)]
    elif name == "mirrored-2-cpu":
        commands = [(train_command(data, output, epochs, "--distribute", "mirrored",
                                   "--cpu-devices", "2"), env)]
    else:
        ports = [free_port(), free_port()]
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        commands = [(train_command(data, output if index == 0 else work / "scratch", epochs,
                                   "--distribute", "multi-worker"),
                     dict(env, TF_CONFIG=json.dumps({"cluster": cluster,
                                                     "task": {"type": "worker",
                                                              "index": index}})))
                    for index in range(2)]
    log(f"{name}: training")
    processes = [subprocess.Popen(command, env=command_env, cwd=REPO_ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for command, command_env in commands]
    started = time.perf_counter()
    errors = [process.communicate()[1] for process in processes]
    wall = time.perf_counter() - started
    for process, error in zip(processes, errors):
        if process.returncode != 0:
            raise SystemExit(f"{name}: exit {process.returncode}\n{error[-3000:]}")
    history = [json.loads(line) for line in
               (output / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]
    later = [entry["train_tokens_per_second"] for entry in history[1:]]
    return {
        "train_tokens_per_second": round(statistics.median(later), 1),
        "per_epoch_tokens_per_second": [entry["train_tokens_per_second"] for entry in history],
        "first_epoch_seconds": history[0]["train_seconds"],
        "wall_seconds": round(wall, 1),
        "final_loss": history[-1]["loss"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=DATA_ROOT / "ncbi-disease" / "train.conll")
    parser.add_argument("--sentences", type=int, default=2000,
                        help="the first N sentences of --train")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--work-dir", type=Path,
                        default=REPO_ROOT / "benchmarks" / "work" / "distributed")
    parser.add_argument("--output", type=output_file,
                        default=REPO_ROOT / "benchmarks" / "results" / "distributed_training.json")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not counted)")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    data = args.work_dir / "train.conll"
    sentences = slice_conll(args.train, data, args.sentences)
    machine = machine_facts()
    results = {name: run_configuration(name, data, args.work_dir, args.epochs)
               for name in CONFIGURATIONS}
    for name, result in results.items():
        log(f"{name}: {result['train_tokens_per_second']:.0f} tokens/s "
            f"(epochs after the first), wall {result['wall_seconds']} s")
    machine["load_average_end"] = load_average()
    report = {"machine": machine, "command": command_line("benchmarks.distributed_training", None),
              "data": {"train": str(args.train), "sentences": sentences, "epochs": args.epochs},
              "results": results}
    write_json(args.output, report)
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
