"""The spaCy component ``clinical_ner``: entry point, offsets, batching, saving, runtimes, medspaCy.

Every comparison is against the bundled model's own ``annotate``
``clinical`` on the same text: the same spans (widened only where our
boundary falls inside a spaCy token) and labels, confidences within the
shared ``helpers.CONFIDENCE_TOLERANCE``. The fresh-process tests find the
factory through the ``spacy_factories`` entry point of pyproject.toml (a
throwaway dist-info on ``PYTHONPATH`` declares it, so that a stale installed
copy of the package cannot decide them) with nothing imported by hand.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import medspacy  # noqa: F401  (registers medspacy_context; CI installs it, see README)
import pytest
import spacy
from spacy.tokens import Doc

import clinical_ner.integrations.spacy_component as spacy_component
from clinical_ner import ClinicalNER
from clinical_ner.errors import ConfigError, ModelError
from clinical_ner.formats.html_page import label_colours
from clinical_ner.pretrained import bundled_model_path
from helpers import CONFIDENCE_TOLERANCE, REPO_ROOT, run_cli_in_process

NOTE = "CT of the chest showed a 2 cm nodule; she was started on aspirin."
# The entry point's name in pyproject.toml, and what it must load.
FACTORY_ENTRY_POINT = ("spacy_factories", "clinical_ner",
                       "clinical_ner.integrations.spacy_component:make_clinical_ner")


@pytest.fixture(scope="module")
def ner():
    return ClinicalNER.load("clinical")


@pytest.fixture(scope="module")
def nlp():
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner")
    return pipeline


@pytest.fixture(scope="module")
def dev_texts(maccrobat_dev_notes) -> list[str]:
    return [path.read_text(encoding="utf-8") for path in maccrobat_dev_notes]


@pytest.fixture(scope="module")
def entry_point_path(tmp_path_factory) -> Path:
    """A folder whose dist-info declares pyproject.toml's spaCy entry points."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    groups = project["project"]["entry-points"]
    assert groups[FACTORY_ENTRY_POINT[0]][FACTORY_ENTRY_POINT[1]] == FACTORY_ENTRY_POINT[2]
    folder = tmp_path_factory.mktemp("entry-points")
    info = folder / "clinical_ner_spacy_test-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: clinical-ner-spacy-test\n"
                                   "Version: 0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{name} = {target}\n"
                                         for name, target in entries.items())
                for group, entries in groups.items()), encoding="utf-8")
    return folder


# How the fresh processes report a Doc's entities.
ENTITIES_OF = """
def entities_of(doc):
    return [[e.start_char, e.end_char, e.label_, e._.clinical_ner_confidence]
            for e in doc.ents]
"""


