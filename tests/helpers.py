"""What the test modules share: paths, the one confidence tolerance, waiting, models to test with.

Test modules import these with ``from helpers import ...`` (pytest puts
``tests/`` on ``sys.path``) and never import from each other; fixtures live
in ``conftest.py``.

Comparing outputs
-----------------
Whenever two outputs of the real model come from different batchings,
processes, runtimes (TensorFlow, LiteRT, a SavedModel behind a server) or
library versions, spans, labels, texts and assertions must be equal and
confidences equal within :data:`CONFIDENCE_TOLERANCE`
(:func:`assert_same_entities`, :func:`assert_same_documents`,
:func:`assert_same_tags`). Bit-identical confidences are promised only for
the same input in the same batch of the same process; tests that rely on
that say so where they compare with ``==``. The toy model below is exact
everywhere: its confidences are constants that float32 holds exactly
(0.875, 0.75, 0.5 and their products with 0.5), so comparisons with
:func:`expected_entities` use ``==``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import sys
import math
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from clinical_ner.config import NERConfig
from clinical_ner.export import signatures as sig
from clinical_ner.export.saved_model import export_saved_model
from clinical_ner.text.document import Entity

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SAMPLE = REPO_ROOT / "samples" / "maccrobat-i2b2"
SAMPLE_VECTORS = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"

# -- comparing outputs across batchings, processes and runtimes ------------------------------

#: The largest difference between two confidences of the same entity that
#: counts as equal. Differences seen: 9e-8 between hosts (0.28724798560142517
#: against 0.287247896194458, Beam on two processes on an AMD EPYC against
#: ``clinical-ner predict``: oneDNN picks other kernels on other CPUs, and
#: batches of other shapes round differently) and up to 2.1e-5 between
#: LiteRT and TensorFlow on the MACCROBAT dev notes. 1e-4 leaves five times
#: the largest of those, and is still far below a difference a user could
#: see: the HTML view prints confidences to two decimals.
CONFIDENCE_TOLERANCE = 1e-4
#: The fields of an entity compared within the tolerance; every other field exactly.
CONFIDENCE_FIELDS = ("confidence", "assertion_confidence")


def entity_fields(entity: Any) -> dict[str, Any]:
    """An entity as a dict: an :class:`Entity`, a dict from JSON, or a Spark ``Row``.

    An absent assertion and ``assertion=None`` are the same (``to_dict``
    leaves them out), and so for its confidence.
    """
    if isinstance(entity, Mapping):
        fields = dict(entity)
    elif dataclasses.is_dataclass(entity):
        fields = dataclasses.asdict(entity)
    elif hasattr(entity, "asDict"):  # a pyspark.sql.Row
        fields = entity.asDict()
    else:
        raise TypeError(f"not an entity: {type(entity).__name__}")
    for name in ("assertion", "assertion_confidence"):
        if name in fields and fields[name] is None:
            del fields[name]
    return fields


def confidences_match(actual: float | None, expected: float | None) -> bool:
    """Equal within :data:`CONFIDENCE_TOLERANCE` (``None``, for gold entities, only to None)."""
    if actual is None or expected is None:
        return actual is expected
    return math.isfinite(actual) and abs(actual - expected) <= CONFIDENCE_TOLERANCE


def assert_same_entities(actual: Sequence[Any], expected: Sequence[Any], where: str = "") -> None:
    """One document's entities: every field equal but the confidence, which is within tolerance."""
    actual_fields = [entity_fields(entity) for entity in actual]
    expected_fields = [entity_fields(entity) for entity in expected]
    prefix = f"{where}: " if where else ""

    def without_confidences(fields: list[dict]) -> list[dict]:
        return [{k: v for k, v in entity.items() if k not in CONFIDENCE_FIELDS}
                for entity in fields]

    assert without_confidences(actual_fields) == without_confidences(expected_fields), \
        f"{prefix}spans, texts, labels or assertions differ"
    for index, (got, wanted) in enumerate(zip(actual_fields, expected_fields)):
        for name in CONFIDENCE_FIELDS:
            assert confidences_match(got.get(name), wanted.get(name)), (
                f"{prefix}entity {index} ({got['start']}-{got['end']} {got['label']}): {name} "
                f"{got.get(name)!r} against {wanted.get(name)!r}, more than "
                f"{CONFIDENCE_TOLERANCE} apart")


