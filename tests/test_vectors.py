"""`clinical-ner vectors` (word vectors from unlabeled text) and `train` with several vector files."""
import bz2
import errno
import gzip
import json
import lzma
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_ner.config import NERConfig
from clinical_ner.vectors.reader import load_embedding_files, load_embeddings
from clinical_ner.errors import ClinicalNERError, ConfigError, DataFormatError
from clinical_ner.text.tokenizer import (
    char_class,
    normalization_map,
    normalize_word,
    sentence_token_texts,
    split_sentences,
)
from helpers import REPO_ROOT, run_cli_in_process

SAMPLE = REPO_ROOT / "samples" / "maccrobat-i2b2"
GLOVE = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"

needs_gensim = pytest.mark.skipif(
    __import__("importlib").util.find_spec("gensim") is None,
    reason="the [vectors] extra (gensim) is not installed; CI installs it")

# Six common words (each far above the default min count) and one name seen twice.
DOCUMENTS = [
    "Fever and cough since 2019. Chest pain on day 3.",
    "No fever, no cough; chest pain resolved.",
    "Mr Zyxwvut reported fever.",
] * 2 + ["Fever, cough and chest pain."] * 6
COMMON = {"fever", "cough", "chest", "pain", ".", ","}
RARE_NAME = "zyxwvut"


def vectors_file_words(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    count, dim = map(int, lines[0].split())
    assert len(lines) == count + 1
    assert all(len(line.split(" ")) == dim + 1 for line in lines[1:])
    return [line.split(" ")[0] for line in lines[1:]], dim


def train_small(inputs, output, **options):
    from clinical_ner.vectors.trainer import train_vectors

    values = dict(dim=8, epochs=2, workers=1, progress=False, seed=1)
    values.update(options)
    return train_vectors([str(i) for i in inputs], output, **values)


# -- tokenisation and normalisation (no gensim needed) ---------------------------------

def test_normalisation_never_changes_a_code_points_tokenizer_class():
    # The reason clinical_ner.vectors.tokens may normalise a whole line before tokenising it.
    changed = normalization_map()
    assert changed
    assert [c for c, n in changed.items() if char_class(chr(c)) != char_class(chr(n))] == []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab Z9.!?-,\n\r\t\u2028\u00e9\u0301\U0001F600 ")),
               max_size=80),
       st.integers(min_value=1, max_value=6))
def test_sentence_token_texts_are_split_sentences_tokens(text, limit):
    expected = [[token.text for token in sentence] for sentence in split_sentences(text, limit)]
    assert sentence_token_texts(text, limit) == expected


# -- clinical-ner vectors ----------------------------------------------------------------

@pytest.fixture()
def notes(tmp_path):
    """The same documents as every input kind the command reads."""
    root = tmp_path / "notes"
    root.mkdir()
    plain = "".join(document + "\n" for document in DOCUMENTS)
    jsonl = "".join(json.dumps({"id": n, "body": d}) + "\n" for n, d in enumerate(DOCUMENTS))
    kinds = {"lines": root / "notes.txt", "gz": root / "notes.txt.gz",
             "xz": root / "notes.txt.xz", "bz2": root / "notes.txt.bz2",
             "jsonl": root / "notes.jsonl", "jsonl.xz": root / "notes.jsonl.xz",
             "folder": root / "folder"}
    kinds["lines"].write_text(plain, encoding="utf-8")
    kinds["gz"].write_bytes(gzip.compress(plain.encode()))
    kinds["xz"].write_bytes(lzma.compress(plain.encode()))
    kinds["bz2"].write_bytes(bz2.compress(plain.encode()))
    kinds["jsonl"].write_text("\ufeff" + jsonl, encoding="utf-8")  # as Windows tools write
    kinds["jsonl.xz"].write_bytes(lzma.compress(jsonl.encode()))
    kinds["folder"].mkdir()
    for number, document in enumerate(DOCUMENTS):  # one document a file
        (kinds["folder"] / f"note-{number:02d}.txt").write_text(document, encoding="utf-8")
    (kinds["folder"] / "README.md").write_text("not a note " * 50, encoding="utf-8")
    return kinds