def run_fresh(entry_point_path: Path, script: str, timeout: float = 600) -> dict:
    """Run ``script`` in a new interpreter; it prints one JSON object as its last line.

    ``entities_of(doc)`` is defined for it: the Doc's entities as JSON rows.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(entry_point_path)]))
    code = ENTITIES_OF + textwrap.dedent(script)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def as_rows(entities) -> list[list]:
    return [[e.start, e.end, e.label, e.confidence] for e in entities]


def assert_same_rows(expected: list[list], actual: list[list]) -> None:
    """Same spans and labels; confidences within the shared tolerance."""
    assert [row[:3] for row in actual] == [row[:3] for row in expected]
    for got, wanted in zip(actual, expected):
        assert got[3] == pytest.approx(wanted[3], abs=CONFIDENCE_TOLERANCE)


def doc_rows(doc) -> list[list]:
    return [[e.start_char, e.end_char, e.label_, e._.clinical_ner_confidence]
            for e in doc.ents]


# -- the entry point, in a fresh process ---------------------------------------

@pytest.mark.slow
def test_entry_point_gives_the_factory_and_displacy_colours(entry_point_path, ner):
    report = run_fresh(entry_point_path, f"""
        import json, sys
        import spacy
        from spacy import displacy
        nlp = spacy.blank("en")
        nlp.add_pipe("clinical_ner")
        loaded_before_first_doc = "tensorflow" in sys.modules
        doc = nlp({NOTE!r})
        print(json.dumps({{"entities": entities_of(doc),
                          "loaded_before_first_doc": loaded_before_first_doc,
                          "html": displacy.render(doc, style="ent")}}))
    """)
    expected = as_rows(ner.annotate(NOTE))
    assert [row[2] for row in expected] == ["test", "problem", "treatment"]
    assert_same_rows(expected, report["entities"])
    assert not report["loaded_before_first_doc"], "the model must load at the first doc"
    # displaCy took our HTML view's colours through the displacy-colours entry point.
    colours = label_colours(["problem", "test", "treatment"])
    for label, colour in colours.items():
        assert f"background: {colour}" in report["html"], label


def test_displacy_options_helper_gives_the_html_view_colours(nlp):
    doc = nlp(NOTE)
    options = spacy_component.clinical_ner_displacy_options()
    html = spacy.displacy.render(doc, style="ent", options=options)
    for label, colour in label_colours([e.label_ for e in doc.ents]).items():
        assert options["colors"][label] == colour
        assert f"background: {colour}" in html


# -- offsets -----------------------------------------------------------------------

def test_every_entity_is_a_span_widened_only_inside_a_spacy_token(nlp, ner, dev_texts):
    expected = ner.annotate(dev_texts)
    docs = list(nlp.pipe(dev_texts, batch_size=8))
    assert sum(map(len, expected)) > 500
    for doc, entities in zip(docs, expected):
        assert len(doc.ents) == len(entities)
        for entity, span in zip(entities, doc.ents):
            assert span.label_ == entity.label
            first, last = span[0], span[-1]
            # The span starts and ends in the spaCy tokens that hold our boundaries:
            # exact where those are token boundaries, widened to whole tokens where not.
            assert first.idx <= entity.start < first.idx + len(first)
            assert last.idx < entity.end <= last.idx + len(last)
            assert span._.clinical_ner_confidence == pytest.approx(
                entity.confidence, abs=CONFIDENCE_TOLERANCE)


def test_an_entity_beyond_the_doc_s_text_is_an_error_naming_its_offsets(nlp):
    # Only a Doc whose text is not the text annotated can get one: never a silent cut.
    component = nlp.get_pipe("clinical_ner")
    doc = nlp.make_doc("CT of the chest.")
    with pytest.raises(ValueError, match="entity at characters 3:17 lies outside the Doc's "
                                         "tokens"):
        component._spans(doc, [SimpleNamespace(start=3, end=17, label="test")])


def test_boundaries_inside_another_tokenizer_s_tokens_widen_to_whole_tokens(ner):
    pipeline = spacy.blank("en")
    # A tokenizer of whitespace runs: "nodule;" is one token there, two of ours.
    pipeline.tokenizer = lambda text: Doc(pipeline.vocab, words=text.split(" "))
    pipeline.add_pipe("clinical_ner")
    doc = pipeline(NOTE)
    entities = ner.annotate(NOTE)
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("CT", "test"), ("nodule;", "problem"), ("aspirin.", "treatment")]
    assert [e.text for e in entities] == ["CT", "nodule", "aspirin"]


# -- entities already on the Doc -----------------------------------------------

def ruler_pipeline(overwrite_ents: bool) -> spacy.language.Language:
    pipeline = spacy.blank("en")
    ruler = pipeline.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "FINDING", "pattern": "2 cm nodule"},
                        {"label": "ANATOMY", "pattern": "chest"}])
    pipeline.add_pipe("clinical_ner", config={"overwrite_ents": overwrite_ents})
    return pipeline


def test_existing_entities_stay_and_ours_fill_the_gaps():
    doc = ruler_pipeline(overwrite_ents=False)(NOTE)
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("CT", "test"), ("chest", "ANATOMY"), ("2 cm nodule", "FINDING"),
        ("aspirin", "treatment")]
    assert doc.ents[2]._.clinical_ner_confidence is None  # not ours


def test_overwrite_ents_puts_ours_first_and_keeps_the_rest():
    doc = ruler_pipeline(overwrite_ents=True)(NOTE)
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("CT", "test"), ("chest", "ANATOMY"), ("nodule", "problem"), ("aspirin", "treatment")]
    assert doc.ents[2]._.clinical_ner_confidence > 0.5


@pytest.mark.parametrize("overwrite_ents", [False, True])
def test_our_entities_carry_no_id_of_an_entity_they_replace(overwrite_ents):
    # An entity_ruler pattern's "id" (ent_id_), for an entity linker, say.
    pipeline = spacy.blank("en")
    ruler = pipeline.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "FINDING", "pattern": "nodule;", "id": "F1"}])
    pipeline.add_pipe("clinical_ner", config={"overwrite_ents": overwrite_ents})
    doc = pipeline(NOTE)
    ids = {(e.text, e.label_): e.ent_id_ for e in doc.ents}
    if overwrite_ents:
        assert ids[("nodule", "problem")] == ""
    else:
        assert ids[("nodule;", "FINDING")] == "F1"
    assert ids[("CT", "test")] == ids[("aspirin", "treatment")] == ""


@pytest.mark.parametrize("overwrite_ents", [False, True])
def test_blocked_tokens_take_none_of_our_entities_and_stay_blocked(overwrite_ents):
    # An earlier component's "no entity here" (Doc.set_ents(blocked=...)), as spaCy's
    # own NER respects it.
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner", config={"overwrite_ents": overwrite_ents})
    doc = pipeline.make_doc(NOTE)
    aspirin = next(token.i for token in doc if token.text == "aspirin")
    doc.set_ents([], blocked=[doc[aspirin:aspirin + 1]], default="unmodified")
    doc = pipeline.get_pipe("clinical_ner")(doc)
    assert [(e.text, e.label_) for e in doc.ents] == [("CT", "test"), ("nodule", "problem")]
    assert (doc[aspirin].ent_iob_, doc[aspirin].ent_type_) == ("B", "")  # still blocked


def test_assertions_fill_their_extensions(monkeypatch):
    class AssertingModel:
        def annotate(self, texts, batch_size=None):
            return [[SimpleNamespace(start=0, end=2, text="CT", label="test", confidence=0.9,
                                     assertion="absent", assertion_confidence=0.8)]
                    for _ in texts]

    monkeypatch.setattr(ClinicalNER, "load", classmethod(lambda cls, model: AssertingModel()))
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner")
    entity = pipeline("CT negative.").ents[0]
    assert (entity._.clinical_ner_confidence, entity._.clinical_ner_assertion,
            entity._.clinical_ner_assertion_confidence) == (0.9, "absent", 0.8)


def test_extension_values_can_be_set_and_follow_the_doc_s_bytes(nlp):
    doc = nlp(NOTE)
    nodule = doc.ents[1]
    confidence = nodule._.clinical_ner_confidence
    # A later component (a ConText step of the user's) may overwrite our assertion.
    nodule._.clinical_ner_assertion = "hypothetical"
    copy = Doc(nlp.vocab).from_bytes(doc.to_bytes())
    assert [(e.text, e._.clinical_ner_confidence) for e in copy.ents] == [
        (e.text, e._.clinical_ner_confidence) for e in doc.ents]
    assert copy.ents[1]._.clinical_ner_assertion == "hypothetical"
    assert copy.ents[1]._.clinical_ner_confidence == confidence
    # A span of the same tokens with another label is not our entity.
    assert copy[nodule.start:nodule.end]._.clinical_ner_confidence is None


# -- nlp.pipe ------------------------------------------------------------------------

def test_pipe_reads_the_next_batch_while_the_model_annotates(monkeypatch):
    """spaCy's tokenizer (and components before ours) run beside the model's work."""
    next_text_read = threading.Event()
    overlapped = []

    class WaitingModel:
        config = SimpleNamespace(annotate_batch_size=256, annotate_max_batch_characters=100_000)

        def annotate(self, texts, batch_size=None):
            if texts == ["first note"]:
                # Set when the pipeline reads the next text; without overlap it never is.
                overlapped.append(next_text_read.wait(timeout=60))
            if texts == ["bad note"]:
                raise ModelError("the model failed on this batch")
            return [[] for _ in texts]

    def texts():
        yield "first note"
        next_text_read.set()
        yield "second note"

    monkeypatch.setattr(ClinicalNER, "load", classmethod(lambda cls, model: WaitingModel()))
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner")
    assert [doc.text for doc in pipeline.pipe(texts(), batch_size=1)] == [
        "first note", "second note"]
    assert overlapped == [True]
    # An error of the model's reaches the caller of nlp.pipe, in order.
    piped = pipeline.pipe(["ok note", "bad note", "later note"], batch_size=1)
    assert next(piped).text == "ok note"
    with pytest.raises(ModelError, match="failed on this batch"):
        next(piped)


def test_pipe_cuts_batches_of_long_notes_at_one_model_call(monkeypatch):
    """Long notes: a batch holds one call's characters, so tokenizing overlaps sooner."""
    calls = []

    class CountingModel:
        # One call: at most 3 texts and 25 characters.
        config = SimpleNamespace(annotate_batch_size=3, annotate_max_batch_characters=25)

        def annotate(self, texts, batch_size=None):
            calls.append([len(text) for text in texts])
            return [[] for _ in texts]

    monkeypatch.setattr(ClinicalNER, "load", classmethod(lambda cls, model: CountingModel()))
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner")
    long_notes = ["ten chars.", "ten chars.", "ten chars.", "a note of 30 characters, long.",
                  "ok"]
    assert [doc.text for doc in pipeline.pipe(long_notes, batch_size=1000)] == long_notes
    # Cut before the text that would pass 25 characters; a longer text goes alone.
    assert calls == [[10, 10], [10], [30], [2]]
    calls.clear()
    # Short notes: once a batch holds a call's texts, only batch_size ends it.
    short_notes = ["one", "two", "six", "a note of 30 characters, long.", "ok"]
    assert [doc.text for doc in pipeline.pipe(short_notes, batch_size=4)] == short_notes
    assert calls == [[3, 3, 3, 30], [2]]
    calls.clear()
    list(pipeline.pipe(long_notes[:3], batch_size=1))
    assert calls == [[10], [10], [10]]


