"""Build the bundled model ``clinical`` (clinical_ner/pretrained/clinical/) from public data.

    python training/build_pretrained.py

Run from anywhere; paths are relative to the repository root, and the
public corpora must be in ``../shared/data`` beside the checkout. Steps:

1. ``clinical-ner train`` with the default configuration, seed 42 and
   ``assertion_cue_copies`` 0.2 on the
   corpora of ``training/configs/bundled-clinical.toml`` (MACCROBAT in the
   i2b2 layout with its assertions, BC5CDR and NCBI-disease at weight 0.15;
   MACCROBAT dev chooses the epoch) with the pruned 50-d GloVe vectors, into
   ``runs/build-clinical/joint`` (the folder is deleted first); then that
   model fine-tuned on MACCROBAT train alone (``--init-from``; dev chooses
   the epoch), into ``runs/build-clinical/full``. The two stages did better on
   MACCROBAT dev than MACCROBAT alone or the joint model alone, over three
   seeds (benchmarks/README.md, "Training from several corpora").
2. Prune the word table to its first ``--words`` rows: the vocabulary puts
   the words of the training data first (the only trained rows, all kept),
   then the pretrained words in GloVe's frequency order, so this keeps the
   most frequent of the untrained words. The other weights are unchanged.
3. Write the pruned model into the package with a card scored on dev, the
   licence and attribution files, and ``model.keras`` saved with fixed
   timestamps, so that a rebuild on the same CPU model gives the same bytes.

It prints the dev exact micro F1 of the model before and after pruning, and
the packaged model's disease F1 on BC5CDR test and NCBI-disease dev.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "clinical_ner" / "pretrained" / "clinical"
# Relative to REPO, so that the recorded paths do not depend on the checkout.
DATA = Path("..") / "shared" / "data"
CORPORA = Path("training") / "configs" / "bundled-clinical.toml"
TRAIN = DATA / "maccrobat-i2b2" / "train"
DEV = DATA / "maccrobat-i2b2" / "dev"
# Where the abstracts' diseases are scored (problem only), as benchmarks.multi_corpus does.
DISEASE_SCORES = {"BC5CDR test": DATA / "bc5cdr" / "test.conll",
                  "NCBI-disease dev": DATA / "ncbi-disease" / "dev.conll"}
EMBEDDINGS = DATA / "embeddings" / "glove.6B.50d.pruned.txt"
LICENCES = {
    DATA / "maccrobat" / "LICENSE-CC-BY-4.0.md": "LICENSE-MACCROBAT-CC-BY-4.0.md",
    DATA / "bc5cdr" / "LICENSE-CC-BY-4.0.md": "LICENSE-BC5CDR-CC-BY-4.0.md",
    DATA / "ncbi-disease" / "LICENSE-CC-BY-4.0.md": "LICENSE-NCBI-disease-CC-BY-4.0.md",
    DATA / "embeddings" / "THIRD-PARTY-GloVe-PDDL-1.0.txt": "THIRD-PARTY-GloVe-PDDL-1.0.txt",
}
DEFAULT_WORDS = 20_000
# The folders ``--work`` holds: the first stage's model and the second's.
STAGES = ("joint", "full")
# Cued copies for the assertion output (docs/guide/assertions.md): over three seeds
# of this two-stage build they raised dev assertion accuracy by 0.015, absent F1 by
# 0.037 and possible F1 by 0.30, for 0.002 of NER F1, end-to-end problem F1 equal
# (benchmarks/README.md, "Assertions": "The bundled model with cued copies").
ASSERTION_CUE_COPIES = 0.2
# What the card names as the model the second stage fine-tuned: the first stage's
# folder is scratch (``--work``, deleted by the next build), so the card names the stage.
FIRST_STAGE = "the first stage of training/build_pretrained.py (all three corpora)"
FIXED_ZIP_TIME = (2026, 1, 1, 0, 0, 0)
FIXED_SAVE_DATE = "2026-01-01@00:00:00"

CARD = {
    "name": "clinical",
    "language": "English",
    "description": (
        "Finds **problems** (signs, symptoms, diseases), **tests** (diagnostic procedures, "
        "exams, measured analytes) and **treatments** (medications, therapeutic procedures) "
        "in English clinical text, i2b2 2010 style, each with character offsets and a "
        "confidence, and says whether each problem is **present**, **absent** (negated) or "
        "**possible** (the i2b2 2010 assertion, from the same network). Trained on 153 public "
        "MACCROBAT case reports and, for its problems and treatments, on 1,093 public PubMed "
        "abstracts (BC5CDR and NCBI-disease); bundled with the package so that it works out "
        "of the box. Rebuilt by `python training/build_pretrained.py`."),
    "data_source": (
        "MACCROBAT2020 (Caufield et al.): 200 clinical case reports from PubMed Central "
        "open-access articles, hand-annotated in brat. Its types are mapped to i2b2 2010 "
        "labels: Sign_symptom and Disease_disorder to `problem`, Diagnostic_procedure to "
        "`test`, Therapeutic_procedure and Medication to `treatment` (a heuristic mapping, "
        "not an official one). Assertions from MACCROBAT's POLARITY attributes "
        "(`training/configs/maccrobat-assertion-map.json`: NEG -> absent; UNCERTAIN, "
        "MAYBE_POS, MAYBE_NEG -> possible; otherwise present); besides, a fifth of the "
        "training sentences with a present problem were copied with a negation or hedge "
        "phrase put beside it (medspaCy's ConText rules, MIT), which trained the assertion "
        "output only (`assertion_cue_copies` 0.2, docs/guide/assertions.md). "
        "The project's document-level "
        "split: 153 train, 24 dev (used to choose the epoch), 23 test documents held back by "
        "the project and not used here. "
        "BC5CDR (500 training abstracts; Disease -> `problem`, Chemical -> `treatment`) and "
        "NCBI-disease (593 training abstracts; Disease -> `problem`): each annotates its "
        "mapped labels completely and `test` not at all, so their unmarked tokens may be "
        "tests (marginal likelihood over the tags they allow; "
        "`training/configs/bundled-clinical.toml`), drawn at weight 0.15 beside the case "
        "reports. Two stages: all three corpora together, then MACCROBAT alone "
        "(`--init-from`); MACCROBAT dev chose the epoch of each. "
        "Word vectors: GloVe 6B 50-d (Wikipedia + Gigaword), pruned."),
    "attribution": (
        "Trained on MACCROBAT2020, CC BY 4.0: Caufield JH, Zhou Y, Bai Y, Liem DA, Garlid AO, "
        "Chang K-W, Sun Y, Ping P, Wang W. *A Comprehensive Typing System for Information "
        "Extraction from Clinical Narratives.* medRxiv 19009118 (2019); dataset DOI "
        "10.6084/m9.figshare.9764942.v2. The model was trained on an adaptation (re-tokenised, "
        "labels selected and mapped as above); see `LICENSE-MACCROBAT-CC-BY-4.0.md`. "
        "And on BC5CDR and NCBI-disease as redistributed (CC BY 4.0) by Crichton G, Pyysalo S, "
        "Chiu B, Korhonen A. *A neural network multi-task learning approach to biomedical "
        "named entity recognition.* BMC Bioinformatics 18:368 (2017): Li J, Sun Y, Johnson RJ, "
        "Sciaky D, Wei C-H, Leaman R, Davis AP, Mattingly CJ, Wiegers TC, Lu Z. *BioCreative V "
        "CDR task corpus: a resource for chemical disease relation extraction.* Database "
        "2016:baw068 (`LICENSE-BC5CDR-CC-BY-4.0.md`); Doğan RI, Leaman R, Lu Z. *NCBI disease "
        "corpus: a resource for disease name recognition and concept normalization.* J "
        "Biomed Inform 47:1-10 (2014) (`LICENSE-NCBI-disease-CC-BY-4.0.md`); abstract text "
        "from PubMed. "
        "Its word embedding starts from GloVe (Pennington J, Socher R, Manning CD. *GloVe: "
        "Global Vectors for Word Representation.* EMNLP 2014), PDDL 1.0: "
        "`THIRD-PARTY-GloVe-PDDL-1.0.txt`."),
    "limitations": [
        "Trained on published case reports and abstracts, not on EHR notes: discharge "
        "summaries, progress "
        "notes, abbreviations and templates of real records were not seen and were not "
        "evaluated on. No i2b2/n2c2 data was used.",
        "The labels come from a heuristic mapping of MACCROBAT types: measured analytes and "
        "vitals (\"blood pressure\", \"hemoglobin\") are `test`; imaging findings (\"mass\", "
        "\"lesion\") are `problem`; spans leave out articles and possessives, unlike i2b2.",
        "Scored only on the 24 dev documents that chose its epoch (no untouched test set "
        "was available to the build), so the scores are slightly optimistic.",
        "English only. Assertions: MACCROBAT has only present, absent and possible (no "
        "hypothetical, conditional or family-history cases), with few `possible` examples "
        "(147 in training): `possible` is missed more often than the other classes (see "
        "the per-class scores).",
        "The word table keeps the training words plus the most frequent GloVe words; "
        "rarer words are read through their characters only.",
    ],
}


def save_reproducibly(model, path: Path) -> None:
    """``model.save(path)``, with the archive's timestamps fixed so equal weights give equal bytes."""
    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / "model.keras"
        model.save(saved)
        buffer = io.BytesIO()
        with zipfile.ZipFile(saved) as source, \
                zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
            for info in sorted(source.infolist(), key=lambda item: item.filename):
                data = source.read(info.filename)
                if info.filename == "metadata.json":
                    metadata = json.loads(data)
                    metadata["date_saved"] = FIXED_SAVE_DATE
                    data = json.dumps(metadata).encode()
                entry = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
                entry.compress_type = zipfile.ZIP_DEFLATED
                entry.external_attr = 0o644 << 16
                target.writestr(entry, data)
        path.write_bytes(buffer.getvalue())


