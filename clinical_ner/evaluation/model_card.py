"""Model cards: ``MODEL_CARD.md`` in every model directory, and recording the facts it is made from.

The card is rendered from ``model_card.json`` (what was recorded when the
model was trained and last scored) plus what the model directory itself says
(``config.json``, ``vocab.json``, ``model.keras``, ``training_log.jsonl``).
``clinical-ner train`` records the training data and writes the card
(:func:`record_training`); ``clinical-ner card MODEL [--data DIR]`` rewrites
it, scoring the model on ``DIR`` first (:func:`write_model_card`). The card
holds counts, labels and scores only, never text from the data.

This module records (it alone loads the model); :mod:`~clinical_ner.evaluation.card_facts`
counts and scores data, :mod:`~clinical_ner.evaluation.card_render` turns the recorded
facts and the model directory's files into Markdown without loading the model.

Example (after ``clinical-ner train ... --output runs/sample``)::

    from clinical_ner.evaluation.model_card import write_model_card
    write_model_card("runs/sample", data="samples/maccrobat-i2b2/dev")
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

from clinical_ner.version import __version__
from clinical_ner.errors import ModelError
from clinical_ner.formats import Corpus
from clinical_ner.untrusted_json import read_json_file
from clinical_ner.evaluation.card_facts import evaluation_record, read_corpus, training_summary
from clinical_ner.evaluation.card_render import render_model_card
from clinical_ner.evaluation.evaluate import (
    check_labels_known, report_skipped, unknown_labels_note,
)
from clinical_ner.artifacts.keras_model import CARD_DATA_FILE, MODEL_FILE
from clinical_ner.annotators.load import check_keras_model_directory
from clinical_ner.pretrained import model_reference, resolve_model_path

CARD_FILE = "MODEL_CARD.md"


def record_training(model_dir: str | Path, train_paths: str | Path | Sequence[str | Path],
                    dev_path: str | Path | None = None, data_format: str = "auto",
                    label_map: dict | None = None, skip_invalid: bool = False,
                    assertion_map: dict | None = None,
                    fine_tuned_from: str | Path | dict | None = None,
                    assertions_kept: bool = False,
                    train_corpora: Sequence[Corpus] | None = None,
                    dev_corpus: Corpus | None = None, dev_report: dict | None = None) -> Path:
    """After ``clinical-ner train``: record the training data and write the card.

    Counts and hashes the corpora (``train_corpora``, one per path, and ``dev_corpus``
    where the trainer passes them as it read them; else read here), and scores the
    best model on ``dev_path`` if given (``dev_report``: the trainer's ``evaluate_sentences``
    report of that model on that corpus, used as it is). ``fine_tuned_from``
    is the ``--init-from`` model, whose own training record the card keeps
    (:func:`base_model_record`), or that record itself (a resumed run's).
    ``assertions_kept``: the model's assertion output is the base model's, not
    trained on this data (which has no assertions, or one class); the card says so.
    """
    import keras
    import tensorflow as tf

    model_dir = Path(model_dir)
    if isinstance(train_paths, (str, Path)):
        train_paths = [train_paths]
    card = _load_card_data(model_dir)
    if train_corpora is None:
        train_corpora = [read_corpus(path, data_format, label_map, skip_invalid, assertion_map)
                         for path in train_paths]
    dev = (dev_corpus if dev_corpus is not None or dev_path is None
           else read_corpus(dev_path, data_format, label_map, skip_invalid, assertion_map))
    card["training"] = {
        "train_data": [training_summary(path, corpus)
                       for path, corpus in zip(train_paths, train_corpora, strict=True)],
        "dev_data": training_summary(dev_path, dev) if dev is not None else None,
        **base_model_record(fine_tuned_from),
        **({"assertions_kept_from_base": True} if assertions_kept else {}),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "clinical_ner": __version__,
    }
    card["evaluation"] = (evaluation_record(model_dir, dev_path, data_format, label_map,
                                            skip_invalid, card, assertion_map, dev,
                                            report=dev_report)
                          if dev is not None else None)
    return _write(model_dir, card)


def record_corpus_set_training(model_dir: str | Path, corpus_set, dev_scores: dict,
                               skip_invalid: bool = False,
                               fine_tuned_from: str | Path | dict | None = None,
                               assertions_kept: bool = False) -> Path:
    """After training from a corpus file: record each corpus and its dev scores, write the card.

    ``corpus_set`` is a :class:`clinical_ner.formats.corpora.CorpusSet`;
    ``dev_scores`` the kept epoch's scores per dev corpus (``dev_corpora`` of
    its ``training_log.jsonl`` entry: each corpus scored on its own labels).
    When one dev corpus alone chooses the epoch and annotates every label
    completely, the card scores the model on it as after single-corpus
    training (per label and, with assertions, per assertion class); other
    selections have no such score (``clinical-ner card MODEL --data DIR``).
    ``fine_tuned_from`` and ``assertions_kept`` as in :func:`record_training`.
    """
    import keras
    import tensorflow as tf

    from clinical_ner.formats.corpora import load_spec_corpus

    model_dir = Path(model_dir)
    card = _load_card_data(model_dir)
    selecting = [spec for spec in corpus_set.dev_corpora() if corpus_set.selection.get(spec.name)]
    # Each read once: the card's record of it, and its scores below.
    dev = {spec.name: load_spec_corpus(spec, spec.dev, skip_invalid) for spec in selecting}
    corpora = []
    for spec in corpus_set.corpora:
        corpora.append({
            **spec.to_dict(),
            "train_data": [training_summary(path, load_spec_corpus(spec, path, skip_invalid))
                           for path in spec.train],
            # Each dev corpus whose score chose the epoch: `card --data` names it as such.
            "dev_data": (training_summary(spec.dev, dev[spec.name])
                         if spec in selecting else None),
            "dev_scores": dev_scores.get(spec.name),
        })
    scored = (selecting[0] if len(selecting) == 1 and all(
        selecting[0].coverage.get(label) == "complete" for label in corpus_set.labels) else None)
    card["training"] = {
        "train_data": [item for corpus in corpora for item in corpus["train_data"]],
        "dev_data": (training_summary(scored.dev, dev[scored.name])
                     if scored is not None else None),
        "corpora": corpora,
        "select": corpus_set.selection,
        **base_model_record(fine_tuned_from),
        **({"assertions_kept_from_base": True} if assertions_kept else {}),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "clinical_ner": __version__,
    }
    card["evaluation"] = (evaluation_record(model_dir, scored.dev, scored.format,
                                            scored.label_map, skip_invalid, card,
                                            corpus=dev[scored.name])
                          if scored is not None else None)
    return _write(model_dir, card)


def write_model_card(model: str | Path, data: str | Path | None = None,
                     data_format: str = "auto", label_map: dict | None = None,
                     skip_invalid: bool = False, assertion_map: dict | None = None,
                     emit: Callable[[str], None] | None = None, reference: str | None = None,
                     **fields: str | list[str]) -> Path:
    """Rewrite ``MODEL_CARD.md`` of ``model`` (a directory or bundled name); return its path.

    With ``data``, the model is scored on it first and the card's scores
    become those. ``fields`` set the card's ``name``, ``description``,
    ``language``, ``data_source``, ``attribution`` or ``limitations`` (a list
    of lines); they are kept in ``model_card.json`` for later rewrites.
    ``emit`` is told each unit of ``data`` that ``skip_invalid`` skipped, and (without
    ``label_map``) the data's labels the model lacks, as ``clinical-ner evaluate`` says
    them. ``reference``: how the card names the model
    (see :func:`~clinical_ner.evaluation.card_render.render_model_card`).
    """
    unknown = set(fields) - {"name", "description", "language", "data_source", "attribution",
                             "limitations"}
    if unknown:
        raise TypeError(f"unknown card fields: {', '.join(sorted(unknown))}")
    # An export holds no card facts and no Keras model: it said "not a clinical-ner model
    # directory (no model.keras)", after reading and checking --data.
    check_keras_model_directory(model, "have a model card written")
    model_dir = resolve_model_path(model)
    card = _load_card_data(model_dir)
    card.update({key: value for key, value in fields.items() if value is not None})
    if data is not None:
        from clinical_ner.formats.corpora import (
            check_assertion_map_sources, check_label_map_sources, mapped_labels,
        )

        from clinical_ner.model.vocab import Vocabulary
        from clinical_ner.text.tags import entity_labels

        model_labels = entity_labels(Vocabulary.load(model_dir).tags)
        if label_map is not None:
            # As `evaluate` checks it: a misspelt type would be scored as O, and a label the
            # model lacks as missed.
            check_label_map_sources(label_map, [data], data_format, training=False,
                                    skip_invalid=skip_invalid)
            check_labels_known(mapped_labels(label_map), model_labels)
        corpus = read_corpus(data, data_format, label_map, skip_invalid, assertion_map)
        if emit is not None:
            report_skipped(corpus, str(data), emit)
            # As `evaluate` notes it (with a label map, check_labels_known refused them).
            if label_map is None and (note := unknown_labels_note(str(data), corpus.labels,
                                                                  model_labels)):
                emit(note)
        if assertion_map is not None:
            # As `evaluate` checks it: a map that reads nothing would put every problem's
            # gold assertion as present on the card.
            check_assertion_map_sources(assertion_map, [data], data_format, set(corpus.labels),
                                        training=False)
        # As `evaluate` scores it: only the labels the map maps onto, so that the model's
        # other labels, which the data does not annotate, are not counted as wrong.
        card["evaluation"] = evaluation_record(
            model_dir, data, data_format, label_map, skip_invalid, card, assertion_map, corpus,
            labels=mapped_labels(label_map) if label_map is not None else None)
    return _write(model_dir, card, reference)


def parameter_rows(model) -> list[dict]:
    """Each layer with weights of a loaded Keras ``model``: its name, weight shapes and size."""
    rows = []
    for layer in model.layers:
        if layer.weights:
            rows.append({"layer": layer.name,
                         "shapes": ["x".join(map(str, w.shape)) for w in layer.weights],
                         "parameters": sum(int(w.numpy().size) for w in layer.weights)})
    return rows


def base_model_record(init_from: str | Path | dict | None) -> dict:
    """``{"fine_tuned_from": {"model", "training"}}`` for a model fine-tuned from ``init_from``.

    ``training`` is the base model's own training record (its data, corpora
    and dev scores; ``None`` if its card has none), so that a fine-tuned
    model's card still says what every stage learnt from. Empty without
    ``init_from``; ``init_from`` may be such a record already (kept by a
    checkpoint, when the base model may have moved since).
    """
    if init_from is None:
        return {}
    if isinstance(init_from, dict):
        return {"fine_tuned_from": init_from}
    path = resolve_model_path(init_from)
    # A bundled model by its name (the command line passes its folder), not
    # by where this installation keeps it.
    return {"fine_tuned_from": {"model": model_reference(path),
                                "training": _load_card_data(path).get("training")}}


def recorded_base_model(model_dir: str | Path) -> dict | None:
    """The ``fine_tuned_from`` record of ``model_dir``'s card (``None``: none, or no card)."""
    return (_load_card_data(Path(model_dir)).get("training") or {}).get("fine_tuned_from")


