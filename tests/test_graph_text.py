"""The in-graph sentence splitter must equal ``text.split_sentences`` exactly."""
from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinical_ner.text import tokenizer as text
from clinical_ner.export.saved_model import check_core_ops
from clinical_ner.text.graph_tokenizer import (
    CodePointTable,
    _class_table,
    dense_from_runs,
    split_sentences_graph,
)

Sentence = tuple[int, list[tuple[str, int, int]]]


@functools.lru_cache(maxsize=None)
def _compiled(max_sentence_tokens: int) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    return tf.function(
        functools.partial(split_sentences_graph, max_sentence_tokens=max_sentence_tokens),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )


def graph_sentences(documents: list[bytes], max_sentence_tokens: int) -> list[Sentence]:
    """``(document index, [(token, start, end), ...])`` per sentence, from the graph."""
    batch = tf.constant(documents, tf.string, shape=[len(documents)])
    result = _compiled(max_sentence_tokens)(batch)
    tokens = result["tokens"].numpy()
    starts = result["token_start"].numpy()
    ends = result["token_end"].numpy()
    lengths = result["length"].numpy()
    assert result["tokens"].dtype == tf.string
    assert result["token_start"].dtype == result["token_end"].dtype == tf.int64
    assert result["length"].dtype == result["document"].dtype == tf.int32
    assert tokens.shape == starts.shape == ends.shape == (len(lengths), max(lengths, default=0))
    sentences = []
    for row, (length, document) in enumerate(zip(lengths, result["document"].numpy())):
        # Padding is "" with offsets 0.
        assert not tokens[row, length:].any() and not starts[row, length:].any()
        assert not ends[row, length:].any()
        sentences.append(
            (
                int(document),
                [
                    (token.decode("utf-8"), int(start), int(end))
                    for token, start, end in zip(
                        tokens[row, :length], starts[row, :length], ends[row, :length]
                    )
                ],
            )
        )
    return sentences


def python_sentences(documents: list[str], max_sentence_tokens: int) -> list[Sentence]:
    return [
        (index, [(token.text, token.start, token.end) for token in sentence])
        for index, document in enumerate(documents)
        for sentence in text.split_sentences(document, max_sentence_tokens)
    ]


def assert_same_split(documents: list[str], max_sentence_tokens: int) -> None:
    encoded = [document.encode("utf-8") for document in documents]
    assert graph_sentences(encoded, max_sentence_tokens) == python_sentences(
        documents, max_sentence_tokens
    )


# Characters the rules treat specially, to mix into random text.
SPECIAL = sorted(text.LINE_BREAKS | text.SENTENCE_FINAL) + [
    " ", "\t", "\u00a0", "\u200b", "\ufeff", "\x00", "\x1f", "\u0301", "_", "-", "İ",
    "٣", "𝟘", "²", "\U0001f600", "\ufffd", "\U000e0001", "\U0010ffff", "\u0378",
]  # fmt: skip
any_text = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(SPECIAL)), max_size=40)
CLINICAL_PIECES = [
    "BP", "120/80", "mg", "2.5", "q.i.d.", "CT", "pain", "Pt", "28-year-old", "(", ")",
    ":", ";", ",", ".", "!", "?", "%", "+", " ", " ", " ", "  ", "\n", "\r\n", "\n\n",
    "\t", "...", "Dr.", "e.g.", "0", "7", "x", "İV", "μg", "°C", "–",
]  # fmt: skip
clinical_text = st.lists(st.sampled_from(CLINICAL_PIECES), max_size=40).map("".join)
documents = st.lists(st.one_of(any_text, clinical_text), max_size=6)
max_tokens = st.sampled_from([1, 3, text.DEFAULT_MAX_SENTENCE_TOKENS])


@given(documents, max_tokens)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_batches_match_python(batch: list[str], max_sentence_tokens: int) -> None:
    assert_same_split(batch, max_sentence_tokens)


@given(st.lists(st.binary(max_size=30), max_size=4), max_tokens)
@settings(max_examples=100, deadline=None)
def test_invalid_utf8_reads_as_replacement_characters(
    batch: list[bytes], max_sentence_tokens: int
) -> None:
    repaired = [document.decode("utf-8", errors="replace") for document in batch]
    assert graph_sentences(batch, max_sentence_tokens) == python_sentences(
        repaired, max_sentence_tokens
    )


