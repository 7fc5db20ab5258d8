"""Export a trained model for the lean runtime: a ``.tflite`` network of builtin ops plus data.

The network takes word, character and casing ids and returns the CRF's
emission scores (and, for a model with assertions, each token's assertion
probabilities); tokenizing, featurizing, CRF decoding and pooling the
assertion probabilities over an entity run in Python and NumPy
(:mod:`clinical_ner.annotators.litert`), so the network needs no string ops.
Three parts of the TensorFlow inference graph are not TFLite builtins, and
the export swaps them on its own copy of the model for equivalents that are
(same weights, same outputs at every real token):

* the char-CNN's ``UniqueV2`` (each distinct spelling convolved once): the
  runtime finds the distinct spellings in NumPy and the network takes them
  (``spellings`` ``[S, C]`` and ``spelling_index`` ``[B, T]``), so the
  network wires the model's layers itself instead of calling the model;
* the BiLSTM's fused ``BlockLSTM`` and its ``TensorArray`` loops: a loop
  writing into a preallocated tensor (``BiLSTM.builtin_ops_only = True``);
* the variables, which Keras 3's loops read as resources: they are frozen
  into constants (``convert_variables_to_constants_v2``) before conversion.

The export is checked before it is kept: every operator code must be a
builtin (no Select TF "Flex" ops, no custom ops), and on a probe batch the
LiteRT interpreter must give the Keras model's emissions and assertion
probabilities (within ``FLOAT32_TOLERANCE`` for float32 weights; for float16
and int8 weights the difference is recorded in the manifest).
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

from clinical_ner.version import __version__
from clinical_ner.errors import os_reason, shown_value
from clinical_ner.export.saved_model import ExportError
from clinical_ner.model.layers.crf import FORBIDDEN_SCORE, CRF
from clinical_ner.model.network import ClinicalNERModel
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.annotators.load import check_keras_model_directory
from clinical_ner.artifacts import litert as layout
from clinical_ner.annotators.litert.featurize import NumpyFeaturizer
from clinical_ner.annotators.litert.network import EmissionsNetwork

FLOAT32_TOLERANCE = 1e-3
INPUTS = ("word_ids", "spellings", "spelling_index", "casing_ids")
OUTPUT = "emissions"
ASSERTION_OUTPUT = "assertion_probabilities"
#: How the folder an export is written in before it is complete begins (after
#: a dot and the output's name, beside an output that is not there yet).
STAGING_PREFIX = ".partial-"

logger = logging.getLogger(__name__)


def export_litert(model_dir: str | Path, output: str | Path, weights: str = "float32") -> Path:
    """Write ``model_dir`` (a ``clinical-ner train`` directory) as a LiteRT export in ``output``.

    ``weights`` is ``float32``, ``float16`` (half-size file, computed in
    float32) or ``int8`` (dynamic-range quantization: int8 weights, float
    activations). ``output`` must not exist yet, or be an empty folder; it is
    written under a temporary name beside it (inside it, for an existing
    folder) and renamed when complete and checked. Returns ``output``.
    """
    if weights not in layout.WEIGHT_TYPES:
        raise ExportError(f"--weights must be one of {', '.join(layout.WEIGHT_TYPES)}, "
                          f"got {shown_value(weights)}")
    output = Path(output)
    check_empty_or_new(output)
    check_keras_model_directory(model_dir, "be exported again")
    ner = KerasAnnotator.load(model_dir)
    network = convert_network(ner.model, weights)
    inputs = [name for name in INPUTS if name != "casing_ids" or ner.model.use_casing]
    output_names = network_output_names(network) if ner.assertion_classes else None
    # An existing (empty) folder is filled in place, from a staging folder inside
    # it: it may be the working directory, a link or a mount point, which cannot
    # be replaced by a rename (or renamed onto from another file system).
    in_place = output.exists()
    # Staging folders of earlier exports into this new output, stopped (killed) before they
    # finished: hidden, never used again; removed once this export is in place.
    leftovers = [] if in_place else sorted(output.parent.glob(
        f".{glob.escape(output.name)}{STAGING_PREFIX}{'?' * len(uuid.uuid4().hex)}"))
    staging = (output / f"{STAGING_PREFIX}{uuid.uuid4().hex}" if in_place
               else output.parent / f".{output.name}{STAGING_PREFIX}{uuid.uuid4().hex}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        # Made with mkdir (not mkdtemp, which is private to its owner): the
        # export gets the permissions the umask gives any new folder.
        staging.mkdir()
        (staging / layout.NETWORK_FILE).write_bytes(network)
        (staging / layout.CRF_FILE).write_text(
            json.dumps(crf_parameters(ner.model.crf)) + "\n", encoding="utf-8")
        ner.config.save(staging)
        ner.vocab.save(staging)
        operators = builtin_operators(network)
        differences = max_output_differences(ner, staging / layout.NETWORK_FILE, inputs,
                                             output_names)
        for what, difference in differences.items():
            if weights == "float32" and not difference <= FLOAT32_TOLERANCE:
                raise ExportError(
                    f"{model_dir}: the converted network's {what} differ from the Keras "
                    f"model's by {difference:.3g} (more than {FLOAT32_TOLERANCE}); not exported")
        manifest = {
            "format": layout.FORMAT_NAME,
            "version": layout.FORMAT_VERSION,
            "network": layout.NETWORK_FILE,
            "inputs": inputs,
            "output": OUTPUT,
            "weights": weights,
            "operators": operators,
            "max_abs_emission_difference": differences[OUTPUT],
            "exported_by": f"clinical-ner {__version__}",
            "sha256": {name: layout.file_sha256(staging / name)
                       for name in layout.CHECKSUMMED_FILES},
        }
        if output_names:
            manifest.update(version=layout.ASSERTIONS_FORMAT_VERSION,
                            network_outputs=output_names,
                            max_abs_assertion_difference=differences[ASSERTION_OUTPUT])
        (staging / layout.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n",
                                                    encoding="utf-8")
        if in_place:
            # The manifest last: a folder is taken for an export once it has one.
            for path in sorted(staging.iterdir(),
                               key=lambda path: path.name == layout.MANIFEST_FILE):
                os.replace(path, output / path.name)
            staging.rmdir()
        else:
            os.replace(staging, output)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):  # a full disk, a folder we may not write to
            reason = os_reason(error)
            raise ExportError(f"{output}: cannot write the export there ({reason}); nothing "
                              "was kept") from None
        raise
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)
    if leftovers:
        logger.warning("removed %s beside %s: left by an export that was stopped before it "
                       "finished", ", ".join(path.name for path in leftovers), output)
    return output


def check_empty_or_new(output: Path) -> None:
    """Raise :class:`ExportError` unless ``output`` is not there yet or is an empty folder.

    A staging folder that an export stopped before it finished (killed, a
    power cut) left inside is named as such: ``ls`` does not show it, so
    "not an empty folder" alone would leave the user looking at an empty one.
    """
    if not output.exists():
        return
    entries = sorted(path.name for path in output.iterdir()) if output.is_dir() else None
    if entries == []:
        return
    if entries and all(name.startswith(STAGING_PREFIX) for name in entries):
        raise ExportError(f"{output}: holds {', '.join(entries)}, left by an export that was "
                          "stopped before it finished; delete it and export again")
    raise ExportError(f"{output}: already exists and is not an empty folder; "
                      "an export never overwrites")


def crf_parameters(crf: CRF) -> dict:
    """The CRF's scores and decoding constraints as JSON-ready data (masks may be None)."""
    def listed(value):
        return None if value is None else np.asarray(value).tolist()

    return {
        "transitions": listed(crf.transitions.numpy()),
        "start_transitions": listed(crf.start_transitions.numpy()),
        "end_transitions": listed(crf.end_transitions.numpy()),
        "allowed_transitions": listed(crf.allowed_transitions),
        "allowed_start": listed(crf.allowed_start),
        "allowed_end": listed(crf.allowed_end),
        "forbidden_score": FORBIDDEN_SCORE,
    }


