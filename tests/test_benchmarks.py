"""The benchmark harness: a --quick run end to end, and its helpers and README tables."""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO_ROOT, TEXTS, tiny_model

from benchmarks import bench_report, bench_util, ensemble, pretrain_word_vectors

RUN = ["-m", "benchmarks.run"]


# -- fast: helpers ---------------------------------------------------------------------

def test_percentile_interpolates_like_numpy():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert bench_util.percentile(values, 50) == 3.0
    assert bench_util.percentile(values, 0) == 1.0
    assert bench_util.percentile(values, 100) == 5.0
    assert bench_util.percentile(values, 99) == pytest.approx(4.96)  # numpy: 4.96
    assert bench_util.percentile([7.0], 99) == 7.0


def test_table_cells_never_show_a_missed_target_as_met():
    # Speeds and scores are cut down, times and memory up, never rounded.
    assert bench_report._k(19_957.6) == "19.9k"  # rounded, it would read 20.0k (target 20k)
    assert bench_report._k(20_000.0) == "20.0k"
    assert bench_report._k(152_340.0) == "152.3k"
    assert bench_report._f(0.87996) == "0.879"  # not 0.880 (target 0.88)
    assert bench_report._f(0.86) == "0.860"
    assert bench_report._ms(1.04) == "1.1"  # not 1.0 (target 1 ms)
    assert bench_report._ms(0.994) == "1.00"
    assert bench_report._ms(3.0) == "3.0"
    assert bench_report._up(800.2, 0) == "801"  # not 800 (target 800 MB)
    assert bench_report._up(800.0, 0) == "800"
    for cell in (bench_report._k, bench_report._f, bench_report._ms):
        assert cell(None) == "–"
    assert bench_report._up(None, 1) == "–"


