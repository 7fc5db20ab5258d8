"""What a model card says about data: corpus counts, and scores on data with what it was to the model.

Counts, labels and scores only: never text from the data.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from clinical_ner.formats import Corpus, load_corpus
from clinical_ner.text.document import Document
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


#: Hex digits kept of each document's SHA-256: 64 bits, so that two different documents of
#: any corpus share one with a chance below 1e-9, and the card stays small.
HASH_DIGITS = 16
#: Sentences of fewer tokens are not hashed (:func:`sentence_hashes`): they recur in
#: unrelated documents. Every sentence the BC5CDR and NCBI-disease splits share with fewer
#: is such ('1 .', 'METHODS .', 'A case report .'), and would warn of training data in a
#: held-out test split.
HASHED_SENTENCE_TOKENS = 5
TRAINED = "WARNING: the model was trained on this data; these scores overstate it"
DEV = ("the model did not train on this data; it was the dev data that chose the training "
       "epoch (early stopping), so the scores are slightly optimistic")
NOT_TRAINED = "the model did not train on this data (it is none of its training data)"
UNKNOWN = "the model's training data was not recorded, so whether it saw this data is unknown"


def document_hashes(corpus: Corpus) -> list[str]:
    """A short SHA-256 of each document's tokens (documents without any are left out).

    Recorded at training, they tell whether data a card is asked about was
    trained on wherever it lies now (a copy, a superset): paths cannot. Tokens,
    not the text, so that the same note in another layout or format matches
    when it tokenises alike. One-way, but whoever holds a note can test whether
    the model trained on it, as with any list of the training data.
    """
    return [digest for document in corpus.documents for digest in _hashes(document, False)]


def sentence_hashes(corpus: Corpus) -> list[str]:
    """A short SHA-256 of each sentence of at least :data:`HASHED_SENTENCE_TOKENS` tokens.

    What a CoNLL file without ``-DOCSTART-`` lines is compared with: it reads as one
    document, whose one hash would match only the whole file, so that part of it (a
    subset, or the training file with other sentences) would not be recognised; its
    sentences stand for its documents instead. Recorded of every document, so that such
    a file is recognised whatever layout the training data was read from.
    """
    return [digest for document in corpus.documents for digest in _hashes(document, True)]


def _hashes(document: Document, by_sentence: bool) -> list[str]:
    """The document's one hash, or (``by_sentence``) its sentences' (the document's if none
    is long enough); none without tokens."""
    tokens = [token for sentence in document.sentences for token in sentence.tokens]
    parts = [sentence.tokens for sentence in document.sentences
             if len(sentence.tokens) >= HASHED_SENTENCE_TOKENS] if by_sentence else []
    return [hashlib.sha256(" ".join(part).encode("utf-8")).hexdigest()[:HASH_DIGITS]
            for part in parts or [tokens] if part]


def training_summary(path: str | Path, corpus: Corpus) -> dict:
    """:func:`summarise_corpus` for the training record: the absolute path, the hashes."""
    return {**summarise_corpus(Path(path).resolve(), corpus),
            "document_hashes": document_hashes(corpus),
            "sentence_hashes": sentence_hashes(corpus)}


def data_relation(data: str | Path, corpus: Corpus, training: dict) -> str:
    """What ``corpus`` (read from ``data``) was to the model, from its training record.

    A fine-tuned model learnt from what its base models (``fine_tuned_from``, stage by
    stage) trained on, and was chosen in part on their dev data: those count as its own.
    Each sentence of a CoNLL file without ``-DOCSTART-`` counts as a document
    (:func:`sentence_hashes`) where every record has its sentences' hashes.
    """
    if not training:
        return UNKNOWN
    stages = _stages(training)
    trained_records = [record for stage in stages for record in stage.get("train_data", [])]
    dev_records = [record for stage in stages for record in _dev_records(stage)]
    records = [*trained_records, *dev_records]
    if not all("document_hashes" in record for record in records):
        return _path_relation(data, trained_records, dev_records)
    # Records from before sentence_hashes hashed such a file whole: it is compared whole.
    by_sentence = all("sentence_hashes" in record for record in records)
    unmarked = by_sentence and not all(document.boundaries_marked
                                       for document in corpus.documents)
    hashes = [digest for document in corpus.documents for digest in _hashes(
        document, by_sentence and not document.boundaries_marked)]
    trained, dev = _recorded_hashes(trained_records), _recorded_hashes(dev_records)
    seen = sum(digest in trained for digest in hashes)
    chose = sum(digest in dev for digest in hashes)
    units = (f"sentences (those of {HASHED_SENTENCE_TOKENS} tokens or more)" if unmarked
             else "documents")
    if hashes and seen == len(hashes):
        return TRAINED
    if seen:
        return (f"WARNING: {seen} of {len(hashes)} {units} were in the model's training "
                "data; these scores overstate it")
    if hashes and chose == len(hashes):
        return DEV
    if chose:
        return (f"the model did not train on this data; {chose} of {len(hashes)} {units} "
                "were the dev data that chose the training epoch (early stopping), so the "
                "scores are slightly optimistic")
    return NOT_TRAINED


def _recorded_hashes(records: list[dict]) -> set[str]:
    return {digest for record in records
            for digest in [*record["document_hashes"], *record.get("sentence_hashes", ())]}


def _stages(training: dict) -> list[dict]:
    """The training record and those of its base models, the last stage first."""
    stages = []
    while training:
        stages.append(training)
        training = (training.get("fine_tuned_from") or {}).get("training")
    return stages


def _dev_records(training: dict) -> list[dict]:
    """The dev data that chose the epoch: one set, or (a corpus file) each selecting corpus's."""
    records = [training["dev_data"]] if training.get("dev_data") else []
    records += [corpus["dev_data"] for corpus in training.get("corpora", ())
                if corpus.get("dev_data") and corpus["dev_data"] not in records]
    return records


