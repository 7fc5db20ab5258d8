"""The command-line contract: train, evaluate, predict (jsonl, conll, i2b2) and clear errors."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from clinical_ner.formats import load_corpus
from helpers import REPO_ROOT, ClosedStdout, assert_same_entities, run_cli_in_process

pytestmark = pytest.mark.slow

SAMPLE = REPO_ROOT / "samples" / "maccrobat-i2b2"
VECTORS = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"
NOTE = "CT of the chest showed a 2 cm nodule; she was started on aspirin."


def run_cli(*args, stdin=None, check=True):
    """``python -m clinical_ner.cli ARGS`` in a new process: for what the process shows."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "clinical_ner.cli", *map(str, args)],
                            capture_output=True, text=True, input=stdin, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stderr[-3000:]}")
    return result


def test_python_m_clinical_ner_is_the_command():
    # As `python -m clinical_ner.cli` and the console script: the package itself runs it.
    from clinical_ner.cli import COMMANDS

    result = subprocess.run([sys.executable, "-m", "clinical_ner", "--help"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: clinical-ner ")
    assert all(command in result.stdout for command in COMMANDS)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_the_model_argument_s_help_says_exports_are_taken(command, capsys):
    # Audit: "model directory, or the bundled model's name", though exports load too.
    from clinical_ner.cli import main

    with pytest.raises(SystemExit) as stopped:
        main([command, "--help"])
    assert stopped.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "model directory, export (SavedModel or LiteRT) or bundled model name" in help_text


@pytest.mark.parametrize("at_terminal", [True, False])
def test_predict_says_it_reads_a_terminal_s_note_and_nothing_for_a_pipe(capsys, monkeypatch,
                                                                        at_terminal):
    # Audit: at a terminal it waited on standard input without a word.
    import io

    from clinical_ner.cli import main

    stdin = io.TextIOWrapper(io.BytesIO(NOTE.encode()))
    monkeypatch.setattr(stdin, "isatty", lambda: at_terminal)
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["predict"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["text"] == NOTE
    said = ("reading one note from standard input; end it with Ctrl-D (texts go as arguments, "
            "files with --input)\n")
    assert captured.err == (said if at_terminal else "")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.json"
    config.write_text(json.dumps({"lstm_units": 16, "char_filters": 16, "patience": 1}))
    output = root / "model"
    result = run_cli_in_process("train", "--train", SAMPLE / "train", "--dev", SAMPLE / "dev",
                                "--embeddings", VECTORS, "--output", output, "--epochs", 2,
                                "--config", config, "--quiet")
    assert "epoch 2: loss" in result.stderr
    saved = json.loads((output / "config.json").read_text())
    assert saved["lstm_units"] == 16 and saved["epochs"] == 2
    assert saved["embeddings"] == str(VECTORS.resolve())
    return output


def test_evaluate_prints_a_table_and_writes_json(model_dir, tmp_path):
    report_path = tmp_path / "dev.json"
    result = run_cli_in_process("evaluate", model_dir, "--data", SAMPLE / "dev", "--json",
                                report_path)
    assert "exact match" in result.stdout and "lenient match" in result.stdout
    report = json.loads(report_path.read_text())
    for mode in ("exact", "lenient"):
        assert set(report[mode]["micro"]) >= {"precision", "recall", "f1"}
        assert set(report[mode]["per_label"]) <= {"problem", "test", "treatment"}
    gold = sum(len(s.tags) and sum(t.startswith("B-") for t in s.tags)
               for d in load_corpus(SAMPLE / "dev").documents for s in d.sentences)
    assert report["exact"]["micro"]["gold"] == gold
    assert report["lenient"]["micro"]["f1"] >= report["exact"]["micro"]["f1"]


def test_predict_jsonl_from_arguments_files_and_stdin(model_dir, tmp_path):
    note = tmp_path / "note1.txt"
    note.write_text("Chest x-ray showed pneumonia.\r\nStarted on ceftriaxone. 😀", encoding="utf-8")
    result = run_cli_in_process("predict", model_dir, NOTE, "--input", note)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    texts = [NOTE, note.read_bytes().decode("utf-8")]
    assert [line["text"] for line in lines] == texts
    for line in lines:
        for entity in line["entities"]:
            assert set(entity) == {"start", "end", "text", "label", "confidence"}
            assert line["text"][entity["start"]:entity["end"]] == entity["text"]
    # Texts may also follow the options, and after "--" a text may look like one.
    mixed = run_cli_in_process("predict", model_dir, NOTE, "--output-format", "jsonl",
                               "-5 mg daily", "--", "-v")
    assert [json.loads(line)["text"] for line in mixed.stdout.splitlines()] == [
        NOTE, "-5 mg daily", "-v"]
    from_stdin = run_cli_in_process("predict", model_dir, stdin=NOTE)
    assert_same_entities(json.loads(from_stdin.stdout)["entities"], lines[0]["entities"])


@pytest.mark.parametrize("command", ["predict", "client", "vectors"])
def test_a_repeated_input_option_adds_its_files(command):
    # The last --input (--text) alone was read, the others dropped without a word.
    from clinical_ner.cli import build_parser

    option = "--text" if command == "vectors" else "--input"
    argv = [command, option, "a.txt", "b.txt", option, "c.txt"]
    if command == "vectors":
        argv += ["--output", "v.txt"]
    args, _ = build_parser(argv).parse_known_args(argv)
    assert [str(path) for path in getattr(args, option[2:])] == ["a.txt", "b.txt", "c.txt"]


def test_predict_conll_and_i2b2_outputs(model_dir, tmp_path):
    conll = tmp_path / "out.conll"
    run_cli_in_process("predict", model_dir, NOTE, "--output-format", "conll", "--output", conll)
    corpus = load_corpus(conll)
    tokens = [t for d in corpus.documents for s in d.sentences for t in s.tokens]
    assert tokens[:4] == ["CT", "of", "the", "chest"] and tokens[-1] == "."
    out_dir = tmp_path / "con"
    result = run_cli_in_process("predict", model_dir, NOTE, "--format", "i2b2", "--output",
                                out_dir)
    # The old spelling works for a release, with a one-line notice.
    assert result.stderr.strip() == ("clinical-ner: --format is deprecated; "
                                     "use --output-format")
    assert (out_dir / "text-1.txt").read_text() == NOTE
    # The written pair reads back as an i2b2 document.
    read_back = load_corpus(out_dir, "i2b2")
    assert len(read_back.documents) == 1 and not read_back.skipped


def test_bad_input_gets_a_clear_error_not_a_traceback(model_dir, tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("Fever\tB-problem\nZZSECRET\tX-broken\n\n", encoding="utf-8")
    # A real process: its exit status, and no traceback on its stderr.
    result = run_cli("train", "--train", bad, "--output", tmp_path / "m", check=False)
    assert result.returncode == 3  # a data error (clinical_ner.errors)
    assert "Traceback" not in result.stderr
    assert "bad.conll:2" in result.stderr and "ZZSECRET" not in result.stderr
    # --train repeats: every training corpus is read, and a bad one is named.
    # The rest in this process (an exception main let through, which a process would print
    # as a traceback, fails the test here).
    result = run_cli_in_process("train", "--train", SAMPLE / "train", "--train", bad,
                                "--output", tmp_path / "m", check=False)
    assert result.returncode == 3 and "bad.conll:2" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m").exists()
    result = run_cli_in_process("evaluate", tmp_path / "no-model", "--data", bad, check=False)
    assert result.returncode == 4 and "not a clinical-ner model directory" in result.stderr
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("fi\xe8vre".encode("latin-1"))
    result = run_cli_in_process("predict", model_dir, "--input", latin1, check=False)
    assert result.returncode == 3 and "not UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_incomplete_or_damaged_model_directory_is_named_in_one_line(model_dir, tmp_path):
    # What a partial copy of a model leaves (a file left out, an interrupted download).
    from clinical_ner import ClinicalNER
    from clinical_ner.errors import ModelError

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("checkpoint"))
    # Annotating needs no checkpoint.
    assert ClinicalNER.load(copy).annotate(NOTE) == ClinicalNER.load(model_dir).annotate(NOTE)
    (copy / "vocab.json").write_text('{"words": ["<pad>",\n  oops]}', encoding="utf-8")
    with pytest.raises(ModelError, match=rf"^{copy / 'vocab.json'}:2: not valid JSON"):
        ClinicalNER.load(copy)
    (copy / "vocab.json").unlink()
    result = run_cli_in_process("predict", copy, NOTE, check=False)
    assert result.returncode == 4 and result.stderr == (
        f"clinical-ner predict: error: {copy}: an incomplete model directory (vocab.json "
        "missing); copy the whole model folder again, or train it again with "
        "'clinical-ner train'\n")
    (copy / "model.keras").unlink()
    result = run_cli_in_process("predict", copy, NOTE, check=False)
    assert result.returncode == 4 and result.stderr == (
        f"clinical-ner predict: error: {copy}: an incomplete model directory (model.keras, "
        "vocab.json missing); copy the whole model folder again, or train it again with "
        "'clinical-ner train'\n")


def test_commands_are_quiet_unless_verbose(model_dir):
    # As a user runs it: no TF_CPP_MIN_LOG_LEVEL of their own.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-m", "clinical_ner.cli", "predict", str(model_dir),
                            NOTE], capture_output=True, text=True, env=env, timeout=600)
    assert quiet.returncode == 0 and json.loads(quiet.stdout)["text"] == NOTE
    assert quiet.stderr == ""
    verbose = subprocess.run([sys.executable, "-m", "clinical_ner.cli", "-v", "predict",
                              str(model_dir), NOTE], capture_output=True, text=True, env=env,
                             timeout=600)
    assert verbose.returncode == 0 and verbose.stdout == quiet.stdout
    # TensorFlow's C++ start-up lines come back with --verbose.
    assert re.search(r"^[IWE]\d{4} ", verbose.stderr, re.MULTILINE)
    # The option may also follow the command, as most tools allow.
    after = subprocess.run([sys.executable, "-m", "clinical_ner.cli", "predict", str(model_dir),
                            NOTE, "--verbose"], capture_output=True, text=True, env=env,
                           timeout=600)
    assert after.returncode == 0 and after.stdout == quiet.stdout
    assert re.search(r"^[IWE]\d{4} ", after.stderr, re.MULTILINE)


def test_exit_codes_say_what_went_wrong(tmp_path):
    # (A bare "predict" reads standard input with the bundled model: not a usage error.)
    usage = run_cli("predict", "--output-format", "pdf", check=False)
    assert usage.returncode == 2 and usage.stderr == (
        "clinical-ner predict: error: argument --output-format: invalid choice: a str of 3 "
        "characters (not shown: it may be a note) (choose from 'jsonl', 'conll', 'i2b2', "
        "'html') (see 'clinical-ner predict --help')\n")
    # An unknown option is named by its command, in one line too.
    unknown = run_cli("train", "--train", "x", "--output", tmp_path / "never", "--embedings",
                      "y", check=False)
    assert unknown.returncode == 2 and unknown.stderr == (
        "clinical-ner train: error: unrecognized arguments: --embedings and 1 value not shown "
        "(see 'clinical-ner train --help')\n")
    # A text beside a mistyped option is left over too: counted, never quoted (it is a note).
    typo = run_cli("predict", "clinical", "--output-fromat", "conll", "Zebediah Quuxley had pain",
                   check=False)
    assert typo.returncode == 2 and "Zebediah" not in typo.stderr
    assert typo.stderr == (
        "clinical-ner predict: error: unrecognized arguments: --output-fromat and 2 values not "
        "shown (see 'clinical-ner predict --help')\n")
    missing = run_cli("export", tmp_path / "no-model", "--output", tmp_path / "out", check=False)
    assert missing.returncode == 4
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith(
        "clinical-ner export: error: ")


@pytest.mark.parametrize("arguments, message", [
    (["predict", "--output-format", "Zanzibarian"],
     "clinical-ner predict: error: argument --output-format: invalid choice: a str of 11 "
     "characters (not shown: it may be a note) (choose from 'jsonl', 'conll', 'i2b2', 'html')"),
    (["client", "--batch-size", "Zanzibarian was seen", "No fever."],
     "clinical-ner client: error: argument --batch-size: invalid int value: a str of 20 "
     "characters (not shown: it may be a note)"),
    (["Zanzibarian"], "clinical-ner: error: argument COMMAND: invalid choice: a str of 11 "
                      "characters (not shown: it may be a note) (choose from 'train', "),
    # A number the user typed for a number is no note: still quoted.
    (["client", "--batch-size", "1.5"],
     "clinical-ner client: error: argument --batch-size: invalid int value: '1.5' "),
])
def test_a_note_or_word_given_for_an_option_is_described_not_quoted(capsys, arguments,
                                                                    message):
    # Audit: argparse quoted an option's value it could not take, which may be a note
    # given in its place ("invalid choice: 'Zanzibarian was seen...'").
    from clinical_ner.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(message) and error.count("\n") == 1
    assert "Zanzibarian" not in error and "fever" not in error


def test_a_mistyped_output_or_model_path_is_one_line_before_any_work(tmp_path, capsys):
    from clinical_ner.cli import main

    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "note.txt"
    a_file.write_text(NOTE, encoding="utf-8")
    empty = tmp_path / "empty.conll"
    empty.write_text("", encoding="utf-8")
    dev = str(REPO_ROOT / "samples" / "maccrobat-i2b2" / "dev")
    too_long = "o" * 300  # a name longer than the file system allows
    cases = [
        (["predict", NOTE, "--output", folder], 2,
         f"clinical-ner predict: error: --output {folder}: a folder; give the file to write"),
        (["predict", NOTE, "--output", tmp_path / "nowhere" / "x.jsonl"], 2,
         f"clinical-ner predict: error: --output {tmp_path / 'nowhere' / 'x.jsonl'}: the "
         f"folder {tmp_path / 'nowhere'} does not exist"),
        (["predict", NOTE, "--output-format", "i2b2", "--output", a_file], 2,
         f"clinical-ner predict: error: --output {a_file}: a file; give a folder to write into"),
        (["evaluate", "clinical", "--data", dev, "--json", folder], 2,
         f"clinical-ner evaluate: error: --json {folder}: a folder; give the file to write"),
        (["evaluate", a_file, "--data", dev], 4,
         f"clinical-ner evaluate: error: {a_file}: not a clinical-ner model directory or export "
         "(a file, not a folder); train one with 'clinical-ner train', or use the bundled "
         "model 'clinical'"),
        (["evaluate", "clinical", "--data", empty], 3,
         f"clinical-ner evaluate: error: {empty}: no sentences to score"),
        (["train", "--train", empty, "--output", tmp_path / "run"], 3,
         f"clinical-ner train: error: {empty}: no sentences to train on"),
        (["train", "--train", dev, "--output", a_file], 2,
         f"clinical-ner train: error: --output {a_file}: a file; give a folder to write into"),
        (["train", "--train", dev, "--output", tmp_path / "run", "--embeddings", folder], 3,
         f"clinical-ner train: error: {folder}: a folder, not an embeddings file"),
        (["export", "clinical", "--output", a_file], 2,
         f"clinical-ner export: error: --output {a_file}: a file; give a folder to write into"),
        # Path.exists raised OSError for it: internal error, exit 70.
        (["export", "clinical", "--format", "litert", "--output", tmp_path / too_long], 2,
         f"clinical-ner export: error: --output {tmp_path / too_long}: cannot be written there "
         "(File name too long)"),
        (["predict", NOTE, "--output", tmp_path / too_long], 2,
         f"clinical-ner predict: error: --output {tmp_path / too_long}: cannot be written there "
         "(File name too long)"),
        (["batch", folder, "--input", a_file, "--output", a_file], 2,
         f"clinical-ner batch: error: --output {a_file}: a file; give a folder to write into"),
        (["vectors", "--text", a_file, "--output", folder], 2,
         f"clinical-ner vectors: error: --output {folder}: a folder; give the file to write"),
        # A typo of a model's name, with texts after it, is not annotated as a note.
        (["predict", "clinicl", NOTE], 4,
         "clinical-ner predict: error: clinicl: no such model; did you mean clinical? (to "
         "annotate it as text, name the model: --model clinical)"),
        (["predict", "clinicl", "--input", a_file], 4,
         "clinical-ner predict: error: clinicl: no such model; did you mean clinical? (to "
         "annotate it as text, name the model: --model clinical)"),
    ]
    for arguments, code, message in cases:
        assert main([str(argument) for argument in arguments]) == code, arguments
        assert capsys.readouterr().err == message + "\n"
    # Nothing written: no model, no export, no output file or folder.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty.conll", "folder",
                                                                 "note.txt"]
    assert list(folder.iterdir()) == []