def assert_same_documents(actual: Sequence[Sequence[Any]] | Mapping[Any, Sequence[Any]],
                          expected: Sequence[Sequence[Any]] | Mapping[Any, Sequence[Any]]) -> None:
    """Several documents' entities, as lists in the same order or as mappings by note id."""
    if isinstance(expected, Mapping):
        assert isinstance(actual, Mapping), "expected entities by note id"
        assert sorted(map(str, actual)) == sorted(map(str, expected)), "the note ids differ"
        pairs: Iterable = ((key, actual[key], expected[key]) for key in expected)
    else:
        assert len(actual) == len(expected), f"{len(actual)} documents, expected {len(expected)}"
        pairs = ((index, got, wanted) for index, (got, wanted) in enumerate(zip(actual, expected)))
    for key, got, wanted in pairs:
        assert_same_entities(got, wanted, where=f"document {key}")


def assert_same_tags(actual: Sequence[tuple[Sequence[str], Sequence[float]]],
                     expected: Sequence[tuple[Sequence[str], Sequence[float]]]) -> None:
    """``tag`` results ``[(tags, confidences), ...]``: tags equal, confidences within tolerance."""
    assert len(actual) == len(expected), f"{len(actual)} sentences, expected {len(expected)}"
    for index, ((tags, confidences), (wanted_tags, wanted_confidences)) in enumerate(
            zip(actual, expected)):
        assert list(tags) == list(wanted_tags), f"sentence {index}: the tags differ"
        np.testing.assert_allclose(confidences, wanted_confidences, rtol=0,
                                   atol=CONFIDENCE_TOLERANCE, err_msg=f"sentence {index}")


# -- waiting for something another thread or process does ------------------------------------


