"""One model from MACCROBAT + BC5CDR + NCBI-disease: does it beat MACCROBAT alone?

    python -m benchmarks.multi_corpus                          # seeds 1 2 3, every run
    python -m benchmarks.multi_corpus --seeds 1 --epochs 25 --patience 4
    python -m benchmarks.multi_corpus --runs maccrobat marginal concat --seeds 2 3

Runs (each ``clinical_ner.training.trainer.train`` with the default configuration and the GloVe
50d vectors of the bundled model, the given seed, ``--epochs``/``--patience``):

* ``maccrobat``: MACCROBAT train alone, epoch chosen on MACCROBAT dev;
* ``concat``: MACCROBAT + BC5CDR (Disease -> problem, Chemical -> treatment) + NCBI
  (Disease -> problem), every label declared *complete*: unlabelled types are ``O``
  (plain concatenation, with the corpus weights below);
* ``marginal``: the same corpora as in ``training/configs/public-corpora.toml``
  (BC5CDR problem/treatment partial, test none; NCBI problem partial): marginal
  likelihood over the allowed tags;
* ``bc5cdr``, ``ncbi``: each corpus alone, native labels, epoch chosen on its own dev;
* ``marginal-no-chemicals``: as ``marginal`` but BC5CDR's chemicals dropped
  (``Chemical = ""``, treatment ``none``): are its chemicals treatments enough to help?
* ``marginal-light``: as ``marginal`` with BC5CDR and NCBI drawn at weight 0.15 instead of
  0.5 (about 680 BC5CDR and 810 NCBI sentences an epoch beside MACCROBAT's 3,349): does
  less abstract text hurt MACCROBAT less?
* ``marginal-disjoint``: Greenberg et al.'s own setting: each corpus's mapped labels
  *complete* (BC5CDR problem and treatment, NCBI problem), the others *none* (unknown): an
  unmarked abstract token may be a test (or, in NCBI, a treatment) but not a problem.
* ``marginal-disjoint-light``: ``marginal-disjoint`` with BC5CDR and NCBI at weight 0.15,
  the two settings that cost MACCROBAT least, together.
* ``marginal-disjoint-light-then-maccrobat``: the ``marginal-disjoint-light`` model of the
  same seed (trained first if ``--work`` lacks it), fine-tuned on MACCROBAT train alone
  (``init_from``), epoch chosen on MACCROBAT dev: does a last pass on the target style
  keep what the abstracts taught and drop what they mis-taught?
* ``marginal-disjoint-all``: ``marginal-disjoint`` with every corpus drawn whole each epoch
  (weight 1) and the epoch chosen on the mean exact F1 of the three dev sets (MACCROBAT,
  BC5CDR, NCBI) instead of MACCROBAT's alone: one general model for every style, as the
  issue asks of the joint model on the disease corpora too.
* ``marginal-disjoint-all-m3``: ``marginal-disjoint-all`` with MACCROBAT drawn three times
  an epoch (weight 3: about 240k tokens of case reports against the abstracts' 254k), so
  that the clinical style weighs as much as the abstracts in the loss.
* ``marginal-disjoint-all-then-maccrobat``: the ``marginal-disjoint-all`` model fine-tuned
  on MACCROBAT train alone, as ``marginal-disjoint-light-then-maccrobat`` is.
* ``pseudo``: self-training, the issue's "pseudo-labels from the unlabelled text": the
  ``marginal-disjoint-light-then-maccrobat`` model of the same seed (the teacher; trained
  first if ``--work`` lacks it) tags the first ``PSEUDO_SENTENCES`` sentences of 6 to 60 tokens
  of a seeded sample of ``../shared/data/unlabeled``'s clinical-style files
  (``PSEUDO_SOURCES``: MedQuAD's answers, EBM-NLP's trial abstracts, PubMedQA's contexts,
  OnSIDES' drug-label sections); a sentence is kept when it has an entity and every token's
  tag marginal is at least ``PSEUDO_MIN_CONFIDENCE``, and its tags become a fourth corpus
  (every label *complete*, all of it every epoch) beside ``marginal-disjoint-light``'s three;
* ``pseudo-then-maccrobat``: the ``pseudo`` model fine-tuned on MACCROBAT train alone, as
  ``marginal-disjoint-light-then-maccrobat`` is.

Joint runs draw half of BC5CDR's and NCBI's sentences per epoch (weight 0.5) unless said
above, and choose the epoch on MACCROBAT dev alone (the other dev sets are not scored during
training, to save time) except ``marginal-disjoint-all``. Every model is then scored: MACCROBAT dev exact micro F1 (all labels), BC5CDR
test and NCBI dev exact F1 of diseases only (``problem`` for the joint models). NCBI dev chose
the ``ncbi`` model's epoch, so that model's NCBI dev figure is slightly optimistic.

Results go to ``benchmarks/results/multi_corpus.json`` after every run (a run already
there for its seed is skipped, so an interrupted benchmark continues).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from benchmarks.bench_util import cpu_features, cpu_model, load_average

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT.parent / "shared" / "data"
EMBEDDINGS = DATA / "embeddings" / "glove.6B.50d.pruned.txt"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "multi_corpus.json"
RUNS = ("maccrobat", "marginal", "concat", "bc5cdr", "ncbi", "marginal-no-chemicals",
        "marginal-disjoint", "marginal-light", "marginal-disjoint-light",
        "marginal-disjoint-light-then-maccrobat", "marginal-disjoint-all",
        "marginal-disjoint-all-then-maccrobat", "marginal-disjoint-all-m3", "pseudo",
        "pseudo-then-maccrobat")
# A run that fine-tunes another run's model of the same seed: the run it starts from.
FINE_TUNED_FROM = {"marginal-disjoint-light-then-maccrobat": "marginal-disjoint-light",
                   "marginal-disjoint-all-then-maccrobat": "marginal-disjoint-all",
                   "pseudo-then-maccrobat": "pseudo"}
# The pseudo run's teacher, its text and what it keeps.
PSEUDO_TEACHER = "marginal-disjoint-light-then-maccrobat"
PSEUDO_SOURCES = ("medquad", "ebmnlp", "pubmedqa", "onsides")
PSEUDO_SENTENCES = 60_000
PSEUDO_MIN_CONFIDENCE = 0.9
PSEUDO_TEXT_SEED = 2026
JOINT_WEIGHT = 0.5
LIGHT_WEIGHT = 0.15

# (corpus name, split path, label map, labels scored) of each score.
SCORES = {
    "maccrobat_dev": ("maccrobat/dev.conll", None, None),
    "bc5cdr_test_disease": ("bc5cdr/test.conll", {"Disease": "problem"}, ["problem"]),
    "ncbi_dev_disease": ("ncbi-disease/dev.conll", {"Disease": "problem"}, ["problem"]),
}


def corpus_file(folder: Path, partial: bool, chemicals: bool = True,
                mapped: str = "partial", weight: float = JOINT_WEIGHT,
                pseudo: Path | None = None, select_all: bool = False,
                maccrobat_weight: float = 1.0) -> Path:
    """The joint corpus file: ``partial`` coverages (marginal) or everything complete (concat).

    ``mapped`` is the coverage of the labels a corpus maps onto when ``partial``;
    ``weight`` is BC5CDR's and NCBI's sampling weight; ``pseudo``, a CoNLL file of
    pseudo-labelled sentences, is added as a fourth corpus, every label complete, all of
    its sentences every epoch; ``select_all`` scores BC5CDR's and NCBI's dev sets too and
    chooses the epoch on the mean of the three; ``maccrobat_weight`` is MACCROBAT's sampling
    weight.
    """
    chemical_target, treatment = ("treatment", mapped) if chemicals else ("", "none")
    coverage = {
        "bc5cdr": f'{{ problem = "{mapped}", treatment = "{treatment}", test = "none" }}'
        if partial else '{ problem = "complete", treatment = "complete", test = "complete" }',
        "ncbi": f'{{ problem = "{mapped}", test = "none", treatment = "none" }}' if partial
        else '{ problem = "complete", test = "complete", treatment = "complete" }',
    }
    select = ("{ maccrobat = 1.0, bc5cdr = 1.0, ncbi = 1.0 }" if select_all
              else "{ maccrobat = 1.0 }")
    dev = {name: f'dev = "{DATA / path}"\n' if select_all else ""
           for name, path in (("bc5cdr", "bc5cdr/dev.conll"), ("ncbi", "ncbi-disease/dev.conll"))}
    text = f'''labels = ["problem", "test", "treatment"]
select = {select}

[[corpus]]
name = "maccrobat"
train = "{DATA / 'maccrobat/train.conll'}"
dev = "{DATA / 'maccrobat/dev.conll'}"
format = "conll"
{"" if maccrobat_weight == 1.0 else f"weight = {maccrobat_weight}"}
[[corpus]]
name = "bc5cdr"
train = "{DATA / 'bc5cdr/train.conll'}"
{dev["bc5cdr"]}format = "conll"
weight = {weight}
label_map = {{ Disease = "problem", Chemical = "{chemical_target}" }}
coverage = {coverage["bc5cdr"]}

[[corpus]]
name = "ncbi"
train = "{DATA / 'ncbi-disease/train.conll'}"
{dev["ncbi"]}format = "conll"
weight = {weight}
label_map = {{ Disease = "problem" }}
coverage = {coverage["ncbi"]}
'''
    if pseudo is not None:
        text += f'''
[[corpus]]
name = "pseudo"
train = "{pseudo}"
format = "conll"
coverage = {{ problem = "complete", test = "complete", treatment = "complete" }}
'''
    path = folder / (("marginal" if partial else "concat") + ("" if chemicals else
                     "-no-chemicals") + ("" if mapped == "partial" else f"-{mapped}")
                     + ("" if weight == JOINT_WEIGHT else f"-w{weight}")
                     + ("" if pseudo is None else f"-{pseudo.stem}")
                     + ("-select-all" if select_all else "")
                     + ("" if maccrobat_weight == 1.0 else f"-m{maccrobat_weight}") + ".toml")
    path.write_text(text, encoding="utf-8")
    return path


def pseudo_label_file(work: Path, seed: int, epochs: int, patience: int) -> tuple[Path, dict]:
    """The pseudo run's fourth corpus (CoNLL, IOB2) from the seed's teacher, and what it holds."""
    import lzma
    import random

    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.formats.conll import write_conll
    from clinical_ner.text.document import Document, Sentence
    from clinical_ner.text.tokenizer import split_sentences

    teacher = work / f"{PSEUDO_TEACHER}-seed{seed}"
    if not (teacher / "model.keras").is_file():
        train_run(PSEUDO_TEACHER, seed, epochs, patience, work)
    lines: list[str] = []
    for source in PSEUDO_SOURCES:
        with lzma.open(DATA / "unlabeled" / f"{source}.txt.xz", "rt", encoding="utf-8") as handle:
            lines += handle.read().splitlines()
    random.Random(PSEUDO_TEXT_SEED).shuffle(lines)
    sentences: list[list[str]] = []
    for line in lines:
        for sentence in split_sentences(line):
            if 6 <= len(sentence) <= 60:
                sentences.append([token.text for token in sentence])
        if len(sentences) >= PSEUDO_SENTENCES:
            break
    sentences = sentences[:PSEUDO_SENTENCES]
    kept, mentions = [], 0
    for tokens, (tags, confidences) in zip(sentences, KerasAnnotator.load(teacher).tag(sentences)):
        if min(confidences) >= PSEUDO_MIN_CONFIDENCE and any(tag != "O" for tag in tags):
            kept.append(Sentence(tokens, tags))
            mentions += sum(tag.startswith("B-") for tag in tags)
    path = work / f"pseudo-labels-seed{seed}.conll"
    write_conll(path, [Document(path.stem, kept)])
    return path, {"sentences_tagged": len(sentences), "sentences_kept": len(kept),
                  "mentions_kept": mentions}


def score_names(run: str) -> list[str]:
    """What a run is scored on: a single disease corpus's model on its own corpus only."""
    if run in ("bc5cdr", "ncbi"):
        return [name for name in SCORES if name.startswith(run)]
    # MACCROBAT alone too: how it does on text of another style is the baseline there.
    return list(SCORES)