@pytest.mark.parametrize(
    "batch",
    [
        [],
        [""],
        ["", " \n\t ", "\u2028"],
        ["a", "", "  ", "b. c"],
        ["Chest pain. No fever\nCT: clear", "BP 120/80.Next", "2.5 mg.\n"],
        ["ab", "cd"],  # a word must not run on into the next document
        ["end.", "Start"],
        ["a\u0301b\u0300 c\U0001f600d"],
    ],
)
@pytest.mark.parametrize("max_sentence_tokens", [1, 2, 200])
def test_edge_cases(batch: list[str], max_sentence_tokens: int) -> None:
    assert_same_split(batch, max_sentence_tokens)


def test_empty_batch_shapes() -> None:
    result = _compiled(200)(tf.constant([], tf.string))
    assert result["tokens"].shape == (0, 0)
    assert result["length"].shape == result["document"].shape == (0,)


def test_max_sentence_tokens_cut_restarts_after_every_sentence_end() -> None:
    sentences = graph_sentences([b"a b c. d e f g h\ni j k"], 3)
    assert [[token for token, _, _ in tokens] for _, tokens in sentences] == [
        ["a", "b", "c"], ["."], ["d", "e", "f"], ["g", "h"], ["i", "j", "k"]
    ]  # fmt: skip


def test_rejects_max_sentence_tokens_below_one() -> None:
    with pytest.raises(ValueError, match="max_sentence_tokens"):
        split_sentences_graph(tf.constant(["a"]), 0)


def test_runs_eagerly() -> None:
    result = split_sentences_graph(tf.constant(["No fever. Cough", "x"]), 200)
    assert result["tokens"].numpy().tolist() == [
        [b"No", b"fever", b"."], [b"Cough", b"", b""], [b"x", b"", b""]
    ]  # fmt: skip
    assert result["document"].numpy().tolist() == [0, 0, 1]


def test_class_table_matches_char_class_for_every_code_point() -> None:
    expected = dense_from_runs(*text.char_class_runs())
    got = _class_table().lookup(tf.range(text.MAX_CODE_POINT + 1, dtype=tf.int32)).numpy()
    line_breaks = [ord(char) for char in text.LINE_BREAKS]
    finals = [ord(char) for char in text.SENTENCE_FINAL]
    assert (expected[line_breaks] == text.SEPARATOR).all()
    assert (expected[finals] == text.OTHER).all()
    refined = np.isin(np.arange(len(expected)), line_breaks + finals)
    np.testing.assert_array_equal(got[~refined], expected[~refined])
    # The refined classes are the only values outside WORD/SEPARATOR/OTHER.
    assert len(set(got[refined])) == 2 and not set(got[refined]) & {0, 1, 2}


def test_code_point_table_pages_are_shared() -> None:
    values = np.zeros(text.MAX_CODE_POINT + 1, np.int32)
    values[[0x41, 0x1F600, text.MAX_CODE_POINT]] = [7, 8, 9]
    table = CodePointTable(values)
    assert len(table.pages) == 4 * 256  # the all-zero page is stored once
    probe = tf.constant([0, 0x41, 0x42, 0x1F600, 0x1F601, text.MAX_CODE_POINT], tf.int32)
    assert table.lookup(probe).numpy().tolist() == [0, 7, 0, 8, 0, 9]


def _conll_sentences(path: Path) -> list[str]:
    """Each sentence of a CoNLL file, its tokens joined with spaces."""
    sentences, tokens = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            tokens.append(line.split("\t")[0])
        elif tokens:
            sentences.append(" ".join(tokens))
            tokens = []
    if tokens:
        sentences.append(" ".join(tokens))
    return sentences


def _assert_corpus_matches(documents: list[str], batch_size: int) -> None:
    for begin in range(0, len(documents), batch_size):
        assert_same_split(documents[begin:begin + batch_size], text.DEFAULT_MAX_SENTENCE_TOKENS)