def prune_words(ner, words: int):
    """A copy of ``ner`` whose word table keeps only its first ``words`` rows."""
    from clinical_ner.model.network import ClinicalNERModel
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.model.vocab import Vocabulary

    import keras

    # Keras numbers unnamed sublayers (backward_lstm_25) by how many the
    # process has made, and the saved weights file stores those names: a
    # fresh count makes the bytes independent of what ran before.
    keras.utils.clear_session()
    trained_rows = ner.model.trainable_word_rows or len(ner.vocab.words)
    if words < trained_rows:
        raise SystemExit(f"--words {words} would drop trained rows: the training data has "
                         f"{trained_rows} words")
    words = min(words, len(ner.vocab.words))
    settings = dict(ner.model.get_config(), num_words=words,
                    trainable_word_rows=min(trained_rows, words))
    pruned = ClinicalNERModel.from_config(settings)
    for layer in pruned.layers:
        if layer.name == "word_embedding":
            layer.set_table(ner.model.get_layer(layer.name).table()[:words])
        elif layer.weights:
            layer.set_weights(ner.model.get_layer(layer.name).get_weights())
    vocab = Vocabulary(words=ner.vocab.words[:words], chars=ner.vocab.chars,
                       tags=ner.vocab.tags, assertions=ner.vocab.assertions)
    return KerasAnnotator(pruned, vocab, ner.config)