def convert_network(model: ClinicalNERModel, weights: str = "float32") -> bytes:
    """The model's emissions as a TFLite flatbuffer of builtin ops (see the module docstring).

    Inputs are int32 ``word_ids`` ``[B, T]``, ``spellings`` ``[S, C]`` (the
    char ids of distinct spellings, row 0 empty), ``spelling_index``
    ``[B, T]`` and, with casing, ``casing_ids`` ``[B, T]``, every dimension
    dynamic; the first output is the emissions, float32 ``[B, T, K]``, and
    for a model with assertions the second the assertion probabilities,
    float32 ``[B, T, N]``. The network repeats the model's wiring
    (embeddings, char-CNN, casing, concatenation, BiLSTM, dense, and the
    assertion head on the BiLSTM's states or on a BiLSTM of its own; dropout
    is off at inference and the CRF layer passes emissions through), which
    :func:`max_output_differences` checks against the model itself.
    """
    layer = model.get_layer
    layer_names = {each.name for each in model.layers}
    # The wiring is read off the layers: the assertion head, if any, and
    # whether it has a BiLSTM of its own.
    has_assertions = ASSERTION_OUTPUT in layer_names
    bilstms = [layer("bilstm")]
    if has_assertions and "assertion_bilstm" in layer_names:
        bilstms.append(layer("assertion_bilstm"))
    specs = [tf.TensorSpec([None, None], tf.int32, name=name)
             for name in INPUTS if name != "casing_ids" or model.use_casing]

    # autograph=False: see clinical_ner/model/inference_graph.py.
    @tf.function(input_signature=specs, autograph=False)
    def network(word_ids, spellings, spelling_index, casing_ids=None):
        features = [layer("word_embedding")(word_ids),
                    tf.gather(layer("char_encoder").encode_spellings(spellings), spelling_index)]
        if casing_ids is not None:
            features.append(layer("casing_embedding")(casing_ids))
        token_features = tf.concat(features, axis=-1)
        hidden = bilstms[0](token_features, mask=word_ids != 0, training=False)
        emissions = layer("emissions")(hidden)
        if not has_assertions:
            return emissions
        states = (hidden if len(bilstms) == 1
                  else bilstms[1](token_features, mask=word_ids != 0, training=False))
        # A list, not a dict: the converter keeps its order (output_0, output_1).
        return [emissions, layer(ASSERTION_OUTPUT)(states)]

    for bilstm in bilstms:
        bilstm.builtin_ops_only = True
    try:
        with _quiet_saving():
            frozen = convert_variables_to_constants_v2(network.get_concrete_function())
    finally:
        for bilstm in bilstms:
            bilstm.builtin_ops_only = False
    # The trackable object only makes the converter write a signature (input
    # names); the frozen function holds every weight.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if weights != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if weights == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as error:  # the converter raises several unrelated types
        raise ExportError(f"TFLite conversion failed: {str(error).splitlines()[0]}") from None


