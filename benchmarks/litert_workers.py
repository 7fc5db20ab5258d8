"""All cores on a LiteRT batch: worker processes (``ClinicalNER.load``'s default) or threads.

::

    python -m benchmarks.litert_workers --export /tmp/probe/lr32new --workers 2 \\
        --repeats 9 --output benchmarks/results/litert-workers.json

Issue 26 leaves the choice of threads or processes to a measurement. On the
MACCROBAT dev documents and on the 177 train and dev documents (a stream of
long notes), every round times, in turn:

* ``1 interpreter``: ``LiteRTAnnotator.load(export, workers=1).annotate(texts)``;
* ``threads``: ``workers=N, parallel="threads"``: N interpreters in this
  process, the chunks of each batch spread over N threads (LiteRT releases
  the GIL while it computes; tokenizing, featurizing, the NumPy CRF and
  building the entities hold it);
* ``processes``: ``workers=N`` (``parallel="processes"``, the default): the
  texts cut into N groups of about equal characters, each annotated by a
  worker process with one interpreter; texts and entities travel pickled (in
  the timing). The processes start at the first batch; that call is timed
  apart (``processes_first_call_seconds``), before the rounds.

With ``--batch-characters N`` (repeatable), the first ``--notes`` BC5CDR dev
sentences as notes are annotated in consecutive batches of about N
characters each, to find the batch size from which processes pay: for this
run, ``PROCESS_MIN_CHARACTERS`` is set to 0, so that every batch of two or
more texts goes to the processes.

Every variant must give the same entities as ``1 interpreter``
(``bench_util.same_entities``: spans and labels exactly, confidences within
``CONFIDENCE_TOLERANCE``), or the run stops. Tokens/s at
the median of ``--repeats`` rounds after one untimed run each; "cores busy"
is the CPU seconds of this process and its worker processes over wall
seconds. The result file records the CPU and the load average at start and end.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks.bench_util import (
    REPO_ROOT, check_litert_export, command_line, conll_notes, i2b2_documents, load_average,
    log, machine_facts, output_file, same_entities, summarize_seconds, write_json,
)

DATA_ROOT = REPO_ROOT.parent / "shared" / "data"


def worker_cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds of processes so far (``/proc/PID/stat``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def character_batches(texts: list[str], size: int) -> list[list[str]]:
    """``texts`` in order, in consecutive batches of about ``size`` characters."""
    batches: list[list[str]] = [[]]
    characters = 0
    for text in texts:
        if batches[-1] and characters + len(text) > size:
            batches.append([])
            characters = 0
        batches[-1].append(text)
        characters += len(text)
    return batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", required=True, type=Path, help="a LiteRT export")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch-characters", type=int, action="append", default=[])
    parser.add_argument("--notes", type=int, default=2000)
    parser.add_argument("--output", type=output_file, required=True)
    args = parser.parse_args(argv)
    check_litert_export(parser, args.export)

    from clinical_ner.annotators.litert import annotator as litert_annotator
    from clinical_ner.annotators.litert.annotator import LiteRTAnnotator
    from clinical_ner.text.tokenizer import split_sentences

    if args.batch_characters:
        litert_annotator.PROCESS_MIN_CHARACTERS = 0

    report = {"command": command_line("benchmarks.litert_workers", argv),
              "machine": machine_facts(), "load_average_start": load_average(),
              "export": str(args.export), "workers": args.workers, "repeats": args.repeats,
              "corpora": {}}
    one = LiteRTAnnotator.load(args.export, workers=1)
    threads = LiteRTAnnotator.load(args.export, workers=args.workers, parallel="threads")
    processes = LiteRTAnnotator.load(args.export, workers=args.workers)

    dev = i2b2_documents(DATA_ROOT / "maccrobat-i2b2" / "dev")
    train = i2b2_documents(DATA_ROOT / "maccrobat-i2b2" / "train")
    corpora = {"maccrobat-dev": [dev], "maccrobat-train-dev": [train + dev]}
    notes = conll_notes(DATA_ROOT / "bc5cdr" / "dev.conll")[:args.notes]
    for size in args.batch_characters:
        corpora[f"bc5cdr-dev-{len(notes)} in batches of {size} characters"] = (
            character_batches(notes, size))
    started = time.perf_counter()
    processes.annotate(dev)
    report["processes_first_call_seconds"] = time.perf_counter() - started
    try:
        for name, batches in corpora.items():
            texts = [text for batch in batches for text in batch]
            tokens = sum(len(sentence) for text in texts for sentence in split_sentences(text))
            variants = {
                "1 interpreter": one,
                f"threads: {args.workers} interpreters": threads,
                f"processes: {args.workers} x 1 interpreter": processes,
            }

            def annotate_batches(annotator: LiteRTAnnotator) -> list:
                return [entities for batch in batches for entities in annotator.annotate(batch)]

            expected = annotate_batches(one)
            for variant, annotator in variants.items():
                if not same_entities(expected, annotate_batches(annotator)):
                    raise SystemExit(f"{name}: {variant}: other entities than 1 interpreter")
            times: dict[str, list[float]] = {variant: [] for variant in variants}
            cpu: dict[str, float] = dict.fromkeys(variants, 0.0)
            for _ in range(args.repeats):
                for variant, annotator in variants.items():
                    pids = annotator.worker_pids
                    children = worker_cpu_seconds(pids)
                    wall, process = time.perf_counter(), time.process_time()
                    annotate_batches(annotator)
                    times[variant].append(time.perf_counter() - wall)
                    cpu[variant] += (time.process_time() - process
                                     + worker_cpu_seconds(pids) - children)
            rows = {}
            for variant, runs in times.items():
                seconds = summarize_seconds(runs)
                rows[variant] = {"seconds": seconds,
                                 "tokens_per_second": tokens / seconds["median"],
                                 "cores_busy": cpu[variant] / sum(runs)}
                log(f"{name}: {variant}: {rows[variant]['tokens_per_second']:,.0f} tokens/s, "
                    f"cores busy {rows[variant]['cores_busy']:.2f}")
            report["corpora"][name] = {"texts": len(texts), "batches": len(batches),
                                       "tokens": tokens, "variants": rows}
    finally:
        processes.close()
    report["load_average_end"] = load_average()
    log(f"first batch with processes (their start included): "
        f"{report['processes_first_call_seconds']:.2f} s; "
        f"CPU: {report['machine'].get('cpu_model')}; load average at start "
        f"{report['load_average_start']}, at end {report['load_average_end']}")
    write_json(args.output, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
