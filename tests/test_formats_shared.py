"""The readers on the shared public corpora, against the counts in their READMEs."""
from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from clinical_ner.errors import DataFormatError
from clinical_ner.formats import load_corpus
from clinical_ner.formats.brat import read_brat
from clinical_ner.formats.conll import read_conll
from clinical_ner.formats.i2b2 import read_i2b2
from clinical_ner.text.tags import tags_to_mentions

MACCROBAT_MAP = {
    "Sign_symptom": "problem",
    "Disease_disorder": "problem",
    "Diagnostic_procedure": "test",
    "Medication": "treatment",
    "Therapeutic_procedure": "treatment",
}


def entity_counts(documents) -> Counter:
    return Counter(
        m.label for d in documents for s in d.sentences for m in tags_to_mentions(s.tags)
    )


def sentence_count(documents) -> int:
    return sum(len(d.sentences) for d in documents)


def token_count(documents) -> int:
    return sum(len(s.tokens) for d in documents for s in d.sentences)


@lru_cache(maxsize=None)
def conll(path: Path):
    return read_conll(path)


def maccrobat_conll_documents(shared_data: Path, split: str) -> dict[str, list]:
    """The sentences of maccrobat/<split>.conll cut into documents by documents.tsv."""
    sentences = conll(shared_data / "maccrobat" / f"{split}.conll").documents[0].sentences
    rows = (shared_data / "maccrobat" / "documents.tsv").read_text(encoding="utf-8").splitlines()
    documents, position = {}, 0
    for row in rows[1:]:
        doc_id, doc_split, n_sentences, _ = row.split("\t")
        if doc_split == split:
            documents[doc_id] = sentences[position:position + int(n_sentences)]
            position += int(n_sentences)
    assert position == len(sentences)
    return documents


@pytest.mark.parametrize(
    ("split", "n_documents", "n_sentences", "labels"),
    [
        ("train", 153, 3349, {"problem": 3532, "test": 3287, "treatment": 1548}),
        ("dev", 24, 599, {"problem": 637, "test": 668, "treatment": 238}),
    ],
)
def test_maccrobat_i2b2_equals_the_conll_files(
    shared_data, split, n_documents, n_sentences, labels
):
    corpus = read_i2b2(shared_data / "maccrobat-i2b2" / split)
    assert corpus.skipped == []
    assert len(corpus.documents) == n_documents
    assert sentence_count(corpus.documents) == n_sentences
    assert entity_counts(corpus.documents) == labels
    assert sum(labels.values()) == {"train": 8367, "dev": 1543}[split]
    # Sentence by sentence, in the document order of documents.tsv.
    expected = maccrobat_conll_documents(shared_data, split)
    by_name = {document.name: document for document in corpus.documents}
    assert sorted(by_name) == sorted(expected)
    for name, sentences in expected.items():
        got = by_name[name].sentences
        assert [(s.tokens, s.tags) for s in got] == [(s.tokens, s.tags) for s in sentences], name
        text = by_name[name].text
        assert all(text[a:b] == token for s in got for token, (a, b) in zip(s.tokens, s.offsets))


@pytest.mark.parametrize(
    ("path", "n_sentences", "n_tokens", "labels"),
    [
        ("maccrobat/train.conll", 3349, 79679, {"problem": 3532, "test": 3287, "treatment": 1548}),
        ("maccrobat/dev.conll", 599, 14013, {"problem": 637, "test": 668, "treatment": 238}),
        ("maccrobat/train.native.conll", 3349, 79679,
         {"Diagnostic_procedure": 3287, "Disease_disorder": 991, "Medication": 777,
          "Sign_symptom": 2541, "Therapeutic_procedure": 771}),
        ("bc5cdr/train.conll", 4560, 118170, {"Chemical": 5203, "Disease": 4182}),
        ("bc5cdr/dev.conll", 4581, 117453, {"Chemical": 5347, "Disease": 4246}),
        ("bc5cdr/test.conll", 4797, 124750, {"Chemical": 5385, "Disease": 4424}),
        ("ncbi-disease/train.conll", 5424, 135701, {"Disease": 5134}),
        ("ncbi-disease/dev.conll", 923, 23969, {"Disease": 787}),
    ],
)
def test_conll_corpora_counts(shared_data, path, n_sentences, n_tokens, labels):
    corpus = conll(shared_data / path)
    assert corpus.skipped == []
    assert [d.name for d in corpus.documents] == [Path(path).stem]
    assert sentence_count(corpus.documents) == n_sentences
    assert token_count(corpus.documents) == n_tokens
    assert entity_counts(corpus.documents) == labels
    assert corpus.labels == sorted(labels)