def test_time_runs_reports_the_median_of_the_timed_runs():
    calls = []
    seconds = bench_util.time_runs(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(seconds["runs"]) == 3
    assert seconds["min"] <= seconds["median"] <= seconds["max"]


def test_slices_keep_whole_sentences_and_documents(tmp_path):
    source = tmp_path / "full.conll"
    source.write_text("A\tO\nb\tB-X\n\nC\tO\n\nD\tO\n\n", encoding="utf-8")
    assert bench_util.slice_conll(source, tmp_path / "out" / "s.conll", 2) == 2
    assert (tmp_path / "out" / "s.conll").read_text(encoding="utf-8") == "A\tO\nb\tB-X\n\nC\tO\n\n"

    i2b2 = tmp_path / "i2b2"
    (i2b2 / "txt").mkdir(parents=True)
    (i2b2 / "concept").mkdir()
    for name, lines in (("a", 2), ("b", 2), ("c", 2)):
        (i2b2 / "txt" / f"{name}.txt").write_text("x y\n" * lines, encoding="utf-8")
        (i2b2 / "concept" / f"{name}.con").write_text("", encoding="utf-8")
    assert bench_util.slice_i2b2(i2b2, tmp_path / "cut", 3) == 4
    assert sorted(p.name for p in (tmp_path / "cut" / "txt").iterdir()) == ["a.txt", "b.txt"]
    assert sorted(p.name for p in (tmp_path / "cut" / "concept").iterdir()) == ["a.con", "b.con"]


def test_ensemble_of_one_model_is_that_model_and_leaves_its_members_intact():
    from clinical_ner.config import NERConfig
    from clinical_ner.text.document import Sentence
    from clinical_ner.errors import ClinicalNERError
    from clinical_ner.annotators.keras_annotator import KerasAnnotator
    from clinical_ner.text.tags import tags_to_mentions
    from clinical_ner.model.vocab import Vocabulary

    config = NERConfig(tag_scheme="bioes")
    first = KerasAnnotator(*tiny_model("bioes"), config)
    second_model, vocab = tiny_model("bioes")
    rng = np.random.default_rng(2)
    second_model.set_weights([rng.normal(0, 1.5, w.shape).astype("float32")
                              for w in second_model.get_weights()])
    second = KerasAnnotator(second_model, vocab, config)
    sentences = [Sentence(tokens=text.split()) for text in TEXTS[:3] if text]
    # Gold = the first model's own answers, so that it scores exactly 1.
    gold = [tags_to_mentions(tags) for tags, _ in first.tag([s.tokens for s in sentences])]
    assert sum(map(len, gold)) > 0
    transitions = first.model.crf.transitions.numpy().copy()

    assert ensemble.ensemble_f1([first], sentences, gold) == 1.0
    assert ensemble.ensemble_f1([first, first], sentences, gold) == 1.0
    assert ensemble.ensemble_f1([second], sentences, gold) < 1.0
    ensemble.ensemble_f1([first, second], sentences, gold)
    np.testing.assert_array_equal(first.model.crf.transitions.numpy(), transitions)

    from clinical_ner.model.network import ClinicalNERModel

    reordered = list(reversed(vocab.tags))
    other = KerasAnnotator(ClinicalNERModel.from_config({**second_model.get_config(),
                                                         "tags": reordered}),
                           Vocabulary(vocab.words, vocab.chars, reordered), config)
    with pytest.raises(ClinicalNERError, match="b: its tags differ from those of a"):
        ensemble.check_compatible(["a", "b"], [first, other])


def test_pretrained_word_vectors_load_as_training_embeddings(tmp_path):
    from clinical_ner.vectors.reader import load_embeddings

    glove = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"
    output = tmp_path / "vectors.txt"
    args = ["--data-root", str(REPO_ROOT / "samples"), "--corpus", "maccrobat-i2b2/train",
            "--dim", "8", "--epochs", "1", "--output", str(output), "--concat-with", str(glove)]
    assert pretrain_word_vectors.main(args) == 0
    words, vectors = load_embeddings(output)
    glove_words, glove_vectors = load_embeddings(glove)
    assert vectors.shape == (len(words), 50 + 8)
    # GloVe's part is unchanged; corpus words GloVe lacks get zeros there and a vector after.
    row = {word: i for i, word in enumerate(words)}
    assert np.allclose(vectors[[row[w] for w in glove_words], :50], glove_vectors, atol=1e-6)
    corpus = pretrain_word_vectors.read_sentences([REPO_ROOT / "samples/maccrobat-i2b2/train"])
    vocabulary, _ = pretrain_word_vectors.build_vocabulary(corpus, 2)
    not_in_glove = [word for word in vocabulary if word not in set(glove_words)]
    assert not_in_glove
    assert not vectors[row[not_in_glove[0]], :50].any() and vectors[row[not_in_glove[0]], 50:].any()


def test_pretraining_word_vectors_refuses_a_test_split(tmp_path):
    with pytest.raises(SystemExit, match="test splits are held out"):
        pretrain_word_vectors.main(["--corpus", "bc5cdr/test.conll",
                                    "--output", str(tmp_path / "v.txt")])
    assert not (tmp_path / "v.txt").exists()


def test_readme_section_is_replaced_between_the_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Benchmarks\n\n{bench_report.START_MARKER}\nold\n"
                      f"{bench_report.END_MARKER}\n\n## Data\nkept\n", encoding="utf-8")
    assert bench_report.update_readme(readme, tmp_path / "no-results")
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and "No full benchmark results yet" in text
    assert text.startswith("# x\n\n## Benchmarks\n\n") and text.endswith("\n## Data\nkept\n")
    (tmp_path / "plain.md").write_text("no markers\n", encoding="utf-8")
    assert bench_report.update_readme(tmp_path / "plain.md", tmp_path) is False
    assert (tmp_path / "plain.md").read_text(encoding="utf-8") == "no markers\n"


def _readme_only(tmp_path, monkeypatch, results_dir) -> Path:
    """``run --readme-only`` on a README of one measured row in ``tmp_path``; returns it."""
    from benchmarks import run

    (tmp_path / "benchmarks").mkdir()
    readme = tmp_path / "benchmarks" / "README.md"
    readme.write_text(f"# Benchmarks\n\n{bench_report.START_MARKER}\n| bc5cdr | measured |\n"
                      f"{bench_report.END_MARKER}\n", encoding="utf-8")
    monkeypatch.setattr(run, "REPO_ROOT", tmp_path)
    run.main(["--readme-only", "--results-dir", str(results_dir)])
    return readme


