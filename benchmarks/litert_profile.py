"""Where a LiteRT export's ``annotate`` spends its time, stage by stage.

    python -m benchmarks.litert_profile --export runs/maccrobat-litert \\
        --data ../shared/data/maccrobat-i2b2/dev --output benchmarks/results/litert-profile.json

Loads the export with one interpreter on one thread (so the stages add up to
the wall time), annotates every ``.txt`` document of ``--data`` together
(``benchmarks.litert_bench``'s batch) ``--repeats`` times after an untimed
run, or with ``--one-sentence N`` each of ``litert_bench``'s N latency
sentences in a call of its own (the one-sentence case), and times each stage
by wrapping the annotator's own parts, so the code measured is the code
users run:

* **tokenize**: ``split_sentences`` (with the text check before it);
* **featurize**: the NumPy featurizer (token ids, distinct spellings);
* **network**: the LiteRT interpreter's invoke, inputs copied in and
  emissions out;
* **CRF**: the NumPy Viterbi and forward-backward;
* **assembly**: the rest (sorting into chunks, entities from tags).

LiteRT's Python API has no per-operator profiler (the interpreter's
profiling options feed only LiteRT's C++ tools), so the network is one line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from benchmarks.bench_util import (
    check_i2b2_folder, check_litert_export, command_line, load_average, machine_facts, output_file,
)
from benchmarks.litert_bench import latency_sentences, read_documents


def timed(function: Callable, totals: dict, name: str) -> Callable:
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - started
    return wrapper


def profile(export: Path, data: Path, repeats: int, one_sentence: int = 0) -> dict:
    """Each stage's time per ``annotate`` call; ``one_sentence``: that many one-sentence calls."""
    from clinical_ner.annotators.litert import annotator as litert_annotator
    from clinical_ner.text.tokenizer import split_sentences

    ner = litert_annotator.LiteRTAnnotator.load(export, num_threads=1, workers=1)
    documents = read_documents(data)
    # What one annotate call gets: all the documents, or one sentence.
    calls = ([[text] for text in latency_sentences(documents, one_sentence)] if one_sentence
             else [documents])
    tokens = sum(len(sentence) for texts in calls for text in texts
                 for sentence in split_sentences(text, ner.config.max_sentence_tokens))
    totals: dict[str, float] = defaultdict(float)
    ner.featurizer = _Wrapped(ner.featurizer, totals, "featurize")
    ner.network = _Wrapped(ner.network, totals, "network")
    ner.crf.decode = timed(ner.crf.decode, totals, "CRF")
    original_split = litert_annotator.split_sentences
    litert_annotator.split_sentences = timed(original_split, totals, "tokenize")
    try:
        for texts in calls:  # untimed: first shapes, featurizer cache
            ner.annotate(texts)
        totals.clear()
        walls = []
        for _ in range(repeats):
            for texts in calls:
                started = time.perf_counter()
                ner.annotate(texts)
                walls.append(time.perf_counter() - started)
    finally:
        litert_annotator.split_sentences = original_split
    wall = sum(walls)
    stages = {name: totals[name] for name in ("tokenize", "featurize", "network", "CRF")}
    stages["assembly"] = wall - sum(stages.values())
    return {
        "export": str(export),
        "tokens": tokens,
        "documents": len(documents),
        "one_sentence_calls": len(calls) if one_sentence else 0,
        "repeats": repeats,
        "tokens_per_second": round(tokens * repeats / wall, 1),
        "stages": {name: {"ms_per_call": round(1000 * seconds / len(walls), 4),
                          "share": round(seconds / wall, 4)}
                   for name, seconds in stages.items()},
    }


class _Wrapped:
    """An object whose call is timed; every other attribute is the object's own."""

    def __init__(self, inner, totals: dict, name: str) -> None:
        self._inner = inner
        self._call = timed(inner.__call__, totals, name)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def table(result: dict) -> str:
    lines = ["| stage | ms per call | share |", "|---|---|---|"]
    for name, stage in result["stages"].items():
        lines.append(f"| {name} | {stage['ms_per_call']:.3f} | {100 * stage['share']:.1f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, required=True, help="a LiteRT export folder")
    parser.add_argument("--data", type=Path, required=True,
                        help="i2b2-layout folder (txt/), e.g. MACCROBAT dev")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one-sentence", type=int, default=0, metavar="N",
                        help="profile N one-sentence calls (litert_bench's latency sample) "
                             "instead of the batch")
    parser.add_argument("--output", type=output_file, help="write the results as JSON here")
    args = parser.parse_args(argv)
    check_litert_export(parser, args.export)
    check_i2b2_folder(parser, args.data)
    load_start = load_average()
    result = profile(args.export, args.data, args.repeats, args.one_sentence)
    result = {"command": command_line("benchmarks.litert_profile", argv),
              "machine": {**machine_facts(), "load_average_start": load_start,
                          "load_average_end": load_average()},
              **result}
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{result['tokens']} tokens, {result['tokens_per_second']:,.0f} tokens/s")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
