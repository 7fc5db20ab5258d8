"""The LiteRT export and the lean runtime: builtin ops only, TensorFlow's answers, no TensorFlow.

The tiny model the reliability tests use (conftest's ``tiny_model_dir``,
trained once on the bundled sample) is exported with ``--format litert``.
The runtime must give the TensorFlow path's entities (same spans and labels;
confidences within ``helpers.CONFIDENCE_TOLERANCE``) on the shared MACCROBAT
dev documents and on the hostile texts of ``helpers.EDGE_CASES``, and must
not import TensorFlow or Keras. CI installs the ``[litert]`` extra; without
``ai-edge-litert`` the module is skipped. The NumPy CRF, which needs no
LiteRT, is compared with the Keras CRF in ``test_crf.py``.
"""
from __future__ import annotations

import errno
import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="the [litert] extra (ai-edge-litert) is not installed")

from clinical_ner.config import NERConfig  # noqa: E402
from clinical_ner.errors import ClinicalNERError, ConfigError, ModelError  # noqa: E402
from clinical_ner.export.saved_model import ExportError  # noqa: E402
from clinical_ner.export.litert import STAGING_PREFIX, export_litert  # noqa: E402
from clinical_ner import ClinicalNER  # noqa: E402
from clinical_ner.artifacts import litert as layout  # noqa: E402
from clinical_ner.annotators.litert.annotator import (  # noqa: E402
    PROCESS_MIN_CHARACTERS, LiteRTAnnotator, length_chunks, read_export,
)
from clinical_ner.annotators.litert.network import EmissionsNetwork  # noqa: E402
from clinical_ner.annotators.litert.processes import WorkerProcesses  # noqa: E402
from clinical_ner.text.tokenizer import split_sentences  # noqa: E402

from helpers import (  # noqa: E402
    CONFIDENCE_TOLERANCE,
    EDGE_CASES,
    NOTE,
    REPO_ROOT,
    assert_exact,
    assert_same_documents,
    assert_same_entities,
    assert_same_tags,
)

NO_TENSORFLOW = ("tensorflow", "keras", "tf_keras")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export_dir(tiny_model_dir):
    return export_litert(tiny_model_dir, tiny_model_dir.parent / "tiny-litert")


@pytest.fixture(scope="module")
def tf_ner(tiny_model_dir):
    return ClinicalNER.load(tiny_model_dir)


@pytest.fixture(scope="module")
def lite_ner(export_dir):
    return ClinicalNER.load(export_dir)


def test_export_holds_a_builtin_only_network_and_its_data(export_dir):
    manifest = json.loads((export_dir / layout.MANIFEST_FILE).read_text())
    assert manifest["weights"] == "float32"
    assert manifest["max_abs_emission_difference"] < 1e-4
    # The loop and what replaced the non-builtin ops are there; nothing else could be.
    assert {"WHILE", "DYNAMIC_UPDATE_SLICE", "CONV_2D", "REVERSE_SEQUENCE"} <= \
        set(manifest["operators"])
    assert not any(name.startswith(("FLEX", "CUSTOM")) for name in manifest["operators"])
    for name in (layout.NETWORK_FILE, layout.CRF_FILE, "vocab.json", "config.json"):
        assert (export_dir / name).is_file(), name
    crf = json.loads((export_dir / layout.CRF_FILE).read_text())
    tags = json.loads((export_dir / "vocab.json").read_text())["tags"]
    # The constraints travel as data: I-problem may not start a sentence.
    assert crf["allowed_start"][tags.index("I-problem")] is False


def test_load_gives_the_lean_runtime(lite_ner):
    assert isinstance(lite_ner, LiteRTAnnotator)
    assert lite_ner.config.max_sentence_tokens == NERConfig().max_sentence_tokens