NOT_A_LABEL = "--label-map: label map target of Disease must be a label name"


@pytest.mark.parametrize(("value", "json_text", "message"), [
    # Each was accepted: a label spelt "['problem']", an entity type named O, a model
    # trained on O alone, a TypeError, or the last of two mappings silently.
    (None, '{"Disease": ["problem"]}', NOT_A_LABEL),
    (None, '{"Disease": 5}', NOT_A_LABEL),
    (None, '{"Disease": false}', NOT_A_LABEL),
    (None, '{"Disease": "problem", "Disease": "treatment"}', "the key 'Disease' appears twice"),
    (None, "{}", "--label-map drops every type"),
    ("Disease=,Chemical=", None, "--label-map drops every type"),
    ("Disease=O", None, "maps Disease onto O, the tag of text outside every mention"),
    ("Disease=problem,Disease=treatment", None, "--label-map: Disease is mapped twice"),
])
def test_a_label_map_is_checked_before_any_data_is_read(tmp_path, value, json_text, message):
    from clinical_ner.cli.common import read_label_map
    from clinical_ner.errors import ConfigError

    if json_text is not None:
        value = str(tmp_path / "map.JSON")  # any case of the suffix
        (tmp_path / "map.JSON").write_text(json_text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_label_map(value)


def test_a_label_map_file_may_start_with_a_byte_order_mark(tmp_path):
    from clinical_ner.cli.common import read_label_map

    (tmp_path / "map.json").write_text('\ufeff{"Disease": "problem", "Chemical": null}',
                                       encoding="utf-8")
    assert read_label_map(str(tmp_path / "map.json")) == {"Disease": "problem", "Chemical": None}


def test_predict_refuses_two_documents_the_i2b2_writer_would_give_one_name(tmp_path, capsys):
    # a/note.txt and b/note.txt both became note.con, holding b's entities only.
    from clinical_ner.cli import main

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "note.txt").write_text("Fever.", encoding="utf-8")
    assert main(["predict", "--input", str(tmp_path / "a" / "note.txt"),
                 str(tmp_path / "b" / "note.txt"), "--output-format", "i2b2",
                 "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"clinical-ner predict: error: 2 documents would all be written as note.con in "
        f"{tmp_path / 'out'}; give the input files distinct names (not only in case) or choose "
        "another output format\n")
    assert not (tmp_path / "out").exists()


def test_predict_html_heads_files_of_one_stem_by_their_paths(tmp_path, capsys):
    # a/note.txt and b/note.txt were two sections both headed "note".
    from clinical_ner.cli import main

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "note.txt").write_text("Fever.", encoding="utf-8")
    (tmp_path / "other.txt").write_text("Fever.", encoding="utf-8")
    inputs = [str(tmp_path / "a" / "note.txt"), str(tmp_path / "b" / "note.txt"),
              str(tmp_path / "other.txt")]
    assert main(["predict", "--input", *inputs, "--output-format", "html"]) == 0
    headings = re.findall(r"<h2>(.*?) \(\d+ entities\)</h2>", capsys.readouterr().out)
    assert headings == [*inputs[:2], "other"]


