"""Assertion status from the same model, on MACCROBAT (i2b2 layout, with .ast files), against medspaCy ConText.

    python -m benchmarks.assertion_bench --train-variant none --train-variant shared --seed 42
    python -m benchmarks.assertion_bench --context        # the peer, on the same gold concepts
    python -m benchmarks.assertion_bench --throughput shared-seed42 none-seed42
    python -m benchmarks.assertion_bench --table          # the Markdown table of what ran

``--train-variant`` trains ``clinical-ner train --train <data>/maccrobat-i2b2/train --dev
<data>/maccrobat-i2b2/dev --config ... --quiet`` in a subprocess, with the documented default
configuration plus GloVe (as ``benchmarks/run.py``) and the variant's settings:

* ``none``: the same documents without their ``ast/`` folder (no assertions: the tagger alone;
  of the options below only ``-ema<m>`` applies to it);
* ``shared``: assertion output on the tagger's BiLSTM states (``assertion_head: shared``);
* ``lstm``: an assertion BiLSTM of its own (``assertion_head: lstm``, 50 units per direction);
* ``shared-w0.5``, ``shared-w2``, ``lstm-w2`` ...: ``-w<x>`` sets ``assertion_loss_weight``;
* ``lstm-u16`` ...: ``-u<n>`` sets ``assertion_lstm_units`` (default 50);
* ``-detached`` (``lstm-w4-detached``) sets ``assertion_trains_tagger: false``: the
  assertion loss trains the head's own layers only;
* ``-cwsqrt`` and ``-cwbal`` (``shared-cwsqrt``) set ``assertion_class_weights`` to
  ``sqrt-balanced`` and ``balanced``.
* ``-ema<m>`` (``lstm-w4-cwsqrt-cues-ema0.99``) sets ``weights_ema`` to ``m``: the dev
  scores and the kept model are a moving average of the weights;
* ``-cues`` (``lstm-w4-cwsqrt-cues``) sets ``assertion_cue_copies`` to 0.2: a fifth of the
  present training problems get a copy of their sentence with a negation or hedge cue beside
  them (:mod:`clinical_ner.training.assertion_cues`; the dev split is untouched);
  ``-cues<x>`` (``lstm-w4-cwsqrt-cues0.5``) sets that share to ``x``.

It then scores the chosen epoch's model on dev with ``clinical_ner.evaluation.evaluate_sentences``
(what ``clinical-ner evaluate`` prints): NER exact micro F1, and the gold-concept assertion
accuracy, per-class F1 and macro F1, and the end-to-end F1. Results go to
``benchmarks/results/assertions/<variant>-seed<seed>.json``; an existing result is kept
unless ``--force``.

``--context`` runs medspaCy's ConText (``medspacy==1.3.1``, pinned in
``benchmarks/requirements-assertion.txt``, not a dependency of clinical-ner) on every dev
document's text with the gold problem concepts as its targets: negated -> absent, uncertain or
hypothetical -> possible, otherwise present.

``--throughput A B`` times ``annotate`` on the dev documents with the models of two
results in the same process, alternately (``--repeats`` each, after a warm-up), and records
tokens/s at the median.

``--errors MODEL`` lists every dev problem whose assertion ``MODEL`` (anything
``ClinicalNER.load`` takes; the bundled ``clinical`` too) gets wrong, given its gold span,
with the sentence around it (public MACCROBAT text), to
``benchmarks/results/assertions/errors-<name>.txt``.

Every result records the CPU, the load average before and after, and the command.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator

from benchmarks.bench_util import (
    REPO_ROOT, cpu_features, cpu_model, load_average, log, run_timed_subprocess, subprocess_env,
)

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results" / "assertions"
WORK_DIR = REPO_ROOT / "benchmarks" / "work" / "assertions"
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
EMBEDDINGS = "embeddings/glove.6B.50d.pruned.txt"
CORPUS = "maccrobat-i2b2"
CLASS_WEIGHT_OPTIONS = {"cwsqrt": "sqrt-balanced", "cwbal": "balanced"}


# The share of present training problems whose sentence gets a cued copy with ``-cues``.
CUE_SHARE = 0.2


def variant_settings(variant: str) -> dict:
    """The NERConfig settings of a variant name (see the module docstring)."""
    head, *options = variant.split("-")
    if head not in ("none", "shared", "lstm"):
        raise SystemExit(f"unknown variant {variant!r}")
    settings: dict = {} if head == "none" else {"assertion_head": head}
    for option in options:
        if option == "cues":
            settings["assertion_cue_copies"] = CUE_SHARE
        elif option[:4] == "cues" and option[4:].replace(".", "", 1).isdigit():
            settings["assertion_cue_copies"] = float(option[4:])
        elif option[:3] == "ema" and option[3:].replace(".", "", 1).isdigit():
            settings["weights_ema"] = float(option[3:])
        elif option == "detached":
            settings["assertion_trains_tagger"] = False
        elif option in CLASS_WEIGHT_OPTIONS:
            settings["assertion_class_weights"] = CLASS_WEIGHT_OPTIONS[option]
        elif option[:1] == "w" and option[1:].replace(".", "", 1).isdigit():
            settings["assertion_loss_weight"] = float(option[1:])
        elif option[:1] == "u" and option[1:].isdigit() and head == "lstm":
            settings["assertion_lstm_units"] = int(option[1:])
        else:
            raise SystemExit(f"unknown variant {variant!r}")
    if head == "none" and set(settings) - {"weights_ema"}:
        raise SystemExit(f"unknown variant {variant!r}: the tagger alone takes only -ema<m>")
    return settings


def data_without_assertions(data_root: Path) -> Path:
    """The train and dev folders with txt/ and concept/ only (links), for the ``none`` variant."""
    root = WORK_DIR / "no-assertions"
    for split in ("train", "dev"):
        for sub in ("txt", "concept"):
            link = root / split / sub
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to((data_root / CORPUS / split / sub).resolve())
    return root


def train_variant(variant: str, seed: int, data_root: Path, force: bool,
                  results_dir: Path = RESULTS_DIR) -> dict:
    from clinical_ner.config import NERConfig

    result_path = results_dir / f"{variant}-seed{seed}.json"
    if result_path.exists() and not force:
        log(f"{result_path} exists; skipped (--force to rerun)")
        return json.loads(result_path.read_text())
    settings = variant_settings(variant)
    tagger_alone = "assertion_head" not in settings
    data = data_without_assertions(data_root) if tagger_alone else data_root / CORPUS
    run_dir = WORK_DIR / f"{variant}-seed{seed}"
    if run_dir.exists():
        import shutil
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    config = NERConfig(embeddings=str((data_root / EMBEDDINGS).resolve()), seed=seed,
                       **settings)
    config_file = run_dir / "config.json"
    config_file.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    model_dir = run_dir / "model"
    command = [sys.executable, "-m", "clinical_ner.cli", "train", "--train", str(data / "train"),
               "--dev", str(data / "dev"), "--output", str(model_dir), "--config",
               str(config_file), "--quiet"]
    load_before = load_average()
    log(f"training {variant} seed {seed}; log in {run_dir / 'train.log'}")
    outcome = run_timed_subprocess(command, run_dir / "train.log", env=subprocess_env())
    if outcome["returncode"] != 0:
        raise SystemExit(f"training failed:\n{(run_dir / 'train.log').read_text()[-3000:]}")
    history = [json.loads(line) for line in
               (model_dir / "training_log.jsonl").read_text().splitlines() if line.strip()]
    best = max(history, key=lambda entry: entry["dev_f1"])
    result = {
        "variant": variant, "seed": seed, "settings": settings,
        "command": "clinical-ner train " + shlex.join(command[4:]),
        "model_dir": str(model_dir.relative_to(REPO_ROOT)),
        "best_epoch": best["epoch"], "epochs_run": len(history),
        "train_wall_seconds": outcome["wall_seconds"],
        "dev": score_model(model_dir, data_root),
        "cpu": cpu_model(), "cpu_features": cpu_features(), "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"{variant} seed {seed}: {summary(result)}")
    return result


def score_model(model_dir: Path, data_root: Path) -> dict:
    """NER and assertion scores of a model on MACCROBAT dev (with its assertions)."""
    from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences
    from clinical_ner.formats import load_corpus
    from clinical_ner.annotators.keras_annotator import KerasAnnotator

    ner = KerasAnnotator.load(model_dir)
    report = evaluate_sentences(ner, corpus_sentences(load_corpus(data_root / CORPUS / "dev")))
    scores = {"ner_exact_f1": report["exact"]["micro"]["f1"],
              "ner_per_label_f1": {label: values["f1"] for label, values
                                   in report["exact"]["per_label"].items()}}
    if "assertion" in report:
        scores.update(assertion_scores(report["assertion"]["gold_concepts"]))
        scores["end_to_end_f1"] = report["assertion"]["end_to_end"]["f1"]
        scores["assertion_report"] = report["assertion"]
    return scores


def assertion_scores(gold_concepts: dict) -> dict:
    per_class = gold_concepts["per_class"]
    return {"assertion_accuracy": gold_concepts["accuracy"],
            "absent_f1": per_class.get("absent", {}).get("f1", 0.0),
            "possible_f1": per_class.get("possible", {}).get("f1", 0.0),
            "assertion_macro_f1": gold_concepts["macro_f1"]}


def summary(result: dict) -> str:
    dev = result["dev"]
    text = f"NER F1 {dev['ner_exact_f1']:.4f}"
    if "assertion_accuracy" in dev:
        text += (f", assertion acc {dev['assertion_accuracy']:.4f}, absent F1 "
                 f"{dev['absent_f1']:.4f}, possible F1 {dev['possible_f1']:.4f}")
    return text


def dev_problems(data_root: Path) -> Iterator[tuple[str, list[tuple[int, int]], list[str]]]:
    """Each dev sentence with gold problems: its text (tokens joined), their spans, their classes."""
    from clinical_ner.evaluation.evaluate import gold_problem_assertions, joined_text_and_spans
    from clinical_ner.formats import load_corpus
    from clinical_ner.text.tags import tags_to_mentions

    for document in load_corpus(data_root / CORPUS / "dev").documents:
        for sentence in document.sentences:
            pairs = gold_problem_assertions(sentence, tags_to_mentions(sentence.tags))
            if pairs:
                text, spans = joined_text_and_spans(sentence.tokens, [m for m, _ in pairs])
                yield text, spans, [assertion for _, assertion in pairs]


# -- the peer: medspaCy ConText ---------------------------------------------------------

def context_peer(data_root: Path, results_dir: Path = RESULTS_DIR) -> dict:
    """medspaCy ConText on the dev gold problems (targets given, as the i2b2 task 2 protocol)."""
    import medspacy

    from clinical_ner.evaluation.scorer import score_assertions

    started = time.perf_counter()
    load_before = load_average()
    # One sentence (one line of the i2b2 text) per doc: ConText's scope ends at the
    # sentence anyway, and PyRuSH's splitting of these lines only loses sentences.
    nlp = medspacy.load(enable=["medspacy_context"])
    context = nlp.get_pipe("medspacy_context")
    gold, predicted = [], []
    for text, spans, classes in dev_problems(data_root):
        doc = nlp.make_doc(text)
        for token in doc:
            token.is_sent_start = token.i == 0
        doc.ents = [doc.char_span(start, end, label="PROBLEM", alignment_mode="expand")
                    for start, end in spans]
        doc = context(doc)
        for ent, gold_class in zip(doc.ents, classes):
            if ent._.is_negated:
                answer = "absent"
            elif ent._.is_uncertain or ent._.is_hypothetical:
                answer = "possible"
            else:
                answer = "present"
            gold.append(gold_class)
            predicted.append(answer)
    scores = score_assertions(gold, predicted)
    result = {
        "peer": f"medspaCy {medspacy.__version__} ConText",
        "command": "python -m benchmarks.assertion_bench --context",
        "mapping": "negated -> absent; uncertain or hypothetical -> possible; else present",
        "dev": {**assertion_scores(scores), "assertion_report": {"gold_concepts": scores}},
        "seconds": round(time.perf_counter() - started, 1),
        "cpu": cpu_model(), "cpu_features": cpu_features(), "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "context.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"ConText: acc {scores['accuracy']:.4f}, absent F1 {result['dev']['absent_f1']:.4f}, "
        f"possible F1 {result['dev']['possible_f1']:.4f}")
    return result


# -- throughput ------------------------------------------------------------------------

def throughput(names: list[str], data_root: Path, repeats: int,
               results_dir: Path = RESULTS_DIR) -> dict:
    """``annotate`` tokens/s of the models of results ``names``, alternately in one process."""
    from clinical_ner.formats import load_corpus
    from clinical_ner.annotators.keras_annotator import KerasAnnotator

    corpus = load_corpus(data_root / CORPUS / "dev")
    texts = [document.text for document in corpus.documents]
    tokens = sum(len(s.tokens) for d in corpus.documents for s in d.sentences)
    models = {}
    for name in names:
        result = json.loads((results_dir / f"{name}.json").read_text())
        models[name] = KerasAnnotator.load(REPO_ROOT / result["model_dir"])
        models[name].annotate(texts)  # warm-up: traces the graph
    load_before = load_average()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            started = time.perf_counter()
            models[name].annotate(texts)
            seconds[name].append(time.perf_counter() - started)
    result = {
        "command": f"python -m benchmarks.assertion_bench --throughput {' '.join(names)} "
                   f"--repeats {repeats}",
        "documents": len(texts), "tokens": tokens,
        "tokens_per_second": {name: round(tokens / statistics.median(runs), 1)
                              for name, runs in seconds.items()},
        "seconds": {name: [round(value, 4) for value in runs] for name, runs in seconds.items()},
        "cpu": cpu_model(), "cpu_features": cpu_features(), "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"annotate tokens/s: {result['tokens_per_second']}")
    return result


# -- errors ----------------------------------------------------------------------------

def errors(model: str, data_root: Path, results_dir: Path = RESULTS_DIR) -> Path:
    """Write the dev problems whose assertion ``model`` misses, one line each, with context."""
    from collections import Counter

    from clinical_ner import ClinicalNER

    ner = ClinicalNER.load(model)
    problems = list(dev_problems(data_root))
    # One batched call, as clinical-ner evaluate classifies them.
    answered = ner.classify_assertions([text for text, _, _ in problems],
                                       [spans for _, spans, _ in problems])
    confusion: Counter = Counter()
    lines = []
    for (text, spans, classes), answers in zip(problems, answered):
        for (start, end), gold, (answer, confidence) in zip(spans, classes, answers):
            confusion[(gold, answer)] += 1
            if answer != gold:
                lines.append(f"{gold:>8} -> {answer:<8} {confidence:.2f} | "
                             f"{text[max(0, start - 80):start]}[[{text[start:end]}]]"
                             f"{text[end:end + 60]}")
    total = sum(confusion.values())
    header = [f"# python -m benchmarks.assertion_bench --errors {model}",
              f"# {len(lines)} of {total} dev problems wrong (gold -> answer, confidence)",
              "# confusion: " + ", ".join(f"{gold}->{answer} {count}" for (gold, answer), count
                                          in sorted(confusion.items()))]
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"errors-{Path(model).name}.txt"
    path.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    log(f"{len(lines)} of {total} wrong: {path}")
    return path


# -- the table -------------------------------------------------------------------------

def table(results_dir: Path = RESULTS_DIR) -> str:
    rows = ["| run | NER exact F1 | assertion accuracy | absent F1 | possible F1 | macro F1 "
            "| end-to-end F1 | best epoch |",
            "|---|---|---|---|---|---|---|---|"]

    def cell(values: dict, key: str) -> str:
        return f"{values[key]:.4f}" if key in values else "-"

    for path in sorted(results_dir.glob("*-seed*.json")):
        result = json.loads(path.read_text())
        dev = result["dev"]
        rows.append(f"| {path.stem} | {cell(dev, 'ner_exact_f1')} | "
                    f"{cell(dev, 'assertion_accuracy')} | {cell(dev, 'absent_f1')} | "
                    f"{cell(dev, 'possible_f1')} | {cell(dev, 'assertion_macro_f1')} | "
                    f"{cell(dev, 'end_to_end_f1')} | {result['best_epoch']} |")
    context = results_dir / "context.json"
    if context.exists():
        dev = json.loads(context.read_text())["dev"]
        rows.append(f"| medspaCy ConText (peer) | - | {cell(dev, 'assertion_accuracy')} | "
                    f"{cell(dev, 'absent_f1')} | {cell(dev, 'possible_f1')} | "
                    f"{cell(dev, 'assertion_macro_f1')} | - | - |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--train-variant", action="append", default=[])
    parser.add_argument("--seed", type=int, action="append")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--context", action="store_true")
    parser.add_argument("--throughput", nargs="+", metavar="RESULT")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--errors", metavar="MODEL")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="where result files are written and read (default: "
                             "benchmarks/results/assertions; another host's runs go beside it)")
    args = parser.parse_args(argv)
    if args.table and not args.results_dir.is_dir():
        # Else a mistyped folder prints an empty table, as if no run had been made.
        parser.error(f"--results-dir {args.results_dir}: no such folder (--table reads one)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for seed in args.seed or [42]:
        for variant in args.train_variant:
            train_variant(variant, seed, args.data_root, args.force, args.results_dir)
    if args.context:
        context_peer(args.data_root, args.results_dir)
    if args.throughput:
        throughput(args.throughput, args.data_root, args.repeats, args.results_dir)
    if args.table:
        print(table(args.results_dir))
    if args.errors:
        errors(args.errors, args.data_root, args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