def test_same_entities_as_tensorflow_on_maccrobat_dev(tf_ner, lite_ner, shared_data):
    paths = sorted((shared_data / "maccrobat-i2b2" / "dev" / "txt").glob("*.txt"))
    texts = [path.read_text(encoding="utf-8") for path in paths]
    assert len(texts) == 24
    expected, actual = tf_ner.annotate(texts), lite_ner.annotate(texts)
    assert sum(map(len, expected)) > 100, "the tiny model found too little to compare"
    for text, wanted, got in zip(texts, expected, actual):
        assert_exact(text, got)
        assert_same_entities(got, wanted)


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_same_entities_as_tensorflow_on_hostile_texts(tf_ner, lite_ner, name):
    text = EDGE_CASES[name]
    got = lite_ner.annotate(text)
    assert_exact(text, got)
    assert_same_entities(got, tf_ner.annotate(text))


def test_tag_gives_tensorflow_s_tags(tf_ner, lite_ner):
    sentences = [[token.text for token in sentence]
                 for sentence in split_sentences(NOTE + " Fever and cough resolved.")]
    sentences += [[], ["CT"], ["Chest", "CT"]]
    actual = lite_ner.tag(sentences)
    assert_same_tags(actual, tf_ner.tag(sentences))
    assert any(tag != "O" for tags, _ in actual for tag in tags)


def test_a_batch_gives_what_each_text_gives_alone(lite_ner):
    texts = [NOTE, "", NOTE.upper(), EDGE_CASES["mixed-newlines"], NOTE * 30]
    together = lite_ner.annotate(texts, batch_size=2)
    for text, entities in zip(texts, together):
        assert_same_entities(entities, lite_ner.annotate(text))


def test_the_network_re_plans_only_for_new_shapes_and_never_answers_stale(export_dir, lite_ner):
    # The pool's interpreter keeps its plan while the shapes repeat: each call
    # (new shapes, the same shapes with other ids, the first shapes again) must
    # give what a freshly loaded network gives for the same input.
    featurizer = lite_ner.featurizer
    batches = [[["Chest", "CT", "showed", "a", "nodule"]], [["Fever"]],
               [["Chest", "MRI", "showed", "no", "mass"]], [["Chest", "CT", "showed", "a", "nodule"]],
               [["She", "denied", "pain", "."], ["Aspirin", "was", "given"]]]
    inputs = [featurizer(batch, max(map(len, batch)), featurizer.char_width(batch))
              for batch in batches]
    network = EmissionsNetwork(export_dir / lite_ner.manifest["network"],
                               lite_ner.manifest["inputs"],
                               output_names=lite_ner.manifest.get("network_outputs"))
    for features in inputs:
        fresh = EmissionsNetwork(export_dir / lite_ner.manifest["network"],
                                 lite_ner.manifest["inputs"],
                                 output_names=lite_ner.manifest.get("network_outputs"))
        for reused, alone in zip(network(features), fresh(features)):
            np.testing.assert_array_equal(reused, alone)
    first, third = network(inputs[0])[0], network(inputs[2])[0]
    assert first.shape == third.shape and not np.array_equal(first, third)


def test_chunks_hold_every_sentence_once_within_both_limits():
    rng = np.random.default_rng(7)
    lengths = np.concatenate([rng.integers(1, 40, 300), [200, 1, 1]])
    chunks = length_chunks(lengths, max_sentences=16, max_positions=384)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(lengths)))
    for chunk in chunks:
        assert len(chunk) <= 16
        # A sentence longer than the limit goes alone, whatever its length.
        assert len(chunk) == 1 or len(chunk) * lengths[chunk].max() <= 384
    # Sorted by length: each chunk's sentences are no longer than the next chunk's.
    assert all(lengths[a].max() <= lengths[b].min() for a, b in zip(chunks, chunks[1:]))
    # Short sentences fill whole chunks; no limit on positions: 16 sentences a chunk.
    assert len(length_chunks(np.full(32, 5), 16, 384)) == 2
    assert [len(chunk) for chunk in length_chunks(np.full(20, 40), 16, 0)] == [16, 4]


