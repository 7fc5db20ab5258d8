"""What a model card says about data: corpus counts, and scores on data with what it was to the model.

Counts, labels and scores only: never text from the data.
"""
from __future__ import annotations

from pathlib import Path

from clinical_ner.formats import Corpus, load_corpus
from clinical_ner.text.tags import tags_to_mentions


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


def read_corpus(path: str | Path, data_format: str, label_map: dict | None,
                 skip_invalid: bool, assertion_map: dict | None = None) -> Corpus:
    """The corpus at ``path``, read as every command reads annotated data."""
    return load_corpus(path, data_format, label_map=label_map, skip_invalid=skip_invalid,
                       assertion_map=assertion_map)


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def evaluation_record(model_dir: str | Path, data: str | Path, data_format: str = "auto",
                      label_map: dict | None = None, skip_invalid: bool = False,
                      card: dict | None = None, assertion_map: dict | None = None) -> dict:
    """Score the model on ``data`` (exact and lenient, per label) and say what that data was."""
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences

    corpus = read_corpus(data, data_format, label_map, skip_invalid, assertion_map)
    report = evaluate_sentences(KerasAnnotator.load(model_dir), corpus_sentences(corpus))
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