def _path_relation(data: str | Path, trained_records: list[dict],
                   dev_records: list[dict]) -> str:
    """For older records, without documents' hashes: by path, where the paths can tell.

    Such records kept ``--train`` as typed: a relative path is relative to a
    directory that was not recorded, so not matching it proves nothing.
    """
    trained_on = [item["path"] for item in trained_records]
    dev = [item["path"] for item in dev_records]
    here = Path(data).resolve()
    if any(here == Path(path).resolve() for path in trained_on):
        return TRAINED
    if any(here == Path(path).resolve() for path in dev):
        return DEV
    if not all(Path(path).is_absolute() for path in [*trained_on, *dev]):
        return ("the model's training data was recorded by relative paths, so whether it saw "
                "this data is unknown")
    return ("the model did not train on this data where it lies (its training data's "
            "documents were not recorded, so a copy would not be recognised)")


def evaluation_record(model_dir: str | Path, data: str | Path, data_format: str = "auto",
                      label_map: dict | None = None, skip_invalid: bool = False,
                      card: dict | None = None, assertion_map: dict | None = None,
                      corpus: Corpus | None = None,
                      labels: Sequence[str] | None = None, report: dict | None = None) -> dict:
    """Score the model on ``data`` (exact and lenient, per label) and say what that data was.

    ``corpus``: ``data`` as read already (it is not read again). ``labels``: score only
    these (see :func:`~clinical_ner.evaluation.evaluate.evaluate_sentences`). ``report``:
    that score, computed already by the caller from the same model and ``corpus``
    (the trainer's, of the epoch it saved)."""
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences

    if corpus is None:
        corpus = read_corpus(data, data_format, label_map, skip_invalid, assertion_map)
    if report is None:
        report = evaluate_sentences(KerasAnnotator.load(model_dir), corpus_sentences(corpus),
                                    labels=labels)
    relation = data_relation(data, corpus, (card or {}).get("training") or {})
    return {"data": summarise_corpus(data, corpus), "relation": relation, "report": report}
