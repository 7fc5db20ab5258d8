"""TensorFlow path against LiteRT exports: one-sentence latency, peak RSS, batch speed, F1.

Each runtime runs in a fresh process of its own (so its peak RSS is its own
and no runtime warms another's caches), on the same data, one after the
other in the same run::

    python -m benchmarks.litert_bench --model runs/maccrobat \\
        --export float32=runs/maccrobat-litert-float32 \\
        --export float16=runs/maccrobat-litert-float16 \\
        --export int8=runs/maccrobat-litert-int8 \\
        --data ../shared/data/maccrobat-i2b2/dev --output benchmarks/results/litert.json

Per runtime:

* **latency**: ``annotate`` of one sentence at a time, cycling through a
  seeded sample of the data's lines (one sentence per line in MACCROBAT's
  i2b2 layout), as ``run.py``'s in-process latency does (same sample rule
  and seed);
* **peak RSS**: the process's VmHWM after loading and the latency calls
  (what a one-sentence-at-a-time annotator needs), and again after the
  batch and F1 runs (what batches add), and that of each worker process a
  LiteRT export with several workers started for the batch;
* **batch**: ``annotate`` of every ``.txt`` document together, with the
  runtime's default batching, median of ``--repeats`` timed runs after one
  untimed run; tokens are counted with ``clinical_ner.text.tokenizer.split_sentences``;
* **F1**: exact entity micro F1 of ``tag`` on the gold-tokenized sentences;
* whether TensorFlow was imported.

The orchestrating process imports TensorFlow only after every run, to record
its version.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_util import (
    REPO_ROOT,
    check_i2b2_folder,
    command_line,
    latency_calls,
    load_average,
    machine_facts,
    output_file,
    proc_status_kb,
    subprocess_env,
    throughput,
    time_runs,
)

LATENCY_SEED = 42  # run.py samples with the model's seed, 42 by default


def latency_sentences(documents: list[str], count: int) -> list[str]:
    """A seeded sample of the documents' non-blank lines, as run.py's ``latency_texts``."""
    pool = [line for text in documents for line in text.splitlines() if line.strip()]
    return random.Random(LATENCY_SEED).sample(pool, min(count, len(pool)))


def read_documents(data: Path) -> list[str]:
    documents = []
    for path in sorted((data / "txt").glob("*.txt")):
        with open(path, encoding="utf-8", newline="") as handle:
            documents.append(handle.read())
    return documents


def worker(args: argparse.Namespace) -> dict:
    """Measure one runtime in this (fresh) process."""
    started = time.perf_counter()
    from clinical_ner.artifacts import litert as layout

    if layout.is_litert_export(args.path):
        from clinical_ner.annotators.litert.annotator import LiteRTAnnotator

        ner = LiteRTAnnotator.load(args.path, num_threads=args.worker_threads,
                                   workers=args.worker_pool)
    else:
        from clinical_ner.annotators.keras_annotator import KerasAnnotator

        ner = KerasAnnotator.load(args.path)
    documents = read_documents(args.data)
    sentences = latency_sentences(documents, args.sentences)
    ner.annotate(sentences[0])
    load_seconds = time.perf_counter() - started
    latency = latency_calls(ner.annotate, sentences, args.calls, args.warmup)
    rss_latency = proc_status_kb_self("VmHWM")

    from clinical_ner.formats import load_corpus
    from clinical_ner.evaluation.scorer import score_mentions
    from clinical_ner.text.tags import tags_to_mentions
    from clinical_ner.text.tokenizer import split_sentences

    tokens = sum(len(sentence) for text in documents
                 for sentence in split_sentences(text, ner.config.max_sentence_tokens))
    batch = throughput(time_runs(lambda: ner.annotate(documents), args.repeats),
                       tokens, len(documents))
    corpus = load_corpus(args.data, "i2b2")
    gold = [s for document in corpus.documents for s in document.sentences if s.tokens]
    predicted = ner.tag([s.tokens for s in gold])
    report = score_mentions([tags_to_mentions(s.tags) for s in gold],
                            [tags_to_mentions(tags) for tags, _ in predicted])
    return {
        "path": str(args.path),
        "threads": (args.worker_threads if layout.is_litert_export(args.path)
                    else "TensorFlow default"),
        "workers": args.worker_pool if layout.is_litert_export(args.path) else None,
        "load_and_first_call_seconds": round(load_seconds, 3),
        "latency": latency,
        "latency_sentences": len(sentences),
        "latency_mean_tokens": round(sum(len(s) for text in sentences
                                         for s in split_sentences(text)) / len(sentences), 1),
        "peak_rss_mb_after_latency": round(rss_latency / 1024, 1),
        "batch": batch,
        "peak_rss_mb_after_batch": round(proc_status_kb_self("VmHWM") / 1024, 1),
        # A LiteRT export with several workers annotates large batches in worker processes.
        "peak_rss_mb_worker_processes": [round((proc_status_kb(pid, "VmHWM") or 0) / 1024, 1)
                                         for pid in getattr(ner, "worker_pids", [])],
        "f1_exact_micro": round(report["exact"]["micro"]["f1"], 4),
        "f1_lenient_micro": round(report["lenient"]["micro"]["f1"], 4),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def proc_status_kb_self(field: str) -> int:
    return proc_status_kb(os.getpid(), field) or 0


def run_worker(path: Path, threads: int, workers: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "benchmarks.litert_bench", "--worker", "--path", str(path),
               "--worker-threads", str(threads), "--worker-pool", str(workers),
               "--data", str(args.data), "--calls", str(args.calls), "--warmup", str(args.warmup),
               "--sentences", str(args.sentences), "--repeats", str(args.repeats)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT,
                            env=subprocess_env())
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| runtime | p50 / p99 ms | peak RSS MiB (latency / +batch [+ worker processes]) "
             "| batch tokens/s "
             "| exact F1 | TF imported |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['runtime']} | {row['latency']['p50_ms']:.2f} / "
            f"{row['latency']['p99_ms']:.2f} | {row['peak_rss_mb_after_latency']:.0f} / "
            f"{row['peak_rss_mb_after_batch']:.0f}"
            + "".join(f" + {mb:.0f}" for mb in row.get("peak_rss_mb_worker_processes", []))
            + " | "
            f"{row['batch']['tokens_per_second']:,.0f} | {row['f1_exact_micro']:.4f} | "
            f"{'yes' if row['tensorflow_imported'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the Keras model directory (TF path)")
    parser.add_argument("--export", action="append", default=[], metavar="NAME=DIR",
                        help="a LiteRT export to measure (repeatable)")
    parser.add_argument("--threads", type=int, action="append",
                        help="LiteRT interpreter threads to measure (repeatable; default 1)")
    parser.add_argument("--workers", type=int, action="append",
                        help="LiteRT interpreters in the pool to measure (repeatable; default 1)")
    parser.add_argument("--data", type=Path, required=True,
                        help="i2b2-layout folder (txt/ and concept/), e.g. MACCROBAT dev")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=output_file, help="write the results as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker-pool", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    check_i2b2_folder(parser, args.data)
    if not args.model and not args.export:
        # Else an empty table and results file, as if a run had been made.
        parser.error("nothing to measure: give --model DIR, --export NAME=DIR or both")
    for spec in args.export:
        if not spec.partition("=")[2]:
            # `--export DIR` would measure the current folder, named DIR, as a Keras model.
            parser.error(f"argument --export: {spec}: expected NAME=DIR, e.g. fp32={spec}")
    started, load_start = time.time(), load_average()
    runs = []
    if args.model:
        runs.append(("TensorFlow (Keras model, in-graph pipeline)", args.model, 0, 0))
    for spec in args.export:
        name, _, path = spec.partition("=")
        for threads in args.threads or [1]:
            for workers in args.workers or [1]:
                runs.append((f"LiteRT {name}, {threads} thread{'s' if threads > 1 else ''}"
                             f"{f', {workers} workers' if workers > 1 else ''}",
                             Path(path), threads, workers))
    rows = []
    for label, path, threads, workers in runs:
        print(f"measuring {label} ...", file=sys.stderr, flush=True)
        rows.append({"runtime": label, **run_worker(path, threads, workers, args)})
    result = {
        "command": command_line("benchmarks.litert_bench", argv),
        # Read after the runs: it imports TensorFlow for its version.
        "machine": {**machine_facts(), "load_average_start": load_start,
                    "load_average_end": load_average()},
        "settings": {"calls": args.calls, "warmup": args.warmup, "sentences": args.sentences,
                     "repeats": args.repeats, "data": str(args.data)},
        "runs": rows,
        "benchmark_seconds": round(time.time() - started, 1),
    }
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
