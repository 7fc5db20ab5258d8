"""Chunks of a LiteRT batch (``annotators.litert.annotator.CHUNK_SIZE``, ``CHUNK_POSITIONS``): speed and memory.

::

    python -m benchmarks.litert_chunk_size --export /tmp/idle/lr32 --chunk-size 8 \\
        --chunk-size 16 --chunk-size 32 --output benchmarks/results/litert-chunk-size.json
    python -m benchmarks.litert_chunk_size --export /tmp/idle/lr32 --chunk-size 16 \\
        --chunk-positions 0 --chunk-positions 384 --output benchmarks/results/litert-chunk-positions.json

Every ``--chunk-size`` (sentences per call) is run with every
``--chunk-positions`` (padded positions per call, sentences times the
longest one's tokens; ``0``, the default, sets no limit).

* **Speed**: ``annotate`` on the 24 MACCROBAT dev documents, one process per
  worker count (1 and 2 interpreters), every chunk size once per round in
  turn, ``--repeats`` rounds after one untimed run each; tokens/s at the
  median.
* **Memory of a batch worker**: for each chunk size a fresh process imports
  Apache Beam's SDK worker (what a Beam worker holds before any model), loads
  the export with one interpreter (what batch engines run) and annotates
  ``--notes`` BC5CDR dev sentences as notes in batches of 400,000 characters
  (RunInference's default); its peak RSS (``VmHWM``, which unlike
  ``ru_maxrss`` does not carry over the parent's peak through fork and exec)
  at the end.

The result file records the CPU and the load average at start and end.
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
    REPO_ROOT, check_litert_export, command_line, conll_notes, i2b2_documents, load_average,
    log, machine_facts, output_file, proc_status_kb, write_json,
)

DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
BATCH_CHARACTERS = 400_000


def bc5cdr_notes(count: int) -> list[str]:
    notes = conll_notes(DATA_ROOT / "bc5cdr" / "dev.conll")
    return (notes * (count // len(notes) + 1))[:count]


Chunking = tuple[int, int]  # sentences, positions (0: any)


def chunking_name(chunking: Chunking) -> str:
    size, positions = chunking
    return f"{size}" if not positions else f"{size} x {positions} positions"


def set_chunking(chunking: Chunking) -> None:
    import clinical_ner.annotators.litert.annotator as litert

    litert.CHUNK_SIZE, litert.CHUNK_POSITIONS = chunking


def speed(export: Path, chunkings: list[Chunking], workers: int, repeats: int) -> dict:
    import clinical_ner.annotators.litert.annotator as litert
    from clinical_ner.text.tokenizer import count_tokens

    texts = i2b2_documents(DATA_ROOT / "maccrobat-i2b2" / "dev")
    tokens = sum(count_tokens(text) for text in texts)
    annotator = litert.LiteRTAnnotator.load(export, workers=workers)
    times: dict[Chunking, list[float]] = {chunking: [] for chunking in chunkings}
    for round_number in range(repeats + 1):
        for chunking in chunkings:
            set_chunking(chunking)
            started = time.perf_counter()
            annotator.annotate(texts)
            if round_number:  # the first round is the untimed warm-up
                times[chunking].append(time.perf_counter() - started)
    return {chunking_name(chunking): round(tokens / sorted(runs)[len(runs) // 2])
            for chunking, runs in times.items()}


def worker_memory(export: Path, chunking: Chunking, notes: int) -> dict:
    """Run in a fresh process (``--worker``): a batch worker's peak RSS in MB."""
    from apache_beam.runners.worker import sdk_worker_main  # noqa: F401  (a Beam worker's imports)

    import clinical_ner.annotators.litert.annotator as litert

    set_chunking(chunking)
    after_imports = peak_rss_mb()
    annotator = litert.LiteRTAnnotator.load(export, workers=1)
    batch: list[str] = []
    characters = 0
    for note in bc5cdr_notes(notes):
        batch.append(note)
        characters += len(note)
        if characters >= BATCH_CHARACTERS:
            annotator.annotate(batch)
            batch, characters = [], 0
    if batch:
        annotator.annotate(batch)
    return {"after_imports_mb": after_imports, "peak_mb": peak_rss_mb()}


def peak_rss_mb() -> int:
    return round(proc_status_kb(os.getpid(), "VmHWM") / 1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="a LiteRT export folder")
    parser.add_argument("--chunk-size", type=int, action="append", dest="chunk_sizes")
    parser.add_argument("--chunk-positions", type=int, action="append", dest="chunk_positions")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--notes", type=int, default=50_000)
    parser.add_argument("--output", type=output_file)
    parser.add_argument("--worker", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker_memory(args.export, tuple(args.worker), args.notes)))
        return 0
    check_litert_export(parser, args.export)
    chunkings = [(size, positions) for size in args.chunk_sizes or [16, 32]
                 for positions in args.chunk_positions or [0]]
    report: dict = {"command": command_line("benchmarks.litert_chunk_size", argv),
                    "machine": machine_facts(), "export": str(args.export),
                    "repeats": args.repeats, "notes": args.notes,
                    "tokens_per_second": {}, "batch_worker_memory": {}}
    for workers in (1, 2):
        log(f"speed, {workers} worker(s)")
        report["tokens_per_second"][f"{workers} workers"] = speed(
            args.export, chunkings, workers, args.repeats)
    for chunking in chunkings:
        log(f"batch worker memory, chunks of {chunking_name(chunking)}")
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.litert_chunk_size", "--export", str(args.export),
             "--notes", str(args.notes), "--worker", *map(str, chunking)],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        report["batch_worker_memory"][chunking_name(chunking)] = json.loads(
            result.stdout.splitlines()[-1])
    report["machine"]["load_average_end"] = load_average()
    print(json.dumps({key: report[key] for key in ("tokens_per_second", "batch_worker_memory")},
                     indent=2))
    if args.output:
        write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
