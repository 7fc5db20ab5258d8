"""Targets from the benchmarks issue, and the results tables of benchmarks/README.md.

``python -m benchmarks.run --readme-only`` calls :func:`update_readme`, which
replaces the text between ``<!-- benchmarks:start -->`` and
``<!-- benchmarks:end -->`` in benchmarks/README.md with tables built from every
``benchmarks/results/<corpus>.json`` (full runs; ``quick-*.json`` are left out).
"""
from __future__ import annotations

import json
import math
import operator
from pathlib import Path

from benchmarks.corpora import CORPORA

# The layout of benchmarks/results/<corpus>.json that run.py writes and render_tables reads.
SCHEMA_VERSION = 1
START_MARKER = "<!-- benchmarks:start -->"
END_MARKER = "<!-- benchmarks:end -->"
CORPUS_ORDER = tuple(CORPORA)
# corpus -> (split, exact micro F1 at least)
ACCURACY_TARGETS = {
    name: spec.accuracy_target for name, spec in CORPORA.items() if spec.accuracy_target
}
# (key, description, path of the value in the result JSON, comparison, threshold)
SPEED_TARGETS = [
    ("training_tokens_per_second", "training tokens/s", ("training", "tokens_per_second_median"),
     ">=", 20_000),
    ("in_process_tokens_per_second", "in-process annotate tokens/s",
     ("inference", "in_process", "tokens_per_second"), ">=", 150_000),
    ("grpc_c8_tokens_per_second", "gRPC tokens/s at concurrency 8",
     ("inference", "grpc_c8", "tokens_per_second"), ">=", 50_000),
    ("in_process_p50_ms", "in-process single-sentence p50 (ms)",
     ("latency", "in_process", "p50_ms"), "<=", 1.0),
    ("grpc_p50_ms", "gRPC single-sentence p50 (ms)", ("latency", "grpc", "p50_ms"), "<=", 3.0),
    ("serving_peak_rss_mb", "serving process peak RSS (MB)", ("serving", "peak_rss_mb"), "<=", 800),
]
_OPS = {">=": operator.ge, "<=": operator.le}


def _get(result: dict, path: tuple[str, ...]):
    value = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def evaluate_targets(result: dict) -> list[dict]:
    """Each target of the issue with the measured value and whether it is met."""
    checks = []
    accuracy = ACCURACY_TARGETS.get(result["corpus"])
    if accuracy is not None:
        split, threshold = accuracy
        candidates = [(f"{split}_exact_micro_f1", f"{split} exact micro F1",
                       ("accuracy", split, "exact", "micro", "f1"))]
        if split == "test" and result.get("refit"):
            candidates.append(("test_refit_exact_micro_f1",
                               "test exact micro F1, model refit on train + dev",
                               ("refit", "test", "exact", "micro", "f1")))
        for key, description, path in candidates:
            value = _get(result, path)
            checks.append({"key": key, "description": description, "value": value, "op": ">=",
                           "target": threshold,
                           "met": None if value is None else value >= threshold})
    for key, description, path, op, threshold in SPEED_TARGETS:
        value = _get(result, path)
        checks.append({"key": key, "description": description, "value": value, "op": op,
                       "target": threshold,
                       "met": None if value is None else bool(_OPS[op](value, threshold))})
    return checks


# -- rendering ---------------------------------------------------------------------

# Cells are cut towards "worse", never rounded: a figure that misses its target
# must not print as one that meets it (19,957.6 tokens/s rounded is "20.0k",
# next to a target of 20k). Scores and speeds are cut down, times and
# memory up.

def _cut(value: float, digits: int, up: bool) -> str:
    scale = 10 ** digits
    # The small tolerance keeps float noise (0.1 + 0.2) from moving a cut.
    scaled = value * scale
    cut = math.ceil(scaled - 1e-9) if up else math.floor(scaled + 1e-9)
    return f"{cut / scale:.{digits}f}"