class ClosedStdout(io.StringIO):
    """Standard output whose reader has gone (``predict ... | head``)."""

    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def wait_for(condition: Callable[[], Any], what: str = "the condition",
             timeout: float = 60.0) -> None:
    """Return once ``condition()`` is true; fail naming ``what`` after ``timeout`` seconds.

    The timeout only keeps a hang from blocking the suite: it is far longer
    than the wait should ever take, so a loaded machine does not change the
    outcome.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class ConcurrencyProbe:
    """Counts the model calls that run at once, holding each until the load is complete.

    ``call(rows, function)`` runs ``function()`` once all ``rows`` rows of
    the test's requests have reached the model or wait for it
    (``waiting()`` rows) and either ``slots`` calls are running or nothing
    waits any more. A limit that let more calls run at once shows in
    ``most``; one that let fewer run makes the calls wait until
    :func:`wait_for` fails. Either way the outcome does not depend on how
    fast the machine is.
    """

    def __init__(self, slots: int, rows: int, waiting: Callable[[], int]) -> None:
        self.slots, self.rows, self.waiting = slots, rows, waiting
        self.running = self.most = self.rows_called = 0
        self._lock = threading.Lock()

    def call(self, rows: int, function: Callable[[], Any]) -> Any:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.rows_called += rows
        try:
            wait_for(self._loaded, what="every request to reach the model or wait for it")
            return function()
        finally:
            with self._lock:
                self.running -= 1

    def _loaded(self) -> bool:
        with self._lock:
            running, rows_called = self.running, self.rows_called
        waiting = self.waiting()
        return rows_called + waiting == self.rows and (running >= self.slots or waiting == 0)


# -- the toy SavedModel: keywords in, exact entities out --------------------------------------


class Gate:
    """The files through which a test holds the calls of a toy model exported with ``gate_dir``."""

    STARTED = "started"
    OPEN = "open"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def started(self) -> bool:
        """Whether a call has reached the model (and, unless opened, waits there)."""
        return (self.directory / self.STARTED).exists()

    def open(self) -> None:
        """Let every waiting and later call finish."""
        (self.directory / self.OPEN).touch()


# keyword -> (label, confidence); one keyword is not ASCII, to test code-point offsets.
KEYWORDS = {"aspirin": ("DRUG", 0.875), "fever": ("PROBLEM", 0.75), "fièvre": ("PROBLEM", 0.5)}
TOKEN_TAGS = {"aspirin": "B-DRUG", "fever": "B-PROBLEM"}


class ToyNerModule(tf.Module):
    """Marks keywords; ``confidence_scale`` tells versions apart.

    ``delay_iterations`` spins a loop before answering (about 5 us per
    iteration here), for tests that need a slow answer. With ``gate_dir``,
    every ``annotate`` call creates ``<gate_dir>/started`` and then waits
    until ``<gate_dir>/open`` exists: a test, even in another process, sees
    that a request is in flight and decides when it ends (:class:`Gate`).
    """

    def __init__(self, confidence_scale: float = 1.0, delay_iterations: int = 0,
                 gate_dir: str | Path | None = None) -> None:
        super().__init__()
        self.confidence_scale = tf.Variable(confidence_scale, dtype=tf.float32)
        # A variable, so that graph optimization cannot fold the loop away.
        self.delay_iterations = tf.Variable(delay_iterations, dtype=tf.int64)
        self.gate_dir = None if gate_dir is None else str(gate_dir)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=sig.TEXT)])
    def annotate(self, text):
        batch = tf.shape(text, out_type=tf.int64)[0]
        points = tf.strings.unicode_decode(text, "UTF-8").to_tensor(default_value=-1)
        width = tf.shape(points)[1]
        rows, starts, ends, labels, confidences = [], [], [], [], []
        for word, (label, confidence) in KEYWORDS.items():
            word_points = [ord(char) for char in word]
            extended = tf.pad(points, [[0, 0], [0, len(word_points)]], constant_values=-1)
            match = tf.ones_like(points, dtype=tf.bool)
            for offset, point in enumerate(word_points):
                match &= tf.equal(extended[:, offset:offset + width], point)
            found = tf.where(match)
            count = tf.shape(found)[0]
            rows.append(found[:, 0])
            starts.append(found[:, 1])
            ends.append(found[:, 1] + len(word_points))
            labels.append(tf.fill([count], label))
            confidences.append(tf.fill([count], confidence))
        row, start = tf.concat(rows, 0), tf.concat(starts, 0)
        order = tf.argsort(row * (tf.cast(width, tf.int64) + 1) + start)
        row = tf.gather(row, order)

        def by_row(values, padding):
            ragged = tf.RaggedTensor.from_value_rowids(tf.gather(values, order), row, nrows=batch)
            return ragged.to_tensor(padding)

        spun = tf.while_loop(
            lambda i: i < self.delay_iterations, lambda i: [i + 1], [tf.constant(0, tf.int64)]
        )[0]
        scale = self.confidence_scale + tf.cast(spun - self.delay_iterations, tf.float32)
        if self.gate_dir is not None:
            started = tf.io.write_file(f"{self.gate_dir}/{Gate.STARTED}", "")
            with tf.control_dependencies([started]):
                opened = tf.while_loop(
                    lambda step, is_open: tf.logical_not(is_open),
                    lambda step, is_open: [step + 1, self._gate_is_open(step)],
                    [tf.constant(0, tf.int64), tf.constant(False)])[1]
            # Adds 0: only makes the outputs wait for the gate.
            scale += tf.cast(tf.logical_not(opened), tf.float32)
        return {
            sig.ENTITY_START: by_row(start, tf.constant(0, tf.int64)),
            sig.ENTITY_END: by_row(tf.concat(ends, 0), tf.constant(0, tf.int64)),
            sig.ENTITY_LABEL: by_row(tf.concat(labels, 0), ""),
            sig.ENTITY_CONFIDENCE: by_row(tf.concat(confidences, 0), 0.0) * scale,
            sig.ENTITY_COUNT: tf.math.bincount(
                tf.cast(row, tf.int32),
                minlength=tf.cast(batch, tf.int32),
                maxlength=tf.cast(batch, tf.int32),
            ),
        }

    def _gate_is_open(self, step: tf.Tensor) -> tf.Tensor:
        # MatchingFiles is not a stateful op: with a constant pattern, graph
        # optimization runs it once for the whole loop. The empty string cut
        # from the step number makes the pattern a new value at every step.
        pattern = tf.strings.join([f"{self.gate_dir}/{Gate.OPEN}",
                                   tf.strings.substr(tf.strings.as_string(step), 0, 0)])
        return tf.size(tf.io.matching_files(pattern)) > 0

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name=sig.TOKENS)])
    def tag(self, tokens):
        present = tf.not_equal(tokens, sig.PAD_TOKEN)
        tags = tf.fill(tf.shape(tokens), "O")
        for word, tag in TOKEN_TAGS.items():
            tags = tf.where(tf.equal(tokens, word), tag, tags)
        tags = tf.where(present, tags, "")
        confidence = tf.where(tf.equal(tags, "O"), 0.96875, 0.875) * self.confidence_scale
        return {
            sig.TAGS: tags,
            sig.TAG_CONFIDENCE: tf.where(present, confidence, 0.0),
            sig.LENGTH: tf.reduce_sum(tf.cast(present, tf.int32), axis=1),
        }


def export_toy(base_path: Path, version: int | None = None, **toy_options) -> Path:
    """Export a ToyNerModule with both contract signatures."""
    module = ToyNerModule(**toy_options)
    return export_saved_model(
        module,
        {sig.SERVING_DEFAULT: module.annotate, sig.PREDICT_TOKENS: module.tag},
        base_path,
        version,
    )


def expected_entities(text: str, scale: float = 1.0) -> list[Entity]:
    """What the toy model finds in ``text``, computed in Python."""
    found = []
    for word, (label, confidence) in KEYWORDS.items():
        start = text.find(word)
        while start >= 0:
            found.append(
                Entity(start, start + len(word), word, label, float(np.float32(confidence * scale)))
            )
            start = text.find(word, start + 1)
    return sorted(found, key=lambda entity: entity.start)


def expected_tags(tokens: list[str], scale: float = 1.0) -> tuple[list[str], list[float]]:
    tags = [TOKEN_TAGS.get(token, "O") for token in tokens]
    return tags, [float(np.float32((0.96875 if tag == "O" else 0.875) * scale)) for tag in tags]


LEAKY = "fails_quoting_input"


TOY_ASSERTION = "present"


class LeakyToyModule(ToyNerModule):
    """The toy model plus a signature whose TensorFlow error message quotes its input, and
    a ``classify_assertions`` that answers every span it is given: ``TOY_ASSERTION``, or
    ``""`` where the start is negative (as padding) or the span holds only whitespace (as a
    real model's span that covers no token). Like an export, it records its assertion
    classes."""

    def __init__(self, **toy_options) -> None:
        super().__init__(**toy_options)
        setattr(self, sig.ASSERTION_CLASSES, tf.Variable([TOY_ASSERTION], trainable=False))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=sig.TEXT)])
    def fail(self, text):
        tf.debugging.Assert(tf.size(text) < 0, [text])
        return {"count": tf.size(text)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=sig.TEXT),
                                  tf.TensorSpec([None, None], tf.int32, name=sig.SPAN_START),
                                  tf.TensorSpec([None, None], tf.int32, name=sig.SPAN_END)])
    def classify(self, text, span_start, span_end):
        start = tf.maximum(span_start, 0)
        spanned = tf.strings.substr(tf.broadcast_to(text[:, tf.newaxis], tf.shape(span_start)),
                                    start, tf.maximum(span_end - start, 0), unit="UTF8_CHAR")
        given = (span_start >= 0) & ~tf.strings.regex_full_match(spanned, r"\s*")
        return {sig.ASSERTION: tf.where(given, TOY_ASSERTION, ""),
                sig.ASSERTION_CONFIDENCE: tf.where(given, 0.5, 0.0)}


def export_leaky(base: Path, **toy_options) -> Path:
    module = LeakyToyModule(**toy_options)
    return export_saved_model(
        module,
        {sig.SERVING_DEFAULT: module.annotate, sig.PREDICT_TOKENS: module.tag, LEAKY: module.fail,
         sig.CLASSIFY_ASSERTIONS: module.classify},
        base,
        1,
    )


# -- serving: the model name, request helpers, TLS ---------------------------------------------


def free_port() -> int:
    """A local TCP port that nothing listens on (free when this returns)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


MODEL = "clinical_ner"
#: A word that stands for clinical text: it must never reach a log or an error message.
MARKER = "PHI-MARKER-Zebulon-Quixote"
# A deadline for calls the server answers in milliseconds, only so that a hang
# fails instead of blocking the suite. 10 s was once exceeded by a trivial
# GetModelMetadata call on a busy 2-core CI machine.
RPC_TIMEOUT_S = 60.0


def text_request(texts, signature="", version=None, name=MODEL) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[sig.TEXT].CopyFrom(
        tf.make_tensor_proto([t.encode() for t in texts], dtype=tf.string, shape=[len(texts)])
    )
    return request


def response_entities(response, texts) -> list[list[Entity]]:
    """The entities of a gRPC PredictResponse of ``serving_default`` for ``texts``."""
    arrays = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    return sig.entities_from_outputs(texts, arrays)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (and neither is `cryptography`)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


# -- trained and tiny models -----------------------------------------------------------------

NOTE = "CT of the chest showed a 2 cm nodule; she was started on aspirin for chest pain."

def train_sample_model(output: Path, dev: bool = True, **settings: Any) -> Path:
    """A small model trained quietly on the bundled sample (with ``dev``, dev chooses the epoch)."""
    from clinical_ner.training.trainer import train

    config = NERConfig(embeddings=str(SAMPLE_VECTORS), **settings)
    train(SAMPLE / "train", output, dev_path=SAMPLE / "dev" if dev else None, config=config,
          progress=False, emit=lambda message: None)
    return output


def assert_exact(text: str, entities) -> None:
    """Every entity is a real span of ``text`` with a known label and a confidence; none overlap."""
    labels = {"problem", "test", "treatment"}
    for entity in entities:
        assert 0 <= entity.start < entity.end <= len(text), (entity.start, entity.end, len(text))
        assert text[entity.start:entity.end] == entity.text
        assert entity.label in labels
        assert 0.0 < entity.confidence <= 1.0
    spans = sorted((e.start, e.end) for e in entities)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), \
        "entities overlap"


