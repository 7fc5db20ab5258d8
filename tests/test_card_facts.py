"""What the model card says the evaluated data was to the model: by documents, not paths."""
import os
import shutil

from clinical_ner.evaluation.card_facts import (
    DEV, NOT_TRAINED, TRAINED, data_relation, read_corpus, training_summary,
)
from helpers import SAMPLE


def corpus(path):
    return read_corpus(path, "auto", None, False)


def copy_split(source, target, names=None):
    """``source``'s i2b2 layout (txt/, concept/) under ``target``, every document or ``names``."""
    for folder in ("txt", "concept"):
        (target / folder).mkdir(parents=True, exist_ok=True)
        for file in (source / folder).iterdir():
            if names is None or file.stem in names:
                shutil.copy(file, target / folder / file.name)
    return target


def record(train, dev=None):
    return {"train_data": [training_summary(train, corpus(train))],
            "dev_data": training_summary(dev, corpus(dev)) if dev else None}


def test_the_training_data_is_recognised_wherever_it_lies(tmp_path, monkeypatch):
    training = record(SAMPLE / "train", SAMPLE / "dev")
    assert training["train_data"][0]["path"] == str((SAMPLE / "train").resolve())
    # A copy, from another directory: the card said it was none of the training data.
    copy = copy_split(SAMPLE / "train", tmp_path / "copy")
    monkeypatch.chdir(tmp_path)
    assert data_relation(copy, corpus(copy), training) == TRAINED
    assert data_relation(SAMPLE / "dev", corpus(SAMPLE / "dev"), training) == DEV
    # A superset: the training documents and the dev ones.
    both = copy_split(SAMPLE / "dev", copy_split(SAMPLE / "train", tmp_path / "both"))
    documents = len(corpus(both).documents)
    assert data_relation(both, corpus(both), training) == (
        f"WARNING: {len(corpus(SAMPLE / 'train').documents)} of {documents} documents were "
        "in the model's training data; these scores overstate it")
    other = record(SAMPLE / "dev")
    assert data_relation(copy, corpus(copy), other) == NOT_TRAINED


def test_an_older_record_by_relative_path_is_not_taken_for_other_data(tmp_path, monkeypatch):
    # Recorded as typed (relative) and read from another directory: "none of its training
    # data" was said of the training data itself.
    monkeypatch.chdir(SAMPLE)
    old = {"train_data": [{"path": "train"}], "dev_data": {"path": "dev"}}
    assert data_relation(SAMPLE / "train", corpus(SAMPLE / "train"), old) == TRAINED
    monkeypatch.chdir(tmp_path)
    relation = data_relation(SAMPLE / "train", corpus(SAMPLE / "train"), old)
    assert relation.startswith("the model's training data was recorded by relative paths")
    absolute = {"train_data": [{"path": str(SAMPLE / "train")}], "dev_data": None}
    assert data_relation(os.path.relpath(SAMPLE / "train"), corpus(SAMPLE / "train"),
                         absolute) == TRAINED
    assert "a copy would not be recognised" in data_relation(
        SAMPLE / "dev", corpus(SAMPLE / "dev"), absolute)


def test_each_selecting_corpus_dev_data_is_named_as_having_chosen_the_epoch(tmp_path):
    # A corpus file whose two dev corpora both chose the epoch: no single dev_data.
    first = copy_split(SAMPLE / "dev", tmp_path / "first", names={"18561524"})
    second = copy_split(SAMPLE / "dev", tmp_path / "second", names={"19307547"})
    training = {"train_data": [training_summary(SAMPLE / "train", corpus(SAMPLE / "train"))],
                "dev_data": None,
                "corpora": [{"name": "a", "dev_data": training_summary(first, corpus(first))},
                            {"name": "b", "dev_data": training_summary(second, corpus(second))}]}
    assert data_relation(second, corpus(second), training) == DEV
    # Older records without documents' hashes: by path.
    for item in training["corpora"]:
        del item["dev_data"]["document_hashes"]
    del training["train_data"][0]["document_hashes"]
    assert data_relation(first, corpus(first), training) == DEV


def test_a_fine_tuned_model_s_base_training_data_counts_as_its_own(tmp_path):
    # Audit: the card of a model fine-tuned with --init-from said "the model did not train on
    # this data (it is none of its training data)" of what its base model trained on, and
    # nothing of the dev data that chose the base's epoch.
    names = sorted(file.stem for file in (SAMPLE / "train" / "txt").iterdir())
    first = copy_split(SAMPLE / "train", tmp_path / "first", set(names[:20]))
    second = copy_split(SAMPLE / "train", tmp_path / "second", set(names[20:]))
    fine_tuned = {**record(second),
                  "fine_tuned_from": {"model": "base", "training": record(first, SAMPLE / "dev")}}
    assert data_relation(first, corpus(first), fine_tuned) == TRAINED
    assert data_relation(SAMPLE / "dev", corpus(SAMPLE / "dev"), fine_tuned) == DEV
    assert data_relation(second, corpus(second), fine_tuned) == TRAINED
    assert data_relation(SAMPLE / "train", corpus(SAMPLE / "train"), fine_tuned) == TRAINED


SENTENCES = [f"Patient {number} was given aspirin for pain .".split() for number in range(6)]


def write_conll(path, sentences, docstart=False):
    """A CoNLL file of ``sentences`` (aspirin tagged), with or without ``-DOCSTART-``."""
    lines = ["-DOCSTART-\tO", ""] if docstart else []
    for tokens in sentences:
        lines += [f"{token}\t{'B-treatment' if token == 'aspirin' else 'O'}" for token in tokens]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_part_of_a_conll_file_without_docstart_is_recognised_by_its_sentences(tmp_path):
    # Audit: such a file (BC5CDR's, NCBI's) reads as one document, so its one hash matched
    # only the whole file: a part of the training file was "none of its training data".
    train = write_conll(tmp_path / "train.conll", [*SENTENCES, ["1", "."]])
    training = record(train)
    part = write_conll(tmp_path / "part.conll", SENTENCES[1:3])
    assert data_relation(part, corpus(part), training) == TRAINED
    new = [f"Patient {number} had no pain at all .".split() for number in range(2)]
    more = write_conll(tmp_path / "more.conll", [*SENTENCES[4:], *new])
    assert data_relation(more, corpus(more), training) == (
        "WARNING: 2 of 4 sentences (those of 5 tokens or more) were in the model's training "
        "data; these scores overstate it")
    # A short sentence that recurs in unrelated documents ('1 .') is not taken for training
    # data.
    held_out = write_conll(tmp_path / "test.conll", [["1", "."], *new])
    assert data_relation(held_out, corpus(held_out), training) == NOT_TRAINED
    # Training data read in another layout (documents marked) is recognised too.
    marked = write_conll(tmp_path / "marked.conll", SENTENCES, docstart=True)
    assert data_relation(part, corpus(part), record(marked)) == TRAINED


def test_a_record_from_before_sentence_hashes_compares_a_conll_file_whole(tmp_path):
    train = write_conll(tmp_path / "train.conll", SENTENCES)
    training = record(train)
    del training["train_data"][0]["sentence_hashes"]
    assert data_relation(train, corpus(train), training) == TRAINED
    copy = write_conll(tmp_path / "copy.conll", SENTENCES)
    assert data_relation(copy, corpus(copy), training) == TRAINED