def test_pipe_calls_annotate_once_per_batch(nlp, dev_texts, monkeypatch):
    batches = []
    from clinical_ner.annotators.keras_annotator import KerasAnnotator

    annotate = KerasAnnotator.annotate  # the bundled model's annotator

    def counting_annotate(self, texts, *args, **kwargs):
        batches.append(len(texts))
        return annotate(self, texts, *args, **kwargs)

    monkeypatch.setattr(KerasAnnotator, "annotate", counting_annotate)
    texts = dev_texts[:10]
    piped = [doc_rows(doc) for doc in nlp.pipe(texts, batch_size=4)]
    assert batches == [4, 4, 2]
    batches.clear()
    one_by_one = [doc_rows(nlp(text)) for text in texts]
    assert batches == [1] * len(texts)
    for expected, actual in zip(one_by_one, piped):
        assert_same_rows(expected, actual)


def test_batch_size_must_be_positive():
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        spacy.blank("en").add_pipe("clinical_ner", config={"batch_size": 0})


NOT_HOST_PORT = r"is not host:port with a port from 1 to 65535"


@pytest.mark.parametrize("config, error, message", [
    # "" would silently load a model in the working directory.
    ({"model": ""}, ConfigError, r"clinical_ner: model must not be empty; "),
    ({"model": "no/such/model"}, ModelError,
     r"clinical_ner: model no/such/model: not a clinical-ner model directory or export "
     r"\(no such folder\)"),
    # ValueError: embedded null byte; OSError: File name too long.
    ({"model": "runs/model\x00"}, ModelError,
     r"clinical_ner: model runs/model\x00: not a clinical-ner model directory or export "
     r"\(no such folder\)"),
    ({"model": "m" * 300}, ModelError, r"clinical_ner: model m{300}: not a clinical-ner model "
                                       r"directory or export \(no such folder\)"),
    # "" would be taken as an endpoint, not as none.
    ({"endpoint": ""}, ConfigError, r"clinical_ner: endpoint must not be empty; "),
    ({"endpoint": "nohostport"}, ConfigError, r"clinical_ner: endpoint 'nohostport' "
                                              + NOT_HOST_PORT),
    ({"endpoint": "http://localhost:8500"}, ConfigError,
     r"clinical_ner: endpoint 'http://localhost:8500' " + NOT_HOST_PORT),
    # gRPC would wrap the port round to another one.
    ({"endpoint": "127.0.0.1:99999"}, ConfigError,
     r"clinical_ner: endpoint '127.0.0.1:99999' " + NOT_HOST_PORT),
    ({"endpoint": "127.0.0.1:0"}, ConfigError, r"clinical_ner: endpoint '127.0.0.1:0' "
                                               + NOT_HOST_PORT),
    ({"endpoint": "localhost:8500", "model_name": ""}, ConfigError,
     r"clinical_ner: model_name must not be empty; "),
    # tls would be silently ignored without an endpoint.
    ({"tls": "ca.pem"}, ConfigError, r"clinical_ner: tls is set but endpoint is not; "),
    # So would a served model's name: the model used is the bundled one.
    ({"model_name": "clinical_ner_v2"}, ConfigError,
     r"clinical_ner: model_name is set but endpoint is not; "),
    # "" (an unset variable) would be read as the working directory.
    ({"endpoint": "localhost:8500", "tls": ""}, ConfigError,
     r"clinical_ner: tls is empty; give the PEM file of the CA certificates$"),
], ids=["model-empty", "model-missing", "model-nul", "model-name-too-long",
        "endpoint-empty", "endpoint-no-port", "endpoint-scheme",
        "endpoint-port-too-big", "endpoint-port-0", "model_name-empty", "tls-without-endpoint",
        "model_name-without-endpoint", "tls-empty"])
