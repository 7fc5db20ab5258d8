"""Rendering ``MODEL_CARD.md`` from the recorded facts and the model directory's files.

Reads ``config.json``, ``vocab.json``, the settings inside ``model.keras`` (its
``config.json``; the model is not loaded) and ``training_log.jsonl``; the weights' shapes
come from the recorded facts (:func:`clinical_ner.evaluation.model_card.parameter_rows`).
"""
from __future__ import annotations

import json
import logging
import statistics
import zipfile
from pathlib import Path

from clinical_ner.config import NERConfig
from clinical_ner.errors import DataFormatError
from clinical_ner.artifacts.keras_model import ARCHIVE_CONFIG, MODEL_FILE
from clinical_ner.model.vocab import VOCAB_FILE
from clinical_ner.pretrained import model_reference
from clinical_ner.text.document import ASSERTION_LABEL

TRAINING_LOG_FILE = "training_log.jsonl"  # training.callbacks.LOG_FILE, without importing it
logger = logging.getLogger(__name__)

MODEL_TYPE = "named-entity recognition: character CNN + word embeddings + BiLSTM + CRF (Keras 3)"


def assertion_table(report: dict, relation: str) -> list[str]:
    """Markdown lines of the assertion scores of an evaluation (gold concepts, end to end)."""
    gold_concepts, end = report["gold_concepts"], report["end_to_end"]
    lines = [f"Assertions of the {gold_concepts['concepts']} gold {ASSERTION_LABEL} concepts, "
             "each classified given its gold span (i2b2 2010 task 2): accuracy "
             f"{gold_concepts['accuracy']:.4f}, macro F1 {gold_concepts['macro_f1']:.4f} "
             "(over the classes in the gold data). End to end (a predicted problem is correct "
             "when its span, label and assertion are gold): precision "
             f"{end['precision']:.4f}, recall {end['recall']:.4f}, F1 {end['f1']:.4f}.", ""]
    if "the dev data that chose the training epoch" in relation:
        lines += ["These assertion figures come from the dev data, the split that chose the "
                  "epoch (by NER F1), so they are slightly optimistic too.", ""]
    lines += ["| assertion | precision | recall | F1 | gold | predicted |",
              "|---|---|---|---|---|---|"]
    for name, values in gold_concepts["per_class"].items():
        lines.append(f"| {name} | {values['precision']:.4f} | {values['recall']:.4f} | "
                     f"{values['f1']:.4f} | {values['gold']} | {values['predicted']} |")
    return lines + [""]


def score_table(report: dict) -> list[str]:
    """Markdown rows of exact and lenient precision / recall / F1 per label and micro."""
    lines = ["| match | label | precision | recall | F1 | gold | predicted |",
             "|---|---|---|---|---|---|---|"]
    for mode in ("exact", "lenient"):
        rows = [*report[mode]["per_label"].items(), ("micro avg", report[mode]["micro"])]
        for label, values in rows:
            lines.append(f"| {mode} | {label} | {values['precision']:.4f} | "
                         f"{values['recall']:.4f} | {values['f1']:.4f} | {values['gold']} | "
                         f"{values['predicted']} |")
    return lines


def _data_rows(items: list[dict], labels: list[str]) -> list[str]:
    lines = [f"| data | format | documents | sentences | tokens | "
             f"{' | '.join(labels)} |",
             "|---" * (5 + len(labels)) + "|"]
    for item in items:
        counts = " | ".join(str(item["entities"].get(label, 0)) for label in labels)
        lines.append(f"| `{item['path']}` | {item['format']} | {item['documents']} | "
                     f"{item['sentences']} | {item['tokens']} | {counts} |")
    return lines


def _parameters(rows: list[dict]) -> list[str]:
    lines = ["| layer | weights | parameters |", "|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['layer']} | {', '.join(row['shapes'])} | {row['parameters']:,} |")
    lines.append(f"| all | | {sum(row['parameters'] for row in rows):,} |")
    return lines


