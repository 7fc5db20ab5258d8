"""Throughput and worker memory of batch annotation: Beam and Spark next to Annotator.annotate.

    python -m benchmarks.batch_throughput --model benchmarks/work/batch/model

For each data set (BC5CDR sentences, cycled to ``--notes`` short notes; the
MACCROBAT train and dev documents) and each engine, in one run:

- ``in-process``: ``KerasAnnotator.load(model).annotate(texts)`` in one process (also
  timed warm: after one call has traced the graph, without loading: "in-process warm");
- ``beam-1``: ``run_batch`` (the ``clinical-ner batch`` pipeline) on FnApiRunner in-process;
- ``beam-2``: the same with ``--direct_num_workers=2 --direct_running_mode=multi_processing``;
- ``spark``: ``clinical_ner.batch.spark.annotate`` in ``local[2]``, written to Parquet.

With ``--litert-export DIR`` (a ``clinical-ner export MODEL --format litert``
folder), every engine runs that export instead: ``in-process`` is
``ClinicalNER.load(DIR)`` (one interpreter per core of the process's
affinity), Beam and Spark workers load it with one interpreter each and never
import TensorFlow; the rows then also give each engine's time from loading the
model to its first annotated note (in-process: load and a one-note call;
Spark: the slowest Python worker's model load, from ``WorkerRuntimes``; Beam:
not measured) and which runtime
the workers ran. ``--datasets bc5cdr`` skips the MACCROBAT documents.

Each engine runs in its own process; the wall time covers model loading and, for
Beam, reading and writing the files (Spark: from after the session started). A
sampler reads ``VmHWM`` (peak resident memory) of that process and of every
process under it: the largest Python worker's peak is the "worker" figure
(for ``in-process`` and ``beam-1`` the process itself; ``in-process`` on a
LiteRT export adds the peaks of the worker processes it starts for large
batches, as "+ MB"). Tokens are counted
with the model's tokenizer. Needs the [beam] and [spark] extras and Java.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.bench_util import (
    REPO_ROOT,
    command_line,
    conll_notes,
    core_counts,
    cpu_model,
    i2b2_documents,
    load_average,
    log,
    output_file,
    proc_status_kb,
    read_data,
    subprocess_env,
)

ENGINES = ("in-process", "beam-1", "beam-2", "spark")
DATASETS = ("bc5cdr", "maccrobat")  # build_datasets' names, before any "-<notes>"
DEFAULT_WORK_DIR = REPO_ROOT / "benchmarks" / "work" / "batch"
# The JSON lines this harness writes (build_datasets).
NOTE_SCHEMA = "id LONG, text STRING"


def build_datasets(data_root: Path, work_dir: Path, notes: int) -> dict[str, Path]:
    """JSON lines ``{"id", "text"}``: BC5CDR sentences (cycled to ``notes``) and MACCROBAT documents."""
    sentences = [note for split in ("train", "dev", "test")
                 for note in conll_notes(data_root / "bc5cdr" / f"{split}.conll")]
    documents = [text for split in ("train", "dev")
                 for text in i2b2_documents(data_root / "maccrobat-i2b2" / split)]
    datasets = {
        f"bc5cdr-{notes}": [sentences[index % len(sentences)] for index in range(notes)],
        "maccrobat": documents,
    }
    paths = {}
    for name, texts in datasets.items():
        path = work_dir / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for number, text in enumerate(texts):
                handle.write(json.dumps({"id": number, "text": text}, ensure_ascii=False) + "\n")
        paths[name] = path
        log(f"{name}: {len(texts)} notes ({len(sentences)} distinct BC5CDR sentences)"
            if name.startswith("bc5cdr") else f"{name}: {len(texts)} documents")
    return paths


def read_texts(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


# -- one engine, in a child process ---------------------------------------------------

def run_engine(engine: str, dataset: Path, model: Path, export: Path, out: Path) -> dict:
    """Annotate ``dataset`` with ``engine``; seconds and counts (runs in the child).

    ``model`` and ``export`` are the same LiteRT export when one is measured.
    """
    if engine == "in-process":
        texts = read_texts(dataset)
        started = time.perf_counter()
        from clinical_ner.annotators.load import ClinicalNER

        ner = ClinicalNER.load(model)  # a model directory, or the LiteRT export measured
        ner.annotate(texts[:1])  # traces the inference graph
        warm = time.perf_counter()
        entities = ner.annotate(texts)
        finished = time.perf_counter()
        return {"seconds": finished - started, "warm_seconds": finished - warm,
                "load_to_first_note_s": round(warm - started, 3),
                "notes": len(texts), "entities": sum(map(len, entities)),
                "tensorflow_imported": "tensorflow" in sys.modules}
    if engine.startswith("beam"):
        from clinical_ner.batch.runner import run_batch

        options = (["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
                   if engine == "beam-2" else [])
        started = time.perf_counter()
        totals = run_batch(str(export), [str(dataset)], str(out), input_format="jsonl",
                           pipeline_args=options)
        return {"seconds": time.perf_counter() - started, **totals}
    if engine == "spark":
        from pyspark.sql import SparkSession

        from clinical_ner.batch.spark import WorkerRuntimes, annotate

        # The workers run this interpreter (PySpark reads PYSPARK_PYTHON, not
        # the spark.pyspark.python setting, when Python starts the session).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        session = (SparkSession.builder.master("local[2]").appName("clinical-ner-bench")
                   .config("spark.ui.enabled", "false").getOrCreate())
        session.sparkContext.setLogLevel("ERROR")
        started = time.perf_counter()
        # The notes' schema given, as a job that knows its input does: inferring it
        # reads the whole file once more before the job starts.
        notes = session.read.schema(NOTE_SCHEMA).json(str(dataset)).repartition(4)
        runtimes = WorkerRuntimes(session)
        annotate(notes, str(export), runtimes=runtimes).write.mode("overwrite").parquet(str(out))
        seconds = time.perf_counter() - started
        written = session.read.parquet(str(out))
        counts = written.selectExpr("count(*) AS notes",
                                    "sum(size(entities)) AS entities").first()
        session.stop()
        return {"seconds": seconds, "notes": counts.notes, "entities": counts.entities,
                "workers": runtimes.counts(),
                "worker_load_s": round(runtimes.load_seconds(), 3)}
    raise ValueError(engine)


# -- the parent: data, children, memory sampling ------------------------------------------

class PeakSampler(threading.Thread):
    """Polls ``VmHWM`` of a process and all its descendants until stopped."""

    def __init__(self, root_pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.interval = interval
        self.peaks_kb: dict[int, int] = {}
        self.kinds: dict[int, str] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for pid in [self.root_pid, *self._descendants()]:
                peak = proc_status_kb(pid, "VmHWM")
                if peak is not None:
                    self.peaks_kb[pid] = max(peak, self.peaks_kb.get(pid, 0))
                    # Read every time: a launcher script may exec java later.
                    self.kinds[pid] = self._kind(pid)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def _descendants(self) -> list[int]:
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                        # The command name may hold spaces: the fields after it are fixed.
                        parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
        found, frontier = [], [self.root_pid]
        while frontier:
            children = [pid for pid, parent in parents.items() if parent in frontier]
            found += children
            frontier = children
        return found

    @staticmethod
    def _kind(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().split(b"\0")[0]
        except OSError:
            return "?"
        return "java" if command.endswith(b"java") else "python" if b"python" in command else "other"

    def peak_mb(self, kind: str, exclude_root: bool = False) -> float | None:
        values = [peak for pid, peak in self.peaks_kb.items()
                  if self.kinds.get(pid) == kind and not (exclude_root and pid == self.root_pid)]
        return round(max(values) / 1024, 1) if values else None


def measure(engine: str, dataset: Path, args: argparse.Namespace, export: Path) -> dict:
    out = args.work_dir / "out" / f"{dataset.stem}-{engine}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    command = [sys.executable, "-m", "benchmarks.batch_throughput", "--child", engine,
               "--dataset", str(dataset), "--model", str(args.model), "--export", str(export), "--out", str(out)]
    log_path = args.work_dir / f"{dataset.stem}-{engine}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file,
                                   cwd=REPO_ROOT, env=subprocess_env())
        sampler = PeakSampler(process.pid)
        sampler.start()
        stdout, _ = process.communicate()
        sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{engine} on {dataset.name} failed: see {log_path}")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    driver = sampler.peak_mb("python")
    workers = sampler.peak_mb("python", exclude_root=True)
    result.update({
        "process_peak_mb": round(sampler.peaks_kb[process.pid] / 1024, 1),
        # Beam on two processes and Spark: the SDK workers / Python workers.
        "worker_peak_mb": workers if engine in ("beam-2", "spark") else driver,
        "jvm_peak_mb": sampler.peak_mb("java"),
    })
    if engine == "in-process":
        # A LiteRT export annotates large batches in worker processes of its own.
        result["worker_processes_peak_mb"] = sorted(
            round(peak / 1024, 1) for pid, peak in sampler.peaks_kb.items()
            if pid != process.pid and sampler.kinds.get(pid) == "python")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model directory (trained)")
    parser.add_argument("--data-root", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument("--notes", type=int, default=50_000,
                        help="BC5CDR notes (sentences, cycled; default 50000)")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated, of {', '.join(ENGINES)}")
    parser.add_argument("--litert-export", type=Path,
                        help="run this LiteRT export in every engine instead of the SavedModel")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--results", type=output_file,
                        default=REPO_ROOT / "benchmarks" / "results" / "batch.json")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # A misspelt name would otherwise be found out after the export and the data are
    # built: as a failed child for an engine, or, for a dataset, a results file of none.
    for option, names, known in (("--engines", args.engines, ENGINES),
                                 ("--datasets", args.datasets, DATASETS)):
        unknown = [name for name in names.split(",") if name not in known]
        if unknown:
            parser.error(f"{option}: unknown {', '.join(unknown)} (choose from "
                         f"{', '.join(known)})")
    if args.child:
        result = run_engine(args.child, args.dataset, args.model, args.export, args.out)
        print(json.dumps(result))
        return 0

    from clinical_ner.text.tokenizer import count_tokens

    args.work_dir.mkdir(parents=True, exist_ok=True)
    datasets = read_data(parser, "--data-root",
                         lambda: build_datasets(args.data_root, args.work_dir, args.notes))
    export = args.work_dir / "export" / "1"
    if args.litert_export:
        export = args.model = args.litert_export
    elif not export.exists():
        subprocess.run([sys.executable, "-m", "clinical_ner.cli", "export", str(args.model),
                        "--output", str(export.parent), "--version", "1"], check=True,
                       env=subprocess_env())
    engines = args.engines.split(",")
    report = {"command": command_line("benchmarks.batch_throughput", argv),
              "cpu_model": cpu_model(), **core_counts(), "load_average_start": load_average(),
              "datasets": {}}
    for name, dataset in datasets.items():
        if name.split("-")[0] not in args.datasets.split(","):
            continue
        tokens = sum(count_tokens(text) for text in read_texts(dataset))
        rows = {}
        for engine in engines:
            log(f"{name}: {engine}")
            row = measure(engine, dataset, args, export)
            row["tokens"] = tokens
            row["notes_per_s"] = round(row["notes"] / row["seconds"], 1)
            row["tokens_per_s"] = round(tokens / row["seconds"])
            rows[engine] = row
            if "warm_seconds" in row:
                rows["in-process warm"] = {
                    **row, "seconds": row["warm_seconds"],
                    "notes_per_s": round(row["notes"] / row["warm_seconds"], 1),
                    "tokens_per_s": round(tokens / row["warm_seconds"])}
            log(f"  {json.dumps(row)}")
        report["datasets"][name] = rows
    report["load_average_end"] = load_average()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown_table(report))
    return 0


def markdown_table(report: dict) -> str:
    lines = ["| data | engine | notes | tokens | seconds | notes/s | tokens/s | % of in-process warm "
             "tokens/s | worker peak MB | JVM peak MB | load (+ first note) s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, rows in report["datasets"].items():
        reference = rows.get("in-process warm", {}).get("tokens_per_s")
        for engine, row in rows.items():
            share = f"{100 * row['tokens_per_s'] / reference:.0f} %" if reference else "-"
            lines.append(f"| {name} | {engine} | {row['notes']} | {row['tokens']} | "
                         f"{row['seconds']:.1f} | {row['notes_per_s']} | {row['tokens_per_s']} | "
                         f"{share} | {row['worker_peak_mb']}"
                         + "".join(f" + {mb}" for mb in row.get("worker_processes_peak_mb", []))
                         + f" | {row['jvm_peak_mb'] or '-'} | "
                         f"{row.get('load_to_first_note_s', row.get('worker_load_s', '-'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