def test_bad_settings_are_refused_when_the_pipeline_is_built(config, error, message):
    pipeline = spacy.blank("en")
    with pytest.raises(error, match="^" + message) as caught:
        pipeline.add_pipe("clinical_ner", config=config)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("endpoint", ["localhost:8500", "tf-serving.internal:8500",
                                      "10.0.0.7:65535", "[::1]:8500", "[2001:db8::1]:1"])
def test_endpoints_of_host_and_port_are_accepted_without_connecting(endpoint):
    pipeline = spacy.blank("en")
    assert pipeline.add_pipe("clinical_ner", config={"endpoint": endpoint}).endpoint == endpoint


@pytest.mark.slow
def test_n_process_children_load_their_own_model(entry_point_path, dev_texts):
    report = run_fresh(entry_point_path, f"""
        import json, sys
        import spacy
        texts = {dev_texts[:6]!r}
        nlp = spacy.blank("en")
        nlp.add_pipe("clinical_ner")
        forked = [entities_of(doc) for doc in nlp.pipe(texts, n_process=2, batch_size=2)]
        parent_loaded = "tensorflow" in sys.modules
        here = [entities_of(doc) for doc in nlp.pipe(texts, batch_size=2)]
        try:
            list(nlp.pipe(texts, n_process=2, batch_size=2))
            error = None
        except Exception as caught:
            error = str(caught)
        print(json.dumps({{"forked": forked, "here": here, "parent_loaded": parent_loaded,
                          "error": error}}))
    """)
    assert not report["parent_loaded"], "the children must load the model, not the parent"
    assert sum(map(len, report["here"])) > 50
    for expected, actual in zip(report["here"], report["forked"]):
        assert_same_rows(expected, actual)
    # Once the parent has run TensorFlow, a forked child says what to do instead of hanging.
    assert "set_start_method('spawn')" in report["error"]


def test_spawned_n_process_children_get_the_component_and_its_extensions(nlp):
    # What nlp.pipe(n_process=2) pickles for each child under the "spawn" start method,
    # which the guide and our fork error advise: the pipes and each extension's getter
    # and setter (ours here: medspaCy's, imported above, are lambdas that cannot go).
    from spacy.tokens.underscore import Underscore

    ours = {name: Underscore.span_extensions[name] for name in (
        spacy_component.CONFIDENCE, spacy_component.ASSERTION,
        spacy_component.ASSERTION_CONFIDENCE)}
    components, extensions = pickle.loads(pickle.dumps((list(nlp.components), ours)))
    assert [name for name, _ in components] == ["clinical_ner"]
    # The child's copies read and write the values the Doc carries.
    doc = Doc(nlp.vocab, words=["CT", "showed", "a", "nodule"])
    doc.ents = [doc.char_span(0, 2, "test")]
    _, _, get_assertion, set_assertion = extensions[spacy_component.ASSERTION]
    set_assertion(doc.ents[0], "absent")
    assert get_assertion(Doc(nlp.vocab).from_bytes(doc.to_bytes()).ents[0]) == "absent"


def test_n_process_children_load_a_litert_export_with_one_worker_each(
        trained_litert_export, monkeypatch):
    # Each child of nlp.pipe(n_process=2) would take a LiteRT worker per core: 2 x 2 on 2 cores.
    from functools import partial

    from spacy.language import _apply_pipes, _WorkDoneSentinel
    from spacy.tokens.underscore import Underscore

    import clinical_ner.annotators.litert.annotator as litert_annotator

    monkeypatch.setattr(litert_annotator, "usable_cores", lambda: 2)

    def litert_pipeline():
        pipeline = spacy.blank("en")
        pipeline.add_pipe("clinical_ner", config={"model": str(trained_litert_export)})
        return pipeline, pipeline.get_pipe("clinical_ner")

    here, component = litert_pipeline()
    here(NOTE)
    assert component._loaded.network.workers == 2, "one process alone keeps a worker per core"
    # What each child runs (spaCy's own loop, here in this process): its first batch loads.
    child, component = litert_pipeline()
    batches = iter([[(NOTE, None)], _WorkDoneSentinel()])
    sent = []
    _apply_pipes(child._ensure_doc_with_context, [partial(component.pipe, batch_size=2)],
                 SimpleNamespace(get=lambda: next(batches), close=lambda: None),
                 SimpleNamespace(send=sent.append, close=lambda: None), Underscore.get_state())
    assert sent[0][0][2] is None, sent  # no traceback from the child
    assert component._loaded.network.workers == 1