def _keras_settings(model_dir: Path) -> dict:
    """The model's constructor arguments as ``model.keras`` records them (a zip's ``config.json``)."""
    with zipfile.ZipFile(model_dir / MODEL_FILE) as archive:
        return json.loads(archive.read(ARCHIVE_CONFIG))["config"]


def _training_data(training: dict, labels: list[str]) -> list[str]:
    """The corpora (of a corpus file), training data and dev data of one training record."""
    lines = []
    if training.get("corpora"):
        lines += ["Trained from a corpus file: each corpus's labels were mapped onto the model's, "
                  "and an unmarked token could take any label its corpus does not annotate "
                  "completely (marginal likelihood; `docs/design/multi-corpus.md`). The dev "
                  "scores are the kept epoch's; `selects` is each corpus's weight in the score "
                  "that chose it.", ""]
        lines += _corpus_rows(training["corpora"], training.get("select", {})) + [""]
    lines += _data_rows(training["train_data"], labels) + [""]
    dev_data = [training["dev_data"]] if training.get("dev_data") else [
        corpus["dev_data"] for corpus in training.get("corpora", ()) if corpus.get("dev_data")]
    if dev_data:
        lines += ["Dev data (chose the epoch; not trained on):", ""]
        lines += _data_rows(dev_data, labels) + [""]
    return lines


def _kept_score_name(training: dict | None) -> str:
    """What a log entry's ``dev_f1`` is: one dev set's F1, or several corpora's weighted mean."""
    if training and sum(1 for weight in (training.get("select") or {}).values() if weight) > 1:
        return "dev exact F1, the selecting corpora's weighted mean"
    return "dev exact micro F1"


def _corpus_rows(corpora: list[dict], select: dict) -> list[str]:
    lines = ["| corpus | weight | coverage | label map | dev exact F1 (own labels) | selects |",
             "|---|---|---|---|---|---|"]
    for corpus in corpora:
        coverage = ", ".join(f"{label} {how}" for label, how in corpus["coverage"].items())
        label_map = ", ".join(f"{source} -> {target or '(dropped)'}"
                              for source, target in (corpus["label_map"] or {}).items()) or "-"
        scores = corpus.get("dev_scores")
        f1 = f"{scores['f1']:.4f}" if scores else "-"
        lines.append(f"| {corpus['name']} | {corpus['weight']:g} | {coverage} | {label_map} | "
                     f"{f1} | {select.get(corpus['name'], 0):g} |")
    return lines


#: What the training-time lines read from each epoch's entry (numbers).
_LOG_NUMBERS = ("epoch", "train_seconds", "train_tokens_per_second")
_LOG_OPTIONAL_NUMBERS = ("dev_seconds", "dev_f1")


def _training_log(model_dir: Path) -> list[dict]:
    """The epochs' entries; :class:`DataFormatError` naming the line of a damaged log."""
    path = model_dir / TRAINING_LOG_FILE
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataFormatError(path, None, "not UTF-8 text (damaged?)") from None
    entries = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise DataFormatError(path, number, "not a JSON object (truncated?)") from None
        if not isinstance(entry, dict) or not all(
                _is_number(entry.get(key)) for key in _LOG_NUMBERS) or not all(
                entry.get(key) is None or _is_number(entry[key])
                for key in _LOG_OPTIONAL_NUMBERS):
            raise DataFormatError(path, number, "not an epoch's entry (it needs "
                                  f"{', '.join(_LOG_NUMBERS)} as numbers)")
        entries.append(entry)
    return entries


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _training_time(log: list[dict], damaged: str | None = None,
                   score_name: str = "dev exact micro F1") -> list[str]:
    if damaged:
        return [f"Not readable: {damaged}."]
    if not log:
        return ["Not recorded (no `training_log.jsonl`)."]
    train_seconds = sum(entry["train_seconds"] for entry in log)
    dev_seconds = sum(entry.get("dev_seconds", 0.0) for entry in log)
    best = [entry for entry in log if entry.get("best")]
    speeds = [entry["train_tokens_per_second"] for entry in log[1:]] or \
        [log[0]["train_tokens_per_second"]]
    lines = [
        f"- epochs run: {len(log)}; kept: epoch {best[-1]['epoch'] if best else len(log)}"
        + (f" ({score_name} {best[-1]['dev_f1']:.4f})"
           if best and best[-1].get("dev_f1") is not None else ""),
        f"- training time: {train_seconds:.0f} s of training steps"
        + (f" + {dev_seconds:.0f} s of dev evaluation" if dev_seconds else ""),
        f"- training speed: {statistics.median(speeds):,.0f} tokens/s (median over epochs"
        + (" after the first, which includes tracing" if len(log) > 1 else "") + ")",
        "- measured by `clinical-ner train` on the machine that trained the model "
        "(`training_log.jsonl`); other machines differ",
    ]
    return lines