def _f(value, digits: int = 3) -> str:
    """A score (or any figure where more is better), cut down."""
    return "–" if value is None else _cut(value, digits, up=False)


def _k(value) -> str:
    """Tokens/s in thousands with one decimal (19.9k), cut down."""
    return "–" if value is None else _cut(value / 1000, 1, up=False) + "k"


def _ms(value) -> str:
    """Milliseconds, cut up: 2 decimals under 1 ms, 1 under 100, none above."""
    if value is None:
        return "–"
    return _cut(value, 2 if value < 1 else 1 if value < 100 else 0, up=True)


def _up(value, digits: int) -> str:
    """Seconds or megabytes (less is better), cut up."""
    return "–" if value is None else _cut(value, digits, up=True)


def load_results(results_dir: Path) -> list[dict]:
    """Full-run results (``<corpus>.json``, not ``quick-*.json``) in the usual corpus order."""
    results = []
    for path in sorted(results_dir.glob("*.json")):
        if path.name.startswith("quick-"):
            continue
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SystemExit(f"{path}: line {error.lineno}: not JSON ({error.msg})") from None
        if path.stem not in CORPORA and result.get("mode") != "full":
            continue  # another harness's result file (litert.json, batch.json, ...)
        if result.get("schema_version") != SCHEMA_VERSION:
            # An older layout lacks figures the tables read: stop before writing any.
            raise SystemExit(
                f"{path}: schema_version {result.get('schema_version')}, this version reads "
                f"{SCHEMA_VERSION}; rerun that corpus with `python -m benchmarks.run --corpus "
                f"{result.get('corpus', path.stem)}` or move the file out of the folder")
        if result.get("mode") == "full":
            results.append(result)
    order = {name: index for index, name in enumerate(CORPUS_ORDER)}
    return sorted(results, key=lambda r: (order.get(r["corpus"], len(order)), r["corpus"]))


def _provenance(results: list[dict]) -> list[str]:
    """One line per distinct (command, machine, commit): what produced the rows."""
    groups: dict[tuple, list[str]] = {}
    for result in results:
        machine = result["machine"]
        key = (result["command"], machine.get("cpu_model"), machine.get("cpu_count"),
               machine.get("tensorflow"), machine.get("keras"), machine.get("python"),
               (machine.get("git_commit") or "?")[:10] + ("+changes" if machine.get("git_dirty") else ""),
               machine.get("date", "")[:10])
        groups.setdefault(key, []).append(result["corpus"])
    lines = []
    for (command, cpu, cores, tf, keras, python, commit, date), corpora in groups.items():
        lines.append(
            f"{', '.join(corpora)}: `{command}` on {cores} cores ({cpu}), TF {tf}, Keras {keras}, "
            f"Python {python}, commit {commit}, {date}.")
    return lines


INTRO = ("Generated by `python -m benchmarks.run` from `benchmarks/results/<corpus>.json`; "
         "do not edit by hand. What each figure means, how it is measured and the targets: "
         "the sections below. Figures are cut, not rounded, "
         "towards worse (scores and speeds down, times and memory up), so that none reads "
         "as meeting a target it misses.\n")


