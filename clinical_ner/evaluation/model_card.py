"""Model cards: ``MODEL_CARD.md`` in every model directory, and the facts it is made from.

The card is rendered from ``model_card.json`` (what was recorded when the
model was trained and last scored) plus what the model directory itself says
(``config.json``, ``vocab.json``, ``model.keras``, ``training_log.jsonl``).
``clinical-ner train`` records the training data and writes the card
(:func:`record_training`); ``clinical-ner card MODEL [--data DIR]`` rewrites
it, scoring the model on ``DIR`` first (:func:`write_model_card`). The card
holds counts, labels and scores only, never text from the data.

Example (after ``clinical-ner train ... --output runs/sample``)::

    from clinical_ner.evaluation.model_card import write_model_card
    write_model_card("runs/sample", data="samples/maccrobat-i2b2/dev")
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Sequence

from clinical_ner import __version__
from clinical_ner.config import NERConfig
from clinical_ner.formats import Corpus, load_corpus
from clinical_ner.model.network import MODEL_FILE
from clinical_ner.pretrained import BUNDLED_DIR, resolve_model_path
from clinical_ner.text.tags import tags_to_mentions
from clinical_ner.model.vocab import VOCAB_FILE

CARD_FILE = "MODEL_CARD.md"
CARD_DATA_FILE = "model_card.json"
TRAINING_LOG_FILE = "training_log.jsonl"  # training_callbacks.LOG_FILE, without importing it
MODEL_TYPE = "named-entity recognition: character CNN + word embeddings + BiLSTM + CRF (Keras 3)"


def summarise_corpus(path: str | Path, corpus: Corpus) -> dict:
    """Documents, sentences, tokens and entities per label of a corpus (no text)."""
    sentences = [s for document in corpus.documents for s in document.sentences if s.tokens]
    entities: dict[str, int] = {label: 0 for label in corpus.labels}
    for sentence in sentences:
        for mention in tags_to_mentions(sentence.tags or ["O"] * len(sentence.tokens)):
            entities[mention.label] = entities.get(mention.label, 0) + 1
    return {
        "path": str(path),
        "format": corpus.format,
        "documents": len(corpus.documents),
        "sentences": len(sentences),
        "tokens": sum(len(s.tokens) for s in sentences),
        "entities": entities,
        "skipped": len(corpus.skipped),
    }


def _read_corpus(path: str | Path, data_format: str, label_map: dict | None,
                 skip_invalid: bool) -> Corpus:
    return load_corpus(path, data_format, label_map=label_map, skip_invalid=skip_invalid)


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def evaluation_record(model_dir: str | Path, data: str | Path, data_format: str = "auto",
                      label_map: dict | None = None, skip_invalid: bool = False,
                      card: dict | None = None) -> dict:
    """Score the model on ``data`` (exact and lenient, per label) and say what that data was."""
    from clinical_ner.annotators.keras_annotator import ClinicalNER
    from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences

    corpus = _read_corpus(data, data_format, label_map, skip_invalid)
    report = evaluate_sentences(ClinicalNER.load(model_dir), corpus_sentences(corpus))
    training = (card or {}).get("training") or {}
    trained_on = [item["path"] for item in training.get("train_data", [])]
    dev = (training.get("dev_data") or {}).get("path")
    if any(_same_path(data, path) for path in trained_on):
        relation = "WARNING: the model was trained on this data; these scores overstate it"
    elif dev and _same_path(data, dev):
        relation = ("the model did not train on this data; it was the dev data that chose "
                    "the training epoch (early stopping), so the scores are slightly optimistic")
    elif training:
        relation = "the model did not train on this data (it is none of its training data)"
    else:
        relation = "the model's training data was not recorded, so whether it saw this data is unknown"
    return {"data": summarise_corpus(data, corpus), "relation": relation, "report": report}


def record_training(model_dir: str | Path, train_paths: str | Path | Sequence[str | Path],
                    dev_path: str | Path | None = None, data_format: str = "auto",
                    label_map: dict | None = None, skip_invalid: bool = False) -> Path:
    """After ``clinical-ner train``: record the training data and write the card.

    Reads the corpora again to count them (the trainer keeps only sentences),
    and scores the best model on ``dev_path`` if given.
    """
    import keras
    import tensorflow as tf

    model_dir = Path(model_dir)
    if isinstance(train_paths, (str, Path)):
        train_paths = [train_paths]
    card = _load_card_data(model_dir)
    card["training"] = {
        "train_data": [summarise_corpus(path, _read_corpus(path, data_format, label_map,
                                                            skip_invalid))
                       for path in train_paths],
        "dev_data": (summarise_corpus(dev_path, _read_corpus(dev_path, data_format, label_map,
                                                             skip_invalid))
                     if dev_path is not None else None),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "clinical_ner": __version__,
    }
    card["evaluation"] = (evaluation_record(model_dir, dev_path, data_format, label_map,
                                            skip_invalid, card)
                          if dev_path is not None else None)
    return _write(model_dir, card)


def record_corpus_set_training(model_dir: str | Path, corpus_set, skip_invalid: bool = False
                               ) -> Path:
    """After training from a corpus file: record each corpus and its dev scores, write the card.

    ``corpus_set`` is a :class:`clinical_ner.formats.corpora.CorpusSet`. The
    scores per dev corpus are those of the kept epoch in
    ``training_log.jsonl`` (each corpus scored on the labels it annotates).
    """
    import keras
    import tensorflow as tf

    from clinical_ner.formats.corpora import load_spec_corpus

    model_dir = Path(model_dir)
    card = _load_card_data(model_dir)
    best = [entry for entry in _training_log(model_dir) if entry.get("best")]
    dev_scores = best[-1].get("dev_corpora", {}) if best else {}
    corpora = []
    for spec in corpus_set.corpora:
        corpora.append({
            **spec.to_dict(),
            "train_data": [summarise_corpus(path, load_spec_corpus(spec, path, skip_invalid))
                           for path in spec.train],
            "dev_scores": dev_scores.get(spec.name),
        })
    card["training"] = {
        "train_data": [item for corpus in corpora for item in corpus["train_data"]],
        "dev_data": None,
        "corpora": corpora,
        "select": corpus_set.selection,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "clinical_ner": __version__,
    }
    card["evaluation"] = None
    return _write(model_dir, card)


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


def write_model_card(model: str | Path, data: str | Path | None = None,
                     data_format: str = "auto", label_map: dict | None = None,
                     skip_invalid: bool = False, **fields: str | list[str]) -> Path:
    """Rewrite ``MODEL_CARD.md`` of ``model`` (a directory or bundled name); return its path.

    With ``data``, the model is scored on it first and the card's scores
    become those. ``fields`` set the card's ``name``, ``description``,
    ``language``, ``data_source``, ``attribution`` or ``limitations`` (a list
    of lines); they are kept in ``model_card.json`` for later rewrites.
    """
    unknown = set(fields) - {"name", "description", "language", "data_source", "attribution",
                             "limitations"}
    if unknown:
        raise TypeError(f"unknown card fields: {', '.join(sorted(unknown))}")
    model_dir = resolve_model_path(model)
    card = _load_card_data(model_dir)
    card.update({key: value for key, value in fields.items() if value is not None})
    if data is not None:
        card["evaluation"] = evaluation_record(model_dir, data, data_format, label_map,
                                               skip_invalid, card)
    return _write(model_dir, card)


def _load_card_data(model_dir: Path) -> dict:
    from clinical_ner.annotators.keras_annotator import ClinicalNER

    if not (model_dir / MODEL_FILE).is_file():
        ClinicalNER.load(model_dir)  # raises the usual "not a model directory" error
    path = model_dir / CARD_DATA_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write(model_dir: Path, card: dict) -> Path:
    (model_dir / CARD_DATA_FILE).write_text(json.dumps(card, indent=1, ensure_ascii=False)
                                            + "\n", encoding="utf-8")
    path = model_dir / CARD_FILE
    path.write_text(render_model_card(model_dir, card), encoding="utf-8")
    return path


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


def _parameters(model) -> list[str]:
    lines = ["| layer | weights | parameters |", "|---|---|---|"]
    total = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        count = sum(int(w.numpy().size) for w in layer.weights)
        total += count
        shapes = ", ".join("x".join(map(str, w.shape)) for w in layer.weights)
        lines.append(f"| {layer.name} | {shapes} | {count:,} |")
    lines.append(f"| all | | {total:,} |")
    return lines


def _training_log(model_dir: Path) -> list[dict]:
    path = model_dir / TRAINING_LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _training_time(log: list[dict]) -> list[str]:
    if not log:
        return ["Not recorded (no `training_log.jsonl`)."]
    train_seconds = sum(entry["train_seconds"] for entry in log)
    dev_seconds = sum(entry.get("dev_seconds", 0.0) for entry in log)
    best = [entry for entry in log if entry.get("best")]
    speeds = [entry["train_tokens_per_second"] for entry in log[1:]] or \
        [log[0]["train_tokens_per_second"]]
    lines = [
        f"- epochs run: {len(log)}; kept: epoch {best[-1]['epoch'] if best else len(log)}"
        + (f" (dev exact micro F1 {best[-1]['dev_f1']:.4f})"
           if best and best[-1].get("dev_f1") is not None else ""),
        f"- training time: {train_seconds:.0f} s of training steps"
        + (f" + {dev_seconds:.0f} s of dev evaluation" if dev_seconds else ""),
        f"- training speed: {statistics.median(speeds):,.0f} tokens/s (median over epochs"
        + (" after the first, which includes tracing" if len(log) > 1 else "") + ")",
        "- measured by `clinical-ner train` on the machine that trained the model "
        "(`training_log.jsonl`); other machines differ",
    ]
    return lines


def _reference(model_dir: Path) -> str:
    try:
        model_dir.resolve().relative_to(BUNDLED_DIR)
        return model_dir.name
    except ValueError:
        return str(model_dir)


def render_model_card(model_dir: str | Path, card: dict) -> str:
    """The Markdown text of ``MODEL_CARD.md`` for ``model_dir`` and its recorded ``card``."""
    from clinical_ner.annotators.keras_annotator import ClinicalNER

    model_dir = Path(model_dir)
    model = ClinicalNER.load(model_dir).model
    config = NERConfig.load(model_dir)
    vocab = json.loads((model_dir / VOCAB_FILE).read_text(encoding="utf-8"))
    labels = sorted({tag[2:] for tag in vocab["tags"] if tag != "O"})
    reference = _reference(model_dir)
    quoted = f'"{reference}"' if " " not in reference else repr(reference)
    training = card.get("training")
    evaluation = card.get("evaluation")
    log = _training_log(model_dir)
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
        f"- words: {len(vocab['words']):,} rows of {model.word_dim} dimensions "
        f"(normalised: lowercased, digits as 0; unknown words share `<unk>`)",
        f"- characters: {len(vocab['chars']):,}, {config.char_dim}-d embeddings, CNN of "
        f"{config.char_filters} filters of width {config.char_kernel_size} over the first "
        f"{config.max_word_length} characters of each token",
        f"- casing: {config.casing_dim}-d embedding" if config.use_casing else "- casing: off",
        f"- encoder: BiLSTM of {config.lstm_units} units per direction, dropout "
        f"{config.dropout}; CRF over {len(vocab['tags'])} {config.tag_scheme.upper()} tags",
        f"- files: `{MODEL_FILE}` {_size(model_dir / MODEL_FILE)}, `{VOCAB_FILE}` "
        f"{_size(model_dir / VOCAB_FILE)}",
        "",
    ]
    lines += _parameters(model) + [""]
    lines += ["## Training data", ""]
    if training and training.get("corpora"):
        lines += ["Trained from a corpus file: each corpus's labels were mapped onto the model's, "
                  "and an unmarked token could take any label its corpus does not annotate "
                  "completely (marginal likelihood; `docs/design/multi-corpus.md`). The dev "
                  "scores are the kept epoch's; `selects` is each corpus's weight in the score "
                  "that chose it.", ""]
        lines += _corpus_rows(training["corpora"], training.get("select", {})) + [""]
    if training:
        lines += _data_rows(training["train_data"], labels) + [""]
        if training.get("dev_data"):
            lines += ["Dev data (chose the epoch; not trained on):", ""]
            lines += _data_rows([training["dev_data"]], labels) + [""]
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
    else:
        lines += [f"None yet: `clinical-ner card {reference} --data DIR` scores the model on "
                  "annotated data it did not train on and rewrites this card.", ""]
    lines += ["## Training time", ""] + _training_time(log) + [""]
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