def render_model_card(model_dir: str | Path, card: dict, reference: str | None = None) -> str:
    """The Markdown text of ``MODEL_CARD.md`` for ``model_dir`` and its recorded ``card``.

    ``reference``: how users name the model, where ``model_dir`` is not where it will be
    loaded from (a staging folder); by default its bundled name or path."""
    model_dir = Path(model_dir)
    word_dim = _keras_settings(model_dir)["word_dim"]
    config = NERConfig.load(model_dir)
    vocab = json.loads((model_dir / VOCAB_FILE).read_text(encoding="utf-8"))
    labels = sorted({tag[2:] for tag in vocab["tags"] if tag != "O"})
    reference = reference or model_reference(model_dir)
    quoted = f'"{reference}"' if " " not in reference else repr(reference)
    training = card.get("training")
    evaluation = card.get("evaluation")
    try:
        log, damaged = _training_log(model_dir), None
    except DataFormatError as error:
        # The card is about the model: a damaged log costs it its training time, not the card.
        where = f" line {error.line}" if error.line is not None else ""
        log, damaged = [], f"`{TRAINING_LOG_FILE}`{where}: {error.problem}"
        logger.warning("%s; the card leaves out the training time", error)
    name = card.get("name") or model_dir.name
    lines = [
        f"# Model card: {name}",
        "",
        "| | |",
        "|---|---|",
        f"| name | {name} |",
        f"| type | {MODEL_TYPE} |",
        f"| labels | {', '.join(labels)} ({config.tag_scheme.upper()} tags: "
        f"{len(vocab['tags'])}) |",
        f"| language | {card.get('language') or 'not recorded (that of the training data)'} |",
        f"| clinical-ner | {(training or {}).get('clinical_ner', 'not recorded')} |",
        "",
        "## Description",
        "",
        card.get("description") or (
            f"Finds {', '.join(labels)} mentions in text: each with its character offsets, "
            "label and confidence (the lowest CRF marginal probability of its tokens)."),
        "",
        "## How to use",
        "",
        "```bash",
        f'clinical-ner predict {reference} "CT of the chest showed a 2 cm nodule."',
        f"clinical-ner evaluate {reference} --data DIR",
        f"clinical-ner export {reference} --output models/clinical_ner",
        "```",
        "",
        "```python",
        "from clinical_ner import ClinicalNER",
        f"ner = ClinicalNER.load({quoted})",
        'ner.annotate("CT of the chest showed a 2 cm nodule.")',
        "```",
        "",
        "## Data source",
        "",
        card.get("data_source") or "Not recorded: the training data's paths are below.",
        "",
    ]
    if card.get("attribution"):
        lines += ["## Licence and attribution", "", card["attribution"], ""]
    lines += ["## Architecture and sizes", ""]
    lines += [
        f"- words: {len(vocab['words']):,} rows of {word_dim} dimensions "
        f"(normalised: lowercased, digits as 0; unknown words share `<unk>`)",
        f"- characters: {len(vocab['chars']):,}, {config.char_dim}-d embeddings, CNN of "
        f"{config.char_filters} filters of width {config.char_kernel_size} over the first "
        f"{config.max_word_length} characters of each token",
        f"- casing: {config.casing_dim}-d embedding" if config.use_casing else "- casing: off",
        f"- encoder: BiLSTM of {config.lstm_units} units per direction, dropout "
        f"{config.dropout}; CRF over {len(vocab['tags'])} {config.tag_scheme.upper()} tags",
        *([f"- assertions ({ASSERTION_LABEL} entities): {', '.join(vocab['assertions'])}; a "
           "softmax per token over them, read from "
           + ("the encoder's BiLSTM states" if config.assertion_head == "shared" else
              f"a BiLSTM of its own ({config.assertion_lstm_units} units per direction)")
           + "; an entity's assertion is the class of the highest mean probability over its "
           "tokens"] if vocab.get("assertions") else []),
        f"- files: `{MODEL_FILE}` {_size(model_dir / MODEL_FILE)}, `{VOCAB_FILE}` "
        f"{_size(model_dir / VOCAB_FILE)}",
        "",
    ]
    lines += _parameters(card["parameters"]["layers"]) + [""]
    lines += ["## Training data", ""]
    if training:
        lines += _training_data(training, labels)
        if training.get("assertions_kept_from_base"):
            lines += [f"The assertion output ({', '.join(vocab.get('assertions') or ())}) is "
                      "the base model's as it was: the data above has no assertions (or one "
                      "class only, which teaches nothing), so it was not trained on it (the "
                      "layers under it were, which can change its answers).", ""]
        base = training.get("fine_tuned_from")
        while base:
            recorded = base.get("training")
            lines += [f"Fine-tuned (`--init-from`) from `{base['model']}`, "
                      + ("which was trained on:" if recorded
                         else "whose training data was not recorded."), ""]
            if recorded:
                lines += _training_data(recorded, labels)
            base = (recorded or {}).get("fine_tuned_from")
    else:
        lines += ["Not recorded (the model was trained before model cards, or elsewhere).", ""]
    lines += ["## Effective configuration", "", "```json",
              json.dumps(config.to_dict(), indent=2), "```", ""]
    lines += ["## Scores", ""]
    if evaluation:
        data = evaluation["data"]
        lines += [
            f"On `{data['path']}` ({data['documents']} documents, {data['sentences']} "
            f"sentences, {sum(data['entities'].values())} entities): "
            f"{evaluation['relation']}. *Exact*: same tokens and label; *lenient*: "
            "overlapping span and same label (i2b2 2010 \"inexact\"). Scored on the data's "
            "own tokens and sentences (`clinical-ner evaluate`).",
            "",
        ]
        lines += score_table(evaluation["report"]) + [""]
        if "assertion" in evaluation["report"]:
            lines += assertion_table(evaluation["report"]["assertion"], evaluation["relation"])
    else:
        lines += [f"None yet: `clinical-ner card {reference} --data DIR` scores the model on "
                  "annotated data it did not train on and rewrites this card.", ""]
    lines += ["## Training time", ""] + _training_time(
        log, damaged, _kept_score_name(training)) + [""]
    lines += [
        "## Versions",
        "",
        f"- trained with TensorFlow {(training or {}).get('tensorflow', 'not recorded')}, "
        f"Keras {(training or {}).get('keras', 'not recorded')}",
        "",
        "## Limitations",
        "",
    ]
    lines += [f"- {line}" for line in card.get("limitations", [])]
    lines += [
        "- The scores hold for text like the training data. The model was not evaluated on "
        "other institutions, note types, specialties or languages; expect lower scores there "
        "and evaluate on a sample of your own notes first.",
        "- Entity boundaries and label meanings follow the training data's annotation "
        "conventions.",
        f"- Sentences are cut after {config.max_sentence_tokens} tokens; words outside the "
        "vocabulary are read through their characters only.",
        "",
    ]
    return "\n".join(lines)


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1_000_000:.1f} MB" if path.is_file() else "(missing)"