def render_tables(results: list[dict]) -> str:
    if not results:
        return (INTRO + "\nNo full benchmark results yet: run `python -m benchmarks.run --all` "
                "on a quiet machine.\n")
    out = [INTRO]
    out.append("### Accuracy\n")
    out.append("Entity-level micro scores of the best epoch by dev exact F1. *Exact*: same "
               "tokens and label; *lenient*: overlapping span, same label. Where there is a "
               "test split, *refit* is a second model trained on train and dev together for "
               "the best epoch count, as BC5CDR results are often published; with no dev left "
               "to choose by, only test scores it.\n")
    out.append("| corpus | split | exact P | exact R | exact F1 | lenient F1 | per-label exact F1 "
               "| target |")
    out.append("|---|---|---|---|---|---|---|---|")
    for result in results:
        target = ACCURACY_TARGETS.get(result["corpus"])
        rows = [(split, split, scores) for split, scores in result["accuracy"].items()]
        if result.get("refit"):
            epochs = result["refit"]["epochs"]
            rows.append(("test", f"test, refit on train + dev ({epochs} "
                                 f"epoch{'' if epochs == 1 else 's'})", result["refit"]["test"]))
        for split, name, scores in rows:
            micro, lenient = scores["exact"]["micro"], scores["lenient"]["micro"]
            per_label = ", ".join(f"{label} {_f(values['f1'])}"
                                  for label, values in sorted(scores["exact"]["per_label"].items()))
            if target and target[0] == split:
                goal = f"≥ {target[1]:.2f}"
            elif result["corpus"] == "maccrobat" and split == "dev":
                goal = "best"
            else:
                goal = ""
            out.append(f"| {result['corpus']} | {name} | {_f(micro['precision'])} | "
                       f"{_f(micro['recall'])} | **{_f(micro['f1'])}** | {_f(lenient['f1'])} | "
                       f"{per_label} | {goal} |")
    out.append("")
    out.append("### Speed\n")
    out.append("Median of several timed runs after a warm-up. Throughput counts the tokens of our "
               "tokenizer; documents are dev sentences joined by spaces (BC5CDR, NCBI) or the "
               "dev case reports (MACCROBAT). gRPC goes through `ServingClient` to "
               "`clinical-ner serve` on the same machine (client and server share the cores).\n")
    out.append("| corpus | training tokens/s | s/epoch | epochs (best) | training wall s "
               "| in-process tokens/s (docs/s) | SavedModel tokens/s | gRPC c=1 tokens/s "
               "| gRPC c=8 tokens/s |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    out.append("| *target* | ≥ 20k | | | | ≥ 150k | | | ≥ 50k |")
    for result in results:
        training, inference = result["training"], result["inference"]
        out.append(
            f"| {result['corpus']} | {_k(training.get('tokens_per_second_median'))} | "
            f"{_up(training.get('seconds_per_epoch_median'), 1)} | {training.get('epochs')} "
            f"({training.get('best_epoch')}) | {_up(training.get('wall_seconds'), 0)} | "
            f"{_k(inference['in_process']['tokens_per_second'])} "
            f"({_f(inference['in_process']['documents_per_second'], 0)}) | "
            f"{_k(inference['saved_model']['tokens_per_second'])} | "
            f"{_k(inference['grpc_c1']['tokens_per_second'])} | "
            f"{_k(inference['grpc_c8']['tokens_per_second'])} |")
    out.append("")
    out.append("| corpus | in-process p50 / p99 ms | gRPC p50 / p99 ms | serving peak RSS MB "
               "| SavedModel MB | .keras MB | import → first prediction s |")
    out.append("|---|---|---|---|---|---|---|")
    out.append("| *target* | ≤ 1 (p50) | ≤ 3 (p50) | ≤ 800 | | | |")
    for result in results:
        latency, model = result["latency"], result["model"]
        out.append(
            f"| {result['corpus']} | {_ms(latency['in_process']['p50_ms'])} / "
            f"{_ms(latency['in_process']['p99_ms'])} | {_ms(latency['grpc']['p50_ms'])} / "
            f"{_ms(latency['grpc']['p99_ms'])} | {_up(result['serving']['peak_rss_mb'], 0)} | "
            f"{_up(model['saved_model_bytes'] / 2**20, 1)} | {_up(model['keras_bytes'] / 2**20, 1)} | "
            f"{_up(result['startup']['import_to_first_prediction_seconds']['median'], 1)} |")
    out.append("")
    out.append("Produced by:\n")
    out.extend(f"- {line}" for line in _provenance(results))
    out.append("")
    return "\n".join(out)


def update_readme(readme: Path, results_dir: Path) -> bool:
    """Replace the text between the markers; False (README untouched) if they are missing."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        return False
    body = render_tables(load_results(results_dir))
    new = text[:start + len(START_MARKER)] + "\n" + body + text[end:]
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return True