# -- to_disk / spacy.load ------------------------------------------------------------

def saved_pipeline(tmp_path: Path, model: str) -> Path:
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner", config={"model": model})
    tmp_path.mkdir(parents=True, exist_ok=True)
    pipeline.to_disk(tmp_path / "pipeline")
    return tmp_path / "pipeline"


def test_to_disk_copies_a_model_directory_and_names_a_bundled_model(tmp_path):
    model = shutil.copytree(bundled_model_path("clinical"), tmp_path / "my-model")
    (model / "checkpoint").mkdir()
    copied = saved_pipeline(tmp_path / "a", str(model)) / "clinical_ner"
    assert json.loads((copied / "clinical_ner.json").read_text())["source"] == "copy"
    assert (copied / "model" / "model.keras").read_bytes() == (model / "model.keras").read_bytes()
    assert not (copied / "model" / "checkpoint").exists(), "training state is not needed"
    named = saved_pipeline(tmp_path / "b", "clinical") / "clinical_ner"
    assert json.loads((named / "clinical_ner.json").read_text())["name"] == "clinical"
    assert not (named / "model").exists()


def test_from_bytes_takes_the_model_that_to_bytes_named(tmp_path, monkeypatch):
    # spaCy's from_bytes restores a pipeline's state, as from_disk does: a pipeline built
    # with the bundled model annotated with it still, whatever the bytes' pipeline used.
    model = shutil.copytree(bundled_model_path("clinical"), tmp_path / "my-model")
    loaded = []

    class RecordingModel:
        def annotate(self, texts, batch_size=None):
            return [[] for _ in texts]

    monkeypatch.setattr(ClinicalNER, "load",
                        classmethod(lambda cls, path: loaded.append(path) or RecordingModel()))
    source = spacy.blank("en")
    source.add_pipe("clinical_ner", config={"model": str(model)})
    target = spacy.blank("en")
    target.add_pipe("clinical_ner")  # the bundled model
    target.from_bytes(source.to_bytes())
    target(NOTE)
    assert loaded == [str(model)]
    shutil.rmtree(model)
    with pytest.raises(ModelError, match=r"^nlp.from_bytes: the clinical_ner component's bytes: "
                       rf"model {re.escape(str(model))}: .*\(no such folder\)"):
        target.from_bytes(source.to_bytes())


def test_a_missing_model_fails_when_the_pipeline_loads(tmp_path):
    model = shutil.copytree(bundled_model_path("clinical"), tmp_path / "my-model")
    saved = saved_pipeline(tmp_path, str(model))
    shutil.rmtree(saved / "clinical_ner" / "model")
    with pytest.raises(ModelError) as caught:
        spacy.load(saved)
    message = str(caught.value)
    assert "\n" not in message
    assert str(saved / "clinical_ner" / "model") in message and "nlp.to_disk" in message
    # A copy missing one file fails here too, naming it, not at the first document.
    saved = saved_pipeline(tmp_path / "again", str(model))
    (saved / "clinical_ner" / "model" / "vocab.json").unlink()
    with pytest.raises(ModelError, match=r"an incomplete model directory \(vocab.json missing\)"):
        spacy.load(saved)


def test_a_failed_save_leaves_the_saved_pipeline_as_it_was(tmp_path, monkeypatch, ner):
    model = shutil.copytree(bundled_model_path("clinical"), tmp_path / "my-model")
    saved = saved_pipeline(tmp_path, str(model))
    before = sorted(path.name for path in (saved / "clinical_ner" / "model").iterdir())
    real_copytree = shutil.copytree

    def disk_fills_up(source, target, **options):
        real_copytree(source, target, **options)  # a copy on disk, then the failure
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spacy_component.shutil, "copytree", disk_fills_up)
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner", config={"model": str(model)})
    with pytest.raises(ModelError, match=r"cannot copy the model there \(No space left on "
                                         r"device\); the saved pipeline is as it was$"):
        pipeline.get_pipe("clinical_ner").to_disk(saved / "clinical_ner")
    monkeypatch.undo()
    assert sorted(path.name for path in (saved / "clinical_ner").iterdir()) == [
        "clinical_ner.json", "model"], "no half-copied folder left beside the model"
    assert sorted(path.name for path in (saved / "clinical_ner" / "model").iterdir()) == before
    assert_same_rows(as_rows(ner.annotate(NOTE)), doc_rows(spacy.load(saved)(NOTE)))


def test_a_pipeline_saved_inside_its_own_model_folder_is_refused(tmp_path):
    model = shutil.copytree(bundled_model_path("clinical"), tmp_path / "my-model")
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner", config={"model": str(model)})
    # The copy would hold itself.
    with pytest.raises(ModelError, match=rf"^{re.escape(str(model / 'spacy' / 'clinical_ner'))}"
                                         r": inside the model .*; save the pipeline to a "
                                         r"folder outside the model$"):
        pipeline.to_disk(model / "spacy")
    assert not (model / "spacy" / "clinical_ner" / "model").exists()