def test_i2b2_format_examples(shared_data):
    folder = shared_data / "i2b2-format-examples"
    # The folder also holds COPYRIGHT.txt and LICENSE-Apache-2.0.txt, which have no .con.
    with pytest.raises(DataFormatError, match="no .con file"):
        read_i2b2(folder)
    corpus = load_corpus(folder, skip_invalid=True)
    assert sorted(Path(e.path).name for e in corpus.skipped) == [
        "COPYRIGHT.txt", "LICENSE-Apache-2.0.txt"
    ]
    assert [d.name for d in corpus.documents] == ["ex_doc", "pretend", "single"]
    assert entity_counts(corpus.documents) == {"problem": 33, "test": 13, "treatment": 19}
    [ex_doc] = [d for d in corpus.documents if d.name == "ex_doc"]
    assert entity_counts([ex_doc]) == {"problem": 28, "test": 13, "treatment": 17}
    assert sum(
        entity_counts(read_i2b2(folder / f"{name}.txt").documents).total()
        for name in ("ex_doc", "pretend", "single")
    ) == 65


def test_maccrobat_brat_matches_the_conversion(shared_data):
    corpus = read_brat(shared_data / "maccrobat" / "brat", label_map=MACCROBAT_MAP)
    assert len(corpus.documents) == 177
    assert corpus.labels == ["problem", "test", "treatment"]
    # Same mentions as train.conll + dev.conll: 3532+637, 3287+668, 1548+238.
    assert entity_counts(corpus.documents) == {"problem": 4169, "test": 3955, "treatment": 1786}
    overlaps = [e for e in corpus.skipped if "overlaps" in e.problem]
    crossing = [e for e in corpus.skipped if "crosses a sentence boundary" in e.problem]
    assert len(overlaps) + len(crossing) == len(corpus.skipped)
    # The README counts 39 dropped overlaps over all 200 documents; 177 are here.
    assert len(overlaps) == 38
    clipped_documents = {Path(e.path).stem for e in crossing}

    expected = {
        **maccrobat_conll_documents(shared_data, "train"),
        **maccrobat_conll_documents(shared_data, "dev"),
    }
    differing = set()
    for document in corpus.documents:
        conll_sentences = expected[document.name]
        # The conversion's regex made zero-width spaces (U+200B) tokens; our
        # tokenizer treats them as separators. Otherwise the tokens agree.
        conll_pairs = [
            (token, tag) for s in conll_sentences for token, tag in zip(s.tokens, s.tags)
            if token != "\u200b"
        ]
        brat_pairs = [pair for s in document.sentences for pair in zip(s.tokens, s.tags)]
        assert [t for t, _ in brat_pairs] == [t for t, _ in conll_pairs], document.name
        for (_, ours), (_, theirs) in zip(brat_pairs, conll_pairs):
            if ours != theirs:
                # Only the tail of an entity clipped at one of our sentence
                # boundaries (the conversion split at line ends only).
                assert (ours, theirs[:2]) == ("O", "I-"), document.name
                differing.add(document.name)
    assert differing <= clipped_documents


def test_maccrobat_brat_all_types_read_without_errors(shared_data):
    corpus = read_brat(shared_data / "maccrobat" / "brat")
    assert len(corpus.labels) == 41
    assert all("overlaps" in e.problem or "crosses" in e.problem for e in corpus.skipped)