def test_predict_i2b2_copies_the_text_of_a_document_without_a_file_only(tmp_path):
    # Files named text-1.txt or stdin-x.txt were copied too, as if given as texts.
    from clinical_ner.cli import main

    for name in ("text-1", "stdin-x"):
        (tmp_path / f"{name}.txt").write_text("Fever.", encoding="utf-8")
    assert main(["predict", "--input", str(tmp_path / "text-1.txt"),
                 str(tmp_path / "stdin-x.txt"), "--output-format", "i2b2",
                 "--output", str(tmp_path / "files")]) == 0
    assert (tmp_path / "files" / "text-1.con").is_file()
    assert list((tmp_path / "files").glob("*.txt")) == []
    assert main(["predict", "Fever.", "--output-format", "i2b2",
                 "--output", str(tmp_path / "texts")]) == 0
    assert [path.name for path in (tmp_path / "texts").glob("*.txt")] == ["text-1.txt"]


@pytest.mark.parametrize("texts, annotations", [("data", "data"), ("data/txt", "data/concept")])
def test_predict_i2b2_refuses_to_replace_the_gold_annotations_of_its_input(tmp_path, capsys,
                                                                           texts, annotations):
    # predict --input data/x.txt --output-format i2b2 --output data replaced the gold x.con
    # (and x.ast) with the predictions, without a word.
    from clinical_ner.cli import main

    (tmp_path / texts).mkdir(parents=True, exist_ok=True)
    (tmp_path / annotations).mkdir(parents=True, exist_ok=True)
    note = tmp_path / texts / "x.txt"
    note.write_text("No fever .\n", encoding="utf-8")
    gold = tmp_path / annotations / "x.con"
    gold.write_text('c="fever" 1:1 1:1||t="test"\n', encoding="utf-8")
    assert main(["predict", "--input", str(note), "--output-format", "i2b2",
                 "--output", str(tmp_path / annotations)]) == 2
    assert capsys.readouterr().err == (
        f"clinical-ner predict: error: --output {tmp_path / annotations}: {gold} holds the "
        f"annotations of the input {note}; writing it would overwrite them, so give another "
        "folder\n")
    assert gold.read_text(encoding="utf-8") == 'c="fever" 1:1 1:1||t="test"\n'