def test_parallel_workers_give_the_same_entities(export_dir, lite_ner, shared_data):
    texts = [path.read_text(encoding="utf-8") for path in
             sorted((shared_data / "maccrobat-i2b2" / "dev" / "txt").glob("*.txt"))[:6]]
    alone, parallel = LiteRTAnnotator.load(export_dir, workers=1), LiteRTAnnotator.load(export_dir, workers=2)
    # Several chunks of sentences, scored by two interpreters in two threads.
    assert_same_documents(parallel.annotate(texts), alone.annotate(texts))


def test_large_batches_run_in_worker_processes_without_tensorflow(export_dir, shared_data):
    texts = [path.read_text(encoding="utf-8") for path in
             sorted((shared_data / "maccrobat-i2b2" / "dev" / "txt").glob("*.txt"))]
    assert sum(map(len, texts)) >= PROCESS_MIN_CHARACTERS
    alone = LiteRTAnnotator.load(export_dir, workers=1)
    threads = LiteRTAnnotator.load(export_dir, workers=2, parallel="threads")
    processes = LiteRTAnnotator.load(export_dir, workers=2)
    try:
        expected = alone.annotate(texts)
        assert_same_documents(processes.annotate(texts), expected)
        assert_same_documents(threads.annotate(texts), expected)
        pids = processes.worker_pids
        assert len(pids) == 2 and os.getpid() not in pids
        for pid in pids:
            libraries = Path(f"/proc/{pid}/maps").read_text()
            assert "ai_edge_litert" in libraries and "tensorflow" not in libraries
        # A worker that dies between batches is replaced: the next batch is whole.
        os.kill(pids[0], signal.SIGKILL)
        os.waitpid(pids[0], 0)
        assert_same_documents(processes.annotate(texts[::-1]), expected[::-1])
        assert processes.worker_pids[0] != pids[0]
        # Two callers at once: one batch goes to the processes, the other runs here.
        answers = {}
        callers = [threading.Thread(target=lambda key=key: answers.update(
            {key: processes.annotate(texts[key:])})) for key in (0, 1)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        assert_same_documents(answers[0], expected)
        assert_same_documents(answers[1], expected[1:])
        # One text, and small batches, stay in this process.
        processes.close()
        short = [NOTE, EDGE_CASES["combining-marks"]]
        assert sum(map(len, short)) < PROCESS_MIN_CHARACTERS
        assert_same_documents(processes.annotate(short), alone.annotate(short))
        assert_same_documents([processes.annotate(texts[0])], expected[:1])
        assert processes.worker_pids == []
    finally:
        processes.close()
    with pytest.raises(ValueError, match="parallel must be one of"):
        LiteRTAnnotator.load(export_dir, parallel="fork")


def test_a_with_block_stops_the_worker_processes(export_dir, shared_data):
    texts = [path.read_text(encoding="utf-8") for path in
             sorted((shared_data / "maccrobat-i2b2" / "dev" / "txt").glob("*.txt"))[:4]]
    assert sum(map(len, texts)) >= PROCESS_MIN_CHARACTERS
    with LiteRTAnnotator.load(export_dir, workers=2) as ner:
        expected = ner.annotate(texts)
        assert len(ner.worker_pids) == 2
    assert ner.worker_pids == []
    # As after close(): a later large batch starts them again.
    try:
        assert_same_documents(ner.annotate(texts), expected)
    finally:
        ner.close()


def test_worker_processes_load_the_export_the_caller_loaded_after_a_chdir(
        export_dir, shared_data, tmp_path, monkeypatch):
    # They start at the first large batch: from a relative path, after a chdir, they
    # loaded whatever export was there (another model's answers), or failed.
    texts = [path.read_text(encoding="utf-8") for path in
             sorted((shared_data / "maccrobat-i2b2" / "dev" / "txt").glob("*.txt"))[:4]]
    assert sum(map(len, texts)) >= PROCESS_MIN_CHARACTERS
    monkeypatch.chdir(export_dir.parent)
    processes = LiteRTAnnotator.load(export_dir.name, workers=2)
    try:
        expected = LiteRTAnnotator.load(export_dir.name, workers=1).annotate(texts)
        monkeypatch.chdir(tmp_path)
        assert_same_documents(processes.annotate(texts), expected)
        assert len(processes.worker_pids) == 2
    finally:
        processes.close()


def test_a_batch_that_fails_or_is_interrupted_leaves_the_next_batch_right(
        export_dir, shared_data, monkeypatch):
    texts = [path.read_text(encoding="utf-8") for path in
             sorted((shared_data / "maccrobat-i2b2" / "dev" / "txt").glob("*.txt"))]
    processes = LiteRTAnnotator.load(export_dir, workers=2)
    try:
        expected = processes.annotate(texts)
        read = WorkerProcesses._read

        def killed_before_it_answers(process):
            process.kill()
            process.wait()
            return read(process)

        monkeypatch.setattr(WorkerProcesses, "_read", staticmethod(killed_before_it_answers))
        with pytest.raises(ClinicalNERError, match="a LiteRT worker process stopped"):
            processes.annotate(texts)
        monkeypatch.undo()
        assert processes.worker_pids == []
        assert_same_documents(processes.annotate(texts), expected)

        # Interrupted while the workers compute (Ctrl-C): the answers they were about to
        # give must not be read as the next batch's.
        def interrupted(process):
            raise KeyboardInterrupt

        monkeypatch.setattr(WorkerProcesses, "_read", staticmethod(interrupted))
        with pytest.raises(KeyboardInterrupt):
            processes.annotate(texts)
        monkeypatch.undo()
        assert_same_documents(processes.annotate(texts[::-1]), expected[::-1])
    finally:
        processes.close()


def test_a_worker_process_s_unexpected_error_reaches_the_caller_as_its_type_only(export_dir):
    # The parent raises what a worker answers as a ClinicalNERError, which the CLI
    # prints whole: another exception's message might quote a note.
    processes = WorkerProcesses(export_dir, 1)
    try:
        with pytest.raises(ClinicalNERError) as caught:
            processes.annotate([([b"Zanzibarian fever"], None, None)])  # texts unchecked here
        assert str(caught.value) == ("a LiteRT worker process failed (TypeError); load the "
                                     "export with workers=1 and run again for the traceback")
    finally:
        processes.close()


def test_worker_processes_that_cannot_start_say_how_to_annotate_in_this_process(
        export_dir, monkeypatch):
    # An embedding host's sys.executable may be no Python: every large batch failed,
    # and the error did not say that workers=1 annotates without them.
    monkeypatch.setattr(sys, "executable", shutil.which("false"))
    processes = WorkerProcesses(export_dir, 1)
    with pytest.raises(ClinicalNERError, match=r"could not load the export \(exit code 1\)\. "
                                               r"Load the export with workers=1 to annotate "
                                               r"in this process$"):
        processes.annotate([(["Chest pain."], None, None)])
    assert processes.pids == []


def test_a_forked_copy_of_the_caller_does_not_keep_the_workers_alive(export_dir, shared_data):
    # nlp.pipe(n_process=...) forks the caller: the copy must let go of the workers' pipes,
    # or the workers never read the end of their input when the caller closes them.
    texts = [path.read_text(encoding="utf-8") for path in
             sorted((shared_data / "maccrobat-i2b2" / "dev" / "txt").glob("*.txt"))[:4]]
    processes = LiteRTAnnotator.load(export_dir, workers=2)
    processes.annotate(texts)
    workers = list(processes._processes._processes)
    release_read, release_write = os.pipe()
    child = os.fork()
    if child == 0:  # the copy waits, pipes and all, until the caller has closed its workers
        os.read(release_read, 1)
        os._exit(0)
    try:
        processes.close()
        # Each ended at the end of its input (exit code 0), not killed after close's timeout.
        assert [worker.returncode for worker in workers] == [0, 0]
    finally:
        os.write(release_write, b"x")
        os.waitpid(child, 0)


def test_an_annotator_dropped_without_close_ends_its_worker_processes(export_dir):
    # They ran until the caller exited: each reload of a model (a notebook cell run
    # again) kept two more processes of 70-110 MiB.
    texts = ["Started aspirin for fever. " * 60, "CT of the chest. " * 100]
    assert sum(map(len, texts)) >= PROCESS_MIN_CHARACTERS
    dropped = LiteRTAnnotator.load(export_dir, workers=2)
    dropped.annotate(texts)
    pids = dropped.worker_pids
    assert len(pids) == 2
    del dropped
    gc.collect()
    waiters = [threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True) for pid in pids]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join(timeout=60)  # a bound only: each ends as soon as its process has
    assert not any(waiter.is_alive() for waiter in waiters)