def score(model_dir: Path, run: str) -> tuple[dict, dict]:
    """Exact F1 per score name, and exact (precision, recall) per score name."""
    from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences
    from clinical_ner.formats import load_corpus
    from clinical_ner.annotators.keras_annotator import KerasAnnotator

    ner = KerasAnnotator.load(model_dir)
    native = run in ("bc5cdr", "ncbi")
    results, precision_recall = {}, {}
    for name in score_names(run):
        split, label_map, labels = SCORES[name]
        if native:  # native Disease labels
            label_map, labels = None, ["Disease"]
        corpus = load_corpus(DATA / split, "conll", label_map=label_map)
        micro = evaluate_sentences(ner, corpus_sentences(corpus), labels=labels)["exact"]["micro"]
        results[name] = round(micro["f1"], 4)
        precision_recall[name] = [round(micro["precision"], 4), round(micro["recall"], 4)]
    return results, precision_recall


def train_run(run: str, seed: int, epochs: int, patience: int, work: Path,
              weights_ema: float = 0.0) -> dict:
    from clinical_ner.config import NERConfig
    from clinical_ner.formats.corpora import read_corpus_file
    from clinical_ner.training.trainer import train

    config = NERConfig(embeddings=str(EMBEDDINGS), seed=seed, epochs=epochs, patience=patience,
                       weights_ema=weights_ema)
    output = work / f"{run}-seed{seed}"
    base = work / f"{FINE_TUNED_FROM.get(run)}-seed{seed}"
    if run in FINE_TUNED_FROM and not (base / "model.keras").is_file():
        train_run(FINE_TUNED_FROM[run], seed, epochs, patience, work, weights_ema)
    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    quiet = dict(progress=False, emit=lambda message: print(f"  [{run} {seed}] {message}",
                                                             flush=True))
    pseudo: dict = {}
    if run in FINE_TUNED_FROM:
        result = train(DATA / "maccrobat" / "train.conll", output,
                       dev_path=DATA / "maccrobat" / "dev.conll", config=config,
                       data_format="conll", init_from=base, **quiet)
    elif run == "pseudo":
        pseudo_path, pseudo = pseudo_label_file(work, seed, epochs, patience)
        corpora = read_corpus_file(corpus_file(work, partial=True, mapped="complete",
                                               weight=LIGHT_WEIGHT, pseudo=pseudo_path))
        started = time.perf_counter()  # the teacher's tagging (and training) is not this run's
        result = train(None, output, config=config, corpora=corpora, **quiet)
    elif run.startswith("marginal") or run == "concat":
        corpora = read_corpus_file(corpus_file(
            work, partial=run != "concat", chemicals=run != "marginal-no-chemicals",
            mapped="complete" if run.startswith("marginal-disjoint") else "partial",
            weight=(LIGHT_WEIGHT if run.endswith("-light") else 1.0
                    if run.startswith("marginal-disjoint-all") else JOINT_WEIGHT),
            select_all=run.startswith("marginal-disjoint-all"),
            maccrobat_weight=3.0 if run.endswith("-m3") else 1.0))
        result = train(None, output, config=config, corpora=corpora, **quiet)
    else:
        folder = {"maccrobat": "maccrobat", "bc5cdr": "bc5cdr", "ncbi": "ncbi-disease"}[run]
        result = train(DATA / folder / "train.conll", output, dev_path=DATA / folder / "dev.conll",
                       config=config, data_format="conll", **quiet)
    seconds = time.perf_counter() - started
    log = [json.loads(line) for line in (output / "training_log.jsonl").read_text().splitlines()]
    scores, precision_recall = score(output, run)
    return {
        "run": run, "seed": seed, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_completed, "stopped_early": result.stopped_early,
        "selection_dev_f1": round(result.best_dev_f1, 4),
        "train_seconds": round(seconds, 1),
        "median_train_tokens_per_second": statistics.median(
            entry["train_tokens_per_second"] for entry in log[1:] or log),
        "scores": scores,
        "precision_recall": precision_recall,
        **({"pseudo_labels": pseudo} if pseudo else {}),
    }