# Texts that have broken annotators: each must give exact offsets and no exception.
EDGE_CASES = {
    "empty": "",
    "spaces": "   ",
    "whitespace-only": " \t\n\r\n\u00a0\u2028\u2029\u3000\x0b\x0c\x85 ",
    "control-characters": "Fever\x00 and\x01chest\x07pain\x1b[31m; CT\x7f\x9f showed\x08 a nodule",
    "format-characters": "chest\u200bpain\u200d \ufeffCT\u2066 aspirin\u2069 \u00adfever",
    "emoji-and-astral": "Fever \U0001f600\U0001f600 chest pain \U0001d538\U0001d539 CT "
                        "\U0001f9d1\u200d\u2695\ufe0f aspirin \U00020000\U0010ffff end.",
    "combining-marks": "Fe\u0301ver and che\u0308st pa\u0300in \u0301\u0301\u0301 CT "
                       "a\u0336s\u0336p\u0336irin Z\u0351\u0352\u0353\u0354\u0355",
    "only-combining-marks": "\u0301" * 500,
    "right-to-left": "\u0627\u0644\u0645\u0631\u064a\u0636 fever \u05d7\u05d5\u05dd "
                     "\u202eniripsa\u202c CT \u200fchest pain\u200e.",
    "mixed-newlines": "Fever\r\nchest pain\rCT showed\u2028a nodule\u2029aspirin\x85"
                      "given\x0bcough\x0c\n\n\r\r",
    "lone-surrogates": "Fever \ud800 chest pain \udfff CT \udbff\udc00 aspirin",
    "ten-thousand-char-token": "CT showed " + "a" * 10_000 + " nodule and aspirin.",
    "no-punctuation-50k-tokens": " ".join(
        ("chest", "pain", "and", "aspirin", "given", "CT")[i % 6] for i in range(50_000)),
    "only-punctuation": ".!?;:,-" * 2000,
    "digits": "1234567890 " * 3000,
}


