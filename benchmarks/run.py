"""Benchmarks: accuracy, speed and memory from training to gRPC, on one trained model.

    python -m benchmarks.run --corpus bc5cdr          # one corpus
    python -m benchmarks.run --all                    # bc5cdr, ncbi-disease, maccrobat
    python -m benchmarks.run --corpus bc5cdr --quick         # 1-2 minute smoke test
    python -m benchmarks.run --readme-only            # rebuild the tables in benchmarks/README.md

For each corpus: train (``clinical-ner train``, i.e. ``clinical_ner.training.trainer.train``,
with the dev split for early stopping) in a subprocess, score dev (and test
where there is one; there, also a refit on train and dev for the best epoch
count, scored on test), export the SavedModel, and time in-process
``Annotator.annotate``, the SavedModel's ``serving_default`` signature and
the gRPC server (``clinical-ner serve`` in a subprocess) through
``ServingClient`` at concurrency 1 and 8; single-sentence latency, the
serving process's peak memory, model sizes and the time from ``import`` to a
first prediction. Writes ``benchmarks/results/<corpus>.json`` (``quick-<corpus>.json``
with ``--quick``) and, after full runs, the results tables of benchmarks/README.md,
which also says what each figure means.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import bench_report  # noqa: E402 (after TF's log level)
from benchmarks.corpora import CORPORA, CorpusSpec  # noqa: E402
from clinical_ner.serving import defaults  # noqa: E402
from benchmarks.bench_util import (  # noqa: E402
    MODEL_NAME,
    REPO_ROOT,
    ServerProcess,
    latency_calls,
    load_average,
    log,
    machine_facts,
    run_timed_subprocess,
    slice_conll,
    slice_i2b2,
    subprocess_env,
    summarize_seconds,
    throughput,
    time_runs,
    tree_bytes,
)

DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_WORK_DIR = REPO_ROOT / "benchmarks" / "work"
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
EMBEDDINGS = "embeddings/glove.6B.50d.pruned.txt"
WORK_MARKER = ".clinical-ner-benchmark"
STARTUP_TEXT = "CT of the chest showed a 2 cm nodule; she was started on aspirin."


@dataclass(frozen=True)
class Settings:
    """How much data and how many timed runs: full benchmark or ``--quick`` smoke test."""

    train_sentences: int | None  # None: all
    eval_sentences: int | None  # dev and test
    epochs: int | None  # None: the configuration's
    repeats: int  # timed runs of each throughput figure (after `warmup` untimed)
    warmup: int
    latency_calls: int
    latency_warmup: int
    latency_sentences: int  # distinct sentences sampled for the latency calls
    startup_repeats: int
    startup_warmup: int


FULL = Settings(None, None, None, repeats=5, warmup=1, latency_calls=1000, latency_warmup=50,
                latency_sentences=200, startup_repeats=3, startup_warmup=1)
QUICK = Settings(300, 200, 1, repeats=2, warmup=1, latency_calls=100, latency_warmup=10,
                 latency_sentences=50, startup_repeats=1, startup_warmup=0)
CLIENT_BATCH_SIZE = defaults.BATCH_DOCUMENTS  # ServingClient's; also for the SavedModel
CONCURRENCY = (1, 8)


# -- set-up --------------------------------------------------------------------------

def prepare_run_dir(work_dir: Path, corpus: str, quick: bool) -> Path:
    """A fresh ``<work-dir>/<corpus>[-quick]``; an old one is removed only if we made it."""
    import shutil

    run_dir = work_dir / (f"{corpus}-quick" if quick else corpus)
    if run_dir.exists():
        if not (run_dir / WORK_MARKER).is_file():
            raise SystemExit(f"{run_dir} exists and was not made by benchmarks/run.py; "
                             "remove it or choose another --work-dir")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / WORK_MARKER).write_text("made by benchmarks/run.py; safe to delete\n")
    return run_dir


def data_paths(spec: CorpusSpec, data_root: Path, run_dir: Path, settings: Settings) -> dict:
    """The split paths to use: the originals, or slices of them under ``run_dir/data``."""
    splits = {"train": spec.train, "dev": spec.dev}
    if spec.test:
        splits["test"] = spec.test
    paths = {}
    for split, relative in splits.items():
        source = data_root / relative
        if not source.exists():
            raise SystemExit(f"{source} not found (--data-root {data_root})")
        limit = settings.train_sentences if split == "train" else settings.eval_sentences
        if limit is None:
            paths[split] = source
            continue
        target = run_dir / "data" / (f"{split}.conll" if spec.format == "conll" else split)
        if spec.format == "conll":
            slice_conll(source, target, limit)
        else:
            slice_i2b2(source, target, limit)
        paths[split] = target
    return paths


def effective_config(args: argparse.Namespace, data_root: Path, settings: Settings) -> dict:
    """Defaults + GloVe, then ``--config FILE.json``, then ``--seed`` and the quick epoch count."""
    from clinical_ner.config import NERConfig
    from clinical_ner.errors import ConfigError

    values = NERConfig(embeddings=str((data_root / EMBEDDINGS).resolve())).to_dict()
    if args.config:
        try:
            overrides = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"--config {args.config}: {error}") from None
        if not isinstance(overrides, dict):
            raise SystemExit(f"--config {args.config}: expected a JSON object of NERConfig fields")
        values.update(overrides)
        if overrides.get("embeddings"):
            from clinical_ner.cli.train import absolute_paths

            # As `clinical-ner train` does: relative to the current directory.
            values["embeddings"] = absolute_paths(overrides["embeddings"])
    if args.seed is not None:
        values["seed"] = args.seed
    if settings.epochs is not None:
        values["epochs"] = settings.epochs
    try:
        return NERConfig.from_dict(values, source=args.config or "configuration").to_dict()
    except ConfigError as error:
        raise SystemExit(f"--config: {error}") from None


# -- measurements ----------------------------------------------------------------------

def _run_training(spec: CorpusSpec, train_paths: list[Path], dev_path: Path | None,
                  config: dict, run_dir: Path, role: str) -> tuple[dict, list[dict]]:
    """``clinical-ner train`` in a subprocess: (its command, wall time and peak RSS; its log).

    ``role`` names what it writes in ``run_dir``: ``<role>-config.json``,
    ``<role>.log`` and the model directory.
    """
    config_file = run_dir / f"{role}-config.json"
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    model_dir = run_dir / ("model" if role == "train" else f"{role}-model")
    log_path = run_dir / f"{role}.log"
    command = [sys.executable, "-m", "clinical_ner.cli", "train"]
    for path in train_paths:
        command += ["--train", str(path)]
    if dev_path is not None:
        command += ["--dev", str(dev_path)]
    command += ["--output", str(model_dir), "--config", str(config_file), "--input-format",
                spec.format, "--quiet"]
    what = "training" if role == "train" else f"{role} training"
    log(f"{spec.name}: {what} ({config['epochs']} epochs{' at most' if dev_path else ''}); "
        f"log in {log_path}")
    outcome = run_timed_subprocess(command, log_path, env=subprocess_env())
    if outcome["returncode"] != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{role} failed (exit {outcome['returncode']}):\n{tail}")
    history = [json.loads(line) for line in
               (model_dir / "training_log.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    return {
        "command": "clinical-ner train " + shlex.join(command[4:]),
        "model_dir": str(model_dir),
        # The whole `clinical-ner train` process: Python and TensorFlow start-up,
        # reading the data and the vectors, every epoch with its dev evaluation.
        "wall_seconds": outcome["wall_seconds"],
        "peak_rss_mb": outcome["peak_rss_mb"],
    }, history


def _median(history: list[dict], key: str) -> float | None:
    values = [entry[key] for entry in history if entry.get(key) is not None]
    return round(float(statistics.median(values)), 3) if values else None


def train_model(spec: CorpusSpec, paths: dict, config: dict, run_dir: Path) -> dict:
    """The benchmarked model: trained on train, dev choosing the epoch and stopping early."""
    facts, history = _run_training(spec, [paths["train"]], paths["dev"], config, run_dir,
                                   "train")
    best = max((entry for entry in history if entry.get("best")), key=lambda e: e["epoch"])
    return {
        **facts,
        "epochs": len(history),
        "epochs_max": config["epochs"],
        "best_epoch": best["epoch"],
        "best_dev_f1": best.get("dev_f1"),
        "stopped_early": len(history) < config["epochs"],
        "tokens_per_second_median": _median(history, "train_tokens_per_second"),
        "seconds_per_epoch_median": _median(history, "train_seconds"),
        "dev_eval_seconds_median": _median(history, "dev_seconds"),
        "train_seconds_total": round(sum(e["train_seconds"] for e in history), 3),
        "dev_eval_seconds_total": round(sum(e.get("dev_seconds") or 0 for e in history), 3),
        "log": history,
    }


def refit_model(spec: CorpusSpec, paths: dict, config: dict, run_dir: Path,
                epochs: int) -> dict:
    """The final model of the usual protocol: train and dev together, for the epochs dev chose.

    With no dev data left to stop on, it trains exactly ``epochs`` epochs
    (the benchmarked model's best) and keeps the last; only test data can
    score it. Its speed is not a benchmark figure (the machine is the same,
    the data twice as large).
    """
    facts, history = _run_training(spec, [paths["train"], paths["dev"]], None,
                                   {**config, "epochs": epochs}, run_dir, "refit")
    return {**facts, "epochs": len(history),
            "train_seconds_total": round(sum(e["train_seconds"] for e in history), 3)}


def corpus_stats(corpus, sentences) -> dict:
    return {"documents": len(corpus.documents), "sentences": len(sentences),
            "tokens": sum(len(s.tokens) for s in sentences), "labels": corpus.labels}


def score(ner, sentences) -> dict:
    from clinical_ner.evaluation.evaluate import evaluate_sentences

    started = time.perf_counter()
    report = evaluate_sentences(ner, sentences)
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def inference_documents(spec: CorpusSpec, paths: dict, dev_sentences) -> tuple[list[str], str]:
    if spec.format == "conll":
        return ([" ".join(s.tokens) for s in dev_sentences],
                "dev sentences, each one document: its tokens joined by single spaces")
    files = sorted((Path(paths["dev"]) / "txt").glob("*.txt"))
    documents = []
    for path in files:
        with open(path, encoding="utf-8", newline="") as handle:
            documents.append(handle.read())
    return documents, "dev .txt files (one case report each, one sentence per line)"


def text_stats(texts: list[str], max_sentence_tokens: int) -> dict:
    from clinical_ner.text.tokenizer import split_sentences

    sentences = [split_sentences(text, max_sentence_tokens) for text in texts]
    return {
        "count": len(texts),
        "sentences": sum(len(s) for s in sentences),
        # What the model sees: tokens of our tokenizer (the in-graph one is equal).
        "tokens": sum(len(sentence) for document in sentences for sentence in document),
        "characters": sum(len(text) for text in texts),
    }


def latency_texts(spec: CorpusSpec, documents: list[str], count: int, seed: int) -> list[str]:
    if spec.format == "conll":
        pool = [text for text in documents if text.strip()]
    else:
        pool = [line for text in documents for line in text.splitlines() if line.strip()]
    return random.Random(seed).sample(pool, min(count, len(pool)))


def saved_model_runner(version_dir: Path):
    """``serving_default`` of the SavedModel loaded in-process, fed like ``annotate`` feeds it."""
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    function = loaded.signatures["serving_default"]

    def annotate_batch(texts: list[str]):
        outputs = function(text=tf.constant(np.array([t.encode("utf-8") for t in texts],
                                                     dtype=object)))
        return {name: value.numpy() for name, value in outputs.items()}

    def annotate_all(texts: list[str]):
        # Documents of similar length share a batch, as the client sends them.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for begin in range(0, len(order), CLIENT_BATCH_SIZE):
            annotate_batch([texts[i] for i in order[begin:begin + CLIENT_BATCH_SIZE]])

    return loaded, annotate_all, lambda text: annotate_batch([text])


def measure_grpc(server: ServerProcess, documents: list[str], tokens: int, sentences: list[str],
                 settings: Settings) -> dict:
    from clinical_ner.serving.client import ServingClient

    results = {}
    for concurrency in CONCURRENCY:
        clients = [ServingClient(server.target, MODEL_NAME, batch_size=CLIENT_BATCH_SIZE,
                                     timeout=120.0, deadline=300.0)
                   for _ in range(concurrency)]
        shards = [documents[index::concurrency] for index in range(concurrency)]
        try:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                def run_all():
                    futures = [pool.submit(client.annotate, shard)
                               for client, shard in zip(clients, shards) if shard]
                    for future in futures:
                        future.result()

                seconds = time_runs(run_all, settings.repeats, settings.warmup)
        finally:
            for client in clients:
                client.close()
        results[f"grpc_c{concurrency}"] = {
            **throughput(seconds, tokens, len(documents)),
            "concurrency": concurrency,
            "client_batch_size": CLIENT_BATCH_SIZE,
            "clients": "one ServingClient (own channel) per thread; documents dealt "
                       "round-robin to the threads",
        }
    with ServingClient(server.target, MODEL_NAME, timeout=30.0, deadline=60.0) as client:
        latency = latency_calls(client.annotate, sentences, settings.latency_calls,
                                settings.latency_warmup)
    return {"throughput": results, "latency": latency}


def measure_startup(model_dir: Path, settings: Settings) -> dict:
    """A fresh process: import, load the model directory, annotate one sentence."""
    code = (
        "import time; t = time.time(); "
        "from clinical_ner import ClinicalNER; "
        f"ner = ClinicalNER.load({str(model_dir)!r}); "
        f"ner.annotate({STARTUP_TEXT!r}); "
        "elapsed = time.time() - t; "
        "import resource, json; "
        "print(json.dumps({'seconds': elapsed, "
        "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    )
    command = [sys.executable, "-c", code]
    seconds, walls, peaks = [], [], []
    for attempt in range(settings.startup_warmup + settings.startup_repeats):
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT,
                                env=subprocess_env(), timeout=600)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"start-up measurement failed:\n{result.stderr[-3000:]}")
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        if attempt >= settings.startup_warmup:
            seconds.append(measured["seconds"])
            walls.append(wall)
            peaks.append(measured["peak_rss_mb"])
    return {
        "import_to_first_prediction_seconds": summarize_seconds(seconds),
        # Including the interpreter's own start.
        "process_wall_seconds": summarize_seconds(walls),
        # Peak RSS of that process: an in-process user's memory for one small text.
        "peak_rss_mb": round(max(peaks), 1),
        "command": "python -c " + shlex.quote(code),
    }


def run_corpus(name: str, args: argparse.Namespace, settings: Settings, command: str) -> dict:
    spec = CORPORA[name]
    data_root = Path(args.data_root).resolve()
    run_dir = prepare_run_dir(Path(args.work_dir).resolve(), name, args.quick)
    log(f"{name}: {'quick' if args.quick else 'full'} run in {run_dir}")
    machine = machine_facts()
    paths = data_paths(spec, data_root, run_dir, settings)
    config = effective_config(args, data_root, settings)
    corpus_started = time.perf_counter()

    training = train_model(spec, paths, config, run_dir)
    log(f"{name}: trained {training['epochs']} epochs in {training['wall_seconds']:.0f} s "
        f"(best {training['best_epoch']}, dev F1 {training['best_dev_f1']})")

    from clinical_ner.formats import load_corpus
    from clinical_ner.artifacts.keras_model import MODEL_FILE
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.evaluation.evaluate import corpus_sentences

    model_dir = Path(training["model_dir"])
    data, accuracy, split_sentences = {}, {}, {}
    for split, path in paths.items():
        corpus = load_corpus(path, spec.format)
        sentences = corpus_sentences(corpus)
        split_sentences[split] = sentences
        data[split] = {"source": getattr(spec, split),  # relative to data_root
                       "sliced": Path(path) != data_root / getattr(spec, split),
                       "format": spec.format, **corpus_stats(corpus, sentences)}
    ner = KerasAnnotator.load(model_dir)
    for split in ("dev", "test"):
        if split in split_sentences:
            accuracy[split] = score(ner, split_sentences[split])
            log(f"{name}: {split} exact micro F1 {accuracy[split]['exact']['micro']['f1']:.4f}")

    refit = None
    if "test" in split_sentences and not args.no_refit:
        refit = refit_model(spec, paths, config, run_dir, training["best_epoch"])
        refit["test"] = score(KerasAnnotator.load(refit["model_dir"]), split_sentences["test"])
        log(f"{name}: refit on train + dev for {refit['epochs']} epochs in "
            f"{refit['wall_seconds']:.0f} s: test exact micro F1 "
            f"{refit['test']['exact']['micro']['f1']:.4f}")

    started = time.perf_counter()
    version_dir = ner.export(run_dir / "export", 1)
    export_seconds = time.perf_counter() - started
    model = {
        "keras_bytes": tree_bytes(model_dir / MODEL_FILE),
        "saved_model_bytes": tree_bytes(version_dir),
        "export_seconds": round(export_seconds, 3),
    }
    log(f"{name}: exported to {version_dir} in {export_seconds:.1f} s")

    documents, source = inference_documents(spec, paths, split_sentences["dev"])
    stats = {"source": source, **text_stats(documents, config["max_sentence_tokens"])}
    tokens = stats["tokens"]
    sentences = latency_texts(spec, documents, settings.latency_sentences, config["seed"])
    sentence_tokens = text_stats(sentences, config["max_sentence_tokens"])["tokens"]
    latency_sample = {"sentences": len(sentences),
                      "mean_tokens": round(sentence_tokens / max(len(sentences), 1), 1),
                      "source": "a seeded random sample of the inference documents' sentences"}

    log(f"{name}: in-process annotate, {stats['count']} documents, {tokens} tokens")
    inference = {"documents": stats}
    # annotate's own batching defaults, as a user gets them.
    annotate_defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(KerasAnnotator.annotate).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    inference["in_process"] = {
        **throughput(time_runs(lambda: ner.annotate(documents), settings.repeats,
                               settings.warmup), tokens, len(documents)),
        **annotate_defaults,
    }
    latency = {"sample": latency_sample}
    latency["in_process"] = latency_calls(ner.annotate, sentences, settings.latency_calls,
                                          settings.latency_warmup)

    log(f"{name}: SavedModel serving_default in-process")
    loaded, annotate_all, annotate_one = saved_model_runner(version_dir)
    inference["saved_model"] = {
        **throughput(time_runs(lambda: annotate_all(documents), settings.repeats,
                               settings.warmup), tokens, len(documents)),
        "batch_size": CLIENT_BATCH_SIZE,
    }
    latency["saved_model"] = latency_calls(annotate_one, sentences, settings.latency_calls,
                                           settings.latency_warmup)
    del loaded, annotate_all, annotate_one

    log(f"{name}: gRPC server")
    server = ServerProcess(run_dir / "export", run_dir / "server.log")
    try:
        ready_seconds = server.wait_ready()
        rss_after_load = server.memory_mb("VmRSS")
        hwm_after_load = server.memory_mb("VmHWM")
        grpc_results = measure_grpc(server, documents, tokens, sentences, settings)
        serving = {
            "command": "clinical-ner " + shlex.join(server.command[3:]),
            "ready_seconds": round(ready_seconds, 3),
            "rss_after_load_mb": rss_after_load,
            "peak_rss_after_load_mb": hwm_after_load,
            # VmHWM of the server process after every gRPC measurement.
            "peak_rss_mb": server.memory_mb("VmHWM"),
        }
    finally:
        server.stop()
    inference.update(grpc_results["throughput"])
    latency["grpc"] = grpc_results["latency"]

    log(f"{name}: import to first prediction in a fresh process")
    startup = measure_startup(model_dir, settings)

    machine["load_average_end"] = load_average()
    result = {
        "schema_version": bench_report.SCHEMA_VERSION,
        "corpus": name,
        "mode": "quick" if args.quick else "full",
        "command": command,
        "machine": machine,
        "settings": {**settings.__dict__, "client_batch_size": CLIENT_BATCH_SIZE,
                     "concurrency": list(CONCURRENCY)},
        "data_root": str(data_root),
        "data": data,
        "config": config,
        "training": training,
        "accuracy": accuracy,
        "refit": refit,
        "model": model,
        "inference": inference,
        "latency": latency,
        "serving": serving,
        "startup": startup,
        "benchmark_seconds": round(time.perf_counter() - corpus_started, 1),
    }
    result["targets"] = bench_report.evaluate_targets(result)
    return result


# -- command line ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Accuracy, speed and memory of clinical-ner from training to gRPC.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--corpus", action="append", choices=sorted(CORPORA),
                       help="corpus to benchmark (repeatable)")
    which.add_argument("--all", action="store_true", help="every corpus")
    which.add_argument("--readme-only", action="store_true",
                       help="only rebuild the tables in benchmarks/README.md from benchmarks/results/*.json")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                        help="the shared data folder (default: ../shared/data beside the repo)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK.train_sentences} train and "
                             f"{QUICK.eval_sentences} dev/test sentences, {QUICK.epochs} epoch, "
                             "few timed runs; writes results/quick-<corpus>.json, not the tables")
    parser.add_argument("--seed", type=int, help="training seed (default: the configuration's)")
    parser.add_argument("--config", metavar="FILE.json",
                        help="NERConfig fields over the default configuration (default NERConfig "
                             f"+ {EMBEDDINGS})")
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR),
                        help="models, exports and logs (default: benchmarks/work/, gitignored)")
    parser.add_argument("--results-dir", default=str(DEFAULT_RESULTS_DIR),
                        help="where the result JSON files go (default: benchmarks/results/)")
    parser.add_argument("--repeats", type=int,
                        help="timed runs per throughput figure (default: "
                             f"{FULL.repeats}, --quick {QUICK.repeats})")
    parser.add_argument("--no-refit", action="store_true",
                        help="corpora with a test split: skip the second model, trained on "
                             "train and dev together for the best epoch count and scored on test")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not rebuild the tables in benchmarks/README.md after a full run")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    results_dir = Path(args.results_dir).resolve()
    readme = REPO_ROOT / "benchmarks" / "README.md"
    if args.readme_only:
        if not results_dir.is_dir():
            # A mistyped folder would otherwise replace the tables with "no results yet".
            raise SystemExit(f"--results-dir {results_dir}: no such folder; "
                             f"the tables in {readme} were left as they are")
        updated = bench_report.update_readme(readme, results_dir)
        log(f"tables rebuilt in {readme}" if updated else f"{readme} has no benchmark markers")
        return 0 if updated else 1
    settings = QUICK if args.quick else FULL
    if args.repeats is not None:
        if args.repeats < 1:
            raise SystemExit("--repeats must be at least 1")
        settings = Settings(**{**settings.__dict__, "repeats": args.repeats})
    corpora = list(CORPORA) if args.all else list(dict.fromkeys(args.corpus))
    command = "python -m benchmarks.run " + shlex.join(argv)
    effective_config(args, Path(args.data_root), settings)  # a bad --config stops here, once
    results_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in corpora:
        try:
            result = run_corpus(name, args, settings, command)
        except Exception:
            traceback.print_exc()
            log(f"{name}: FAILED")
            failed.append(name)
            continue
        path = results_dir / (f"quick-{name}.json" if args.quick else f"{name}.json")
        path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        log(f"{name}: wrote {path} ({result['benchmark_seconds']:.0f} s)")
        for check in result["targets"]:
            status = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
            log(f"  {check['description']}: {check['value']} ({check['op']} {check['target']}: "
                f"{status})")
    if (not args.quick and not args.no_readme and results_dir == DEFAULT_RESULTS_DIR.resolve()
            and len(failed) < len(corpora)):
        if bench_report.update_readme(readme, results_dir):
            log(f"tables rebuilt in {readme}")
        else:
            log(f"{readme} has no benchmark markers; tables not written")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