@contextlib.contextmanager
def _quiet_saving() -> Iterator[None]:
    """Hide the warning freezing logs about lookup tables.

    Freezing exports a meta graph, which cannot hold the initializers of the
    lookup tables TensorFlow keeps in its global collections (the in-graph
    featurizer's); the network has no lookup table, so the warning says
    nothing about it.
    """
    class DropTableWarning(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "table_initializer" not in record.getMessage()

    tf_logger = logging.getLogger("tensorflow")
    drop = DropTableWarning()
    tf_logger.addFilter(drop)
    try:
        yield
    finally:
        tf_logger.removeFilter(drop)


def builtin_operators(network: bytes) -> list[str]:
    """Names of the operators of every subgraph; ExportError if one is not a builtin."""
    model = tflite_schema.ModelT.InitFromPackedBuf(network, 0)
    names = {code: name for name, code in vars(tflite_schema.BuiltinOperator).items()
             if not name.startswith("_")}
    found = set()
    for code in model.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == tflite_schema.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode() if code.customCode else "?"
            raise ExportError(f"the converted network uses the non-builtin op {custom}")
        found.add(names[builtin])
    return sorted(found)


def _probe_sentences(words: list[str]) -> list[list[str]]:
    """Sentences of different lengths, known and unknown words, for the export check."""
    known = [word for word in words[2:50] if word] or ["x"]
    sentences = [[known[(row + column) % len(known)] for column in range(length)]
                 for row, length in enumerate((1, 3, 7, 12, 25, 40))]
    sentences[2][1] = "Unseen-Word\u00e9"
    sentences[3][0] = "CT"
    sentences[4][5] = "12.5"
    return sentences


def network_output_names(network: bytes) -> list[str]:
    """The names of the network's outputs in the order it returns them (``output_0``, ...)."""
    from ai_edge_litert.interpreter import Interpreter

    names = list(Interpreter(model_content=network).get_signature_runner().get_output_details())
    return sorted(names, key=lambda name: int(name.rsplit("_", 1)[-1]))


def max_output_differences(ner: KerasAnnotator, network_path: Path, inputs: list[str],
                           output_names: list[str] | None) -> dict[str, float]:
    """Largest |LiteRT - Keras| emission (and assertion probability) over the real tokens
    of a probe batch, by output."""
    sentences = _probe_sentences(ner.vocab.words)
    featurizer = NumpyFeaturizer(ner.vocab.words, ner.vocab.chars, ner.config.max_word_length)
    width, char_width = max(len(sentence) for sentence in sentences), featurizer.char_width(
        sentences)
    features = featurizer(sentences, width, char_width)
    char_ids = features["spellings"][features["spelling_index"]]
    model_inputs = {"word_ids": features["word_ids"], "char_ids": char_ids}
    if ner.model.use_casing:
        model_inputs["casing_ids"] = features["casing_ids"]
    expected = ner.model(model_inputs, training=False)
    names = [OUTPUT, ASSERTION_OUTPUT] if output_names else [OUTPUT]
    if not output_names:
        expected = [expected]
    actual = EmissionsNetwork(network_path, inputs, output_names=output_names)(features)
    real = features["word_ids"] > 0
    return {name: float(np.abs(np.asarray(a) - np.asarray(e))[real].max())
            for name, a, e in zip(names, actual, expected)}