# What --table reads of each run and only training it again records: a file written before
# one of them was would otherwise end in a KeyError traceback naming neither file nor run.
# (Scores it lacks are shown as "–"; --rescore fills them.)
RUN_FIELDS = ("run", "seed", "best_epoch", "epochs_run", "median_train_tokens_per_second")


def read_results(path: Path) -> dict:
    """The results file, or one line naming it (and the run and field) where it cannot serve."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SystemExit(f"{path}: not UTF-8 text; not a multi_corpus results file") from None
    except json.JSONDecodeError as error:
        raise SystemExit(f"{path}: line {error.lineno}: not JSON ({error.msg})") from None
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        raise SystemExit(f'{path}: no "runs" list; not a multi_corpus results file')
    for number, item in enumerate(results["runs"]):
        item = item if isinstance(item, dict) else {}
        where = f"{path}: runs[{number}] ({item.get('run')}, seed {item.get('seed')})"
        missing = [name for name in RUN_FIELDS if name not in item]
        if missing:
            raise SystemExit(
                f"{where}: no {', '.join(missing)} (written by an older version?); remove "
                f"that entry and run it again: python -m benchmarks.multi_corpus --runs "
                f"{item.get('run', 'RUN')} --seeds {item.get('seed', 'SEED')} --results {path}")
        if item["run"] not in RUNS:
            raise SystemExit(f"{where}: unknown run (this version runs {', '.join(RUNS)})")
    return results


def summary(runs: list[dict]) -> dict:
    """Mean and each seed's figure per run and score."""
    table: dict = {}
    for item in runs:
        for name, value in item.get("scores", {}).items():
            table.setdefault(item["run"], {}).setdefault(name, {})[str(item["seed"])] = value
    for per_score in table.values():
        for values in per_score.values():
            values["mean"] = round(statistics.mean(
                v for key, v in values.items() if key != "mean"), 4)
    return table


