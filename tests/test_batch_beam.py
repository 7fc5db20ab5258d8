"""``clinical-ner batch`` on Apache Beam: the same entities as ``predict``, each note once.

The comparisons use a tiny model trained on the bundled sample and the shared
MACCROBAT dev notes; the input-handling tests use the toy export of
test_export (fast, its entities computed in Python).
"""
from __future__ import annotations

import codecs
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import traceback
import warnings
from pathlib import Path

import pytest

pytest.importorskip("apache_beam", reason="the [beam] extra is not installed")

from apache_beam.io.filesystem import FileMetadata  # noqa: E402
from apache_beam.io.localfilesystem import LocalFileSystem  # noqa: E402

from clinical_ner.annotators.saved_model_annotator import (  # noqa: E402
    NotAnExportError,
    SavedModelAnnotator,
)
from clinical_ner.batch.model_handler import SavedModelHandler  # noqa: E402
from clinical_ner.batch.runner import run_batch, worker_environment  # noqa: E402
from clinical_ner.cli import main as cli_main  # noqa: E402
from clinical_ner.errors import (  # noqa: E402
    EXIT_NOTES_SET_ASIDE,
    ConfigError,
    MessageWithheldError,
    ModelError,
)
from clinical_ner.text.tokenizer import count_tokens  # noqa: E402
from helpers import (  # noqa: E402
    REPO_ROOT,
    assert_same_documents,
    assert_same_tags,
    expected_entities,
    export_toy,
)

SECRET = "Zanzibarian"  # a word that must never reach an error record or a log
TWO_MB = 2_000_000
def read_records(output: Path, prefix: str) -> list[dict]:
    shards = sorted(output.glob(f"{prefix}-*-of-*.jsonl"))
    assert shards, f"no {prefix} shards in {output}"
    return [json.loads(line) for shard in shards
            for line in shard.read_text(encoding="utf-8").splitlines()]


def predicted_by_cli(model_dir: Path, notes: list[Path], tmp_path: Path) -> dict[str, list]:
    """``clinical-ner predict`` over ``notes``: entities by note path."""
    output = tmp_path / "predict.jsonl"
    assert cli_main(["predict", str(model_dir), "--input", *map(str, notes),
                     "--output", str(output)]) == 0
    lines = output.read_text(encoding="utf-8").splitlines()
    return {str(note): json.loads(line)["entities"] for note, line in zip(notes, lines)}


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory) -> Path:
    return export_toy(tmp_path_factory.mktemp("models") / "clinical_ner", version=1)


@pytest.fixture(scope="module")
def predicted(trained_model, maccrobat_dev_notes, tmp_path_factory) -> dict[str, list]:
    model_dir, _ = trained_model
    return predicted_by_cli(model_dir, maccrobat_dev_notes, tmp_path_factory.mktemp("predict"))


@pytest.mark.slow
def test_text_files_in_process_give_predicts_entities(trained_model, maccrobat_dev_notes,
                                                      predicted, tmp_path):
    _, export_dir = trained_model
    pattern = str(maccrobat_dev_notes[0].parent / "*.txt")
    totals = run_batch(str(export_dir), [pattern], str(tmp_path / "out"))

    results = read_records(tmp_path / "out", "entities")
    assert sorted(record["id"] for record in results) == sorted(predicted)
    assert_same_documents({record["id"]: record["entities"] for record in results}, predicted)
    assert read_records(tmp_path / "out", "errors") == []
    texts = [note.read_text(encoding="utf-8") for note in maccrobat_dev_notes]
    assert totals == {"notes": len(texts), "errors": 0,
                      "tokens": sum(count_tokens(text) for text in texts),
                      "entities": sum(len(found) for found in predicted.values()),
                      "workers_litert": 0, "workers_tensorflow": 1}
    assert totals["entities"] > 20, "the tiny model should find entities in the dev notes"


@pytest.mark.slow
def test_cli_jsonl_on_two_processes_gives_predicts_entities(
        trained_model, maccrobat_dev_notes, predicted, tmp_path, capsys):
    _, export_dir = trained_model
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(
        json.dumps({"note_id": str(path), "body": path.read_text(encoding="utf-8")}) + "\n"
        for path in maccrobat_dev_notes), encoding="utf-8")
    capsys.readouterr()

    assert cli_main(["batch", str(export_dir.parent), "--input", str(notes),
                     "--input-format", "jsonl", "--id-field", "note_id", "--text-field", "body",
                     "--output", str(tmp_path / "out"), "--runner", "FnApiRunner", "--",
                     "--direct_num_workers=2", "--direct_running_mode=multi_processing"]) == 0

    assert len(list((tmp_path / "out").glob("entities-*-of-00002.jsonl"))) == 2
    results = read_records(tmp_path / "out", "entities")
    assert len(results) == len(predicted)
    # Other processes and batches than predict's: confidences to the tolerance
    # (they differed by 9e-8 on an AMD EPYC host).
    assert_same_documents({record["id"]: record["entities"] for record in results}, predicted)
    printed = capsys.readouterr().out
    entities = sum(len(found) for found in predicted.values())
    assert f"notes annotated: {len(predicted)}, set aside: 0" in printed
    assert f"entities: {entities}," in printed