# Texts for tiny_model: notes, an empty one, odd line breaks, one longer than a sentence window.
TEXTS = [
    "Chest pain and fever. CT of the chest showed a 2 cm nodule; started on aspirin.",
    "",
    "No acute distress.\nBP 120/80, HR 72.\r\nMRI: normal 😀 héadache",
    "word " * 450,  # longer than one sentence window
]


def tiny_model(scheme: str) -> tuple[Any, Any]:
    """``(ClinicalNERModel, Vocabulary)``: a tiny untrained network over :data:`TEXTS`' words."""
    from clinical_ner.model.network import ClinicalNERModel
    from clinical_ner.model.vocab import Vocabulary
    from clinical_ner.model.tag_space import tag_inventory

    tags = tag_inventory(["problem", "test", "treatment"], scheme)
    words = ["", "<unk>"] + sorted({t.lower() for text in TEXTS for t in text.split()})
    chars = ["", "<unk>"] + sorted(set("".join(TEXTS)) - {" ", "\n", "\r"})
    settings = NERConfig(tag_scheme=scheme, word_dim=4, char_dim=3, char_filters=4,
                         lstm_units=4, casing_dim=2)
    vocab = Vocabulary(words, chars, tags)
    model = ClinicalNERModel.from_settings(settings, vocab)
    # Random weights scaled up so that the model predicts many entities.
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 1.5, w.shape).astype("float32") for w in model.get_weights()])
    return model, vocab