def test_a_remote_model_is_named_as_given_when_it_cannot_be_saved(tmp_path):
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner", config={"model": "gs://bucket/ner/1"})
    with pytest.raises(ModelError, match=r"^gs://bucket/ner/1: a remote model, which the "
                                         r"clinical_ner component cannot copy"):
        pipeline.to_disk(tmp_path / "pipeline")


def test_unreadable_tls_certificates_name_the_setting_when_the_pipeline_is_built(tmp_path):
    pipeline = spacy.blank("en")
    with pytest.raises(ConfigError, match=rf"^clinical_ner: tls {tmp_path / 'no-ca.pem'}: "
                                          r"cannot read the CA certificates \(No such file"):
        pipeline.add_pipe("clinical_ner", config={"endpoint": "localhost:1",
                                                  "tls": str(tmp_path / "no-ca.pem")})


def test_a_saved_bundled_pipeline_uses_the_bundled_model_whatever_the_working_directory(
        tmp_path, monkeypatch, ner):
    saved = saved_pipeline(tmp_path, "clinical")
    # A folder named like the bundled model where the pipeline is loaded (here not even
    # a model): a name the user types would mean it, the saved pipeline's record must not.
    (tmp_path / "work" / "clinical").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    loaded = spacy.load(saved)
    assert_same_rows(as_rows(ner.annotate(NOTE)), doc_rows(loaded(NOTE)))
    # Saved again, it still names the bundled model instead of copying it.
    loaded.to_disk(tmp_path / "again")
    again = tmp_path / "again" / "clinical_ner"
    assert json.loads((again / "clinical_ner.json").read_text())["name"] == "clinical"
    assert not (again / "model").exists()


def test_a_loaded_copy_keeps_its_model_when_the_working_directory_changes(
        tmp_path, monkeypatch, ner):
    model = shutil.copytree(bundled_model_path("clinical"), tmp_path / "my-model")
    saved_pipeline(tmp_path, str(model))
    # config.cfg still names the original: spacy.load builds the component all the same.
    shutil.rmtree(model)
    monkeypatch.chdir(tmp_path)
    loaded = spacy.load("pipeline")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert_same_rows(as_rows(ner.annotate(NOTE)), doc_rows(loaded(NOTE)))


def test_a_relative_model_is_the_one_checked_whatever_the_working_directory_later(
        tmp_path, monkeypatch, ner):
    shutil.copytree(bundled_model_path("clinical"), tmp_path / "built-here" / "my-model")
    (tmp_path / "later-here" / "my-model").mkdir(parents=True)  # another folder, no model
    monkeypatch.chdir(tmp_path / "built-here")
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner", config={"model": "my-model"})
    # The model loads at the first document: it is the one checked when the pipeline was
    # built, not whatever the name means in the working directory by then.
    monkeypatch.chdir(tmp_path / "later-here")
    assert_same_rows(as_rows(ner.annotate(NOTE)), doc_rows(pipeline(NOTE)))


def test_from_config_of_a_loaded_pipeline_takes_the_model_the_component_uses(tmp_path, ner):
    # docs/guide/spacy.md: nlp.config keeps the model first given, gone once it moved.
    from spacy.lang.en import English

    model = shutil.copytree(bundled_model_path("clinical"), tmp_path / "my-model")
    saved = saved_pipeline(tmp_path, str(model))
    shutil.rmtree(model)
    nlp = spacy.load(saved)
    with pytest.raises(ModelError, match=rf"^clinical_ner: model {re.escape(str(model))}: "):
        English.from_config(nlp.config)
    config = nlp.config.copy()
    config["components"]["clinical_ner"]["model"] = nlp.get_pipe("clinical_ner").model
    copy = English.from_config(config).from_bytes(nlp.to_bytes())
    assert_same_rows(as_rows(ner.annotate(NOTE)), doc_rows(copy(NOTE)))


def test_a_relative_tls_path_is_read_where_spacy_load_runs_unless_given_again(
        tmp_path, monkeypatch):
    # docs/guide/spacy.md: config.cfg keeps tls as typed.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n"
                                     "-----END CERTIFICATE-----\n")
    monkeypatch.chdir(tmp_path)
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner", config={"endpoint": "localhost:1", "tls": "ca.pem"})
    pipeline.to_disk("pipeline")
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=r"^clinical_ner: tls ca.pem: cannot read the CA "):
        spacy.load(tmp_path / "pipeline")
    tls = str(tmp_path / "ca.pem")
    loaded = spacy.load(tmp_path / "pipeline", config={"components": {"clinical_ner": {
        "tls": tls}}})
    assert loaded.get_pipe("clinical_ner").tls == tls


@pytest.fixture(scope="module")
def saved_copy(tmp_path_factory) -> Path:
    """A saved pipeline with a model copy; its original ``my-model`` beside it."""
    folder = tmp_path_factory.mktemp("saved-copy")
    model = shutil.copytree(bundled_model_path("clinical"), folder / "my-model")
    return saved_pipeline(folder, str(model))


OUTSIDE = r"the model copy's directory must be a folder inside "
OTHER_FORMAT = (r"not the clinical_ner component's settings as clinical-ner \S+ writes them "
                r"\(format 'clinical-ner-spacy', version 1\)")
NOT_CONFIG = (r"the model source '{}' does not match config.cfg, which gives the clinical_ner "
              r"component {} endpoint; ")