def test_predict_i2b2_refuses_a_folder_with_another_run_s_files_and_rewrites_its_own(
        tmp_path, capsys):
    # Another run's .con files read back as this run's results.
    from clinical_ner.cli import main

    for name in ("a", "b"):
        (tmp_path / f"{name}.txt").write_text("Fever.", encoding="utf-8")
    out = tmp_path / "out"
    arguments = ["--output-format", "i2b2", "--output", str(out)]
    assert main(["predict", "--input", str(tmp_path / "a.txt"), *arguments]) == 0
    written = sorted(path.name for path in out.iterdir())
    assert "a.con" in written
    assert main(["predict", "--input", str(tmp_path / "a.txt"), *arguments]) == 0
    assert sorted(path.name for path in out.iterdir()) == written
    capsys.readouterr()
    assert main(["predict", "--input", str(tmp_path / "b.txt"), *arguments]) == 2
    assert capsys.readouterr().err.startswith(
        f"clinical-ner predict: error: {out} holds a.")
    assert sorted(path.name for path in out.iterdir()) == written


@pytest.mark.parametrize("command", [["predict", "clinical"], ["client", "--deadline", "1"]])
def test_a_text_after_input_is_named_as_such_not_read_as_a_missing_file(tmp_path, capsys,
                                                                        command):
    # --input took the text as a file: "Zanzibarian denies fever.: No such file or directory".
    from clinical_ner.cli import main

    note = tmp_path / "note.txt"
    note.write_text("Fever.", encoding="utf-8")
    assert main([*command, "--input", str(note), "Zanzibarian denies fever."]) == 2
    error = capsys.readouterr().err
    assert error == (f"clinical-ner {command[0]}: error: --input: an argument with spaces names "
                     "no file; --input takes every argument after it as a file, so give texts "
                     "before --input, or after --\n")