def relative_paths(value):
    """``value`` with every absolute path inside the checkout's parent made relative to REPO.

    A corpus file's paths are resolved to absolute ones; the card should not
    depend on where the checkout is (``../shared/data/...``, as the rest).
    """
    if isinstance(value, dict):
        return {key: relative_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_paths(item) for item in value]
    if isinstance(value, str) and value.startswith(str(REPO.parent) + os.sep):
        return os.path.relpath(value, REPO)
    return value


def dev_f1(ner) -> float:
    from clinical_ner.formats import load_corpus
    from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences

    return evaluate_sentences(ner, corpus_sentences(load_corpus(DEV)))["exact"]["micro"]["f1"]


def first_stage_dev_f1(card_data: dict) -> float:
    """The first stage's dev F1 on the corpus that chose its epoch, as its card recorded it.

    ``card_data`` is the second stage's ``model_card.json``, which keeps the
    first stage's training record (``fine_tuned_from``): the kept epoch's
    scores, so the first model need not be loaded and scored again.
    """
    stage = card_data["training"]["fine_tuned_from"]["training"]
    (selecting,) = [name for name, weight in stage["select"].items() if weight]
    return next(corpus["dev_scores"]["f1"] for corpus in stage["corpora"]
                if corpus["name"] == selecting)


def disease_f1(ner) -> dict[str, float]:
    """Exact F1 of ``problem`` on the diseases of each of ``DISEASE_SCORES``."""
    from clinical_ner.formats import load_corpus
    from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences

    scores = {}
    for name, path in DISEASE_SCORES.items():
        corpus = load_corpus(path, "conll", label_map={"Disease": "problem"})
        scores[name] = evaluate_sentences(ner, corpus_sentences(corpus), labels=["problem"]
                                          )["exact"]["micro"]["f1"]
    return scores


def build(words: int, work: Path) -> None:
    """Train into ``work``, then package the pruned model (both steps below)."""
    from clinical_ner.config import NERConfig
    from clinical_ner.formats.corpora import read_corpus_file
    from clinical_ner.training.trainer import train

    started = time.perf_counter()
    if work.exists():
        shutil.rmtree(work)
    config = NERConfig(embeddings=str(EMBEDDINGS), assertion_cue_copies=ASSERTION_CUE_COPIES)
    joint, full = (work / stage for stage in STAGES)
    train(None, joint, config=config, corpora=read_corpus_file(CORPORA), progress=False)
    train([TRAIN], full, dev_path=DEV, config=config, init_from=joint, progress=False)
    trained = time.perf_counter()
    package(full, words)
    print(f"time: {trained - started:.0f} s training, "
          f"{time.perf_counter() - started:.0f} s in all")