@pytest.mark.parametrize("edit, overrides, message", [
    ({"directory": "ORIGINAL"}, {}, OUTSIDE),
    ({"directory": "RELATIVE-ORIGINAL"}, {}, OUTSIDE),
    ({"directory": "."}, {}, OUTSIDE),
    ({"directory": None}, {}, OUTSIDE),
    ({"format": "other"}, {}, OTHER_FORMAT),
    ({"version": 99}, {}, OTHER_FORMAT),
    ({"source": "endpoint"}, {}, NOT_CONFIG.format("endpoint", "no")),
    ({}, {"components.clinical_ner.endpoint": "localhost:8500"}, NOT_CONFIG.format("copy", "an")),
], ids=["absolute", "dot-dot", "itself", "null", "format", "version", "endpoint-in-manifest",
        "endpoint-in-config"])
def test_a_manifest_that_leaves_the_pipeline_or_disagrees_fails_when_it_loads(
        saved_copy, tmp_path, edit, overrides, message):
    # Each would have loaded another model than the copy, or none at all.
    pipeline = shutil.copytree(saved_copy, tmp_path / "pipeline")
    manifest_path = pipeline / "clinical_ner" / "clinical_ner.json"
    original = saved_copy.parent / "my-model"
    places = {"ORIGINAL": str(original),
              "RELATIVE-ORIGINAL": os.path.relpath(original, manifest_path.parent)}
    manifest = json.loads(manifest_path.read_text())
    manifest.update({key: places.get(value, value) for key, value in edit.items()})
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="^" + re.escape(str(manifest_path)) + ": " + message
                       ) as caught:
        spacy.load(pipeline, config=overrides)
    assert "\n" not in str(caught.value)


def test_a_model_given_to_spacy_load_is_refused_not_ignored(saved_copy, tmp_path, ner):
    # spaCy's way to change a setting at load: the saved copy would annotate instead.
    other = shutil.copytree(bundled_model_path("clinical"), tmp_path / "other-model")
    with pytest.raises(ConfigError, match=rf"^clinical_ner: model '{re.escape(str(other))}' "
                                          r"given when loading the saved pipeline .*; leave it "
                                          r"out, or replace the component: nlp.replace_pipe"):
        spacy.load(saved_copy, config={"components": {"clinical_ner": {"model": str(other)}}})
    # Other settings still override, and the saved model's own value is no override.
    saved_model = str(saved_copy.parent / "my-model")
    loaded = spacy.load(saved_copy, config={"components": {"clinical_ner": {
        "model": saved_model, "overwrite_ents": True}}})
    assert loaded.get_pipe("clinical_ner").overwrite_ents
    assert_same_rows(as_rows(ner.annotate(NOTE)), doc_rows(loaded(NOTE)))


@pytest.mark.parametrize("config", [{}, {"endpoint": "localhost:1"}], ids=["bundled", "endpoint"])
def test_saving_without_a_copy_over_a_saved_copy_removes_the_old_copy(saved_copy, tmp_path, config):
    # The model copy, hundreds of MB, stayed beside settings that no longer named it.
    pipeline = shutil.copytree(saved_copy, tmp_path / "pipeline")
    nlp = spacy.blank("en")
    nlp.add_pipe("clinical_ner", config=config)
    nlp.to_disk(pipeline)
    assert sorted(os.listdir(pipeline / "clinical_ner")) == ["clinical_ner.json"]
    assert spacy.load(pipeline).get_pipe("clinical_ner").endpoint == config.get("endpoint")