# ---------------------------------------------------------------- assertion data

FINDINGS = ["fever", "cough", "rash", "nausea", "pneumonia", "headache", "edema", "wheezing"]
TESTS = ["x-ray", "ultrasound", "biopsy"]


def write_i2b2(folder, sentences):
    """A one-document i2b2 corpus; ``sentences`` are (tokens, [(first, last, label, assertion)])."""
    for sub in ("txt", "concept", "ast"):
        (folder / sub).mkdir(parents=True)
    con_lines, ast_lines = [], []
    for line, (tokens, concepts) in enumerate(sentences, start=1):
        for first, last, label, assertion in concepts:
            text = " ".join(tokens[first:last + 1]).lower()
            con = f'c="{text}" {line}:{first} {line}:{last}||t="{label}"'
            con_lines.append(con)
            if assertion is not None:
                ast_lines.append(f'{con}||a="{assertion}"')
    (folder / "txt" / "note.txt").write_text("\n".join(" ".join(t) for t, _ in sentences) + "\n")
    (folder / "concept" / "note.con").write_text("\n".join(con_lines) + "\n")
    (folder / "ast" / "note.ast").write_text("\n".join(ast_lines) + "\n")
    return folder


def negation_sentences(count, seed):
    """"No X ." is absent, "She has X ." present, "Possible X ." possible; tests carry none."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        finding, test = rng.choice(FINDINGS), rng.choice(TESTS)
        kind = rng.random()
        if kind < 0.4:
            tokens, assertion = ["No", finding, "was", "seen", "."], "absent"
            first = 1
        elif kind < 0.8:
            tokens, assertion = ["She", "has", finding, "on", "the", test, "."], "present"
            first = 2
        else:
            tokens, assertion = ["Possible", finding, "."], "possible"
            first = 1
        concepts = [(first, first, "problem", assertion)]
        if test in tokens:
            concepts.append((tokens.index(test), tokens.index(test), "test", None))
        sentences.append((tokens, concepts))
    return sentences


def tiny_assertion_config(**changes):
    values = dict(word_dim=16, char_dim=8, char_filters=16, lstm_units=16, casing_dim=4,
                  epochs=12, batch_size=8, seed=3, patience=20, dropout=0.1, word_dropout=0.0,
                  learning_rate=0.01, min_word_count=1)
    values.update(changes)
    return NERConfig(**values)


@contextlib.contextmanager
def spark_session():
    """A ``local[2]`` session for tests (test_spark and test_assertion_serving)."""
    from pyspark.sql import SparkSession

    # Workers must run this interpreter (the system python3 lacks pyarrow):
    # PySpark's driver reads PYSPARK_PYTHON, not the spark.pyspark.python
    # setting, when Python starts the session. No network beyond the loopback.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (SparkSession.builder.master("local[2]").appName("clinical-ner-test")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


# -- the command line in this process ----------------------------------------------------------


@dataclasses.dataclass
class CliResult:
    """What ``clinical-ner ARGS`` gave: as :class:`subprocess.CompletedProcess`'s fields."""

    returncode: int
    stdout: str
    stderr: str


