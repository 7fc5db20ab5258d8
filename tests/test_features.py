"""The in-graph featurizer must equal a plain Python reference built on ``clinical_ner.text.tokenizer``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_ner.text import tokenizer as text
from clinical_ner.model.features import Featurizer, _normalization_table, _shape_table
from clinical_ner.export.saved_model import check_core_ops
from clinical_ner.text.graph_tokenizer import dense_from_runs

WORDS = ["", "<unk>", "pain", "ct0", "0.0", "i̇", "İ", "σας", "0", "x", "ǆ", "ß", "<"]
CHARS = ["", "<unk>", "a", "b", "C", "İ", "٣", "\U0001f600", "\u0301", "0", "x", "<"]
MAX_WORD_LENGTH = 5


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return Featurizer(WORDS, CHARS, MAX_WORD_LENGTH)


def reference(
    tokens: list[list[str]], words: list[str], chars: list[str], max_word_length: int
) -> dict[str, np.ndarray]:
    """The features computed with dictionaries and ``clinical_ner.text.tokenizer``."""
    word_index = {word: index for index, word in enumerate(words)}
    char_index = {char: index for index, char in enumerate(chars) if index >= 2}
    longest = max((len(token) for row in tokens for token in row), default=0)
    width = max(1, min(max_word_length, longest))
    shape = (len(tokens), len(tokens[0]) if tokens else 0)
    word_ids = np.zeros(shape, np.int32)
    char_ids = np.zeros(shape + (width,), np.int32)
    casing_ids = np.zeros(shape, np.int32)
    for row, sentence in enumerate(tokens):
        for column, token in enumerate(sentence):
            if token:
                word_ids[row, column] = word_index.get(text.normalize_word(token), 1)
                casing_ids[row, column] = text.casing_feature(token)
                for position, char in enumerate(token[:max_word_length]):
                    char_ids[row, column, position] = char_index.get(char, 1)
    return {"word_ids": word_ids, "char_ids": char_ids, "casing_ids": casing_ids}


def assert_matches_reference(featurizer: Featurizer, tokens: list[list[str]]) -> None:
    columns = len(tokens[0]) if tokens else 0
    batch = tf.constant([[t.encode("utf-8") for t in row] for row in tokens], tf.string,
                        shape=[len(tokens), columns])  # fmt: skip
    got = featurizer(batch)
    expected = reference(tokens, list(featurizer.words), list(featurizer.chars),
                         featurizer.max_word_length)  # fmt: skip
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == tf.int32
        np.testing.assert_array_equal(got[key].numpy(), value, err_msg=key)


# Surface forms that hit the vocabulary after normalisation, and tricky ones.
INTERESTING = [
    "", "", "Pain", "PAIN", "pain", "CT2", "ct٣", "CT𝟘", "1.5", "٣", "İ", "i̇", "ΣΑΣ", "σας",
    "Ǆ", "ǅ", "ß", "ẞ", "Ⅻ", "ⅻ", "²", "Ab1", "A1b2", "12a", "_", "e\u0301", "\U0001f600",
    "\U0001d400bc", "x" * 40, "Cab٣0xyz", "<unk>", "<", "\ufffd", "ﬁ",
]  # fmt: skip
tokens = st.one_of(
    st.sampled_from(INTERESTING),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=12),
    st.text("aAbBcC019٣İ_-. ", min_size=1, max_size=9),
)


@st.composite
def token_batches(draw: st.DrawFn) -> list[list[str]]:
    rows, columns = draw(st.integers(0, 4)), draw(st.integers(0, 6))
    batch = [draw(st.lists(tokens, min_size=columns, max_size=columns)) for _ in range(rows)]
    return batch


@given(token_batches())
@settings(max_examples=300, deadline=None)
def test_random_tokens_match_reference(featurizer: Featurizer, batch: list[list[str]]) -> None:
    assert_matches_reference(featurizer, batch)


@pytest.mark.parametrize(
    "batch",
    [
        [],
        [[]],
        [[], []],
        [["", ""]],
        [["CT2", "pain", ""], ["İ", "٣", "Abcdefgh"]],
        [["x" * 100]],
        [["", "ΣΑΣ"], ["\U0001f600\u0301", ""]],
    ],
)
def test_edge_cases_match_reference(featurizer: Featurizer, batch: list[list[str]]) -> None:
    assert_matches_reference(featurizer, batch)


def test_char_width_is_cut_to_max_word_length_and_at_least_one(featurizer: Featurizer) -> None:
    long_token = featurizer(tf.constant([["ab", "x" * 50]]))
    assert long_token["char_ids"].shape == (1, 2, MAX_WORD_LENGTH)
    assert featurizer(tf.constant([["ab", ""]]))["char_ids"].shape == (1, 2, 2)
    assert featurizer(tf.constant([["", ""]]))["char_ids"].shape == (1, 2, 1)
    assert featurizer(tf.zeros([0, 3], tf.string))["char_ids"].shape == (0, 3, 1)


def test_known_values(featurizer: Featurizer) -> None:
    features = featurizer(tf.constant([["CT٣", "İ", ""]]))
    assert features["word_ids"].numpy().tolist() == [[WORDS.index("ct0"), WORDS.index("İ"), 0]]
    casing = text.CASING_FEATURES
    assert features["casing_ids"].numpy().tolist() == [
        [casing.index("initial_upper"), casing.index("all_upper"), casing.index("padding")]
    ]
    assert features["char_ids"].numpy()[0, :2].tolist() == [
        [CHARS.index("C"), 1, CHARS.index("٣")], [CHARS.index("İ"), 0, 0]
    ]  # fmt: skip


def test_invalid_utf8_reads_as_replacement_characters(featurizer: Featurizer) -> None:
    features = featurizer(tf.constant([[b"a\xffb", b"\xc3"]]))
    expected = reference([["a\ufffdb", "\ufffd"]], WORDS, CHARS, MAX_WORD_LENGTH)
    for key, value in expected.items():
        np.testing.assert_array_equal(features[key].numpy(), value)


def test_tables_match_text_for_every_code_point() -> None:
    code_points = tf.range(text.MAX_CODE_POINT + 1, dtype=tf.int32)
    deltas = np.zeros(text.MAX_CODE_POINT + 1, np.int32)
    for code_point, normalized in text.normalization_map().items():
        deltas[code_point] = normalized - code_point
    np.testing.assert_array_equal(_normalization_table().lookup(code_points).numpy(), deltas)
    np.testing.assert_array_equal(
        _shape_table().lookup(code_points).numpy(), dense_from_runs(*text.char_shape_runs())
    )


def test_config_round_trip(featurizer: Featurizer) -> None:
    config = featurizer.get_config()
    assert config["words"] == WORDS and config["chars"] == CHARS
    assert config["max_word_length"] == MAX_WORD_LENGTH
    copy = Featurizer(**config)
    batch = tf.constant([["Pain", "CT2", "zzz"]])
    for key, value in featurizer(batch).items():
        np.testing.assert_array_equal(copy(batch)[key].numpy(), value.numpy())


@pytest.mark.parametrize(
    ("words", "chars", "max_word_length", "message"),
    [
        (["<unk>", ""], CHARS, 5, "words must start"),
        (["", "<unk>", "a", "a"], CHARS, 5, "duplicate"),
        (WORDS, ["", "<unk>", "ab"], 5, "single characters"),
        (WORDS, ["<unk>"], 5, "chars must start"),
        (WORDS, CHARS, 0, "max_word_length"),
    ],
)
def test_rejects_bad_arguments(
    words: list[str], chars: list[str], max_word_length: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Featurizer(words, chars, max_word_length)


def test_works_in_tf_data(featurizer: Featurizer) -> None:
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant([["Pain", ""], ["CT2", "x"]]))
    batches = list(dataset.batch(2).map(featurizer))
    expected = [[WORDS.index("pain"), 0], [WORDS.index("ct0"), WORDS.index("x")]]
    np.testing.assert_array_equal(batches[0]["word_ids"].numpy(), expected)


_LOAD_AND_FEATURIZE = """
import json, sys
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
features = loaded(tf.constant(json.loads(sys.argv[2])))
print(json.dumps({key: value.numpy().tolist() for key, value in features.items()}))
"""


@pytest.mark.slow
def test_saved_model_runs_in_plain_tensorflow(featurizer: Featurizer, tmp_path: Path) -> None:
    path = str(tmp_path / "featurizer")
    tf.saved_model.save(featurizer, path)
    batch = [["CT٣", "Pain", "xxxxxxxx"], ["İ", "\U0001f600", ""]]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_FEATURIZE, path, json.dumps(batch)],
        capture_output=True, text=True, check=True, env=env, timeout=120,
    )  # fmt: skip
    served = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = reference(batch, WORDS, CHARS, MAX_WORD_LENGTH)
    assert served == {key: value.tolist() for key, value in expected.items()}
    check_core_ops(path)



def test_the_lean_runtime_s_featurizer_keeps_no_long_token_in_memory() -> None:
    """A LiteRT worker featurizes notes for its whole life: its token cache must not keep
    long tokens (base64 blobs, runs of one character), each held whole as the cache's key."""
    import tracemalloc

    from clinical_ner.annotators.litert.featurize import NumpyFeaturizer

    numpy_featurizer = NumpyFeaturizer(WORDS, CHARS, MAX_WORD_LENGTH)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(200):  # 10 MB of tokens, each made and dropped as a note's are
            numpy_featurizer([[f"{number:04d}" + "Q" * 50_000, "pain"]], width=2,
                             char_width=MAX_WORD_LENGTH)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1_000_000, f"{kept} bytes kept after featurizing 10 MB of distinct tokens"
    # Featurized all the same, cached or not.
    tokens = ["0001" + "Q" * 50_000, "Pain" * 2, "pain"]
    expected = reference([tokens], WORDS, CHARS, MAX_WORD_LENGTH)
    ids = numpy_featurizer([tokens], width=3, char_width=MAX_WORD_LENGTH)
    assert ids["word_ids"].tolist() == expected["word_ids"].tolist()
    assert ids["casing_ids"].tolist() == expected["casing_ids"].tolist()