@pytest.mark.slow
def test_a_litert_export_gives_predicts_entities_without_tensorflow(
        trained_litert_export, maccrobat_dev_notes, predicted, tmp_path):
    # A fresh process, the in-process runner: the workers are this process,
    # which must never import TensorFlow.
    pattern = str(maccrobat_dev_notes[0].parent / "*.txt")
    script = textwrap.dedent(f"""
        import json, sys
        from clinical_ner.batch.runner import run_batch
        totals = run_batch({str(trained_litert_export)!r}, [{pattern!r}],
                           {str(tmp_path / "out")!r})
        print(json.dumps({{"totals": totals, "imported": sorted(
            name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras"))}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO_ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["imported"] == []
    assert report["totals"]["workers_litert"] == 1 and report["totals"]["workers_tensorflow"] == 0
    results = read_records(tmp_path / "out", "entities")
    assert_same_documents({record["id"]: record["entities"] for record in results}, predicted)
    assert report["totals"]["entities"] == sum(len(found) for found in predicted.values())


@pytest.mark.slow
def test_cli_on_a_litert_export_in_two_processes_gives_predicts_entities(
        trained_litert_export, maccrobat_dev_notes, predicted, tmp_path, capsys):
    capsys.readouterr()
    assert cli_main(["batch", str(trained_litert_export),
                     "--input", str(maccrobat_dev_notes[0].parent / "*.txt"),
                     "--output", str(tmp_path / "out"), "--", "--direct_num_workers=2",
                     "--direct_running_mode=multi_processing"]) == 0

    results = read_records(tmp_path / "out", "entities")
    assert_same_documents({record["id"]: record["entities"] for record in results}, predicted)
    assert "runtime: LiteRT on " in capsys.readouterr().out


class FolderFileSystem(LocalFileSystem):
    """Beam file system ``testfs://`` over a local folder: a stand-in for gs:// or hdfs://."""

    root = ""

    @classmethod
    def scheme(cls) -> str:
        return "testfs"

    def _local(self, path: str) -> str:
        return os.path.join(self.root, path[len("testfs://"):])

    def join(self, basepath: str, *paths: str) -> str:
        return "/".join([basepath.rstrip("/"), *paths])

    def exists(self, path: str) -> bool:
        return os.path.exists(self._local(path))

    def open(self, path: str, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def _list(self, dir_or_prefix: str):
        for folder, _, files in os.walk(self._local(dir_or_prefix)):
            for name in files:
                local = os.path.join(folder, name)
                yield FileMetadata("testfs://" + os.path.relpath(local, self.root),
                                   os.path.getsize(local), os.path.getmtime(local))


@pytest.mark.slow
def test_a_litert_export_on_a_beam_file_system_is_copied_to_the_worker_once(
        trained_litert_export, tmp_path):
    from clinical_ner.batch import model_handler

    FolderFileSystem.root = str(tmp_path)
    shutil.copytree(trained_litert_export, tmp_path / "exports" / "tiny-litert")
    remote = "testfs://exports/tiny-litert"
    handler = model_handler.handler_for(remote)
    assert isinstance(handler, model_handler.LiteRTModelHandler)

    first, second = handler.load_model(), handler.load_model()

    assert first.directory == second.directory
    assert not first.directory.is_relative_to(tmp_path)
    assert sorted(p.name for p in first.directory.iterdir()) == \
           sorted(p.name for p in trained_litert_export.iterdir())
    assert first.network.workers == 1
    note = "Started on aspirin for chest pain."
    local = model_handler.handler_for(str(trained_litert_export)).load_model()
    assert first.annotate(note) == local.annotate(note)


@pytest.mark.parametrize(("options", "message"), [
    # Both were internal errors (Beam's ValueError).
    (["--input", "nofs://bucket/*.txt"], "--input nofs://bucket/*.txt: Beam has no file system "
                                         "for nofs:// here"),
    (["--output", "nofs://bucket/out"], "--output nofs://bucket/out: Beam has no file system "
                                        "for nofs:// here"),
])
def test_a_file_system_beam_lacks_is_named_before_the_pipeline(toy_export, tmp_path, capsys,
                                                               options, message):
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    given = {"--input": str(tmp_path / "note.txt"), "--output": str(tmp_path / "out"),
             **dict(zip(options[::2], options[1::2]))}
    assert cli_main(["batch", str(toy_export), *(item for pair in given.items()
                                                 for item in pair)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"clinical-ner batch: error: {message}") and error.count("\n") == 1


def test_a_model_on_a_file_system_no_one_reads_is_named_before_the_pipeline(tmp_path, capsys):
    # Neither Beam nor TensorFlow has a nofs:// file system: an internal error (exit 70).
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    assert cli_main(["batch", "nofs://bucket/model", "--input", str(tmp_path / "note.txt"),
                     "--output", str(tmp_path / "out")]) == 4
    error = capsys.readouterr().err
    assert error == ("clinical-ner batch: error: nofs://bucket/model/saved_model.pb: cannot be "
                     "read: File system scheme 'nofs' not implemented (file: "
                     "'nofs://bucket/model/saved_model.pb')\n")
    assert not (tmp_path / "out").exists()


def test_patterns_on_two_file_systems_are_each_matched_on_their_own(toy_export, tmp_path):
    # Beam matches a list of patterns on the first one's file system: the testfs:// pattern
    # was looked for on the local disk, and "no file matches" ended the run.
    FolderFileSystem.root = str(tmp_path)
    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "b.txt").write_text("fever", encoding="utf-8")
    (tmp_path / "a.txt").write_text("aspirin", encoding="utf-8")
    totals = run_batch(str(toy_export), [str(tmp_path / "a.txt"), "testfs://remote/*.txt"],
                       str(tmp_path / "out"))
    assert sorted(record["id"] for record in read_records(tmp_path / "out", "entities")) == [
        str(tmp_path / "a.txt"), "testfs://remote/b.txt"]
    assert totals["notes"] == 2


def write_jsonl(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def note_line(note_id, text) -> bytes:
    return json.dumps({"id": note_id, "text": text}).encode("ascii")


@pytest.mark.slow
def test_every_note_lands_once_in_results_or_errors(toy_export, tmp_path, capfd):
    long_note = ("aspirin for fever. " * (TWO_MB // 19 + 1))[:TWO_MB]
    good = {
        "empty": "",
        "two-mb": long_note,
        "surrogate": "fever \ud800 aspirin",  # a JSON escape; read as U+FFFD
        7: "fièvre et aspirin",
    }
    lines = [note_line(note_id, text) for note_id, text in good.items()]
    lines += [
        note_line("dup", "aspirin"),
        note_line("dup", f"fever {SECRET}"),
        b"",                                                # blank: not a note
        b'{"id": "bad-utf8", "text": "' + SECRET.encode() + b' \xff"}',
        b"{" + SECRET.encode(),                           # not JSON
        note_line(None, SECRET),                           # no usable id
        json.dumps({"id": "no-text", "body": SECRET}).encode(),
        json.dumps([SECRET]).encode(),                     # not an object
        note_line("too-long", SECRET * 300_000),           # over --max-note-bytes
    ]
    too_long = len(lines[-1])
    lines.append(note_line("id-\udc80", "aspirin"))     # an id that is not Unicode text
    write_jsonl(tmp_path / "notes.jsonl", lines)
    text_files = tmp_path / "txt"
    text_files.mkdir()
    (text_files / "good.txt").write_text("aspirin\r\nfever", encoding="utf-8", newline="")
    (text_files / "empty.txt").write_bytes(b"")
    (text_files / "latin1.txt").write_bytes(f"{SECRET} fi\xe8vre".encode("latin-1"))
    capfd.readouterr()

    totals = run_batch(str(toy_export), [str(tmp_path / "notes.jsonl")], str(tmp_path / "out"),
                       input_format="jsonl", max_note_bytes=3_000_000)
    text_totals = run_batch(str(toy_export), [str(text_files / "*.txt")],
                            str(tmp_path / "out-txt"))

    results = read_records(tmp_path / "out", "entities")
    by_id = {}
    for record in results:
        by_id.setdefault(record["id"], []).append(record["entities"])
    expected = {note_id: [[e.to_dict() for e in expected_entities(text)]]
                for note_id, text in good.items()}
    expected["dup"] = [[e.to_dict() for e in expected_entities(text)]
                       for text in ("aspirin", f"fever {SECRET}")]
    assert sorted(map(str, by_id)) == sorted(map(str, expected))
    assert by_id.pop("dup") in (expected["dup"], expected["dup"][::-1])
    assert by_id == {note_id: found for note_id, found in expected.items() if note_id != "dup"}
    assert by_id["two-mb"][0][-1]["end"] <= TWO_MB and len(by_id["two-mb"][0]) > 100_000

    errors = read_records(tmp_path / "out", "errors")
    source = str(tmp_path / "notes.jsonl")
    assert sorted((e["source"], e["id"], e["reason"]) for e in errors) == sorted([
        (f"{source}:8", None, "not UTF-8 (invalid byte at offset 40)"),
        (f"{source}:9", None, "not JSON (Expecting property name enclosed in double quotes "
                              "at column 2)"),
        (f"{source}:10", None, "field 'id' is null, expected a string or an integer"),
        (f"{source}:11", "no-text", "field 'text' is missing, expected a string"),
        (f"{source}:12", None, "not a JSON object (an array)"),
        (f"{source}:13", None, f"note of {too_long} bytes is over the limit of 3000000 "
                               "bytes (--max-note-bytes)"),
        (f"{source}:14", None, "field 'id' holds a lone surrogate (a \\ud800-\\udfff "
                               "escape), which is not Unicode text"),
    ])
    assert totals["notes"] == len(results) == 6 and totals["errors"] == len(errors) == 7

    text_results = {r["id"]: r["entities"] for r in read_records(tmp_path / "out-txt", "entities")}
    assert text_results == {str(text_files / "good.txt"): [
        e.to_dict() for e in expected_entities("aspirin\r\nfever")],
        str(text_files / "empty.txt"): []}
    assert read_records(tmp_path / "out-txt", "errors") == [
        {"id": str(text_files / "latin1.txt"), "source": str(text_files / "latin1.txt"),
         "reason": "not UTF-8 (invalid byte at offset 14)"}]
    assert text_totals["notes"] == 2 and text_totals["errors"] == 1

    for output in ("out", "out-txt"):
        for shard in (tmp_path / output).glob("errors-*"):
            assert SECRET not in shard.read_text(encoding="utf-8")
    logged = capfd.readouterr()
    assert SECRET not in logged.out and SECRET not in logged.err


def test_a_line_json_cannot_read_is_set_aside_and_the_job_goes_on(toy_export, tmp_path, capsys):
    # json.loads raises RecursionError on deep nesting and a plain ValueError
    # on an integer of more than 4300 digits: each must cost its line only.
    nested = b'{"id": "deep", "text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    long_number = b'{"id": "long", "text": "' + SECRET.encode() + b'", "n": ' + b"7" * 5000 + b"}"
    # json.loads keeps the last of a repeated key: the note meant may be the first.
    repeated_text = b'{"id": "twice", "text": "aspirin", "text": "' + SECRET.encode() + b'"}'
    repeated_other = b'{"id": "n4", "text": "fever", "meta": {"a": 1, "a": 2}}'
    notes = {"n1": "aspirin for fever", "n2": "fever", "n3": "nothing", "n4": "fever"}
    write_jsonl(tmp_path / "notes.jsonl", [note_line("n1", notes["n1"]), nested,
                                           note_line("n2", notes["n2"]), long_number,
                                           note_line("n3", notes["n3"]), repeated_text,
                                           repeated_other, b"null"])
    capsys.readouterr()

    # Every output complete, but not a clean run: a scheduler must see the notes set aside.
    assert cli_main(["batch", str(toy_export), "--input", str(tmp_path / "notes.jsonl"),
                     "--input-format", "jsonl",
                     "--output", str(tmp_path / "out")]) == EXIT_NOTES_SET_ASIDE

    results = read_records(tmp_path / "out", "entities")
    assert {r["id"]: r["entities"] for r in results} == {
        i: [e.to_dict() for e in expected_entities(text)] for i, text in notes.items()}
    source = str(tmp_path / "notes.jsonl")
    assert sorted((e["source"], e["id"], e["reason"]) for e in read_records(
        tmp_path / "out", "errors")) == [
        (f"{source}:2", None, "not JSON (arrays or objects nested too deeply)"),
        (f"{source}:4", None, "not JSON (a number has more than 4300 digits)"),
        (f"{source}:6", None, "field 'text' appears twice in one object"),
        (f"{source}:8", None, "not a JSON object (null)"),
    ]
    printed = capsys.readouterr()
    assert "notes annotated: 4, set aside: 4" in printed.out
    assert printed.err.endswith(f"clinical-ner batch: 4 note(s) set aside, their reasons in "
                                f"{tmp_path}/out/errors-*.jsonl (exit code 6)\n")
    assert SECRET not in printed.out + printed.err


def test_an_id_holding_a_line_separator_keeps_its_error_record_on_one_line(toy_export,
                                                                          tmp_path):
    # U+2028, U+2029 and U+0085 end a line for str.splitlines(): written raw, a reader of
    # errors-*.jsonl got half a record, as it would of entities-*.jsonl.
    note_id = "ward\u2028a\u2029b\x85c"
    write_jsonl(tmp_path / "notes.jsonl", [note_line("n1", "fever"),
                                           json.dumps({"id": note_id}).encode()])

    run_batch(str(toy_export), [str(tmp_path / "notes.jsonl")], str(tmp_path / "out"),
              input_format="jsonl")

    assert read_records(tmp_path / "out", "errors") == [
        {"id": note_id, "source": f"{tmp_path / 'notes.jsonl'}:2",
         "reason": "field 'text' is missing, expected a string"}]


def test_a_file_whose_name_is_not_utf8_is_set_aside_and_the_job_goes_on(toy_export,
                                                                        tmp_path):
    # Its name cannot be an id in any output: it ended the whole batch (exit 70).
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("aspirin", encoding="utf-8")
    bad_name = os.path.join(os.fsencode(folder), b"latin1-\xe9.txt")
    with open(bad_name, "wb") as handle:
        handle.write(b"fever")
    # A line over the limit is measured as a line within it: without its CRLF.
    write_jsonl(tmp_path / "notes.jsonl", [note_line("long", "x" * 30) + b"\r"])

    assert cli_main(["batch", str(toy_export), "--input", f"{folder}/", "--output",
                     str(tmp_path / "out")]) == EXIT_NOTES_SET_ASIDE
    assert cli_main(["batch", str(toy_export), "--input", str(tmp_path / "notes.jsonl"),
                     "--input-format", "jsonl", "--max-note-bytes", "40", "--output",
                     str(tmp_path / "out-jsonl")]) == EXIT_NOTES_SET_ASIDE

    assert [r["id"] for r in read_records(tmp_path / "out", "entities")] == [
        str(folder / "good.txt")]
    assert read_records(tmp_path / "out", "errors") == [{
        "id": None, "source": f"{folder}/latin1-\\xe9.txt",
        "reason": "the file name is not UTF-8, so it cannot be the note's id; rename the file"}]
    assert [r["reason"] for r in read_records(tmp_path / "out-jsonl", "errors")] == [
        f"note of {len(note_line('long', 'x' * 30))} bytes is over the limit of 40 bytes "
        "(--max-note-bytes)"]


class FailsOnceMidBundle(SavedModelHandler):
    """Fails the first attempt of the second batch it sees, as a worker dying mid-bundle.

    Batches of about two notes, so that the failing bundle has already sent
    the first batch's results downstream: the runner must discard them.
    """

    def __init__(self, model_path: str, attempts: Path) -> None:
        super().__init__(model_path, run_inference_characters=40)
        self.attempts = attempts

    def run_inference(self, batch, model, inference_args=None):
        key = "-".join(sorted(str(note_id) for note_id, _ in batch))
        (self.attempts / f"batch-{key}").touch()
        failed = self.attempts / "failed"
        if len(list(self.attempts.glob("batch-*"))) == 2 and not failed.exists():
            failed.touch()
            raise RuntimeError("simulated worker failure")
        return super().run_inference(batch, model, inference_args)


def test_a_failed_bundle_is_retried_and_each_note_written_once(toy_export, tmp_path):
    notes = {f"n{number}": "aspirin for fever" if number % 2 else "none" for number in range(12)}
    write_jsonl(tmp_path / "notes.jsonl", [note_line(i, text) for i, text in notes.items()])
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    totals = run_batch(str(toy_export), [str(tmp_path / "notes.jsonl")], str(tmp_path / "out"),
                       input_format="jsonl", runner="BundleBasedDirectRunner",
                       handler=FailsOnceMidBundle(str(toy_export), attempts))

    assert (attempts / "failed").exists() and len(list(attempts.glob("batch-*"))) > 2
    results = read_records(tmp_path / "out", "entities")
    assert sorted(record["id"] for record in results) == sorted(notes)
    assert {r["id"]: r["entities"] for r in results} == {
        i: [e.to_dict() for e in expected_entities(text)] for i, text in notes.items()}
    # The direct runner keeps one metrics container across a bundle's attempts,
    # so its "committed" counters include the failed attempt (not so on Dataflow).
    assert totals["notes"] >= len(notes) and totals["errors"] == 0


class AlwaysFails(SavedModelHandler):
    """Fails every batch, as a model that cannot annotate on this worker."""

    def run_inference(self, batch, model, inference_args=None):
        raise RuntimeError("simulated worker failure")


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_run_leaves_the_output_as_it_found_it(toy_export, tmp_path, existing):
    # FnApiRunner does not retry a bundle: the run failed and left Beam's beam-temp-*
    # folders in --output (and the folders it made) for the next run to carry.
    output = tmp_path / "out" / "run"
    if existing:
        output.mkdir(parents=True)
        (output / "mine.txt").write_text("kept", encoding="utf-8")
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")

    with pytest.raises(Exception, match="simulated worker failure"):
        run_batch(str(toy_export), [str(tmp_path / "note.txt")], str(output),
                  handler=AlwaysFails(str(toy_export)))

    if existing:
        assert [path.name for path in output.iterdir()] == ["mine.txt"]
    else:
        assert not (tmp_path / "out").exists()


STOP_DURING_ANNOTATION = """
import signal, sys
from clinical_ner.batch.model_handler import AnnotatorHandler
from clinical_ner.cli import main

def run_inference(self, batch, model, inference_args=None):  # the stop comes mid-run
    signal.raise_signal(getattr(signal, sys.argv[1]))
    raise AssertionError("the signal did not stop the run")

AnnotatorHandler.run_inference = run_inference
sys.exit(main(["batch", *sys.argv[2:]]))
"""


@pytest.mark.parametrize("signal_name, exit_code, last_line", [
    ("SIGTERM", 143, None), ("SIGINT", 130, "clinical-ner batch: interrupted")])
def test_a_stopped_run_leaves_the_output_as_it_found_it(toy_export, tmp_path, signal_name,
                                                        exit_code, last_line):
    # SIGTERM ended the command on the spot, leaving beam-temp-* folders in --output; Beam
    # re-raised a stop that came while a step ran as a RuntimeError: "internal error", exit 70.
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", STOP_DURING_ANNOTATION, signal_name, str(toy_export),
         "--input", str(tmp_path / "note.txt"), "--output", str(output)],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        timeout=300)
    assert result.returncode == exit_code, result.stderr[-2000:]
    assert "internal error" not in result.stderr
    if last_line:
        assert result.stderr.splitlines()[-1] == last_line
    assert not output.exists()


WORKER_KILLED_MID_RUN = """
import os, signal, sys
import clinical_ner.batch.runner as runner
from clinical_ner.batch.model_handler import SavedModelHandler
from clinical_ner.cli import main

class KilledMidRun(SavedModelHandler):  # pickled by value: defined in __main__
    def run_inference(self, batch, model, inference_args=None):
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer

run_batch = runner.run_batch
runner.run_batch = lambda model, *args, **options: run_batch(
    model, *args, handler=KilledMidRun(model), **options)
sys.exit(main(["batch", *sys.argv[1:], "--", "--direct_running_mode=multi_processing"]))
"""


def batch_on_one_note_in_a_subprocess(script: str, model: Path, tmp_path: Path
                                      ) -> subprocess.CompletedProcess:
    """``script`` (a ``clinical-ner batch`` command line) on one note into ``tmp_path/out``."""
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-c", script, str(model),
         "--input", str(tmp_path / "note.txt"), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        timeout=300)


@pytest.mark.slow
def test_a_worker_process_killed_mid_run_is_named_not_an_internal_error(toy_export, tmp_path):
    output = tmp_path / "out"
    result = batch_on_one_note_in_a_subprocess(WORKER_KILLED_MID_RUN, toy_export, tmp_path)
    # It was "internal error (RuntimeError) ... please report it", exit 70.
    assert result.returncode == 5, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1] == (
        "clinical-ner batch: error: a Beam worker process ended mid-run (killed: out of "
        "memory?); run again, with fewer --direct_num_workers or more memory")
    assert not output.exists()


EXPORT_REMOVED_AFTER_THE_CHECK = """
import shutil, sys
import clinical_ner.batch.runner as runner
from clinical_ner.cli import main

handler_for = runner.handler_for

def export_removed_after_the_check(model, **options):  # before a worker loads it
    handler = handler_for(model, **options)
    shutil.rmtree(model)
    return handler

runner.handler_for = export_removed_after_the_check
sys.exit(main(["batch", *sys.argv[1:], "--", "--direct_running_mode=multi_processing"]))
"""


@pytest.mark.slow
def test_a_litert_export_removed_mid_run_is_named_by_a_worker_not_an_internal_error(
        trained_litert_export, tmp_path):
    export = shutil.copytree(trained_litert_export, tmp_path / "going-litert")
    output = tmp_path / "out"
    result = batch_on_one_note_in_a_subprocess(EXPORT_REMOVED_AFTER_THE_CHECK, export, tmp_path)
    # The worker's ModelError reached the driver as a RuntimeError holding its traceback:
    # "internal error (RuntimeError) ... please report it", exit 70 ("no files to copy").
    assert result.returncode == 4, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1].startswith(
        f"clinical-ner batch: error: {export}: the LiteRT export is gone (moved or removed "
        "after the run started)")
    assert not output.exists()


def test_a_full_disk_is_one_line_naming_the_output_not_an_internal_error(toy_export, tmp_path,
                                                                          capsys, monkeypatch):
    from apache_beam.io import textio

    def disk_full(self, file_handle, encoded_value):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(textio._TextSink, "write_encoded_record", disk_full)
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    output = tmp_path / "out"
    # It was "internal error (RuntimeError) ... please report it", exit 70.
    assert cli_main(["batch", str(toy_export), "--input", str(tmp_path / "note.txt"),
                     "--output", str(output)]) == 1
    assert capsys.readouterr().err.endswith(
        f"clinical-ner batch: error: --output {output}: cannot write (No space left on "
        "device)\n")
    assert not output.exists()


def test_an_input_removed_after_the_check_is_named_not_left_out(toy_export, tmp_path, capsys,
                                                                 monkeypatch):
    import clinical_ner.batch.runner as runner

    (tmp_path / "gone.txt").write_text("aspirin", encoding="utf-8")
    (tmp_path / "stays.txt").write_text("fever", encoding="utf-8")
    pipeline = runner._pipeline

    def input_moved_away(*args):  # between the check and the pipeline's read
        (tmp_path / "gone.txt").unlink()
        return pipeline(*args)

    monkeypatch.setattr(runner, "_pipeline", input_moved_away)
    output = tmp_path / "out"
    # Its note was in neither output, exit 0.
    assert cli_main(["batch", str(toy_export), "--input", str(tmp_path / "gone.txt"),
                     "--input", str(tmp_path / "stays.txt"), "--output", str(output)]) == 2
    assert capsys.readouterr().err.endswith(
        f"clinical-ner batch: error: --input {tmp_path / 'gone.txt'}: no file matches any more "
        "(moved or removed after the run started)\n")
    assert not output.exists()


def test_a_path_that_is_not_an_export_fails_before_the_pipeline(trained_model, toy_export,
                                                                tmp_path):
    model_dir, _ = trained_model
    inputs = [str(toy_export / "saved_model.pb")]
    with pytest.raises(NotAnExportError, match="a model directory from 'clinical-ner train'"):
        run_batch(str(model_dir), inputs, str(tmp_path / "out"))
    with pytest.raises(NotAnExportError, match="no such model folder"):
        run_batch(str(tmp_path / "missing"), inputs, str(tmp_path / "out"))
    # Other commands take the bundled model's name.
    with pytest.raises(NotAnExportError, match="clinical: a bundled model, not an export; run "
                                               "'clinical-ner export clinical"):
        run_batch("clinical", inputs, str(tmp_path / "out"))
    with pytest.raises(NotAnExportError, match="not an exported SavedModel"):
        run_batch(str(tmp_path), inputs, str(tmp_path / "out"))
    fake = tmp_path / "fake"
    shutil.copytree(toy_export, fake)
    (fake / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(NotAnExportError, match="not a readable SavedModel"):
        run_batch(str(fake), inputs, str(tmp_path / "out"))
    # An export copied without its variables: named here, not by TensorFlow in a worker.
    shutil.rmtree(fake / "variables")
    with pytest.raises(NotAnExportError, match=r"an incomplete SavedModel "
                                               r"\(variables/variables.index missing\)"):
        run_batch(str(fake), inputs, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_damaged_savedmodel_fails_before_the_pipeline_naming_it(toy_export, tmp_path,
                                                                    capsys):
    # Its variables truncated: the check before the pipeline saw every file there, and each
    # worker failed to load it (internal error (IndexError), exit 70).
    damaged = shutil.copytree(toy_export, tmp_path / "damaged")
    for data in (damaged / "variables").glob("variables.data-*"):
        os.truncate(data, 10)
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    assert cli_main(["batch", str(damaged), "--input", str(tmp_path / "note.txt"),
                     "--output", str(tmp_path / "out")]) == 4
    assert capsys.readouterr().err == (
        f"clinical-ner batch: error: {damaged}: a damaged SavedModel (TensorFlow cannot read "
        "it: IndexError); copy the whole folder again, or export the model again with "
        "'clinical-ner export MODEL --output BASE'\n")
    assert not (tmp_path / "out").exists()
    # Loaded in a worker (or by predict) all the same, it is the same error, not an IndexError.
    with pytest.raises(NotAnExportError, match="a damaged SavedModel"):
        SavedModelAnnotator(str(damaged))


def test_an_incomplete_litert_export_fails_before_the_pipeline(trained_litert_export, tmp_path,
                                                               capsys):
    note = tmp_path / "note.txt"
    note.write_text("Started aspirin.", encoding="utf-8")
    for left_out in ("crf.json", "config.json", "litert.json"):
        broken = tmp_path / f"without-{left_out}"
        shutil.copytree(trained_litert_export, broken)
        (broken / left_out).unlink()
        assert cli_main(["batch", str(broken), "--input", str(note), "--output",
                         str(tmp_path / "out")]) == 4
        assert capsys.readouterr().err == (
            f"clinical-ner batch: error: {broken}: an incomplete LiteRT export ({left_out} "
            "missing); copy the whole folder again, or export the model again with "
            "'clinical-ner export MODEL --format litert --output DIR'\n")
    # A damaged file too: before, each worker failed with Beam's traceback.
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_litert_export, damaged)
    crf = json.loads((damaged / "crf.json").read_text(encoding="utf-8"))
    (damaged / "crf.json").write_text(json.dumps({**crf, "forbidden_score": None}),
                                      encoding="utf-8")
    assert cli_main(["batch", str(damaged), "--input", str(note), "--output",
                     str(tmp_path / "out")]) == 4
    assert capsys.readouterr().err == (
        f"clinical-ner batch: error: {damaged / 'crf.json'}: 'forbidden_score' must be a finite "
        "number; export the model again\n")
    assert not (tmp_path / "out").exists()


def test_worker_processes_start_with_two_heap_arenas_unless_the_user_set_them(monkeypatch):
    def what_a_worker_process_sees() -> str:
        return subprocess.run([sys.executable, "-c", "import os; "
                               "print(os.environ.get('MALLOC_ARENA_MAX'))"],
                              capture_output=True, text=True, check=True).stdout.strip()

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    with worker_environment():
        assert what_a_worker_process_sees() == "2"
    assert "MALLOC_ARENA_MAX" not in os.environ  # the caller's environment is left as it was
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    with worker_environment():
        assert what_a_worker_process_sees() == "4"
    assert os.environ["MALLOC_ARENA_MAX"] == "4"


@pytest.fixture(scope="module")
def quiet_run_on_two_processes(toy_export, tmp_path_factory) -> subprocess.CompletedProcess:
    """``clinical-ner batch`` (no ``--verbose``) of one note on two worker processes."""
    folder = tmp_path_factory.mktemp("quiet")
    (folder / "note.txt").write_text("aspirin", encoding="utf-8")
    # As a user runs it: no TF_CPP_MIN_LOG_LEVEL of their own.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "clinical_ner", "batch", str(toy_export),
         "--input", str(folder / "note.txt"), "--output", str(folder / "out"), "--",
         "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_worker_processes_of_a_quiet_run_log_no_info_lines_on_stderr(
        quiet_run_on_two_processes):
    # Audit: each FnApiRunner worker process (multi_processing) printed about 18 INFO lines
    # on stderr ("Creating insecure control channel ...", "Python sdk harness starting.",
    # ...): FnApiRunner hands its workers no pipeline options, so they logged at Beam's
    # default, --default_sdk_harness_log_level or not.
    info = [line for line in quiet_run_on_two_processes.stderr.splitlines()
            if line.startswith("INFO")]
    # Left: what a worker logs before it reads any option (its handler, the options file).
    before_the_options = ("INFO:__main__:Logging handler created.",
                          "INFO:__main__:Load pipeline options from file: ")
    assert len(info) <= 2 * len(before_the_options), info
    assert all(line.startswith(before_the_options) for line in info), info


@pytest.mark.slow
def test_worker_processes_of_a_quiet_run_keep_tensorflow_s_start_up_lines_off_stderr(
        quiet_run_on_two_processes):
    # Audit: each worker process that loaded a SavedModel printed TensorFlow's C++ start-up
    # lines ("WARNING: All log messages before absl::InitializeLog() ...", "I0000 ...
    # cudart_stub.cc:31] Could not find cuda drivers ..."), which every command keeps off
    # stderr unless --verbose.
    stderr = quiet_run_on_two_processes.stderr
    assert "absl::InitializeLog" not in stderr
    assert not re.search(r"^[IWEF]\d{4} ", stderr, re.MULTILINE), stderr[-3000:]


def test_worker_processes_get_the_command_s_log_level_or_the_one_given(monkeypatch):
    import logging

    import clinical_ner.batch.runner as runner

    monkeypatch.delenv(runner.WORKER_OPTIONS_FILE, raising=False)
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    for arguments, expected in (
            ([], {"default_sdk_harness_log_level": str(logging.WARNING)}),
            (["--default_sdk_harness_log_level=DEBUG",
              '--sdk_harness_log_level_overrides={"clinical_ner": "INFO"}'],
             {"default_sdk_harness_log_level": "DEBUG",
              "sdk_harness_log_level_overrides": {"clinical_ner": "INFO"}})):
        with runner._worker_log_options(runner._pipeline("FnApiRunner", arguments)):
            path = Path(os.environ[runner.WORKER_OPTIONS_FILE])
            assert json.loads(path.read_text(encoding="utf-8")) == {"options": expected}
        assert not path.exists() and runner.WORKER_OPTIONS_FILE not in os.environ
    # One the user set is theirs.
    monkeypatch.setenv(runner.WORKER_OPTIONS_FILE, "mine.json")
    with runner._worker_log_options(runner._pipeline("FnApiRunner", [])):
        assert os.environ[runner.WORKER_OPTIONS_FILE] == "mine.json"


def test_inputs_and_output_are_checked_before_the_pipeline(toy_export, tmp_path, capsys):
    with pytest.raises(ConfigError, match="no file matches"):
        run_batch(str(toy_export), [str(tmp_path / "*.txt")], str(tmp_path / "out"))
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "errors-00000-of-00001.jsonl").write_text("", encoding="utf-8")
    assert cli_main(["batch", str(toy_export), "--input", str(tmp_path / "note.txt"),
                     "--output", str(tmp_path / "out")]) == 2
    assert "clinical-ner batch: error: --output" in capsys.readouterr().err