def test_load_uses_the_cores_of_the_process_s_affinity(export_dir):
    # A fresh process pinned to one core, then given every core of this one.
    cores = sorted(os.sched_getaffinity(0))
    script = textwrap.dedent(f"""
        import os
        from clinical_ner import ClinicalNER
        from clinical_ner.annotators.litert.annotator import LiteRTAnnotator
        os.sched_setaffinity(0, {{{cores[0]}}})
        pinned = ClinicalNER.load({str(export_dir)!r}).network.workers
        os.sched_setaffinity(0, {cores!r})
        everything = ClinicalNER.load({str(export_dir)!r}).network.workers
        one = LiteRTAnnotator.load({str(export_dir)!r}, workers=1).network.workers
        print(pinned, everything, one)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1", str(len(cores)), "1"]


def test_threads_share_one_runtime(lite_ner):
    texts = [NOTE, EDGE_CASES["emoji-and-astral"], NOTE * 5, EDGE_CASES["combining-marks"]]
    expected = [lite_ner.annotate(text) for text in texts]
    results, errors = {}, []

    def work(worker):
        try:
            for round_ in range(5):
                index = (worker + round_) % len(texts)
                results[(worker, round_)] = (index, lite_ner.annotate(texts[index]))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    # The same text alone, in the same process and runtime: bit-identical.
    for index, entities in results.values():
        assert entities == expected[index]


def test_threads_load_exports_at_once_and_stderr_stays_stderr(export_dir):
    # Each interpreter's start-up banner is kept off file descriptor 2 while it loads. Loads
    # in threads at once put it back out of order: stderr ended in a deleted temporary file,
    # and every later error was lost.
    before = os.fstat(2)
    errors = []
    for _ in range(3):
        start = threading.Barrier(4)

        def load():
            start.wait()
            try:
                LiteRTAnnotator.load(export_dir, workers=4, parallel="threads").close()
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    after = os.fstat(2)
    assert not errors
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_bad_input_gets_the_tensorflow_path_s_error(tf_ner, lite_ner):
    for ner in (tf_ner, lite_ner):
        with pytest.raises(TypeError, match=r"texts\[1\] is bytes, expected str"):
            ner.annotate(["fever", b"fever"])


def test_damaged_exports_are_named_in_the_error(export_dir, tmp_path):
    with pytest.raises(ModelError, match="not a LiteRT export"):
        LiteRTAnnotator.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in export_dir.iterdir():
        if path.name != layout.CRF_FILE:
            (broken / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ModelError, match=rf"^{broken}: an incomplete LiteRT export "
                                         rf"\({layout.CRF_FILE} missing\)"):
        ClinicalNER.load(broken)
    (broken / layout.CRF_FILE).write_bytes((export_dir / layout.CRF_FILE).read_bytes())
    # Every file is named, the manifest and the model's settings too (a model
    # error, exit code 4, not a bad setting of the user's).
    (broken / "config.json").unlink()
    manifest_text = (broken / layout.MANIFEST_FILE).read_text()
    (broken / layout.MANIFEST_FILE).unlink()
    with pytest.raises(ModelError, match=rf"\({layout.MANIFEST_FILE}, config.json missing\)"):
        ClinicalNER.load(broken)
    (broken / layout.MANIFEST_FILE).write_text(manifest_text)
    with pytest.raises(ModelError, match=r"\(config.json missing\)"):
        ClinicalNER.load(broken)
    (broken / "config.json").write_bytes((export_dir / "config.json").read_bytes())
    manifest = json.loads((broken / layout.MANIFEST_FILE).read_text())
    (broken / layout.MANIFEST_FILE).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ModelError, match="format version 99"):
        ClinicalNER.load(broken)


@pytest.mark.parametrize(("file", "edit", "message"), [
    # Each loaded before, and decoded other tags or lost the assertions without an error.
    (layout.CRF_FILE, {"forbidden_score": None}, "'forbidden_score' must be a finite number"),
    (layout.CRF_FILE, {"start_transitions": [0.0]},
     r"'start_transitions' must be finite numbers of shape \(\d+,\)"),
    (layout.CRF_FILE, {"allowed_transitions": [[True]]},
     "'allowed_transitions' must be booleans of shape"),
    (layout.CRF_FILE, {"transitions": "x"}, "'transitions' must be finite numbers"),
    ("vocab.json", {"tags": "O"}, "not a clinical-ner vocabulary"),
    (layout.MANIFEST_FILE, {"version": True}, "format version True"),
    (layout.MANIFEST_FILE, {"network": "/etc/hostname"}, "'network' must name a file of the "
                                                         "export"),
    (layout.MANIFEST_FILE, {"inputs": "word_ids"}, "'inputs' must be a list of tensor names"),
])
def test_an_edited_export_file_is_refused_at_load_naming_the_field(export_dir, tmp_path, file,
                                                                   edit, message):
    edited = shutil.copytree(export_dir, tmp_path / "edited")
    data = json.loads((edited / file).read_text(encoding="utf-8"))
    (edited / file).write_text(json.dumps({**data, **edit}), encoding="utf-8")
    with pytest.raises(ModelError, match=message):
        ClinicalNER.load(edited)


def test_a_changed_byte_in_a_learnt_file_is_named_and_old_exports_load_unchecked(
        export_dir, tmp_path):
    changed = shutil.copytree(export_dir, tmp_path / "changed")
    network = bytearray((changed / layout.NETWORK_FILE).read_bytes())
    network[len(network) // 2] ^= 1  # one bit of a weight, as a bad disk or copy flips it
    (changed / layout.NETWORK_FILE).write_bytes(bytes(network))
    vocab = (changed / "vocab.json").read_text(encoding="utf-8")
    (changed / "vocab.json").write_text(vocab.replace('"O"', '"O" ', 1), encoding="utf-8")
    with pytest.raises(ModelError, match=rf"^{changed}: {layout.NETWORK_FILE}, vocab.json "
                                         r"differ from the SHA-256 that litert.json recorded"):
        ClinicalNER.load(changed)
    # The same check on a batch engine's driver, before any worker starts.
    with pytest.raises(ModelError, match="differ from the SHA-256"):
        read_export(changed)

    # An export of clinical-ner before 0.4.0 records no checksums: it loads as before
    # (the damaged network too, which is why the checksums were added).
    manifest = json.loads((changed / layout.MANIFEST_FILE).read_text(encoding="utf-8"))
    del manifest["sha256"]
    (changed / layout.MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    ClinicalNER.load(changed).close()
    for bad in ({"vocab.json": "00"}, ["vocab.json"], {"../vocab.json": "0" * 64}):
        (changed / layout.MANIFEST_FILE).write_text(json.dumps({**manifest, "sha256": bad}),
                                                    encoding="utf-8")
        with pytest.raises(ModelError, match="'sha256' must map file names of the export"):
            ClinicalNER.load(changed)


def test_workers_and_threads_are_checked_and_a_str_subclass_is_a_text(export_dir, lite_ner):
    for options in ({"workers": 0}, {"workers": 1.5}, {"num_threads": -1},
                    {"num_threads": True}, {"workers": 10**6}, {"num_threads": 100_000}):
        with pytest.raises(ConfigError, match=f"{next(iter(options))} must be"):
            LiteRTAnnotator.load(export_dir, **options)

    class Note(str):  # a str subclass the worker processes could not unpickle
        pass

    texts = ["Started aspirin for fever. " * 60, "CT of the chest. " * 100]
    assert sum(map(len, texts)) >= PROCESS_MIN_CHARACTERS  # the worker processes' path
    processes = LiteRTAnnotator.load(export_dir, workers=2)
    try:
        assert_same_documents(processes.annotate([Note(text) for text in texts]),
                              lite_ner.annotate(texts))
    finally:
        processes.close()


def test_worker_processes_run_the_callers_num_threads(export_dir, lite_ner):
    # They loaded the export with one thread whatever num_threads the caller gave.
    texts = ["Started aspirin for fever. " * 60, "CT of the chest. " * 100]
    assert sum(map(len, texts)) >= PROCESS_MIN_CHARACTERS
    processes = LiteRTAnnotator.load(export_dir, workers=2, num_threads=3)
    try:
        assert_same_documents(processes.annotate(texts), lite_ner.annotate(texts))
        for pid in processes.worker_pids:
            status = Path(f"/proc/{pid}/status").read_text()
            threads = int(next(line for line in status.splitlines()
                               if line.startswith("Threads:")).split()[1])
            assert threads >= 3  # XNNPACK's pool of 3 (2 with num_threads=1)
    finally:
        processes.close()


def test_an_empty_token_is_refused_not_taken_for_padding(lite_ner):
    # It was: one tag for ["", "pain"], and ["chest", "", "pain"] tagged as ["chest", "pain"].
    for sentences, position in (([["", "pain"]], r"\[0\]\[0\]"),
                                ([["fever"], ["chest", "", "pain"]], r"\[1\]\[1\]"),
                                ([["Chest", "CT", "", ""]], r"\[0\]\[2\]")):
        with pytest.raises(ValueError, match=rf'^sentences{position} is "": tokens must be '
                                             r"non-empty strings"):
            lite_ner.tag(sentences)


def test_tag_reads_a_generator_of_sentences_and_numpy_rows(lite_ner):
    sentences = [["Started", "aspirin"], ["CT", "of", "the", "chest"]]
    assert lite_ner.tag(sentence for sentence in sentences) == lite_ner.tag(sentences)
    assert lite_ner.tag([np.array(sentence) for sentence in sentences]) == lite_ner.tag(sentences)


def test_export_never_overwrites(tiny_model_dir, export_dir):
    with pytest.raises(ExportError, match="never overwrites"):
        export_litert(tiny_model_dir, export_dir)
    with pytest.raises(ExportError, match="weights"):
        export_litert(tiny_model_dir, export_dir.parent / "other", weights="int4")


def test_an_export_stopped_in_an_existing_folder_is_named_by_what_it_left(tiny_model_dir,
                                                                          tmp_path):
    # A killed export leaves its hidden staging folder: the next one said "not an
    # empty folder" of a folder that `ls` shows empty.
    (tmp_path / "out" / ".partial-0a1b").mkdir(parents=True)
    with pytest.raises(ExportError, match=r"/out: holds \.partial-0a1b, left by an export that "
                                          r"was stopped before it finished; delete it and "
                                          r"export again$"):
        export_litert(tiny_model_dir, tmp_path / "out")
    (tmp_path / "out" / "notes.txt").touch()
    with pytest.raises(ExportError, match="not an empty folder; an export never overwrites"):
        export_litert(tiny_model_dir, tmp_path / "out")


def test_an_export_into_a_new_folder_removes_what_a_stopped_one_left_beside_it(
        tiny_model_dir, tmp_path, caplog):
    # A killed export into a new folder left its hidden staging folder beside it (megabytes,
    # one per kill); the next export succeeded and left it there for ever.
    left = tmp_path / f".out{STAGING_PREFIX}{'0' * 32}"
    left.mkdir()
    (left / "model.tflite").write_bytes(b"half a network")
    others = tmp_path / f".other{STAGING_PREFIX}{'1' * 32}"  # another output's
    others.mkdir()

    with caplog.at_level(logging.WARNING, logger="clinical_ner.export.litert"):
        export_litert(tiny_model_dir, tmp_path / "out")

    assert sorted(path.name for path in tmp_path.iterdir()) == [others.name, "out"]
    assert caplog.messages == [f"removed {left.name} beside {tmp_path / 'out'}: left by an "
                               "export that was stopped before it finished"]


def test_an_export_is_refused_as_the_model_to_export_exit_4(export_dir, tmp_path):
    # It was an ExportError (exit 1) here, and "no model.keras" for a SavedModel.
    with pytest.raises(ModelError, match=rf"^{export_dir}: a LiteRT export cannot be exported "
                                         r"again; give the Keras model directory it was "
                                         r"exported from \(the one with model.keras\)$"):
        export_litert(export_dir, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_export_fills_an_existing_empty_folder_in_place(tiny_model_dir, lite_ner, tmp_path,
                                                        monkeypatch):
    # Neither the working directory nor a link can be replaced by a rename: both
    # ended in an internal error after the conversion.
    (tmp_path / "here").mkdir()
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    monkeypatch.chdir(tmp_path / "here")
    assert export_litert(tiny_model_dir, ".") == Path(".")
    export_litert(tiny_model_dir, tmp_path / "link")
    assert (tmp_path / "link").is_symlink()
    for folder in (tmp_path / "here", tmp_path / "target"):
        assert sorted(path.name for path in folder.iterdir()) == sorted(layout.REQUIRED_FILES)
        assert_same_entities(ClinicalNER.load(folder).annotate(NOTE), lite_ner.annotate(NOTE))


def test_a_failed_write_is_one_error_naming_the_folder_and_keeps_nothing(tiny_model_dir,
                                                                        tmp_path, monkeypatch):
    # A full disk ended the command in an internal error (OSError, exit 70).
    def full_disk(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(ExportError, match=r"/out: cannot write the export there \(No space left "
                                          r"on device\); nothing was kept$"):
        export_litert(tiny_model_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_the_lean_path_never_imports_tensorflow(export_dir):
    # A fresh process: the public API, then the command line, on the export.
    script = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from clinical_ner import ClinicalNER
        ner = ClinicalNER.load({str(export_dir)!r})
        entities = ner.annotate({NOTE!r})
        from clinical_ner.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as output:
            code = main(["predict", {str(export_dir)!r}, {NOTE!r}])
        print(json.dumps({{
            "entities": len(entities), "cli_code": code,
            "cli_entities": len(json.loads(output.getvalue())["entities"]),
            "imported": sorted(name for name in sys.modules
                               if name.split(".")[0] in {NO_TENSORFLOW!r})}}))
    """)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO_ROOT, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # LiteRT's start-up banner is kept off stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["imported"] == []
    assert report["cli_code"] == 0
    assert report["cli_entities"] == report["entities"] > 0


def test_the_runtimes_guide_shows_what_the_bundled_model_s_export_prints(tmp_path):
    # Audit: the guide's output lacked the assertion fields that a model with assertions prints.
    from clinical_ner.pretrained import bundled_model_path

    guide = (REPO_ROOT / "docs" / "guide" / "runtimes.md").read_text(encoding="utf-8")
    [shown] = [json.loads(line) for line in guide.splitlines() if line.startswith('{"text": ')]
    ner = ClinicalNER.load(export_litert(bundled_model_path(), tmp_path / "clinical-litert"))
    printed = [entity.to_dict() for entity in ner.annotate(shown["text"])]
    assert [sorted(entity) for entity in printed] == [sorted(e) for e in shown["entities"]]
    assert any("assertion" in entity for entity in printed)
    for entity, expected in zip(printed, shown["entities"], strict=True):
        for key, value in expected.items():
            if key.endswith("confidence"):
                assert entity[key] == pytest.approx(value, abs=CONFIDENCE_TOLERANCE)
            else:
                assert entity[key] == value