@pytest.mark.parametrize("command", [["predict"], ["predict", "clinical"],
                                     ["predict", "--model", "clinical"],
                                     ["client", "--deadline", "1"]])
def test_a_file_given_as_a_text_is_refused_not_annotated_as_its_name(tmp_path, capsys,
                                                                     command):
    # `predict note.txt` annotated the words "note.txt": no entities, exit 0.
    from clinical_ner.cli import main

    note = tmp_path / "note.txt"
    note.write_text("Fever.", encoding="utf-8")
    assert main([*command, str(note)]) == 2
    assert capsys.readouterr().err == (
        f"clinical-ner {command[0]}: error: {note}: a file, given as a text to annotate; "
        f"give files with --input {note} (texts as arguments or on standard input)\n")


def test_an_output_that_is_an_input_is_refused_before_it_is_overwritten(tmp_path, capsys):
    # predict replaced the note with its JSON line, evaluate the gold data with its scores.
    from clinical_ner.cli import main

    note = tmp_path / "note.txt"
    note.write_text(NOTE, encoding="utf-8")
    gold = tmp_path / "gold.conll"
    gold.write_text("Fever\tB-problem\n", encoding="utf-8")
    cases = [
        (["predict", "--input", note, "--output", tmp_path / "." / "note.txt"], "--output",
         tmp_path / "note.txt", note),
        (["evaluate", "clinical", "--data", gold, "--json", gold], "--json", gold, gold),
    ]
    for arguments, option, output, source in cases:
        assert main([str(argument) for argument in arguments]) == 2, arguments
        assert capsys.readouterr().err == (
            f"clinical-ner {arguments[0]}: error: {option} {output}: also an input "
            f"({source}); writing it would overwrite it, so give another file\n")
    assert note.read_text(encoding="utf-8") == NOTE
    assert gold.read_text(encoding="utf-8") == "Fever\tB-problem\n"


def test_evaluate_names_the_data_s_labels_the_model_does_not_know(tmp_path, capsys):
    # Every score 0 (BC5CDR's names for the bundled model's labels), with no word of why.
    from clinical_ner.cli import main

    gold = tmp_path / "gold.conll"
    gold.write_text("Fever\tB-Disease\nand\tO\naspirin\tB-Chemical\nCT\tB-test\n\n",
                    encoding="utf-8")
    assert main(["evaluate", "clinical", "--data", str(gold)]) == 0
    assert capsys.readouterr().err == (
        f"note: {gold}: the model does not know the label(s) Chemical, Disease (it has problem, "
        "test, treatment): they score 0; map them onto its labels with --label-map\n")
    assert main(["evaluate", "clinical", "--data", str(gold),
                 "--label-map", "Disease=problem,Chemical=treatment,test=test"]) == 0
    assert capsys.readouterr().err == ""


def test_evaluate_checks_a_saved_model_export_s_labels_as_the_model_s(tmp_path, capsys):
    # An export's labels were not known: a label map onto one it lacks scored F1 0 without a
    # word, and data of other label names got no note.
    from clinical_ner import ClinicalNER
    from clinical_ner.cli import main

    ner = ClinicalNER.pretrained()
    export = ner.export(tmp_path / "export")
    assert ClinicalNER.load(export).labels == ner.labels == ["problem", "test", "treatment"]
    gold = tmp_path / "gold.conll"
    gold.write_text("Fever\tB-Disease\nand\tO\nCT\tB-test\n\n", encoding="utf-8")
    assert main(["evaluate", str(export), "--data", str(gold)]) == 0
    assert capsys.readouterr().err == (
        f"note: {gold}: the model does not know the label(s) Disease (it has problem, test, "
        "treatment): they score 0; map them onto its labels with --label-map\n")
    assert main(["evaluate", str(export), "--data", str(gold),
                 "--label-map", "Disease=disease"]) == 2
    assert capsys.readouterr().err == (
        "clinical-ner evaluate: error: --label-map maps onto label disease, which the model "
        "does not know (it has problem, test, treatment)\n")