def test_a_truncated_model_copy_fails_when_the_pipeline_loads(saved_copy, tmp_path):
    pipeline = shutil.copytree(saved_copy, tmp_path / "pipeline")
    model = pipeline / "clinical_ner" / "model"
    data = (model / "model.keras").read_bytes()
    (model / "model.keras").write_bytes(data[:len(data) // 2])
    # Not at the first document, and not as weights that do not fit the model.
    message = (rf"^{re.escape(str(model))}: model.keras is not a complete Keras archive "
               r"\(truncated or damaged\); copy the model again$")
    with pytest.raises(ModelError, match=message):
        spacy.load(pipeline)
    with pytest.raises(ModelError, match=message):
        ClinicalNER.load(model)


def test_a_truncated_litert_copy_fails_when_the_pipeline_loads(trained_litert_export, tmp_path):
    pipeline = saved_pipeline(tmp_path, str(trained_litert_export))
    model = pipeline / "clinical_ner" / "model"
    data = (model / "model.tflite").read_bytes()
    (model / "model.tflite").write_bytes(data[:len(data) // 2])
    # Not at the first document, where a service meets it at its first request.
    with pytest.raises(ModelError, match=rf"^{re.escape(str(model))}: model.tflite differs "
                                         r"from the SHA-256 that litert.json recorded"):
        spacy.load(pipeline)


@pytest.mark.slow
def test_saved_pipelines_give_the_same_entities_in_a_fresh_process(
        tmp_path, entry_point_path, ner, dev_texts):
    texts = dev_texts[:4]
    model = shutil.copytree(bundled_model_path("clinical"), tmp_path / "my-model")
    copied = saved_pipeline(tmp_path / "copied", str(model))
    shutil.rmtree(model)  # the saved pipeline stands alone
    named = saved_pipeline(tmp_path / "named", "clinical")
    report = run_fresh(entry_point_path, f"""
        import json
        import spacy
        texts = {texts!r}
        print(json.dumps({{str(path): [entities_of(doc) for doc in spacy.load(path).pipe(texts)]
                          for path in ({str(copied)!r}, {str(named)!r})}}))
    """)
    for path in (copied, named):
        for entities, rows in zip(ner.annotate(texts), report[str(path)]):
            assert_same_rows(as_rows(entities), rows)


# -- other runtimes --------------------------------------------------------------------

@pytest.mark.slow
def test_litert_export_behind_the_component_without_tensorflow(
        tmp_path, entry_point_path, ner, dev_texts):
    export = tmp_path / "litert"
    # The export runs in this process: only the component's process must be without TensorFlow.
    run_cli_in_process("export", "clinical", "--format", "litert", "--output", export)
    texts = dev_texts[:4]
    report = run_fresh(entry_point_path, f"""
        import json, sys
        import spacy
        texts = {texts!r}
        nlp = spacy.blank("en")
        nlp.add_pipe("clinical_ner", config={{"model": {str(export)!r}}})
        direct = [entities_of(doc) for doc in nlp.pipe(texts)]
        nlp.to_disk({str(tmp_path / "pipeline")!r})
        reloaded = [entities_of(doc)
                    for doc in spacy.load({str(tmp_path / "pipeline")!r}).pipe(texts)]
        print(json.dumps({{"direct": direct, "reloaded": reloaded,
                          "tensorflow": [name for name in ("tensorflow", "keras")
                                         if name in sys.modules]}}))
    """)
    assert report["tensorflow"] == []
    for entities, direct, reloaded in zip(ner.annotate(texts), report["direct"],
                                          report["reloaded"]):
        assert_same_rows(as_rows(entities), direct)
        assert_same_rows(as_rows(entities), reloaded)


@pytest.fixture(scope="module")
def endpoint(ner, tmp_path_factory):
    """``host:port`` of our gRPC server serving the bundled model as ``clinical_ner``."""
    from clinical_ner.serving.server import ModelServer

    served = tmp_path_factory.mktemp("served")
    ner.export(served)
    with ModelServer(served, "clinical_ner", port=0) as server:
        yield f"127.0.0.1:{server.bound_port}"


@pytest.mark.slow
def test_tf_serving_endpoint_behind_the_component(tmp_path, ner, dev_texts, endpoint):
    config = {"endpoint": endpoint, "model_name": "clinical_ner", "batch_size": 2}
    pipeline = spacy.blank("en")
    pipeline.add_pipe("clinical_ner", config=config)
    texts = dev_texts[:4]
    served = [doc_rows(doc) for doc in pipeline.pipe(texts)]
    pipeline.to_disk(tmp_path / "pipeline")
    saved = tmp_path / "pipeline" / "clinical_ner"
    assert json.loads((saved / "clinical_ner.json").read_text())["source"] == "endpoint"
    assert sorted(path.name for path in saved.iterdir()) == ["clinical_ner.json"]
    reloaded = [doc_rows(doc) for doc in spacy.load(tmp_path / "pipeline").pipe(texts)]
    for entities, via_server, via_saved in zip(ner.annotate(texts), served, reloaded):
        assert_same_rows(as_rows(entities), via_server)
        assert_same_rows(as_rows(entities), via_saved)


@pytest.mark.slow
def test_endpoint_behind_the_component_in_n_process_children(ner, dev_texts, endpoint,
                                                             entry_point_path):
    # Each forked child opens its own channel (the parent opens none before the
    # fork; gRPC's fork support is off: clinical_ner/serving/__init__.py).
    texts = dev_texts[:6]
    report = run_fresh(entry_point_path, f"""
        import json
        import spacy
        nlp = spacy.blank("en")
        nlp.add_pipe("clinical_ner", config={{"endpoint": "{endpoint}",
                                              "model_name": "clinical_ner"}})
        forked = [entities_of(doc) for doc in nlp.pipe({texts!r}, n_process=2, batch_size=2)]
        print(json.dumps({{"forked": forked}}))
    """)
    expected = ner.annotate(texts)
    assert sum(map(len, expected)) > 50
    for entities, via_children in zip(expected, report["forked"]):
        assert_same_rows(as_rows(entities), via_children)


# -- medspaCy ------------------------------------------------------------------------

def test_medspacy_context_reads_negation_of_our_entities():
    pipeline = spacy.blank("en")
    pipeline.add_pipe("sentencizer")  # ConText works within sentences
    pipeline.add_pipe("clinical_ner")
    pipeline.add_pipe("medspacy_context")
    negated = pipeline("No evidence of pneumonia.")
    affirmed = pipeline("She was treated for pneumonia.")
    assert [(e.text, e.label_, e._.is_negated) for e in negated.ents] == [
        ("pneumonia", "problem", True)]
    assert [(e.text, e._.is_negated) for e in affirmed.ents if e.text == "pneumonia"] == [
        ("pneumonia", False)]


def test_a_bundled_model_s_name_with_a_trailing_slash_is_the_bundled_model(nlp):
    # config={"model": "clinical/"} was "model clinical: ... no such folder ...; use the
    # bundled model 'clinical'" (a Path drops the slash before the error names it).
    from clinical_ner.pretrained import is_model_reference, resolve_model_path

    assert resolve_model_path("clinical/") == bundled_model_path("clinical")
    assert is_model_reference("clinical/")
    slashed = spacy.blank("en")
    slashed.add_pipe("clinical_ner", config={"model": "clinical/"})
    text = "Chest x-ray showed pneumonia."
    assert doc_rows(slashed(text)) == doc_rows(nlp(text))
