"""In-domain word vectors: build them with ``clinical-ner vectors``, then F1 with each vector set.

    python -m benchmarks.vectors_bench --build-vectors            # vectors on ../shared/data/unlabeled
    python -m benchmarks.vectors_bench --corpus maccrobat --set glove --set own --set both
    python -m benchmarks.vectors_bench --table                    # the Markdown table of what ran

``--build-vectors`` runs ``clinical-ner vectors --text <data>/unlabeled --output
benchmarks/work/vectors/unlabeled.txt`` (plus ``--vectors-option`` arguments) in a
subprocess and records its wall time, peak memory and the load average before and after in
``benchmarks/results/vectors/build.json``.

For every ``--corpus`` and ``--set`` it trains a model as ``benchmarks/run.py`` does
(``clinical-ner train --train … --dev … --config … --quiet`` in a subprocess: the documented
default configuration, seed 42, dev early stopping) with these vectors:

* ``glove``: ``embeddings/glove.6B.50d.pruned.txt`` (the published benchmark's setting);
* ``own``: the vectors built by ``--build-vectors``;
* ``both``: the two concatenated (``--embeddings GLOVE --embeddings OWN``: GloVe's 50 values,
  then the in-domain ones; zeros in the part of a file that lacks the word).

It scores dev (and test where there is one) exactly as ``run.py`` does, and writes
``benchmarks/results/vectors/<corpus>-<set>.json``. An existing result is kept (the run is
skipped) unless ``--force``: runs can be queued, interrupted and resumed.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from benchmarks import run as benchmark
from benchmarks.bench_util import (
    REPO_ROOT,
    load_average,
    log,
    machine_facts,
    run_timed_subprocess,
    subprocess_env,
)

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results" / "vectors"
WORK_DIR = REPO_ROOT / "benchmarks" / "work" / "vectors"
OWN_VECTORS = WORK_DIR / "unlabeled.txt"
SETS = ("glove", "own", "both")


def build_vectors(data_root: Path, output: Path, options: list[str]) -> dict:
    """``clinical-ner vectors`` on the unlabeled corpus, timed in a subprocess."""
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "clinical_ner.cli", "vectors",
               "--text", str(data_root / "unlabeled"), "--output", str(output), *options]
    log_path = output.parent / "build.log"
    log(f"building vectors: {shlex.join(command[3:])}; log in {log_path}")
    load_before = load_average()
    outcome = run_timed_subprocess(command, log_path, env=subprocess_env())
    if outcome["returncode"] != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"clinical-ner vectors failed (exit {outcome['returncode']}):\n{tail}")
    result = {
        "command": "clinical-ner " + shlex.join(command[3:]),
        **outcome,
        "load_average_start": load_before,
        "load_average_end": load_average(),
        # The command's own summary lines (vocabulary, words, seconds per phase).
        "log_tail": [line for line in log_path.read_text(encoding="utf-8").splitlines()
                     if line and "\r" not in line][-8:],
    }
    log(f"vectors built in {outcome['wall_seconds']:.0f} s")
    return result


def embeddings_of(vector_set: str, data_root: Path, own: Path) -> list[str]:
    glove = str((data_root / benchmark.EMBEDDINGS).resolve())
    return {"glove": [glove], "own": [str(own.resolve())],
            "both": [glove, str(own.resolve())]}[vector_set]


def train_and_score(corpus: str, vector_set: str, data_root: Path, own: Path) -> dict:
    """One model of ``run.py``'s protocol with ``vector_set``; its dev (and test) scores."""
    from clinical_ner.config import NERConfig
    from clinical_ner.formats import load_corpus
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.training.trainer import corpus_sentences

    spec = benchmark.CORPORA[corpus]
    paths = {"train": data_root / spec.train, "dev": data_root / spec.dev}
    if spec.test:
        paths["test"] = data_root / spec.test
    embeddings = embeddings_of(vector_set, data_root, own)
    # One file keeps the string form, exactly the published benchmark's configuration.
    config = NERConfig(embeddings=embeddings[0] if len(embeddings) == 1 else embeddings).to_dict()
    run_dir = WORK_DIR / f"{corpus}-{vector_set}"
    run_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_facts()
    training = benchmark.train_model(spec, paths, config, run_dir)
    ner = KerasAnnotator.load(training["model_dir"])
    accuracy = {}
    for split in ("dev", "test"):
        if split in paths:
            sentences = corpus_sentences(load_corpus(paths[split], spec.format))
            report = benchmark.score(ner, sentences)
            accuracy[split] = {"exact_micro_f1": report["exact"]["micro"]["f1"],
                               "lenient_micro_f1": report["lenient"]["micro"]["f1"],
                               "report": report}
            log(f"{corpus} / {vector_set}: {split} exact micro F1 "
                f"{report['exact']['micro']['f1']:.4f}")
    machine["load_average_end"] = load_average()
    del training["log"]
    return {"corpus": corpus, "set": vector_set, "embeddings": embeddings, "config": config,
            "machine": machine, "training": training, "accuracy": accuracy}