def markdown_table(results: dict) -> str:
    """The README table: each run's scores per seed and their mean (``--table``)."""
    table = summary(results["runs"])  # not the file's own: older files may lack it
    names = {"maccrobat": "MACCROBAT alone", "concat": "joint, plain concatenation",
             "marginal": "joint, marginal likelihood", "bc5cdr": "BC5CDR alone",
             "ncbi": "NCBI-disease alone",
             "marginal-no-chemicals": "joint, marginal, BC5CDR chemicals dropped",
             "marginal-disjoint": "joint, marginal, mapped labels complete",
             "marginal-light": f"joint, marginal, BC5CDR and NCBI at weight {LIGHT_WEIGHT}",
             "marginal-disjoint-light": "joint, marginal, mapped labels complete, weight "
                                        f"{LIGHT_WEIGHT}",
             "marginal-disjoint-light-then-maccrobat": "the same, then fine-tuned on "
                                                       "MACCROBAT alone",
             "marginal-disjoint-all": "joint, marginal, mapped labels complete, weight 1, "
                                      "epoch on the three dev sets",
             "marginal-disjoint-all-then-maccrobat": "the same, then fine-tuned on "
                                                     "MACCROBAT alone",
             "marginal-disjoint-all-m3": "the same as the row before that, MACCROBAT at "
                                         "weight 3",
             "pseudo": "mapped labels complete, weight 0.15, plus pseudo-labelled unlabelled text",
             "pseudo-then-maccrobat": "the same, then fine-tuned on MACCROBAT alone"}
    lines = ["| model | MACCROBAT dev exact F1 | BC5CDR test disease F1 | NCBI dev disease F1 | "
             "best epoch (seeds) | train tokens/s (median) |", "|---|---|---|---|---|---|"]

    def cell(run: str, score: str) -> str:
        values = table.get(run, {}).get(score)
        if not values:
            return "–"
        seeds = [f"{values[key]:.4f}" for key in sorted(values) if key != "mean"]
        return (f"**{values['mean']:.4f}** ({', '.join(seeds)})" if len(seeds) > 1
                else seeds[0])

    for run in ("maccrobat", "concat", "marginal", "marginal-no-chemicals", "marginal-disjoint",
                "marginal-light", "marginal-disjoint-light",
                "marginal-disjoint-light-then-maccrobat", "marginal-disjoint-all",
                "marginal-disjoint-all-then-maccrobat", "marginal-disjoint-all-m3", "pseudo",
                "pseudo-then-maccrobat", "bc5cdr", "ncbi"):
        items = [item for item in results["runs"] if item["run"] == run]
        if not items:
            continue
        epochs = ", ".join(f"{item['best_epoch']}/{item['epochs_run']}" for item in items)
        speed = statistics.median(item["median_train_tokens_per_second"] for item in items)
        lines.append(f"| {names[run]} | {cell(run, 'maccrobat_dev')} | "
                     f"{cell(run, 'bc5cdr_test_disease')} | {cell(run, 'ncbi_dev_disease')} | "
                     f"{epochs} | {speed:,.0f} |")
    return "\n".join(lines)