@pytest.mark.parametrize("option, arguments", [
    ("--dev", ["train", "--train", "a.conll", "--dev", "b", "--dev", "c", "--output", "run"]),
    ("--config", ["train", "--train", "a.conll", "--config", "a.json", "--config", "b.json",
                  "--output", "run"]),
    ("--data", ["evaluate", "clinical", "--data", "a.conll", "--data", "b.conll"]),
    ("--label-map", ["evaluate", "clinical", "--data", "a.conll", "--label-map", "X=problem",
                     "--label-map", "Y=test"]),
])
def test_an_option_of_one_value_given_twice_is_refused_not_half_ignored(option, arguments,
                                                                       capsys):
    # argparse kept the last value: --dev c chose the epoch, b.json gave the settings.
    assert _usage_error(arguments, capsys) == (
        f"clinical-ner {arguments[0]}: error: argument {option}: given twice; give it once "
        f"(see 'clinical-ner {arguments[0]} --help')\n")


def _usage_error(arguments: list[str], capsys) -> str:
    """What ``clinical-ner ARGUMENTS`` prints as argparse's usage error (exit 2)."""
    from clinical_ner.cli import main

    with pytest.raises(SystemExit) as exited:
        main(arguments)
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_a_bad_training_option_is_named_as_typed(tmp_path, capsys):
    # It was "configuration: batch_size ...", a file the user never gave.
    from clinical_ner.cli import main

    assert main(["train", "--train", str(tmp_path / "a.conll"), "--output", str(tmp_path / "run"),
                 "--batch-size", "0"]) == 2
    assert capsys.readouterr().err == ("clinical-ner train: error: --batch-size: batch_size must "
                                       "be a positive integer, got 0\n")