@needs_gensim
@pytest.mark.parametrize("kind", ["lines", "gz", "xz", "bz2", "jsonl", "jsonl.xz", "folder"])
def test_every_input_kind_gives_the_same_vocabulary(notes, tmp_path, kind):
    output = tmp_path / "vectors.txt"
    json_lines = {"text_field": "body"} if kind.startswith("jsonl") else {}
    report = train_small([notes[kind]], output, **json_lines)
    words, dim = vectors_file_words(output)
    assert dim == 8 and report.dim == 8
    # Normalised as the model looks words up; the rare name and the rare words are out.
    assert set(words) == COMMON | {"and"}
    assert RARE_NAME not in words and "0000" not in words
    assert report.lines == len(DOCUMENTS) and report.files == (
        len(DOCUMENTS) if kind == "folder" else 1)
    assert report.tokens == sum(len(s) for d in DOCUMENTS for s in split_sentences(d))
    assert report.temp_file_deleted
    assert oct(output.stat().st_mode & 0o777) == "0o600"
    # The frequency order (most frequent first) and values that load_embeddings reads.
    loaded_words, vectors = load_embeddings(output)
    assert loaded_words == words and vectors.shape == (len(words), 8)
    assert np.isfinite(vectors).all() and np.abs(vectors).sum() > 0


@needs_gensim
def test_min_count_decides_which_words_get_a_vector(notes, tmp_path):
    output = tmp_path / "vectors.txt"
    train_small([notes["lines"]], output, min_count=2)
    words, _ = vectors_file_words(output)
    assert RARE_NAME in words and "mr" in words and "0000" in words  # each seen twice
    train_small([notes["lines"]], output, min_count=11)
    assert set(vectors_file_words(output)[0]) == {"fever", "."}  # 12 and 14 times
    from clinical_ner.vectors.trainer import train_vectors

    for one_path in (notes["lines"], str(notes["lines"])):  # not in a list: the same
        train_vectors(one_path, output, dim=8, epochs=1, workers=1, min_count=11,
                      progress=False)
        assert set(vectors_file_words(output)[0]) == {"fever", "."}
    with pytest.raises(ConfigError, match="no word occurs 100 times"):
        train_small([notes["lines"]], output, min_count=100)


@needs_gensim
def test_a_lone_surrogate_in_json_is_the_character_the_model_reads(tmp_path):
    # JSON's "\ud800" cannot be written as UTF-8 (it ended the command); the model reads
    # U+FFFD in its place.
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"text": "Fever \\ud800 cough."}\n' * 5, encoding="utf-8")
    train_small([notes], tmp_path / "vectors.txt")
    assert "\ufffd" in vectors_file_words(tmp_path / "vectors.txt")[0]


@needs_gensim
def test_a_file_named_twice_is_read_once(notes, tmp_path, monkeypatch):
    # Counted three times, the name (seen twice) would reach the min count and get a vector.
    monkeypatch.chdir(notes["lines"].parent)
    output = tmp_path / "vectors.txt"
    report = train_small([notes["lines"], "notes.txt", f"./{notes['lines'].name}"], output)
    assert report.files == 1 and report.lines == len(DOCUMENTS)
    assert RARE_NAME not in vectors_file_words(output)[0]
    report = train_small([notes["folder"], notes["folder"] / "note-00.txt"], output)
    assert report.files == len(DOCUMENTS) and report.lines == len(DOCUMENTS)


@needs_gensim
@pytest.mark.slow
def test_fasttext_and_two_workers(notes, tmp_path):
    output = tmp_path / "vectors.txt"
    report = train_small([notes["lines"], notes["folder"]], output, method="fasttext",
                         workers=2)
    # Each document twice: "no" reaches the min count (4 + 4), the name does not (2 + 2).
    assert set(vectors_file_words(output)[0]) == COMMON | {"and", "no"}
    assert report.lines == 2 * len(DOCUMENTS) and report.temp_file_deleted