def _load_card_data(model_dir: Path) -> dict:
    path = model_dir / CARD_DATA_FILE
    if not path.is_file():
        return {}
    # Rewritten in place by every `card`: one cut short (a full disk) or edited by hand ended
    # `card` and `train --init-from` with an internal error, naming neither file nor line.
    card = read_json_file(path, ModelError, "run the command again")
    if not isinstance(card, dict):
        raise ModelError(f"{path}: not a JSON object (damaged?)")
    return card


def _write(model_dir: Path, card: dict, reference: str | None = None) -> Path:
    # The weights are counted once per model file and kept in model_card.json, so that
    # rendering never loads the model; a retrained model.keras has another digest.
    model_file = model_dir / MODEL_FILE
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest() if model_file.is_file() else None
    if digest is None or (card.get("parameters") or {}).get("model_sha256") != digest:
        from clinical_ner.annotators.keras_annotator import KerasAnnotator

        model = KerasAnnotator.load(model_dir).model  # without a model: the usual one-line error
        card["parameters"] = {"model_sha256": digest, "layers": parameter_rows(model)}
    (model_dir / CARD_DATA_FILE).write_text(json.dumps(card, indent=1, ensure_ascii=False)
                                            + "\n", encoding="utf-8")
    path = model_dir / CARD_FILE
    path.write_text(render_model_card(model_dir, card, reference), encoding="utf-8")
    return path