def test_readme_only_refuses_a_missing_results_dir_and_keeps_the_tables(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match=r"--results-dir .*typo: no such folder; the tables"):
        _readme_only(tmp_path, monkeypatch, tmp_path / "typo")
    assert (tmp_path / "benchmarks" / "README.md").read_text(encoding="utf-8").count(
        "| bc5cdr | measured |") == 1


def test_readme_only_names_an_older_or_broken_result_file(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    # Another harness's file beside them is not a corpus result and is left alone.
    (results / "litert.json").write_text('{"command": "x"}', encoding="utf-8")
    (results / "bc5cdr.json").write_text(json.dumps(
        {"schema_version": 0, "corpus": "bc5cdr", "mode": "full"}), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"bc5cdr\.json: schema_version 0, this version reads 1"):
        _readme_only(tmp_path, monkeypatch, results)
    assert "| bc5cdr | measured |" in (tmp_path / "benchmarks" / "README.md").read_text(
        encoding="utf-8")
    (results / "bc5cdr.json").write_text('{"corpus": "bc5cdr",\n "mode": "full"', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"bc5cdr\.json: line 2: not JSON"):
        bench_report.load_results(results)


@pytest.mark.parametrize("script, arguments, option", [
    ("litert_profile", ["--export", "no-export", "--data", "no-data"], "--output"),
    ("litert_workers", ["--export", "no-export"], "--output"),
    ("batch_throughput", ["--model", "no-model", "--work-dir", "no-work"], "--results"),
])
def test_an_output_that_cannot_be_written_stops_before_the_run(script, arguments, option,
                                                               tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"benchmarks.{script}").main
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    # A file where the folder should be: unwritable even for root, as CI runs.
    with pytest.raises(SystemExit) as stopped:
        main([*arguments, option, str(tmp_path / "a-file" / "result.json")])
    assert stopped.value.code == 2
    assert (f"argument {option}: " + str(tmp_path / "a-file" / "result.json")
            + ": cannot write there (") in capsys.readouterr().err


def test_output_file_accepts_a_new_file_in_a_new_folder_and_refuses_a_folder(tmp_path):
    path = bench_util.output_file(str(tmp_path / "new" / "result.json"))
    assert path == tmp_path / "new" / "result.json"
    assert list((tmp_path / "new").iterdir()) == []  # nothing left behind
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder, not a file"):
        bench_util.output_file(str(tmp_path))


@pytest.mark.slow
def test_the_spacy_pipe_result_file_records_its_command(tmp_path, monkeypatch):
    from benchmarks import spacy_pipe

    # One short note instead of the corpora: what is checked is what the file records.
    monkeypatch.setattr(spacy_pipe, "corpora", lambda data, sentences: {
        "one": ["CT of the chest showed a 2 cm nodule."]})
    output = tmp_path / "spacy-pipe.json"
    spacy_pipe.main(["--repeats", "1", "--pipe-batch-size", "8", "--output", str(output)])
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["command"] == (f"python -m benchmarks.spacy_pipe --repeats 1 "
                                 f"--pipe-batch-size 8 --output {output}")
    machine = report["machine"]
    assert machine["cpu_model"] and machine["cpu_count"]
    assert machine["load_average_start"] and machine["load_average_end"]


def test_assertion_table_refuses_a_missing_results_dir(tmp_path, capsys):
    from benchmarks import assertion_bench

    with pytest.raises(SystemExit) as stopped:
        assertion_bench.main(["--table", "--results-dir", str(tmp_path / "assertion")])
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert f"--results-dir {tmp_path / 'assertion'}: no such folder (--table reads one)" in (
        captured.err)
    assert "| run |" not in captured.out


def test_the_batch_throughput_result_file_records_its_command_and_cores(tmp_path, monkeypatch):
    from benchmarks import batch_throughput

    monkeypatch.setattr(batch_throughput, "build_datasets", lambda *args: {})  # no engine runs
    results = tmp_path / "batch.json"
    argv = ["--model", str(tmp_path), "--litert-export", str(tmp_path), "--work-dir",
            str(tmp_path / "work"), "--results", str(results)]
    batch_throughput.main(argv)
    report = json.loads(results.read_text(encoding="utf-8"))
    assert report["command"] == "python -m benchmarks.batch_throughput " + " ".join(argv)
    assert report["cpu_model"] and report["cpu_count"] and report["cpus_usable"]
    assert report["load_average_start"] and report["load_average_end"]


@pytest.mark.parametrize("option, value, message", [
    ("--datasets", "bc5cdr,maccrobta", "--datasets: unknown maccrobta (choose from bc5cdr, "
                                       "maccrobat)"),
    ("--engines", "in-process,beam2", "--engines: unknown beam2 (choose from in-process, "
                                      "beam-1, beam-2, spark)"),
])
def test_batch_throughput_refuses_an_unknown_dataset_or_engine_before_the_run(
        option, value, message, tmp_path, monkeypatch, capsys):
    from benchmarks import batch_throughput

    built = []
    monkeypatch.setattr(batch_throughput, "build_datasets", lambda *args: built.append(args) or {})
    results = tmp_path / "batch.json"
    with pytest.raises(SystemExit) as stopped:
        batch_throughput.main(["--model", str(tmp_path), "--litert-export", str(tmp_path),
                               "--work-dir", str(tmp_path / "work"), "--results", str(results),
                               option, value])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert built == [] and not results.exists()


@pytest.mark.parametrize("script, arguments", [
    ("litert_profile", ["--data", "no-data"]),
    ("litert_workers", ["--output", "result.json"]),
    ("litert_chunk_size", []),
])
def test_an_export_that_is_not_litert_stops_with_one_line(script, arguments, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"benchmarks.{script}").main
    with pytest.raises(SystemExit) as stopped:
        main(["--export", str(tmp_path), *arguments])
    assert stopped.value.code == 2
    assert (f"argument --export: {tmp_path}: not a LiteRT export (no litert.json); write one "
            "with 'clinical-ner export MODEL --format litert --output DIR'") in (
        capsys.readouterr().err)


def test_litert_bench_refuses_a_data_folder_without_texts_before_the_run(tmp_path, capsys):
    from benchmarks import litert_bench

    output = tmp_path / "litert.json"
    with pytest.raises(SystemExit) as stopped:
        litert_bench.main(["--data", str(tmp_path / "maccrobat-dev"), "--output", str(output)])
    assert stopped.value.code == 2
    assert (f"argument --data: {tmp_path / 'maccrobat-dev'}: no txt/*.txt; give an i2b2-layout "
            "folder such as ../shared/data/maccrobat-i2b2/dev") in capsys.readouterr().err
    assert not output.exists()


def test_litert_bench_without_a_model_or_export_measures_nothing_and_says_so(tmp_path, capsys):
    from benchmarks import litert_bench

    (tmp_path / "dev" / "txt").mkdir(parents=True)
    (tmp_path / "dev" / "txt" / "note.txt").write_text("CT showed a nodule.\n", encoding="utf-8")
    output = tmp_path / "litert.json"
    with pytest.raises(SystemExit) as stopped:
        litert_bench.main(["--data", str(tmp_path / "dev"), "--output", str(output)])
    assert stopped.value.code == 2
    assert ("nothing to measure: give --model DIR, --export NAME=DIR or both"
            in capsys.readouterr().err)
    assert not output.exists()
    with pytest.raises(SystemExit):
        litert_bench.main(["--data", str(tmp_path / "dev"), "--export", str(tmp_path / "lr")])
    assert f"argument --export: {tmp_path / 'lr'}: expected NAME=DIR" in capsys.readouterr().err


def test_the_distributed_training_result_records_its_command_and_the_load_at_the_end(
        tmp_path, monkeypatch):
    from benchmarks import distributed_training

    (tmp_path / "train.conll").write_text("CT\tO\n\n", encoding="utf-8")
    monkeypatch.setattr(distributed_training, "run_configuration", lambda *args: {
        "train_tokens_per_second": 1.0, "wall_seconds": 1.0})  # no training
    argv = ["--train", str(tmp_path / "train.conll"), "--work-dir", str(tmp_path / "work"),
            "--output", str(tmp_path / "distributed.json")]
    monkeypatch.setattr(sys, "argv", ["distributed_training.py", *argv])
    distributed_training.main()
    report = json.loads((tmp_path / "distributed.json").read_text(encoding="utf-8"))
    assert report["command"] == "python -m benchmarks.distributed_training " + " ".join(argv)
    machine = report["machine"]
    assert machine["cpu_model"] and machine["cpu_count"]
    assert machine["load_average_start"] and machine["load_average_end"]


def test_matmul_limit_refuses_a_model_folder_without_its_config_before_measuring(tmp_path,
                                                                                capsys):
    from benchmarks import matmul_limit

    with pytest.raises(SystemExit) as stopped:
        matmul_limit.main(["--model", str(tmp_path), "--size", "64", "--repeats", "1"])
    assert stopped.value.code == 2
    assert (f"argument --model: {tmp_path}: no config.json or vocab.json; give a model "
            "directory (clinical-ner train) or a LiteRT export") in capsys.readouterr().err


def _multi_corpus(monkeypatch, *arguments: str) -> None:
    from benchmarks import multi_corpus

    monkeypatch.setattr(sys, "argv", ["multi_corpus.py", *arguments])
    multi_corpus.main()


def test_multi_corpus_table_names_an_older_or_broken_results_file(tmp_path, monkeypatch,
                                                                  capsys):
    run = {"run": "maccrobat", "seed": 1, "best_epoch": 20, "epochs_run": 25,
           "median_train_tokens_per_second": 9000.0,
           "scores": {"maccrobat_dev": 0.6839}, "precision_recall": {
               "maccrobat_dev": [0.6989, 0.6695]}}
    results = tmp_path / "multi_corpus.json"
    # No stored "summary": the table's figures come from the runs themselves.
    results.write_text(json.dumps({"runs": [run]}), encoding="utf-8")
    _multi_corpus(monkeypatch, "--table", "--results", str(results))
    assert "| MACCROBAT alone | 0.6839 | – | – | 20/25 | 9,000 |" in capsys.readouterr().out
    older = {key: value for key, value in run.items() if key != "median_train_tokens_per_second"}
    results.write_text(json.dumps({"runs": [run, older]}), encoding="utf-8")
    with pytest.raises(SystemExit, match=re.escape(
            f"{results}: runs[1] (maccrobat, seed 1): no median_train_tokens_per_second "
            "(written by an older version?); remove that entry and run it again: python -m "
            f"benchmarks.multi_corpus --runs maccrobat --seeds 1 --results {results}")):
        _multi_corpus(monkeypatch, "--table", "--results", str(results))
    results.write_text(json.dumps({"runs": [{**run, "run": "joint"}]}), encoding="utf-8")
    with pytest.raises(SystemExit, match=re.escape(
            f"{results}: runs[0] (joint, seed 1): unknown run (this version runs maccrobat, ")):
        _multi_corpus(monkeypatch, "--table", "--results", str(results))
    results.write_text('{"runs": [\n {"run": "maccrobat",\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=re.escape(f"{results}: line 3: not JSON (")):
        _multi_corpus(monkeypatch, "--rescore", "--results", str(results))


def _shared_data_without(tmp_path: Path, missing: str) -> Path:
    """A copy of ../shared/data's layout (tiny files) without ``missing``."""
    root = tmp_path / "data"
    for split in ("train", "dev"):
        (root / "maccrobat-i2b2" / split / "txt").mkdir(parents=True)
        (root / "maccrobat-i2b2" / split / "txt" / "note.txt").write_text(
            "CT showed a nodule.\n", encoding="utf-8")
    (root / "bc5cdr").mkdir()
    for split in ("train", "dev", "test"):
        (root / "bc5cdr" / f"{split}.conll").write_text("Aspirin\tB-Chemical\n\n",
                                                        encoding="utf-8")
    target = root / missing
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    return root


@pytest.mark.parametrize("missing", ["bc5cdr/dev.conll", "maccrobat-i2b2/train/txt"])
def test_spacy_pipe_names_what_the_data_folder_lacks_before_loading_the_model(
        missing, tmp_path, monkeypatch, capsys):
    from benchmarks import spacy_pipe
    from clinical_ner.annotators.load import ClinicalNER

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was read")

    monkeypatch.setattr(ClinicalNER, "load", no_load)
    root = _shared_data_without(tmp_path, missing)
    with pytest.raises(SystemExit) as stopped:
        spacy_pipe.main(["--data", str(root), "--repeats", "1"])
    assert stopped.value.code == 2
    assert (f"argument --data: {root / missing}: no such file or folder; give the shared data "
            "folder (../shared/data) or one laid out as it is") in capsys.readouterr().err


def test_batch_throughput_names_what_the_data_root_lacks_before_the_run(tmp_path, capsys):
    from benchmarks import batch_throughput

    root = _shared_data_without(tmp_path, "maccrobat-i2b2/dev/txt")
    results = tmp_path / "batch.json"
    with pytest.raises(SystemExit) as stopped:
        batch_throughput.main(["--model", str(tmp_path), "--litert-export", str(tmp_path),
                               "--data-root", str(root), "--work-dir", str(tmp_path / "work"),
                               "--results", str(results)])
    assert stopped.value.code == 2
    assert (f"argument --data-root: {root / 'maccrobat-i2b2/dev/txt'}: no such file or "
            "folder") in capsys.readouterr().err
    assert not results.exists()


@pytest.mark.parametrize("script, arguments", [
    ("profile_inference", ["--model", "no-model"]),
    ("serving_memory", ["--export", "no-export"]),
])
def test_a_corpus_that_cannot_be_read_stops_with_its_file_and_line_before_the_model(
        script, arguments, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"benchmarks.{script}").main
    corpus = tmp_path / "notes.conll"
    corpus.write_text("CT\tO\nnodule\n\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stopped:
        main([*arguments, "--data", str(corpus)])
    assert stopped.value.code == 2
    assert (f"argument --data: {corpus}:2: only one column; expected a token and a tag "
            "separated by tabs or spaces") in capsys.readouterr().err


def test_load_test_names_the_file_and_line_of_a_bad_texts_file(tmp_path):
    from benchmarks import load_test

    texts = tmp_path / "notes.jsonl"
    # A record whose text is U+2028-split by splitlines() stays whole.
    texts.write_text('{"text": "CT showed\u2028a nodule."}\n\n{"text": 5}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=re.escape(
            f'--texts {texts}:3: not an object with a "text" string')):
        load_test.load_texts(str(texts))
    texts.write_text('{"text": "CT showed\u2028a nodule."}\n{"text": "fev\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=re.escape(f"--texts {texts}:2: not JSON (")):
        load_test.load_texts(str(texts))
    texts.write_text('{"text": "CT showed\u2028a nodule."}\n', encoding="utf-8")
    assert load_test.load_texts(str(texts)) == ["CT showed\u2028a nodule."]
    with pytest.raises(SystemExit, match=re.escape(
            f"--texts {tmp_path / 'typo.jsonl'}: cannot read it (No such file or directory)")):
        load_test.load_texts(str(tmp_path / "typo.jsonl"))


def test_the_benchmarks_readme_has_the_markers_once_and_the_top_readme_none():
    text = (REPO_ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert text.count(bench_report.START_MARKER) == 1
    assert text.count(bench_report.END_MARKER) == 1
    assert text.index("## Results") < text.index(bench_report.START_MARKER)
    assert bench_report.START_MARKER not in (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert text.index(bench_report.END_MARKER) < text.index("## Running\n")


def test_the_assertion_means_in_the_benchmarks_readme_are_their_result_files():
    # Typed by hand from `assertion_bench --table`'s seeds; means of figures rounded first
    # gave 0.316 and 0.878 where the files give 0.315 and 0.877.
    results = REPO_ROOT / "benchmarks" / "results" / "assertions"
    text = (REPO_ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    table = text[text.index("Three-seed means (seeds 42 / 43 / 44;"):]
    table = table[:table.index("\n\n", table.index("| variant |"))]

    def mean(devs: list[dict], key: str, digits: int) -> str:
        return f"{sum(dev[key] for dev in devs) / len(devs):.{digits}f}" if key in devs[0] else "-"

    checked = 0
    for row in table.splitlines():
        cells = [cell.strip().strip("*") for cell in row.strip("|").split("|")]
        variant = re.match(r"`([\w.-]+)`", cells[0])
        paths = [results / f"{variant[1]}-seed{seed}.json" for seed in (42, 43, 44)
                 ] if variant else []
        if not paths or not all(path.exists() for path in paths):
            continue
        devs = [json.loads(path.read_text(encoding="utf-8"))["dev"] for path in paths]
        figures = [mean(devs, "ner_exact_f1", 4), *(
            mean(devs, key, 3) for key in ("assertion_accuracy", "absent_f1", "possible_f1"))]
        assert [cells[1].split(" ")[0], *cells[2:5]] == figures, row
        checked += 1
    assert checked >= 10


# -- slow: a --quick run end to end --------------------------------------------------------

def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory, shared_data):
    base = tmp_path_factory.mktemp("bench")
    results = base / "results"
    command = [sys.executable, *RUN, "--corpus", "bc5cdr", "--quick",
               "--data-root", str(shared_data), "--work-dir", str(base / "work"),
               "--results-dir", str(results)]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert [p.name for p in results.iterdir()] == ["quick-bc5cdr.json"]
    return json.loads((results / "quick-bc5cdr.json").read_text(encoding="utf-8")), base


@pytest.mark.slow
def test_quick_run_records_every_figure(quick_result):
    result, _ = quick_result
    assert result["schema_version"] == 1 and result["mode"] == "quick"
    assert result["corpus"] == "bc5cdr"
    assert result["command"].startswith("python -m benchmarks.run --corpus bc5cdr --quick")

    machine = result["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"]
    # Hosts of one model name differ in vector extensions (and so in training's rounding).
    assert machine["cpu_features"]["family"] and isinstance(
        machine["cpu_features"]["avx512"], list)
    for key in ("tensorflow", "keras", "python", "date", "git_commit"):
        assert machine[key], key

    assert result["data"]["train"]["sentences"] == 300
    assert result["data"]["dev"]["sentences"] == result["data"]["test"]["sentences"] == 200
    assert result["config"]["epochs"] == 1
    assert result["config"]["embeddings"].endswith("glove.6B.50d.pruned.txt")

    training = result["training"]
    assert training["epochs"] == 1 and training["best_epoch"] == 1
    for key in ("wall_seconds", "tokens_per_second_median", "seconds_per_epoch_median",
                "peak_rss_mb"):
        assert _positive(training[key]), key

    assert set(result["accuracy"]) == {"dev", "test"}
    # The refit: train and dev together, for the benchmarked model's best epoch count.
    refit = result["refit"]
    assert refit["epochs"] == training["best_epoch"] == 1
    assert refit["command"].count("--train ") == 2 and "--dev " not in refit["command"]
    assert _positive(refit["wall_seconds"]) and _positive(refit["train_seconds_total"])
    reports = [result["accuracy"]["dev"], result["accuracy"]["test"], refit["test"]]
    for report in reports:
        for mode in ("exact", "lenient"):
            scores = report[mode]
            for value in (*scores["micro"].values(),
                          *(s["f1"] for s in scores["per_label"].values())):
                assert value >= 0
            for key in ("precision", "recall", "f1"):
                assert 0 <= scores["micro"][key] <= 1
            assert set(scores["per_label"]) == {"Chemical", "Disease"}
            assert scores["micro"]["gold"] > 0
    assert refit["test"]["exact"]["micro"]["gold"] == result["accuracy"]["test"]["exact"][
        "micro"]["gold"]

    inference = result["inference"]
    assert inference["documents"]["count"] == 200 and inference["documents"]["tokens"] > 0
    for way in ("in_process", "saved_model", "grpc_c1", "grpc_c8"):
        assert _positive(inference[way]["tokens_per_second"]), way
        assert _positive(inference[way]["documents_per_second"]), way
        assert len(inference[way]["seconds"]["runs"]) == result["settings"]["repeats"]
    assert inference["grpc_c8"]["concurrency"] == 8

    for way in ("in_process", "saved_model", "grpc"):
        latency = result["latency"][way]
        assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"], way
        assert latency["calls"] == result["settings"]["latency_calls"]

    serving = result["serving"]
    assert 100 < serving["rss_after_load_mb"] <= serving["peak_rss_mb"] < 64_000
    assert _positive(serving["ready_seconds"])
    assert result["model"]["saved_model_bytes"] > 100_000
    assert result["model"]["keras_bytes"] > 100_000
    startup = result["startup"]
    assert _positive(startup["import_to_first_prediction_seconds"]["median"])
    assert startup["process_wall_seconds"]["median"] >= startup[
        "import_to_first_prediction_seconds"]["median"]

    targets = {check["key"]: check for check in result["targets"]}
    assert set(targets) == ({"test_exact_micro_f1", "test_refit_exact_micro_f1"}
                            | {t[0] for t in bench_report.SPEED_TARGETS})
    assert all(isinstance(check["met"], bool) for check in targets.values())


@pytest.mark.slow
def test_quick_result_renders_into_the_readme_tables(quick_result, tmp_path):
    result, _ = quick_result
    results = tmp_path / "results"
    results.mkdir()
    # Quick results never reach the README; render this one as if it were a full run.
    (results / "quick-bc5cdr.json").write_text(json.dumps(result), encoding="utf-8")
    assert bench_report.load_results(results) == []
    (results / "bc5cdr.json").write_text(json.dumps({**result, "mode": "full"}),
                                         encoding="utf-8")
    tables = bench_report.render_tables(bench_report.load_results(results))
    rows = [line for line in tables.splitlines() if line.startswith("| bc5cdr |")]
    assert len(rows) == 5  # accuracy (dev, test, refit test), throughput, latency/memory
    assert [row.split(" | ")[1] for row in rows[:3]] == [
        "dev", "test", "test, refit on train + dev (1 epoch)"]
    assert "Chemical" in rows[2] and "≥ 0.88" in rows[1] and "≥ 0.88" in rows[2]
    assert "≥" not in rows[0]
    assert "–" not in "".join(rows)  # every figure present
    assert result["command"] in tables


@pytest.mark.slow
def test_work_dir_holds_the_run_and_is_reused_only_if_ours(quick_result, shared_data):
    _, base = quick_result
    run_dir = base / "work" / "bc5cdr-quick"
    for name in ("model/model.keras", "export/1/saved_model.pb", "train.log", "server.log",
                 "refit-model/model.keras", "refit.log", "refit-config.json"):
        assert (run_dir / name).exists(), name
    foreign = base / "foreign"
    (foreign / "bc5cdr-quick").mkdir(parents=True)
    completed = subprocess.run(
        [sys.executable, *RUN, "--corpus", "bc5cdr", "--quick", "--data-root",
         str(shared_data), "--work-dir", str(foreign), "--results-dir", str(base / "r2")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0
    assert "was not made by benchmarks/run.py" in completed.stderr
    assert (foreign / "bc5cdr-quick").is_dir()


def test_profile_inference_times_every_stage(quick_result, shared_data):
    _, base = quick_result
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile_inference",
         "--model", str(base / "work" / "bc5cdr-quick" / "model"),
         "--data", str(shared_data / "bc5cdr" / "dev.conll"),
         "--repeats", "1", "--single-calls", "3"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    batched = [line for line in lines if line.endswith("tokens/s")]
    single = [line for line in lines if line.endswith(" ms")]
    assert len(batched) == 7 and len(single) == 5
    for line in batched + single:
        assert float(line.split()[-2].replace(",", "")) > 0, line


@pytest.mark.slow
def test_serving_memory_reports_peaks_and_throughput(quick_result):
    _, base = quick_result
    run_dir = base / "work" / "bc5cdr-quick"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving_memory",
         "--export", str(run_dir / "export"), "--data", str(run_dir / "data" / "dev.conll"),
         "--max-concurrent-calls", "2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    peaks = re.search(r"server peak RSS: (\d+) MB after loading, (\d+) MB after the cold burst, "
                      r"(\d+) MB after", completed.stdout)
    assert peaks, completed.stdout
    after_load, after_burst, at_end = map(int, peaks.groups())
    assert 0 < after_load <= after_burst <= at_end
    assert re.search(r"warm throughput: [\d,]+ tokens/s", completed.stdout)