@needs_gensim
@pytest.mark.parametrize("content, line, problem", [
    (b'{"body": "Fever."}\n{"body": "Cough."}\n{"body": "Smith, broken\n', 3, "not valid JSON"),
    (b'{"body": "Fever."}\n{"text": "Smith"}\n', 2, "field 'body'"),
    (b'{"body": "Fever."}\n{"body": "Smith", "x": ' + b"[" * 100_000 + b"}\n", 2,
     "not valid JSON (arrays or objects nested too deeply)"),
    (b'{"body": "Fever."}\n["Smith"]\n', 2, "field 'body'"),
    (b'{"body": "Fever."}\n\n{"body": "Smith \xe9t\xe9"}\n', 3, "not UTF-8"),
    (b'{"body": "Fever."}\n{"body": "Smith\tx"}\n', 2,
     "not valid JSON (Invalid control character at column 16)"),
    (b'{"body": "Fever."}\n{"body": "Fever.", "body": "Smith"}\n', 2,
     "field 'body' appears twice in one object"),
])
def test_errors_name_the_file_and_line_never_the_text(tmp_path, content, line, problem):
    source = tmp_path / "notes.jsonl"
    source.write_bytes(content)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(DataFormatError) as error:
        train_small([source], tmp_path / "vectors.txt", text_field="body", tmp_dir=scratch)
    message = str(error.value)
    assert message.startswith(f"{source}:{line}: ") and problem in message
    assert "Smith" not in message
    assert list(scratch.iterdir()) == []  # the temporary token file is gone
    assert not (tmp_path / "vectors.txt").exists()


@needs_gensim
def test_missing_inputs_and_bad_options_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.docx").write_bytes(b"PK")
    with pytest.raises(DataFormatError, match="empty: no .txt"):
        train_small([empty], tmp_path / "v.txt")
    with pytest.raises(DataFormatError, match="missing.txt: no such file"):
        train_small([tmp_path / "missing.txt"], tmp_path / "v.txt")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DataFormatError, match="no text to train on"):
        train_small([tmp_path / "blank.txt"], tmp_path / "v.txt")
    with pytest.raises(ConfigError, match="method"):
        train_small([tmp_path / "blank.txt"], tmp_path / "v.txt", method="glove")
    with pytest.raises(ConfigError, match="dim must be a positive integer"):
        train_small([tmp_path / "blank.txt"], tmp_path / "v.txt", dim=0)
    # A process each: 100,000 ran the machine out of memory.
    with pytest.raises(ConfigError, match="workers must be at most 1024, got 100000"):
        train_small([tmp_path / "blank.txt"], tmp_path / "v.txt", workers=100_000)
    # gensim keeps these in C ints (its threads failed and the command waited forever),
    # seeds NumPy with an unsigned 32-bit seed, and ran out of memory for a huge dim.
    for option, value, problem in (("window", 2**31, "at most 2147483647"),
                                   ("epochs", 2**31, "at most 2147483647"),
                                   ("dim", 10_001, "at most 10000"),
                                   ("seed", -1, "an integer >= 0"),
                                   ("seed", 2**32, "at most 4294967295")):
        with pytest.raises(ConfigError, match=f"{option} must be {problem}"):
            train_small([tmp_path / "blank.txt"], tmp_path / "v.txt", **{option: value})
    # Refused before reading and training, which may take an hour.
    with pytest.raises(ConfigError, match=f"output {tmp_path}: a folder; give the file to write"):
        train_small([tmp_path / "blank.txt"], tmp_path)
    with pytest.raises(ConfigError, match="nowhere: the folder for the temporary token file "
                                          "does not exist"):
        train_small([tmp_path / "blank.txt"], tmp_path / "v.txt", tmp_dir=tmp_path / "nowhere")
    # A file was said not to exist.
    with pytest.raises(ConfigError, match=r"^tmp_dir \S+/blank.txt: a file; give a folder to "
                                          "write into$"):
        train_small([tmp_path / "blank.txt"], tmp_path / "v.txt", tmp_dir=tmp_path / "blank.txt")
    # A note that would be left out without a word, or a pipe read until it closes.
    (empty / "lost.txt").symlink_to(tmp_path / "moved.txt")
    with pytest.raises(DataFormatError, match="lost.txt: a broken symbolic link"):
        train_small([empty], tmp_path / "v.txt")
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(DataFormatError, match="pipe.txt: not a regular file"):
        train_small([tmp_path / "pipe.txt"], tmp_path / "v.txt")
    # A link to a pipe is no broken link (it was called one), in the words batch uses.
    (tmp_path / "piped.txt").symlink_to(tmp_path / "pipe.txt")
    with pytest.raises(DataFormatError, match="piped.txt: not a regular file"):
        train_small([tmp_path / "piped.txt"], tmp_path / "v.txt")
    truncated = tmp_path / "notes.txt.xz"
    truncated.write_bytes(lzma.compress(b"Fever.\n" * 1000)[:50])
    with pytest.raises(DataFormatError, match="notes.txt.xz: cannot read"):
        train_small([truncated], tmp_path / "v.txt")