def package(full_dir: Path, words: int) -> None:
    """Prune the model trained in ``full_dir`` and write it, with its card, into the package."""
    # Written beside the bundled model and swapped in whole at the end: a failure while
    # scoring or writing the card (disk full) left the package with half a model.
    staging = OUTPUT.with_name(f".{OUTPUT.name}.new")
    if staging.exists():  # an earlier build's, killed before its swap
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        summary = write_pruned(staging, full_dir, words)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, OUTPUT)
    size = sum(path.stat().st_size for path in OUTPUT.iterdir())
    print(summary)
    print(f"{OUTPUT.relative_to(REPO)}: {size / 1_000_000:.2f} MB")


def write_pruned(staging: Path, full_dir: Path, words: int) -> str:
    """Write the pruned model and its card into ``staging``; return what to print of it."""
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.artifacts.keras_model import MODEL_FILE
    from clinical_ner.evaluation.card_facts import evaluation_record
    from clinical_ner.evaluation.model_card import CARD_DATA_FILE, write_model_card
    from clinical_ner.training.callbacks import LOG_FILE

    full = KerasAnnotator.load(full_dir)
    pruned = prune_words(full, words)
    before = dev_f1(full)
    diseases = disease_f1(pruned)
    card_data = json.loads((full_dir / CARD_DATA_FILE).read_text(encoding="utf-8"))
    joint = first_stage_dev_f1(card_data)
    pruned.config.save(staging)
    pruned.vocab.save(staging)
    save_reproducibly(pruned.model, staging / MODEL_FILE)
    shutil.copyfile(full_dir / LOG_FILE, staging / LOG_FILE)
    for source, name in LICENCES.items():
        shutil.copyfile(source, staging / name)
    # Scored on dev once; the description quotes that figure, and the card is written once.
    card_data = relative_paths(card_data)
    card_data["training"]["fine_tuned_from"]["model"] = FIRST_STAGE
    card_data["evaluation"] = evaluation_record(staging, DEV, card=card_data)
    after = card_data["evaluation"]["report"]["exact"]["micro"]["f1"]
    pruning = (f" MACCROBAT dev exact micro F1 {joint:.4f} after the first stage (all corpora), "
               f"{before:.4f} after the second (MACCROBAT alone); then its word table was "
               f"pruned from {len(full.vocab.words):,} to {len(pruned.vocab.words):,} rows "
               f"({after:.4f}; the training log's figures are the second stage's, before "
               "pruning). What the abstracts add: diseases as `problem`, exact F1 "
               + ", ".join(f"{score:.4f} on {name}" for name, score in diseases.items())
               + " (a model of MACCROBAT alone: benchmarks/README.md, \"Training from several "
               "corpora\").")
    (staging / CARD_DATA_FILE).write_text(
        json.dumps(card_data, indent=1, ensure_ascii=False), encoding="utf-8")
    # The card names the model as users will (its bundled name), not by the staging folder.
    write_model_card(staging, reference=OUTPUT.name,
                     **{**CARD, "description": CARD["description"] + pruning})
    return "\n".join([
        f"words kept: {len(pruned.vocab.words)} of {len(full.vocab.words)} "
        f"({pruned.model.trainable_word_rows} trained)",
        f"dev exact micro F1: {joint:.4f} after stage 1, {before:.4f} after stage 2 "
        f"(before pruning), {after:.4f} after pruning",
        "disease F1: " + ", ".join(f"{name} {score:.4f}" for name, score in diseases.items())])


def swap_in(staging: Path, output: Path) -> None:
    """Put the complete ``staging`` folder in place of ``output``, then delete the old one."""
    old = output.with_name(f".{output.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if output.exists():
        os.replace(output, old)
    os.replace(staging, output)
    shutil.rmtree(old, ignore_errors=True)


def check_before_training(words: int, work: Path) -> None:
    """Refuse, before minutes of training, what would fail after them or delete what is
    not the build's: ``--work`` is deleted first, so it must be a new folder or an earlier
    build's."""
    from clinical_ner.errors import ConfigError, check_integer, check_output_folder

    check_integer("--words", words)
    check_output_folder("--work", work)
    if work.is_dir():
        others = sorted(path.name for path in work.iterdir() if path.name not in STAGES)
        if others:
            raise ConfigError(f"--work {work}: holds {others[0]!r}, not only an earlier build's "
                              f"{' and '.join(STAGES)}, and the build deletes the folder first; "
                              "give a new folder")
    missing = [str(source) for source in LICENCES if not source.is_file()]
    if missing:
        raise ConfigError(f"{missing[0]}: missing; the model ships the licence of every "
                          "corpus and of the vectors (../shared/data beside the checkout)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=DEFAULT_WORDS,
                        help="rows of the word table to keep (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path("runs") / "build-clinical",
                        help="scratch folder for the two stages' models, deleted first: a new "
                             "folder or an earlier build's (relative to the repository root; "
                             "default: %(default)s)")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    from clinical_ner.errors import ConfigError

    try:
        check_before_training(args.words, args.work)
    except ConfigError as error:
        parser.error(str(error))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    build(args.words, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