def _as_text(stream: io.TextIOWrapper) -> str:
    # As subprocess.run(text=True) reads a pipe: UTF-8, universal newlines.
    stream.flush()
    return io.TextIOWrapper(io.BytesIO(stream.buffer.getvalue()), encoding="utf-8").read()


def _forget_tf_function_call_history() -> None:
    """Start tf.function's retracing statistics afresh, as a new process does.

    TensorFlow warns on stderr ("N out of the last N calls to <function ...>
    triggered tf.function retracing") by counting the traces of a Python
    function over the whole process: the models earlier tests loaded here made
    an in-process command's first trace look like the sixth. A command that
    retraces that often by itself still gets the warning. (Private to
    TensorFlow: if it moves, the warning shows up in a test's stderr.)
    """
    with contextlib.suppress(ImportError, AttributeError):
        from tensorflow.python.eager.polymorphic_function import polymorphic_function

        manager = polymorphic_function._frequent_tracing_detector_manager
        with manager._lock:
            manager._detectors.clear()


def run_cli_in_process(*args: Any, stdin: str | None = None, check: bool = True,
                       cwd: str | Path | None = None) -> CliResult:
    """``clinical-ner ARGS`` run by ``clinical_ner.cli.main`` here, without a new process.

    For tests of a command's output, files and exit code (not of the process:
    TensorFlow's start-up lines, the console script, signals, a terminal).
    Standard input is ``stdin`` as a pipe (empty if ``None``, as ``</dev/null``),
    standard output and error are pipes read back as ``subprocess.run(text=True)``
    reads them, and the logging handler the command adds writes to that stderr.
    What a command sets for its process is put back afterwards: the environment,
    warnings filters, loggers' levels and the root's handlers, the signal
    handlers, the working directory, ``sys.meta_path``, ``sys.std*`` (and
    tf.function's retracing statistics start afresh, as in a new process). An
    exception ``main`` lets through, which a process would print as a
    traceback, propagates.
    """
    import logging
    import signal
    import warnings

    from clinical_ner.cli import main

    argv = [str(argument) for argument in args]
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    pipe_in = io.TextIOWrapper(io.BytesIO((stdin or "").encode("utf-8")), encoding="utf-8")
    root = logging.getLogger()
    loggers = [root, *(logger for logger in logging.root.manager.loggerDict.values()
                       if isinstance(logger, logging.Logger))]
    levels = {logger: logger.level for logger in loggers}
    root_handlers = root.handlers[:]
    environment = dict(os.environ)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    meta_path = sys.meta_path[:]
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_cwd = os.getcwd()
    root.handlers[:] = []  # as in a new process: the command adds its own, to its stderr
    try:
        with warnings.catch_warnings():
            if cwd is not None:
                os.chdir(cwd)
            _forget_tf_function_call_history()
            sys.stdin, sys.stdout, sys.stderr = pipe_in, stdout, stderr
            try:
                code = main(argv)
            except SystemExit as stopped:  # argparse's usage errors and --help
                if stopped.code is None or isinstance(stopped.code, int):
                    code = stopped.code or 0
                else:  # as the interpreter: the message on stderr, status 1
                    print(stopped.code, file=sys.stderr)
                    code = 1
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        os.chdir(saved_cwd)
        for handler in root.handlers[:]:
            if handler not in root_handlers:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = root_handlers
        for logger, level in levels.items():
            logger.setLevel(level)
        os.environ.clear()
        os.environ.update(environment)
        for number, handler in handlers.items():
            signal.signal(number, handler)
        sys.meta_path[:] = meta_path
    result = CliResult(int(code), _as_text(stdout), _as_text(stderr))
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stderr[-3000:]}")
    return result