def precision_recall_table(results: dict) -> str:
    """Exact precision / recall behind each F1, per run and seed (``--table``)."""
    lines = ["| model | seed | MACCROBAT dev P / R | BC5CDR test disease P / R | "
             "NCBI dev disease P / R |", "|---|---|---|---|---|"]
    for item in sorted(results["runs"], key=lambda item: (RUNS.index(item["run"]), item["seed"])):
        cells = []
        for name in SCORES:
            pair = item.get("precision_recall", {}).get(name)
            cells.append(f"{pair[0]:.4f} / {pair[1]:.4f}" if pair else "–")
        lines.append(f"| {item['run']} | {item['seed']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--weights-ema", type=float, default=0.0,
                        help="NERConfig.weights_ema of every run (default: %(default)s, off)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/multi-corpus-bench"))
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="the results file (default: %(default)s); another one keeps runs "
                             "with other --epochs / --patience apart")
    parser.add_argument("--table", action="store_true",
                        help="print the README table from the results file and exit")
    parser.add_argument("--rescore", action="store_true",
                        help="score the models kept in --work again where a result lacks a "
                             "score or precision and recall, and exit")
    args = parser.parse_args()
    if (args.table or args.rescore) and not args.results.is_file():
        parser.error(f"--results {args.results}: no such file (--table and --rescore read one)")
    if args.table:
        results = read_results(args.results)
        print(markdown_table(results) + "\n\n" + precision_recall_table(results))
        return
    if args.rescore:
        results = read_results(args.results)
        for item in results["runs"]:
            if "precision_recall" not in item or set(item.get("scores", ())) != set(
                    score_names(item["run"])):
                item["scores"], item["precision_recall"] = score(
                    args.work / f"{item['run']}-seed{item['seed']}", item["run"])
        results["summary"] = summary(results["runs"])
        args.results.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = read_results(args.results) if args.results.is_file() else {"runs": []}
    results.update({"cpu_model": cpu_model(), "cpu_features": cpu_features(),
                    "cpu_count": os.cpu_count(),
                    "command": "python -m benchmarks.multi_corpus " + " ".join(
                        f"--{key.replace('_', '-')} "
                        f"{' '.join(map(str, value)) if isinstance(value, list) else value}"
                        for key, value in vars(args).items()
                        if key not in ("work", "table", "rescore", "results"))})
    for seed in args.seeds:
        for run in args.runs:
            if any(item["run"] == run and item["seed"] == seed for item in results["runs"]):
                continue
            load_before = load_average()
            item = train_run(run, seed, args.epochs, args.patience, args.work, args.weights_ema)
            item.update({"epochs_cap": args.epochs, "patience": args.patience,
                         "weights_ema": args.weights_ema,
                         "load_average_before": load_before, "load_average_after": load_average(),
                         "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
            results["runs"].append(item)
            results["summary"] = summary(results["runs"])
            args.results.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
            print(json.dumps(item), flush=True)


if __name__ == "__main__":
    main()