@needs_gensim
def test_an_input_file_is_never_the_output(notes, tmp_path):
    text = notes["lines"].read_bytes()
    with pytest.raises(ConfigError, match="also an input"):
        train_small([notes["lines"]], notes["lines"])
    with pytest.raises(ConfigError, match="also an input"):  # below an input folder
        train_small([notes["folder"]], notes["folder"] / "note-00.txt")
    assert notes["lines"].read_bytes() == text


@pytest.fixture()
def file_size_limit():
    """Files written past ``limit`` bytes fail with EFBIG, as on a full disk."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an OSError, not a signal

    def limit(size):
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


@needs_gensim
def test_a_file_that_cannot_be_written_is_an_error_naming_it(tmp_path, file_size_limit):
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(document + "\n" for document in DOCUMENTS) * 20)
    scratch, output = tmp_path / "scratch", tmp_path / "vectors.txt"
    scratch.mkdir()
    output.write_text("earlier vectors\n")
    file_size_limit(2_000)  # below the token file's size
    with pytest.raises(ClinicalNERError, match=f"{scratch}: cannot write the temporary token "
                                               "file \\(File too large\\)"):
        train_small([notes], output, tmp_dir=scratch)
    assert list(scratch.iterdir()) == []
    file_size_limit(50_000)  # above it, below the vectors'
    with pytest.raises(ClinicalNERError, match=f"output {output}: cannot write the vectors "
                                               "\\(File too large\\)"):
        train_small([notes], output, tmp_dir=scratch, dim=1000)
    assert output.read_text() == "earlier vectors\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "scratch",
                                                                  "vectors.txt"]


@needs_gensim
def test_an_unreadable_input_is_a_data_error_not_the_token_files(tmp_path, monkeypatch):
    from clinical_ner.vectors import inputs

    notes = tmp_path / "notes.txt"
    notes.write_text("Fever.\n")
    notes.chmod(0)
    if os.access(notes, os.R_OK):  # root reads any file: refused as it is for other users
        def refuse(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        monkeypatch.setattr(inputs, "_open", refuse)
    with pytest.raises(DataFormatError, match=f"{notes}: cannot open \\(Permission denied\\)"):
        train_small([notes], tmp_path / "vectors.txt")


@needs_gensim
def test_an_output_folder_that_is_not_writable_is_refused_before_reading(tmp_path, monkeypatch):
    from clinical_ner.vectors import trainer

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root writes anywhere: asked as another user would be
        monkeypatch.setattr(trainer.os, "access", lambda path, mode: not (
            Path(path) == locked and mode == os.W_OK))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "notes.txt").write_text("Fever.\n")
    with pytest.raises(ConfigError, match=f"the folder {locked} is not writable"):
        train_small([tmp_path / "notes.txt"], locked / "vectors.txt", tmp_dir=scratch)
    assert list(scratch.iterdir()) == []  # refused before the token file was made


def test_every_text_option_is_read(tmp_path):
    from clinical_ner.cli import build_parser

    argv = ["vectors", "--text", "a.txt", "b.txt", "--text", "c.txt", "--output", "v.txt"]
    assert build_parser(argv).parse_args(argv).text == ["a.txt", "b.txt", "c.txt"]


@needs_gensim
def test_a_text_field_without_json_lines_input_is_refused_before_reading(tmp_path):
    # A JSON lines file named .txt was trained on as plain text, its keys and quotes
    # included, though the user had named the field holding the text.
    notes = tmp_path / "notes.txt"
    notes.write_text('{"body": "Fever."}\n' * 20, encoding="utf-8")
    output = tmp_path / "vectors.txt"
    with pytest.raises(ConfigError, match="text_field 'body' names a field of JSON lines, "
                                          "but no input is JSON lines"):
        train_small([notes], output, text_field="body")
    assert not output.exists()


@needs_gensim
@pytest.mark.slow
def test_the_command_prints_a_summary_and_one_line_errors(notes, tmp_path):
    def run_cli(*args):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        return subprocess.run([sys.executable, "-m", "clinical_ner.cli", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=600)

    output = tmp_path / "vectors.txt"
    result = run_cli("vectors", "--text", notes["xz"], notes["jsonl"], "--text-field", "body",
                     "--output", output, "--dim", 8, "--epochs", 1, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote 8 vectors of dimension 8 to {output}" in result.stdout
    assert "temporary token file deleted: yes" in result.stdout
    assert "Smith" not in result.stdout + result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "Fever."}\n{"body": 3}\n')
    result = run_cli("vectors", "--text", bad, "--output", output, "--text-field", "body")
    assert result.returncode == 3 and "Traceback" not in result.stderr  # a data error
    assert f"clinical-ner vectors: error: {bad}:2: " in result.stderr


# -- train with several --embeddings files ---------------------------------------------

def test_several_files_are_concatenated_with_zeros_where_a_file_lacks_a_word(tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("fever 1 2\nCough 3 4\n", encoding="utf-8")
    second.write_text("3 1\ncough 5\nnodule 6\n2019 7\n", encoding="utf-8")
    words, vectors = load_embedding_files([first, second])
    assert words == ["fever", "cough", "nodule", "0000"]
    assert vectors.tolist() == [[1, 2, 0], [3, 4, 5], [0, 0, 6], [0, 0, 7]]
    one_words, one = load_embedding_files([first])
    assert (one_words, one.tolist()) == (["fever", "cough"], [[1, 2], [3, 4]])
    broken = tmp_path / "broken.txt"
    broken.write_text("fever 1\ncough 1 2\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="broken.txt:2: vector has 2 dimensions"):
        load_embedding_files([first, broken])
    with pytest.raises(DataFormatError, match="missing.txt: embeddings file not found"):
        load_embedding_files([first, tmp_path / "missing.txt"])


def test_config_keeps_one_file_a_string_and_several_a_list(tmp_path):
    assert NERConfig(embeddings="a.txt").embedding_files == ["a.txt"]
    assert NERConfig(embeddings=["a.txt"]).embeddings == "a.txt"  # as old config.json files
    config = NERConfig(embeddings=["a.txt", "b.txt"])
    config.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["embeddings"] == ["a.txt", "b.txt"]
    assert NERConfig.load(tmp_path).embedding_files == ["a.txt", "b.txt"]
    assert NERConfig().embedding_files == []
    for bad in ([], ["a.txt", ""], 3):
        with pytest.raises(ConfigError, match="embeddings must be"):
            NERConfig(embeddings=bad)


@needs_gensim
@pytest.mark.slow
def test_train_uses_new_vectors_alone_and_concatenated_with_glove(tmp_path):
    from clinical_ner.formats import load_corpus
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.training.trainer import corpus_sentences, train

    # Vectors from the sample's training notes (a folder of .txt, one case report each);
    # models trained on its 8 dev documents (small, fast). The vectors' words that those
    # lack keep exactly these values (frozen rows).
    own = tmp_path / "own.txt"
    train_small([SAMPLE / "train" / "txt"], own, min_count=2)
    own_words, own_vectors = load_embeddings(own)
    glove_words, glove_vectors = load_embeddings(GLOVE)
    tiny = dict(char_dim=8, char_filters=8, lstm_units=8, epochs=1, batch_size=32, seed=3)

    def table_rows(model_dir):
        ner = KerasAnnotator.load(model_dir)
        table = ner.model.get_layer("word_embedding").table()
        return ner, {word: table[i] for i, word in enumerate(ner.vocab.words)}

    train(SAMPLE / "dev", tmp_path / "own-model", config=NERConfig(embeddings=str(own), **tiny),
          progress=False)
    ner, rows = table_rows(tmp_path / "own-model")
    assert ner.model.word_dim == 8
    train_words = {normalize_word(token) for sentence in
                   corpus_sentences(load_corpus(SAMPLE / "dev")) for token in sentence.tokens}
    frozen = [w for w in own_words if w not in train_words]
    assert frozen
    for word in frozen:
        np.testing.assert_array_equal(rows[word], own_vectors[own_words.index(word)])

    # Both files, through the command line: GloVe's 50 values, then the 8 in-domain ones.
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny))
    result = run_cli_in_process(
        "train", "--train", SAMPLE / "dev", "--output", tmp_path / "both-model", "--config",
        config, "--quiet", "--embeddings", GLOVE, "--embeddings", own, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "both-model" / "config.json").read_text())
    assert saved["embeddings"] == [str(GLOVE.resolve()), str(own.resolve())]
    ner, rows = table_rows(tmp_path / "both-model")
    assert ner.model.word_dim == 58
    glove_only = [w for w in glove_words if w not in own_words and w not in train_words][:20]
    own_only = [w for w in frozen if w not in glove_words]
    in_both = [w for w in frozen if w in glove_words]
    assert glove_only and own_only and in_both
    for word in glove_only:
        np.testing.assert_array_equal(rows[word][:50], glove_vectors[glove_words.index(word)])
        assert not rows[word][50:].any()
    for word in own_only:
        assert not rows[word][:50].any()
        np.testing.assert_array_equal(rows[word][50:], own_vectors[own_words.index(word)])
    for word in in_both:
        np.testing.assert_array_equal(rows[word], np.concatenate(
            [glove_vectors[glove_words.index(word)], own_vectors[own_words.index(word)]]))


@needs_gensim
@pytest.mark.slow
@pytest.mark.parametrize("stop", ["sigterm", "ctrl-c"])
def test_a_stop_while_reading_ends_every_process_and_deletes_the_token_file(tmp_path, stop):
    # A service manager stops a long run with SIGTERM: the command must end
    # (not wait forever for a reading worker) and leave no temporary file with
    # the notes' words behind, nor any worker. Ctrl-C sends SIGINT to the terminal's
    # whole process group: each worker printed its own traceback before "interrupted".
    notes = tmp_path / "notes.txt"
    with notes.open("w", encoding="utf-8") as handle:
        for number in range(400_000):
            handle.write(f"Patient {number} denies chest pain; CT of the abdomen was normal.\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # A shell's background job starts with SIGINT ignored, which a child inherits: the
    # command runs with its default action, as from a terminal (set before an exec, not in
    # preexec_fn, which may deadlock in a process with threads).
    with_sigint = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.executable, sys.argv[1:])")
    process = subprocess.Popen(
        [sys.executable, "-c", with_sigint, sys.executable, "-m", "clinical_ner.cli", "vectors",
         "--text", str(notes), "--output", str(tmp_path / "vectors.txt"), "--workers", "2",
         "--tmp-dir", str(scratch), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), start_new_session=True)
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 300
        # Reading has begun once the workers' first sentences reach the token file.
        while time.monotonic() < deadline and process.poll() is None:
            if any(path.stat().st_size for path in scratch.iterdir()):
                workers = child_processes(process.pid)
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert len(workers) == 2  # still reading: the pool's two workers
        if stop == "sigterm":
            process.send_signal(signal.SIGTERM)
        else:
            # Whether a worker prints before the parent stops it is a race: the workers'
            # signal mask says it for sure.
            assert all(ignores_sigint(pid) for pid in workers)
            os.killpg(process.pid, signal.SIGINT)
        # A hang here was seen in about one run in a hundred before the workers took
        # SIGTERM's default action (a rare race: this test does not force it).
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    if stop == "sigterm":
        assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
        assert "Traceback" not in stderr
    else:
        assert (process.returncode, stderr) == (130, "clinical-ner vectors: interrupted\n")
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "vectors.txt").exists()
    assert all(not is_running(pid) for pid in workers)


def ignores_sigint(pid: int) -> bool:
    [mask] = [line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
              if line.startswith("SigIgn:")]
    return bool(int(mask, 16) >> (signal.SIGINT - 1) & 1)


def child_processes(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan may wait for a container's init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