def test_an_embeddings_format_without_embeddings_is_refused_not_ignored(tmp_path, capsys):
    # It was recorded in config.json and trained without vectors, without a word.
    from clinical_ner.cli import main

    assert main(["train", "--train", str(tmp_path / "a.conll"), "--output", str(tmp_path / "run"),
                 "--embeddings-format", "word2vec-binary"]) == 2
    assert capsys.readouterr().err == ("clinical-ner train: error: --embeddings-format goes with "
                                       "--embeddings FILE (or the --config setting embeddings)\n")
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_settings_file_that_it_would_replace(tmp_path, capsys):
    # --config run/config.json --output run: the effective settings replaced the user's file.
    from clinical_ner.cli import main

    run = tmp_path / "run"
    run.mkdir()
    settings = '{"epochs": 1,   "lstm_units": 8}\n'
    (run / "config.json").write_text(settings, encoding="utf-8")
    config = run / "." / "config.json"  # another spelling of the same file

    assert main(["train", "--train", str(tmp_path / "a.conll"), "--config", str(config),
                 "--output", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"clinical-ner train: error: --config {config}: the file training writes into --output "
        f"{run} (every setting of the run), so it would be replaced; keep your settings file "
        "outside the model folder\n")
    assert (run / "config.json").read_text(encoding="utf-8") == settings


@pytest.mark.parametrize("arguments, message", [
    (["serve", "{folder}", "--port", "0", "--max-workers", "0"],
     "--max-workers must be a positive integer, got 0"),
    (["serve", "{folder}", "--port", "0", "--poll-interval", "nan"],
     "--poll-interval must be a number of seconds > 0 and at most 86400, got nan"),
    (["serve", "{folder}", "--port", "0", "--ssl-cert", "{folder}/cert.pem"],
     "TLS needs both --ssl-cert and --ssl-key"),
    (["serve", "{folder}", "--port", "8502", "--rest-port", "8502"],
     "--port and --rest-port are both 8502; REST needs a port of its own"),
    (["client", "No fever.", "--root-certificates", "{folder}/ca.pem"],
     "--root-certificates {folder}/ca.pem: cannot read the CA certificates (No such file or "
     "directory)"),
    (["export", "clinical", "--output", "{folder}/models", "--version", "0"],
     "--version must be a positive integer, got 0"),
    (["vectors", "--text", "{folder}/notes.txt", "--output", "{folder}/v.txt", "--tmp-dir",
      "{folder}/notes.txt"], "--tmp-dir {folder}/notes.txt: a file; give a folder to write into"),
    (["vectors", "--text", "{folder}/notes.txt", "--output", "{folder}/v.txt", "--tmp-dir",
      "{folder}/gone"],
     "--tmp-dir {folder}/gone: the folder for the temporary token file does not exist"),
])
def test_the_library_s_errors_name_the_option_the_user_typed(tmp_path, capsys, arguments,
                                                             message):
    # They named the library's parameters (ssl_cert, tmp_dir, max_workers), which no user typed.
    from clinical_ner.cli import main
    from clinical_ner.errors import setting_name

    if arguments[0] == "vectors":
        pytest.importorskip("gensim", reason="the [vectors] extra is not installed")
    (tmp_path / "notes.txt").write_text("No fever.\n", encoding="utf-8")
    arguments = [argument.format(folder=tmp_path) for argument in arguments]
    assert main(arguments) == 2
    assert capsys.readouterr().err == (f"clinical-ner {arguments[0]}: error: "
                                       f"{message.format(folder=tmp_path)}\n")
    # Only within the command: a library caller sees its parameters' names.
    assert setting_name("tmp_dir") == "tmp_dir"


def test_evaluate_refuses_a_json_report_over_one_of_the_model_s_files(tmp_path, capsys):
    # --json MODEL/vocab.json replaced the vocabulary with the scores: the model no longer loaded.
    from clinical_ner.cli import main
    from clinical_ner.pretrained import resolve_model_path

    model = tmp_path / "model"
    shutil.copytree(resolve_model_path("clinical"), model)
    vocab = (model / "vocab.json").read_bytes()
    gold = tmp_path / "gold.conll"
    gold.write_text("Fever\tB-problem\n\n", encoding="utf-8")
    assert main(["evaluate", str(model), "--data", str(gold),
                 "--json", str(model / "vocab.json")]) == 2
    assert capsys.readouterr().err == (
        f"clinical-ner evaluate: error: --json {model / 'vocab.json'}: also an input "
        f"({model / 'vocab.json'}); writing it would overwrite it, so give another file\n")
    assert (model / "vocab.json").read_bytes() == vocab


def test_evaluate_refuses_a_json_report_over_a_file_of_a_saved_model_s_versions(tmp_path,
                                                                                 capsys):
    # Only the files at the top of the model folder were checked: --json BASE/1/saved_model.pb
    # replaced the export's graph with the scores.
    from clinical_ner.cli import main
    from helpers import export_toy

    graph = export_toy(tmp_path / "base") / "saved_model.pb"
    before = graph.read_bytes()
    gold = tmp_path / "gold.conll"
    gold.write_text("Fever\tB-problem\n\n", encoding="utf-8")
    assert main(["evaluate", str(tmp_path / "base"), "--data", str(gold),
                 "--json", str(graph)]) == 2
    assert capsys.readouterr().err == (
        f"clinical-ner evaluate: error: --json {graph}: also an input ({graph}); writing it "
        "would overwrite it, so give another file\n")
    assert graph.read_bytes() == before


@pytest.mark.parametrize("option", ["--label-map", "--assertion-map", "--corpus"])
def test_evaluate_refuses_a_json_report_over_the_map_or_corpus_file_it_reads(tmp_path, capsys,
                                                                             option):
    # --json map.json replaced the label map (or assertion map, or corpus file) with the scores.
    from clinical_ner.cli import main

    given = tmp_path / ("corpora.toml" if option == "--corpus" else "map.json")
    given.write_text("{}", encoding="utf-8")
    gold = tmp_path / "gold.conll"
    gold.write_text("Fever\tB-problem\n\n", encoding="utf-8")
    extra = ["--corpus-name", "c"] if option == "--corpus" else []
    assert main(["evaluate", "clinical", "--data", str(gold), option, str(given), *extra,
                 "--json", str(given)]) == 2
    assert capsys.readouterr().err == (
        f"clinical-ner evaluate: error: --json {given}: also an input ({given}); writing it "
        "would overwrite it, so give another file\n")
    assert given.read_text(encoding="utf-8") == "{}"


def test_a_failed_write_is_one_line_naming_where_not_an_internal_error(tmp_path, capsys,
                                                                      monkeypatch):
    # Both ended with "internal error (OSError)", exit 70, as if a bug to report.
    from clinical_ner.cli import main

    if os.path.exists("/dev/full"):
        gold = tmp_path / "gold.conll"
        gold.write_text("Fever\tB-problem\n", encoding="utf-8")
        for arguments in (["predict", "--output", "/dev/full", NOTE],
                          ["evaluate", "clinical", "--data", str(gold), "--json", "/dev/full"]):
            assert main(arguments) == 1, arguments
            assert capsys.readouterr().err == (f"clinical-ner {arguments[0]}: error: /dev/full: "
                                               "cannot write (No space left on device)\n")
    monkeypatch.setattr(sys, "stdout", ClosedStdout())
    assert main(["predict", NOTE]) == 1
    assert capsys.readouterr().err == (
        "clinical-ner predict: error: standard output was closed by its reader before the "
        "output was all written\n")


def test_a_text_argument_that_is_not_utf8_is_refused_as_such(tmp_path, capsys):
    # A Latin-1 argument (Python keeps the byte \xff as the surrogate \udcff): an internal
    # error (UnicodeEncodeError) with --output, and bytes that are no UTF-8 on stdout.
    from clinical_ner.cli import main

    output = tmp_path / "out.jsonl"
    assert main(["predict", "--output", str(output), "No fever.", "No \udcff fever."]) == 3
    assert capsys.readouterr().err == (
        "clinical-ner predict: error: text argument 2: not UTF-8 (invalid byte at character 3)\n")
    assert not output.exists()


def test_a_folder_format_or_an_input_that_is_not_utf8_is_refused_before_the_model_loads(
        tmp_path, capsys, monkeypatch):
    # The model took seconds to load before these refusals.
    from clinical_ner.cli import main
    from clinical_ner.annotators.load import ClinicalNER

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ClinicalNER, "load", load)
    assert main(["predict", "--output-format", "i2b2", NOTE]) == 2
    assert capsys.readouterr().err == ("clinical-ner predict: error: --output-format i2b2 needs "
                                       "--output DIR (one file per document)\n")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"Fi\xe8vre.")
    assert main(["predict", "--input", str(latin1)]) == 3
    assert "latin1.txt:1: not UTF-8" in capsys.readouterr().err