def test_a_file_named_with_wildcards_is_refused_with_a_pattern_that_reads_it(toy_export,
                                                                             tmp_path):
    # "no file matches" beside the file itself: Beam's patterns have no escape.
    note = tmp_path / "note[1].txt"
    note.write_text("aspirin", encoding="utf-8")
    reading = str(tmp_path / "note?1?.txt")
    # Its pattern printed "FutureWarning: Possible nested set" and a line of our source
    # above the error (re compiles a pattern once a process: purged, it is compiled here).
    re.purge()
    with warnings.catch_warnings(), pytest.raises(ConfigError, match=re.escape(
            f"--input {note}: no file matches (its [, * and ? are wildcards, which Beam's "
            f"patterns cannot escape; to read the file {note}, put ? in their place: "
            f"{reading})")):
        warnings.simplefilter("error", FutureWarning)
        run_batch(str(toy_export), [str(note)], str(tmp_path / "out"))
    run_batch(str(toy_export), [reading], str(tmp_path / "out"))
    assert [record["id"] for record in read_records(tmp_path / "out", "entities")] == [str(note)]


@pytest.mark.parametrize("make, what", [
    (lambda path: path.symlink_to(path.parent / "gone.txt"), "a broken symbolic link"),
    (os.mkfifo, "not a regular file"),
    # A link to a pipe is no broken link (it was called one).
    (lambda path: (os.mkfifo(path.parent.parent / "pipe"),
                   path.symlink_to(path.parent.parent / "pipe")), "not a regular file"),
])
def test_a_match_that_is_no_readable_file_is_refused_before_the_pipeline(
        toy_export, tmp_path, make, what):
    # Beam dropped a broken link silently (its note in neither output) and would read a
    # named pipe until it closed.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("aspirin", encoding="utf-8")
    make(tmp_path / "in" / "b.txt")
    for pattern in (f"{tmp_path}/in/*.txt", f"{tmp_path}/in"):
        with pytest.raises(ConfigError, match=f"{tmp_path}/in/b.txt is {what}; remove it"):
            run_batch(str(toy_export), [pattern], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_inputs_are_checked_as_beam_matches_them(toy_export, tmp_path, monkeypatch):
    # A glob of our own checked other entries than Beam's match reads: Beam's '*' takes a
    # hidden file, whose broken link it then dropped without a word (an editor's lock
    # file '.#a.txt' is one). And Beam listed no folder for a bare '*.txt': no file matched.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("aspirin", encoding="utf-8")
    (tmp_path / "in" / "b.txt").write_text("fever", encoding="utf-8")
    (tmp_path / "in" / ".#a.txt").symlink_to(tmp_path / "gone")
    for pattern in ("in/*.txt", "in", "in/**.txt"):
        with pytest.raises(ConfigError, match=rf"--input {re.escape(pattern)}: in/\.#a.txt is a "
                                              "broken symbolic link"):
            run_batch(str(toy_export), [pattern], "out")
    (tmp_path / "in" / ".#a.txt").unlink()
    monkeypatch.chdir(tmp_path / "in")
    totals = run_batch(str(toy_export), ["*.txt"], str(tmp_path / "out"))
    assert sorted(record["id"] for record in read_records(tmp_path / "out", "entities")) == [
        "./a.txt", "./b.txt"]
    assert totals["notes"] == 2


def test_one_file_under_several_spellings_a_folder_and_a_bom_give_each_note_once(
        toy_export, tmp_path, monkeypatch):
    # Each spelling of one path was read again (146 notes came out as 438), a folder
    # without its slash was an internal error, and a BOM set the first note aside.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "notes.jsonl",
                [codecs.BOM_UTF8 + note_line("first", "aspirin"), note_line("second", "fever")])
    spellings = ["in/notes.jsonl", "./in/notes.jsonl", str(tmp_path / "in" / "notes.jsonl"),
                 "in"]
    totals = run_batch(str(toy_export), spellings, "out", input_format="jsonl")
    records = read_records(tmp_path / "out", "entities")
    assert sorted(record["id"] for record in records) == ["first", "second"]
    assert totals["notes"] == 2 and totals["errors"] == 0


