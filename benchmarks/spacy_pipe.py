"""The spaCy component's ``nlp.pipe`` against ``Annotator.annotate`` on the same notes.

::

    python -m benchmarks.spacy_pipe --model clinical --data ../shared/data \\
        --output benchmarks/results/spacy-pipe.json

Corpora: the MACCROBAT dev documents (``maccrobat-i2b2/dev/txt``, whole case
reports; one model call's worth of text), the MACCROBAT train and dev
documents (several calls' worth: a stream of long notes) and the first
``--sentences`` BC5CDR dev sentences as notes (tokens joined by spaces). For
each, in one process with a copy of the model per caller (the one
``ClinicalNER.load`` gives and the one each pipeline's component loads):

* ``annotate``: ``ner.annotate(texts)``, one call over all texts (its own
  batching: texts sorted by length, the model's batch sizes);
* ``nlp.pipe``: ``list(nlp.pipe(texts, batch_size=B))`` on ``spacy.blank("en")``
  with only the component, for each ``--pipe-batch-size`` B: spaCy's
  tokenizer, one ``annotate`` call per B docs, and the spans on each Doc;
* ``nlp.pipe, whole batches``: the same with every batch ``B`` docs (the
  component cuts long notes' batches at one model call's characters; this
  ablation does not, as the component did up to commit 2f6f4a3);
* ``nlp.pipe, our tokenizer``: the same with ``clinical_ner.Tokenizer.v1``
  as the pipeline's tokenizer (the Doc's tokens are the model's);
* ``spaCy tokenizer alone`` and ``our tokenizer alone``: each pipeline's
  tokenizer over the texts, the part of its ``nlp.pipe`` time before our
  component (``nlp.pipe`` overlaps it with the model's work on the
  previous batch).

After one untimed run of each, ``--repeats`` rounds each time every variant
once, in turn (so that a change of load on a shared machine hits them
alike); figures are at the median, and the share of ``annotate``'s tokens/s
is also given as the median (and range) of the per-round ratios, each
round's ``annotate`` time over the variant's. "cores busy" is the process's CPU
seconds (all threads) over the wall seconds: what a variant leaves of the
machine for work beside it. Tokens are our tokenizer's
(``clinical_ner.text.tokenizer.split_sentences``), the same count for every
variant. The result file records the CPU, the load average at start and
end, and the versions.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from benchmarks.bench_util import (
    REPO_ROOT,
    command_line,
    conll_notes,
    i2b2_documents,
    load_average,
    log,
    machine_facts,
    output_file,
    read_data,
    summarize_seconds,
    throughput,
    write_json,
)


def corpora(data_root: Path, sentences: int) -> dict[str, list[str]]:
    dev = i2b2_documents(data_root / "maccrobat-i2b2" / "dev")
    train = i2b2_documents(data_root / "maccrobat-i2b2" / "train")
    notes = conll_notes(data_root / "bc5cdr" / "dev.conll")[:sentences]
    return {"maccrobat-dev": dev, "maccrobat-train-dev": train + dev,
            f"bc5cdr-dev-{len(notes)}": notes}


def measure(texts: list[str], variants: dict[str, Callable[[], object]], repeats: int,
            tokens: int) -> dict:
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu_seconds = dict.fromkeys(variants, 0.0)
    for _ in range(repeats):
        for name, run in variants.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - started)
            cpu_seconds[name] += time.process_time() - cpu_started
    # Cores busy on average (CPU seconds of all threads over wall seconds): how
    # much of the machine a variant leaves for work beside it. The share of
    # annotate's tokens/s is also taken round by round (annotate's time over the
    # variant's in the same round), so that a change of load between rounds
    # falls on both sides of each ratio.
    return {name: {**throughput(summarize_seconds(runs), tokens, len(texts)),
                   "cores_busy": round(cpu_seconds[name] / sum(runs), 2),
                   "of_annotate_per_round": _ratio_summary(
                       [base / run for base, run in zip(times["annotate"], runs)])}
            for name, runs in times.items()}


def _ratio_summary(ratios: list[float]) -> dict:
    return {"median": round(statistics.median(ratios), 4), "min": round(min(ratios), 4),
            "max": round(max(ratios), 4)}


def markdown_table(report: dict) -> str:
    lines = ["| notes | tokens | variant | tokens/s, median (best) run | of `annotate`, median "
             "(best) | of `annotate` round by round, median (range) | cores busy |",
             "|---|---|---|---|---|---|---|"]
    for corpus, result in report["corpora"].items():
        base = result["variants"]["annotate"]
        for name, figures in result["variants"].items():
            median, best = figures["tokens_per_second"], figures["tokens_per_second_best"]
            lines.append(
                f"| {corpus} ({result['texts']} texts) | {result['tokens']:,} | {name} | "
                f"{median:,.0f} ({best:,.0f}) | {median / base['tokens_per_second']:.0%} "
                f"({best / base['tokens_per_second_best']:.0%}) | "
                f"{_share(figures['of_annotate_per_round'])} | {figures['cores_busy']} |")
    return "\n".join(lines)


def _share(summary: dict) -> str:
    return f"{summary['median']:.0%} ({summary['min']:.0%}-{summary['max']:.0%})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clinical",
                        help="anything ClinicalNER.load takes (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--sentences", type=int, default=2000,
                        help="BC5CDR dev sentences to use as notes (default: %(default)s)")
    parser.add_argument("--pipe-batch-size", type=int, action="append", dest="pipe_batch_sizes",
                        help="nlp.pipe batch_size; repeatable (default: 1000, spaCy's, and 64)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=output_file)
    args = parser.parse_args(argv)
    pipe_batch_sizes = args.pipe_batch_sizes or [1000, 64]
    notes = read_data(parser, "--data", lambda: corpora(args.data, args.sentences))

    import spacy

    # Registers the factory and the tokenizer even where the installed entry points are stale.
    import clinical_ner.integrations.spacy_component  # noqa: F401
    from clinical_ner.integrations.spacy_tokenizer import REGISTERED_NAME
    from clinical_ner import ClinicalNER
    from clinical_ner.text.tokenizer import split_sentences

    report = {"command": command_line("benchmarks.spacy_pipe", argv),
              "machine": machine_facts(), "model": args.model, "repeats": args.repeats,
              "spacy": spacy.__version__, "corpora": {}}
    ner = ClinicalNER.load(args.model)
    nlp = spacy.blank("en")
    nlp.add_pipe("clinical_ner", config={"model": args.model})
    ours = spacy.blank("en", config={"nlp": {"tokenizer": {"@tokenizers": REGISTERED_NAME}}})
    ours.add_pipe("clinical_ner", config={"model": args.model})
    # The ablation: every batch batch_size docs, as the component cut them up to 2f6f4a3.
    whole = spacy.blank("en")
    whole.add_pipe("clinical_ner", config={"model": args.model})._call_limits = lambda: None
    for corpus, texts in notes.items():
        tokens = sum(len(sentence) for text in texts for sentence in split_sentences(text))
        log(f"{corpus}: {len(texts)} texts, {tokens} tokens")
        variants: dict[str, Callable[[], object]] = {"annotate": lambda: ner.annotate(texts)}
        for size in pipe_batch_sizes:
            variants[f"nlp.pipe, batch_size={size}"] = (
                lambda size=size: list(nlp.pipe(texts, batch_size=size)))
            variants[f"nlp.pipe, whole batches, batch_size={size}"] = (
                lambda size=size: list(whole.pipe(texts, batch_size=size)))
            variants[f"nlp.pipe, our tokenizer, batch_size={size}"] = (
                lambda size=size: list(ours.pipe(texts, batch_size=size)))
        variants["spaCy tokenizer alone"] = lambda: list(nlp.tokenizer.pipe(texts))
        variants["our tokenizer alone"] = lambda: [ours.make_doc(text) for text in texts]
        report["corpora"][corpus] = {"texts": len(texts), "tokens": tokens,
                                     "variants": measure(texts, variants, args.repeats, tokens)}
    report["machine"]["load_average_end"] = load_average()
    table = markdown_table(report)
    print(table)
    print(f"CPU: {report['machine']['cpu_model']}; load average at start "
          f"{report['machine']['load_average_start']}, at end "
          f"{report['machine']['load_average_end']}")
    if args.output:
        write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