def test_an_input_in_utf16_or_with_a_bad_byte_is_refused_naming_its_line(tmp_path, capsys,
                                                                         monkeypatch):
    # Audit: UTF-16 without a byte-order mark decoded as UTF-8 with a NUL after each
    # letter, annotated as such (exit 0); a bad byte was named by offset only.
    from clinical_ner.cli import main
    from clinical_ner.annotators.load import ClinicalNER

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ClinicalNER, "load", load)
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("No fever.\nCT clear.\n".encode("utf-16-le"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"No fever.\nCT clear.\nFi\xe8vre.\n")
    assert main(["predict", "--input", str(utf16)]) == 3
    assert capsys.readouterr().err == (f"clinical-ner predict: error: {utf16}:1: not UTF-8 "
                                       "(NUL byte at offset 1: UTF-16 text?)\n")
    assert main(["predict", "--input", str(latin1)]) == 3
    assert capsys.readouterr().err == (f"clinical-ner predict: error: {latin1}:3: not UTF-8 "
                                       "(invalid byte at offset 22)\n")


def test_a_read_only_output_file_is_refused_not_replaced(tmp_path, capsys, monkeypatch):
    # --output is written atomically (by a rename), which a read-only file does not stop.
    from clinical_ner.cli import main
    from clinical_ner.formats import writers

    output = tmp_path / "kept.jsonl"
    output.write_text("kept\n", encoding="utf-8")
    output.chmod(0o444)
    if os.access(output, os.W_OK):  # root may write any file: ask as another user would
        monkeypatch.setattr(writers.os, "access", lambda path, mode: not (
            os.fspath(path) == os.fspath(output) and mode == os.W_OK))
    assert main(["predict", "--output", str(output), NOTE]) == 1
    assert capsys.readouterr().err == (
        f"clinical-ner predict: error: {output}: cannot write (Permission denied)\n")
    assert output.read_text(encoding="utf-8") == "kept\n"


def test_an_empty_output_file_is_named_as_empty(tmp_path, capsys):
    # evaluate --json "$UNSET" was refused as "--json .: a folder" (Path("") is the cwd).
    from clinical_ner.cli import main

    gold = tmp_path / "gold.conll"
    gold.write_text("Fever\tB-problem\n\n", encoding="utf-8")
    assert main(["evaluate", "clinical", "--data", str(gold), "--json", ""]) == 2
    assert capsys.readouterr().err == (
        "clinical-ner evaluate: error: --json is empty; give the file to write\n")


@pytest.mark.parametrize("arguments, option", [
    (["client", "--target", "localhost:1", "--root-certificates", ""], "--root-certificates"),
    (["client", "--input", ""], "--input"),
    (["serve", ""], "MODEL_BASE_PATH"),
    (["serve", "clinical", "--ssl-cert", "", "--ssl-key", "key.pem"], "--ssl-cert"),
    (["predict", "--model", "", "fever"], "--model"),
    (["predict", "clinical", "--input", ""], "--input"),
    (["predict", "clinical", "--output", "", "fever"], "--output"),
    (["evaluate", "clinical", "--data", ""], "--data"),
    (["evaluate", "", "--data", "gold.conll"], "model"),
    (["train", "--train", "", "--output", "out"], "--train"),
    (["train", "--train", "a.conll", "--config", "", "--output", "out"], "--config"),
    (["batch", "", "--input", "notes/*.txt", "--output", "out"], "model"),
    (["vectors", "--text", "", "--output", "vectors.txt"], "--text"),
])
def test_an_empty_path_option_is_named_as_empty(capsys, arguments, option):
    # Path("") is the working directory: --root-certificates "" said ".: cannot read ... (Is a
    # directory)", serve "" served the working directory, --config "" was ignored.
    assert _usage_error(arguments, capsys) == (
        f"clinical-ner {arguments[0]}: error: argument {option}: is empty; give a path (see "
        f"'clinical-ner {arguments[0]} --help')\n")


def test_evaluate_scores_a_negative_set_and_says_recall_is_undefined(tmp_path, capsys):
    # Audit: data without a gold entity (notes without mentions, kept to count the false
    # positives) was refused: `no entities to score (every token is O)`, exit 3.
    import json

    from clinical_ner import ClinicalNER
    from clinical_ner.cli import main
    from clinical_ner.text.tags import tags_to_mentions

    tokens = "CT of the chest showed a 2 cm nodule ; she was started on aspirin .".split()
    negative = tmp_path / "negative.conll"
    negative.write_text("".join(f"{token}\tO\n" for token in tokens) + "\n", encoding="utf-8")
    scores = tmp_path / "scores.json"
    assert main(["evaluate", "clinical", "--data", str(negative), "--json", str(scores)]) == 0
    [(tags, _)] = ClinicalNER.load("clinical").tag([tokens])
    found = len(tags_to_mentions(tags))
    assert found  # else there would be no false positive to count
    micro = json.loads(scores.read_text(encoding="utf-8"))["exact"]["micro"]
    assert (micro["gold"], micro["predicted"], micro["correct"]) == (0, found, 0)
    assert capsys.readouterr().err == (
        f"note: {negative}: no gold entity in its 1 sentence(s) (every token is O): scored as "
        f"a negative set, each predicted entity a false positive ({found} here); recall and F1 "
        "are undefined without gold entities (0 in the scores)\n")
