import doctest
import struct

import numpy as np
import pytest

from clinical_ner.vectors.reader import load_embeddings
from clinical_ner.errors import DataFormatError
from clinical_ner.model import vocab as vocab_module
from clinical_ner.model.vocab import Vocabulary


def test_glove_word2vec_text_and_fasttext_header(tmp_path):
    glove = tmp_path / "glove.txt"
    glove.write_text("the 1 2\nThe 3 4\nct 5 6\n1990 7 8\n2010 9 10\n", encoding="utf-8")
    words, vectors = load_embeddings(glove)
    assert words == ["the", "ct", "0000"]
    np.testing.assert_array_equal(vectors, [[1, 2], [5, 6], [7, 8]])
    vec = tmp_path / "wiki.vec"
    vec.write_text("2 2\nfever 0.5 1\nCough 2 3\n", encoding="utf-8")
    words, vectors = load_embeddings(vec)
    assert words == ["fever", "cough"] and vectors.shape == (2, 2)


def test_word2vec_binary(tmp_path):
    path = tmp_path / "vectors.bin"
    with open(path, "wb") as handle:
        handle.write(b"2 3\n")
        for word, values in ((b"fever", (1.0, 2.0, 3.0)), (b"cough", (4.0, 5.0, 6.0))):
            handle.write(word + b" " + struct.pack("<3f", *values) + b"\n")
    words, vectors = load_embeddings(path)
    assert words == ["fever", "cough"]
    np.testing.assert_array_equal(vectors[1], [4.0, 5.0, 6.0])


def test_bad_embedding_files_name_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a 1 2\nb 1 2 3\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.txt:2: .*3 dimensions"):
        load_embeddings(path)
    path.write_text("a 1 x\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.txt:1: .*not all numbers"):
        load_embeddings(path)
    path.write_bytes("a 1 2\ncaf\xe9 1 2\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"bad.txt:2: not UTF-8 text \(invalid byte at "
                                              r"column 4\)"):
        load_embeddings(path)
    with pytest.raises(DataFormatError, match="not found"):
        load_embeddings(tmp_path / "missing.txt")
    # A NaN would make every training loss NaN, and the run would still save a model.
    for value in ("nan", "inf", "-Infinity"):
        path.write_text(f"a 1 2\nb 1 {value}\n", encoding="utf-8")
        with pytest.raises(DataFormatError, match=r"bad.txt:2: vector values are not all "
                                                  "finite numbers"):
            load_embeddings(path)
    path.write_text("2 3\na 1 2\nb 1 2\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.txt:2: vector has 2 dimensions, but the "
                                              r"header \(line 1\) says 3"):
        load_embeddings(path)
    # A copy cut short at a line break: every line is valid, only the header's count tells.
    path.write_text("3 2\na 1 2\nb 1 2\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.txt: 2 vectors, but the header \(line 1\) "
                                              "says 3"):
        load_embeddings(path)
    # Not a header: int() fails on "²" (isdigit() is true) and on 5,000 digits.
    for header in ("5 \u00b2", f"5 {'3' * 5000}"):
        path.write_text(f"{header}\na 1 2\n", encoding="utf-8")
        with pytest.raises(DataFormatError, match=r"bad.txt:1: vector values are not all "):
            load_embeddings(path)


def test_a_text_vectors_file_named_bin_is_not_read_as_binary(tmp_path):
    # auto reads .bin as word2vec binary: a text file's digits would become garbage floats.
    path = tmp_path / "vectors.bin"
    path.write_text("2 3\nfever 0.125 -1.5 2e-3\ncough 4 5 6\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="a text vectors file, not word2vec binary; read "
                                              "it with --embeddings-format text"):
        load_embeddings(path)
    words, vectors = load_embeddings(path, format="text")
    assert words == ["fever", "cough"]
    np.testing.assert_array_equal(vectors[0], np.float32([0.125, -1.5, 2e-3]))
    # NaN in a binary file is refused as in a text one.
    with open(path, "wb") as handle:
        handle.write(b"1 2\nfever " + struct.pack("<2f", 1.0, float("nan")) + b"\n")
    with pytest.raises(DataFormatError, match="not all finite"):
        load_embeddings(path)


def test_vocabulary_keeps_embedding_words_and_frequent_training_words(tmp_path):
    sentences = [["Fever", "and", "CT2"], ["fever", "rare"], ["and"]]
    vocab = Vocabulary.build(sentences, ["O", "B-problem", "I-problem"],
                             embedding_words=["the", "fever"], min_word_count=2)
    assert vocab.words[:2] == ["", "<unk>"]
    assert "the" in vocab.words and "fever" in vocab.words and "and" in vocab.words
    assert "rare" not in vocab.words and "ct0" not in vocab.words  # seen once
    assert vocab.chars[:2] == ["", "<unk>"] and "F" in vocab.chars and "2" in vocab.chars
    matrix = vocab.embedding_matrix(["the", "fever"], np.array([[1, 1], [2, 2]], "float32"), 0)
    np.testing.assert_array_equal(matrix[0], [0, 0])
    np.testing.assert_array_equal(matrix[vocab.words.index("fever")], [2, 2])
    vocab.save(tmp_path)
    assert Vocabulary.load(tmp_path) == vocab


def test_training_words_first_puts_the_words_in_use_first_and_keeps_each_words_vector():
    vocab = Vocabulary(["", "<unk>", "the", "fever", "0000", "cough"], ["", "<unk>"], ["O"])
    table = np.arange(12, dtype="float32").reshape(6, 2)
    # Words are matched by their normalised form; unknown words add nothing.
    reordered, order, in_use = vocab.training_words_first([["COUGH", "in", "1999"], ["cough"]])
    assert reordered.words == ["", "<unk>", "0000", "cough", "the", "fever"]
    assert in_use == 4
    assert reordered.chars == vocab.chars and reordered.tags == vocab.tags
    for word_id, word in enumerate(reordered.words):
        np.testing.assert_array_equal(table[order][word_id], table[vocab.words.index(word)])
    assert vocab.training_words_first([])[0].words == vocab.words


def test_docstring_example():
    results = doctest.testmod(vocab_module)
    assert results.attempted > 0 and results.failed == 0