def test_maccrobat_documents_match_python(shared_data: Path) -> None:
    paths = sorted((shared_data / "maccrobat" / "brat").glob("*.txt"))
    assert len(paths) == 177
    _assert_corpus_matches([path.read_text(encoding="utf-8") for path in paths], 64)


@pytest.mark.parametrize("corpus", ["bc5cdr", "ncbi-disease"])
def test_conll_sentences_match_python(shared_data: Path, corpus: str) -> None:
    sentences = [
        sentence
        for path in sorted((shared_data / corpus).glob("*.conll"))
        for sentence in _conll_sentences(path)
    ]
    assert len(sentences) > 5000
    _assert_corpus_matches(sentences, 4096)


def test_two_megabyte_document(shared_data: Path) -> None:
    paths = sorted((shared_data / "maccrobat" / "brat").glob("*.txt"))
    corpus = "\n".join(path.read_text(encoding="utf-8") for path in paths)
    rng = random.Random(0)
    # Astral and combining characters make code-point and byte offsets differ,
    # and a stretch without punctuation exercises the max_sentence_tokens cut.
    extra = "".join(rng.choice(["\U0001f600", "e\u0301", "İ", " ", "x"]) for _ in range(20000))
    piece = (corpus + extra + " word" * 20000).encode("utf-8")
    document = (piece * 4)[:2_000_000].decode("utf-8", errors="ignore")
    assert len(document.encode("utf-8")) > 1_999_990

    result = _compiled(text.DEFAULT_MAX_SENTENCE_TOKENS)(tf.constant([document]))

    tokens, starts, ends, lengths = (
        result[key].numpy() for key in ("tokens", "token_start", "token_end", "length")
    )
    expected = text.split_sentences(document)
    assert lengths.tolist() == [len(sentence) for sentence in expected]
    assert tokens.shape[1] == text.DEFAULT_MAX_SENTENCE_TOKENS
    rows = np.repeat(np.arange(len(lengths)), lengths)
    columns = np.concatenate([np.arange(length) for length in lengths])
    flat_expected = [token for sentence in expected for token in sentence]
    for index in np.random.default_rng(0).choice(len(rows), 2000, replace=False):
        row, column = rows[index], columns[index]
        token = tokens[row, column].decode("utf-8")
        start, end = int(starts[row, column]), int(ends[row, column])
        assert document[start:end] == token
        assert text.Token(token, start, end) == flat_expected[index]


def test_a_batch_of_long_documents_splits_as_python_does() -> None:
    """64 documents of 2,000 characters, as the served model gets them."""
    rng = random.Random(1)
    words = ["Chest", "pain", "BP", "120/80", "mg.", "2.5", "no", "fever", "CT", "(", ")"]
    documents = []
    for _ in range(64):
        parts: list[str] = []
        while sum(map(len, parts)) < 2000:
            parts.append(rng.choice(words) + rng.choice([" ", " ", " ", ". ", "\n"]))
        documents.append("".join(parts)[:2000])
    assert graph_sentences([d.encode() for d in documents], 200) == python_sentences(documents, 200)


class _Splitter(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def split(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        return split_sentences_graph(texts, 3)


_LOAD_AND_SPLIT = """
import json, sys
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
result = loaded.signatures["serving_default"](text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({key: value.numpy().tolist() for key, value in result.items()
                  if value.dtype != tf.string} | {"tokens": [[t.decode() for t in row]
                  for row in result["tokens"].numpy()]}))
"""


@pytest.mark.slow
def test_saved_model_runs_in_plain_tensorflow(tmp_path: Path) -> None:
    module = _Splitter()
    path = str(tmp_path / "splitter")
    tf.saved_model.save(module, path, signatures={"serving_default": module.split})
    documents = ["Chest pain. No fever\nCT: clear", "", "e\u0301 \U0001f600 a b c d"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_SPLIT, path, json.dumps(documents)],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    )  # fmt: skip
    served = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = module.split(tf.constant(documents))
    for key, value in expected.items():
        if key == "tokens":
            assert served[key] == [[t.decode() for t in row] for row in value.numpy()]
        else:
            assert served[key] == value.numpy().tolist()
    assert served["document"] == [0, 0, 0, 2, 2]
    check_core_ops(path)