def test_fields_and_output_that_cannot_work_are_refused_before_the_pipeline(toy_export,
                                                                             tmp_path):
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    note = [str(tmp_path / "note.txt")]
    with pytest.raises(ConfigError, match="the id field and the text field are both 'text'"):
        run_batch(str(toy_export), note, str(tmp_path / "out"), input_format="jsonl",
                  id_field="text")
    with pytest.raises(ConfigError, match=rf"--output {tmp_path / 'note.txt' / 'out'}: "
                                          rf"{tmp_path / 'note.txt'} is a file"):
        run_batch(str(toy_export), note, str(tmp_path / "note.txt" / "out"))
    with pytest.raises(ConfigError, match="--output is empty"):
        run_batch(str(toy_export), note, "")
    # Past readline's C integer: an OverflowError in the reading worker (exit 70), and the
    # job's temporary folders left in the output.
    with pytest.raises(ConfigError, match="--max-note-bytes must be at most"):
        run_batch(str(toy_export), note, str(tmp_path / "out"), input_format="jsonl",
                  max_note_bytes=10**20)
    assert not (tmp_path / "out").exists()


def test_json_fields_without_jsonl_are_refused_not_ignored(toy_export, tmp_path, capsys):
    # Without --input-format jsonl the fields were ignored: the JSON lines file was one
    # note, its path the id, the entities' offsets into its JSON.
    write_jsonl(tmp_path / "notes.jsonl", [json.dumps({"note_id": "n1", "body": "aspirin"})
                                           .encode()])
    assert cli_main(["batch", str(toy_export), "--input", str(tmp_path / "notes.jsonl"),
                     "--id-field", "note_id", "--text-field", "body",
                     "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("clinical-ner batch: error: --id-field and --text-field "
                                       "name fields of JSON lines; add --input-format jsonl\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("options", "message"), [
    (["--runner", "Nope"], "--runner Nope: Unexpected pipeline runner: Nope."),
    # A mistyped option ran without it (one worker instead of two), with a warning.
    (["--", "--direct_num_workes=2"], "unknown Beam pipeline option(s): --direct_num_workes"),
    # A word Beam cannot read ran without it, with a warning quoting it.
    (["--", "direct_num_workers=2"], "1 argument(s) after '--' that are not Beam options"),
    # Beam printed its 146-line usage block.
    (["--", "--direct_num_workers=abc"],
     "Beam pipeline options: argument --direct_num_workers: invalid int value: 'abc'"),
    # Beam took the last runner: --runner was ignored, or an error blamed it.
    (["--runner", "FnApiRunner", "--", "--runner=Nope"], "--runner after '--' as well"),
])
def test_beam_options_that_cannot_run_are_one_line_before_the_pipeline(toy_export, tmp_path,
                                                                       capsys, options,
                                                                       message):
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    assert cli_main(["batch", str(toy_export), "--input", str(tmp_path / "note.txt"),
                     "--output", str(tmp_path / "out"), *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"clinical-ner batch: error: {message}") and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_beam_s_own_error_log_stays_off_stderr_without_verbose(toy_export, tmp_path, capsys,
                                                              monkeypatch):
    # Beam logs a failure inside a step with its message and traceback; a message
    # may quote a note, and the command reports the failure in one line.
    import logging

    import clinical_ner.batch.runner as runner

    def failing_run(*args, **kwargs):
        logging.getLogger("apache_beam.runners.common").error(
            "ValueError: %s [while running 'AnnotateNotes']", SECRET, exc_info=False)
        # A worker process's failure, as Beam's logging service logs it again.
        logging.log(logging.ERROR, "log_entry { message: 'ValueError: %s' }", SECRET)
        raise RuntimeError(SECRET)

    monkeypatch.setattr(runner, "run_batch", failing_run)
    # The command line's own stderr handler, as outside pytest (which holds the root's).
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    assert cli_main(["batch", str(toy_export), "--input", str(tmp_path / "note.txt"),
                     "--output", str(tmp_path / "out")]) == 70
    error = capsys.readouterr().err
    assert SECRET not in error and "internal error (RuntimeError)" in error


def test_beam_s_harmless_warnings_stay_off_stderr_from_worker_processes_too(
        toy_export, tmp_path, capsys, monkeypatch):
    # Audit: the launcher dropped Beam's harmless warnings only where they were logged on
    # its root logger; each worker process's (multi_processing), which Beam's logging
    # service logs again here, reached stderr: "WARNING apache_beam.runners.portability.
    # local_job_service: Worker: severity: WARN ... message: \"Resource module is not ...".
    import logging

    import clinical_ner.batch.runner as runner

    def worker_entry(message: str) -> str:
        return (f'severity: WARN timestamp {{   seconds: 1   nanos: 2 }} message: "{message}" '
                'log_location: "base.py:2434" thread: "Thread-12" ')

    def run_logging_as_beam(*args, **kwargs):
        service = logging.getLogger("apache_beam.runners.portability.local_job_service")
        for message in ("Resource module is not available for current platform, memory usage "
                        "cannot be fetched.", "No semi_persistent_directory found:  User "
                        "registered objects (e.g. schema, logical type) throughregisteries "
                        "may not be effective", "a worker's warning that matters"):
            service.warning("Worker: %s", worker_entry(message))
        logging.warning("Resource module is not available for current platform, memory "
                        "usage cannot be fetched.")
        return {"notes": 1, "errors": 0, "tokens": 1, "entities": 0, "workers_litert": 0,
                "workers_tensorflow": 1}

    monkeypatch.setattr(runner, "run_batch", run_logging_as_beam)
    # The command line's own stderr handler, as outside pytest (which holds the root's).
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(logging.getLogger(), "filters", [])
    (tmp_path / "note.txt").write_text("aspirin", encoding="utf-8")
    assert cli_main(["batch", str(toy_export), "--input", str(tmp_path / "note.txt"),
                     "--output", str(tmp_path / "out")]) == 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "a worker's warning that matters" in error, error


class QuotesItsInput:
    """A model whose failure quotes the note, as an exception's message may."""

    def __init__(self, error: type[Exception] = ValueError) -> None:
        self.error = error

    def annotate(self, texts, *options):
        raise self.error(f"cannot annotate {texts[0]!r}")


def test_a_failure_inside_annotation_is_raised_without_its_message(toy_export):
    # Beam's worker processes (multi_processing) log a failed step's message and traceback
    # on their own stderr, where the command's log filters do not reach.
    handler = SavedModelHandler(str(toy_export))
    with pytest.raises(MessageWithheldError) as raised:
        handler.run_inference([("n1", f"aspirin {SECRET}")], QuotesItsInput())
    logged = "".join(traceback.format_exception(raised.value))
    assert SECRET not in logged
    assert str(raised.value) == ("annotating 1 note(s) failed with ValueError (message "
                                 "withheld: it may quote a note)")
    assert "in annotate" in logged  # where it failed, for the report
    # Our own errors never quote a note: they pass as they are.
    with pytest.raises(ModelError, match="cannot annotate"):
        handler.run_inference([("n1", "aspirin")], QuotesItsInput(ModelError))


@pytest.mark.slow
def test_exported_model_annotates_and_tags_as_clinical_ner(trained_model, maccrobat_dev_notes):
    from clinical_ner.annotators.keras_annotator import KerasAnnotator

    model_dir, export_dir = trained_model
    texts = [note.read_text(encoding="utf-8") for note in maccrobat_dev_notes[:6]]
    sentences = [text.split()[:30] for text in texts] + [[]]
    exported, in_process = (SavedModelAnnotator.load(str(export_dir)),
                             KerasAnnotator.load(model_dir))
    assert_same_documents(exported.annotate(texts), in_process.annotate(texts))
    assert_same_tags(exported.tag(sentences), in_process.tag(sentences))