def table(results_dir: Path) -> str:
    """Markdown rows of every result present: corpus, split, F1 per set, epochs, wall time."""
    rows = ["| corpus (split) | GloVe 50-d | in-domain | both (concatenated) |",
            "|---|---|---|---|"]
    for corpus, spec in benchmark.CORPORA.items():
        split = "test" if spec.test else "dev"
        cells = []
        for vector_set in SETS:
            path = results_dir / f"{corpus}-{vector_set}.json"
            if not path.is_file():
                cells.append("not run")
                continue
            result = json.loads(path.read_text(encoding="utf-8"))
            training = result["training"]
            f1 = result["accuracy"][split]["exact_micro_f1"]
            cells.append(f"{f1:.4f} (best epoch {training['best_epoch']} of "
                         f"{training['epochs']}, {training['wall_seconds'] / 60:.1f} min, "
                         f"load {result['machine']['load_average_start'][0]:.1f})")
        rows.append(f"| {corpus} ({split}) | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=benchmark.DEFAULT_DATA_ROOT)
    parser.add_argument("--build-vectors", action="store_true",
                        help="run clinical-ner vectors on <data-root>/unlabeled first")
    parser.add_argument("--vectors-option", action="append", default=[], metavar="ARG",
                        help="an extra argument for clinical-ner vectors (repeatable), "
                             "e.g. --vectors-option=--dim --vectors-option=100")
    parser.add_argument("--own-vectors", type=Path, default=OWN_VECTORS,
                        help="the in-domain vectors file (built or read)")
    parser.add_argument("--corpus", action="append", default=[], choices=list(benchmark.CORPORA))
    parser.add_argument("--set", action="append", default=[], choices=SETS,
                        help="vector set(s) to train with (default: all three)")
    parser.add_argument("--force", action="store_true", help="rerun runs that have a result")
    parser.add_argument("--table", action="store_true", help="print the results table")
    args = parser.parse_args(argv)
    data_root = args.data_root.resolve()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    if args.build_vectors:
        result = build_vectors(data_root, args.own_vectors, args.vectors_option)
        (RESULTS_DIR / "build.json").write_text(json.dumps(result, indent=2) + "\n",
                                                encoding="utf-8")
    failed = False
    for corpus in args.corpus:
        for vector_set in args.set or SETS:
            target = RESULTS_DIR / f"{corpus}-{vector_set}.json"
            if target.is_file() and not args.force:
                log(f"{corpus} / {vector_set}: result exists ({target}), skipped")
                continue
            started = time.perf_counter()
            try:
                result = train_and_score(corpus, vector_set, data_root, args.own_vectors)
            except Exception as error:  # noqa: BLE001 - report and go on with the next run
                log(f"{corpus} / {vector_set}: FAILED: {error}")
                failed = True
                continue
            result["benchmark_seconds"] = round(time.perf_counter() - started, 1)
            target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.table:
        print(table(RESULTS_DIR), end="")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
