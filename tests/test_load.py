"""``ClinicalNER.load(path)``: every artifact gives an annotator with the same ``annotate`` and ``tag``.

The LiteRT export's case (loaded without TensorFlow) is in ``test_litert.py``;
the bundled model and a 0.3.0 run are in ``test_compatibility.py``.
"""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from clinical_ner import ClinicalNER
from clinical_ner.annotators.base import Annotator
from clinical_ner.annotators.saved_model_annotator import NotAnExportError, SavedModelAnnotator
from clinical_ner.errors import ConfigError, ModelError

NOTE = "Started aspirin for fever; no fever since."


def _copy_tree(source, target: str) -> None:
    """Copy a local folder into any ``tf.io.gfile`` file system."""
    import tensorflow as tf

    for directory, _, files in tf.io.gfile.walk(str(source)):
        relative = directory[len(str(source)):].lstrip("/")
        destination = f"{target}/{relative}".rstrip("/")
        tf.io.gfile.makedirs(destination)
        for name in files:
            tf.io.gfile.copy(f"{directory}/{name}", f"{destination}/{name}")


def test_a_saved_model_version_or_base_path_loads_as_the_saved_model_annotator(model_base):
    (model_base / "7").mkdir()  # numbered, but no saved_model.pb: not a version
    from_base, from_version = ClinicalNER.load(model_base), ClinicalNER.load(model_base / "1")
    for ner in (from_base, from_version):
        assert isinstance(ner, SavedModelAnnotator) and isinstance(ner, Annotator)
    assert from_base.export_dir == str(model_base / "1")
    entities = from_base.annotate(NOTE)
    assert [(e.text, e.label) for e in entities] == [
        ("aspirin", "DRUG"), ("fever", "PROBLEM"), ("fever", "PROBLEM")]
    assert from_version.annotate(NOTE) == entities
    assert from_base.tag([["aspirin", "fever"], []]) == from_version.tag([["aspirin", "fever"], []])
    # A model without assertions says so (the export records its empty class list).
    assert from_base.assertion_classes == []
    with pytest.raises(ModelError, match="trained without assertions"):
        from_base.classify_assertions(NOTE, [(8, 15)])


def test_a_saved_model_on_a_tf_file_system_loads_by_its_url(model_base):
    # ram:// is TensorFlow's in-memory file system: what gs:// or s3:// go through.
    url = "ram://load-test/clinical_ner"
    _copy_tree(model_base / "1", f"{url}/3")
    ner = ClinicalNER.load(url)
    assert isinstance(ner, SavedModelAnnotator)
    assert ner.export_dir == f"{url}/3"
    assert ner.annotate(NOTE) == ClinicalNER.load(model_base).annotate(NOTE)


def test_anything_else_is_named_in_a_one_line_error(tmp_path, model_base):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=rf"^{empty}: not a clinical-ner model directory or "
                                         r"export \(no model.keras, litert.json"):
        ClinicalNER.load(empty)
    with pytest.raises(ModelError, match=r"not a clinical-ner model directory or export "
                                         r"\(no such folder\)"):
        ClinicalNER.load(tmp_path / "missing")
    with pytest.raises(NotAnExportError, match="no such model folder"):
        ClinicalNER.load("ram://load-test/missing")
    # "" was the working directory (an unset setting loaded whatever model was there),
    # and bytes said "a bytes-like object is required, not 'str'".
    with pytest.raises(ModelError, match=r"^the model path is empty; give a model directory"):
        ClinicalNER.load("")
    for bad in (None, str(empty).encode()):
        with pytest.raises(TypeError, match=rf"^path is {type(bad).__name__}, expected a str "
                                            r"or os.PathLike: a model directory"):
            ClinicalNER.load(bad)
    foreign = tmp_path / "foreign" / "1"
    shutil.copytree(model_base / "1", foreign)
    (foreign / "saved_model.pb").write_bytes((model_base / "1" / "saved_model.pb").read_bytes()[:50])
    with pytest.raises(NotAnExportError, match="not a readable SavedModel"):
        ClinicalNER.load(foreign.parent)


def test_a_saved_model_without_its_variables_is_named_before_tensorflow_reads_it(
        tmp_path, model_base):
    # What a partial copy leaves: one line naming the files, not TensorFlow's own error.
    no_variables = tmp_path / "no-variables"
    shutil.copytree(model_base, no_variables)
    shutil.rmtree(no_variables / "1" / "variables")
    for path in (no_variables, no_variables / "1"):
        with pytest.raises(ModelError, match=rf"^{no_variables / '1'}: an incomplete SavedModel "
                                             r"\(variables/variables.index missing\)"):
            ClinicalNER.load(path)


@pytest.mark.parametrize("name, reason", [
    ("variables.data-00000-of-00001", "IndexError"),
    ("variables.index", r"\w+Error"),
])
def test_a_saved_model_with_a_damaged_variables_file_is_named(tmp_path, model_base, name,
                                                              reason):
    # A variables file cut short (an interrupted copy) was an internal error (IndexError,
    # OpError: exit 70) in ClinicalNER.load, predict, evaluate.
    damaged = tmp_path / "damaged"
    shutil.copytree(model_base, damaged)
    path = damaged / "1" / "variables" / name
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ModelError, match=rf"^{damaged / '1'}: a damaged SavedModel \(TensorFlow "
                                         rf"cannot read it: {reason}\); copy the whole folder"):
        ClinicalNER.load(damaged)


def test_input_of_the_wrong_type_is_refused_with_what_was_expected(model_base):
    ner = ClinicalNER.load(model_base)
    for bad, message in ((5, "texts is int"), (None, "texts is NoneType"),
                         (b"fever", r"texts is bytes, expected a str or a list of str "
                                    r"\(decode bytes first\)")):
        with pytest.raises(TypeError, match=message):
            ner.annotate(bad)
    # A mapping iterates over its keys: the notes' ids were annotated, their texts never.
    with pytest.raises(TypeError, match=r"^texts is dict, expected a str or a list of str "
                                        r"\(not a mapping, whose keys would be annotated"):
        ner.annotate({"note-1": NOTE})
    # A str where a list of tokens is expected would be tagged one character a token.
    with pytest.raises(TypeError, match="sentences is str"):
        ner.tag("aspirin fever")
    # A mapping (sentences keyed by id) had its keys tagged, as annotate refuses it.
    with pytest.raises(TypeError, match="sentences is dict, expected a list of sentences"):
        ner.tag({("aspirin", "fever"): "s1"})
    with pytest.raises(TypeError, match=r"sentences\[0\] is str, expected a list of tokens"):
        ner.tag(["aspirin", "fever"])
    assert ner.tag([("aspirin", "fever")]) == ner.tag([["aspirin", "fever"]])
    # NumPy rows (pandas' rows of a Parquet list column) were refused as "is ndarray".
    assert ner.tag([np.array(["aspirin", "fever"])]) == ner.tag([["aspirin", "fever"]])
    assert ner.tag(np.array([["aspirin", "fever"]])) == ner.tag([["aspirin", "fever"]])


def test_a_dataframe_is_refused_and_a_series_of_texts_is_annotated(model_base):
    pd = pytest.importorskip("pandas")
    ner = ClinicalNER.load(model_base)
    notes = pd.DataFrame({"id": ["n1"], "text": [NOTE]})
    # A DataFrame iterates over its column names: "id" and "text" were annotated, silently.
    with pytest.raises(TypeError, match=r"^texts is DataFrame, expected a str or a list of str "
                                        r"\(not a table, whose column names would be annotated: "
                                        r"give its text column as a list, e\.g\. "
                                        r'df\["text"\]\.tolist\(\)\)$'):
        ner.annotate(notes)
    assert ner.annotate(notes["text"]) == ner.annotate([NOTE])


@pytest.mark.parametrize("runtime", ["keras", "saved_model"])
def test_bad_batch_sizes_are_refused_and_lone_surrogates_in_tokens_are_tagged(model_base,
                                                                              runtime):
    ner = ClinicalNER.load("clinical" if runtime == "keras" else model_base)
    # 0 or less never ended a batch: the call hung.
    for options in ({"batch_size": 0}, {"batch_size": -1}, {"max_batch_characters": 0}):
        with pytest.raises(ConfigError, match="must be a positive integer"):
            ner.annotate([NOTE], **options)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        ner.tag([["aspirin"]], batch_size=0)
    # It read "must be a positive integer, got np.int64(8)", a contradiction.
    with pytest.raises(ConfigError, match=r"^batch_size must be a positive integer, got "
                                          r"np.int64\(8\) \(int64, not a Python int: give "
                                          r"int\(...\)\)$"):
        ner.annotate([NOTE], batch_size=np.int64(8))
    # A lone surrogate (from JSON's "\ud800") reaches the model as U+FFFD, as in
    # annotate; TensorFlow refused it, and its error quoted every token of the batch.
    assert ner.tag([["Smith\ud800", "fever"]]) == ner.tag([["Smith\ufffd", "fever"]])


@pytest.mark.parametrize("runtime", ["keras", "saved_model"])
def test_an_empty_token_is_refused_not_taken_for_padding(model_base, runtime):
    ner = ClinicalNER.load("clinical" if runtime == "keras" else model_base)
    # It was: one tag for ["", "pain"], two for ["chest", "", "pain"].
    for sentences, position in (([["", "pain"]], r"\[0\]\[0\]"),
                                ([["fever"], ["chest", "", "pain"]], r"\[1\]\[1\]"),
                                ([["chest", ""]], r"\[0\]\[1\]")):
        with pytest.raises(ValueError, match=rf'^sentences{position} is "": tokens must be '
                                             r"non-empty strings \(the empty string is "
                                             r"padding\)$"):
            ner.tag(sentences)
    tags, _ = ner.tag([["chest", "pain"]])[0]
    assert len(tags) == 2


@pytest.mark.parametrize("runtime", ["keras", "saved_model"])
def test_every_annotator_closes_and_serves_a_with_block(model_base, runtime):
    # close() was the LiteRT annotator's alone: code written for any annotator failed
    # with AttributeError on the others, and none took a with block.
    with ClinicalNER.load("clinical" if runtime == "keras" else model_base) as ner:
        expected = ner.annotate(NOTE)
    ner.close()
    assert ner.annotate(NOTE) == expected


@pytest.mark.parametrize("damage", ["other files", "weights cut short", "config damaged",
                                    "config no model"])
def test_a_model_file_that_is_a_whole_zip_but_no_keras_archive_is_named(tmp_path, capsys,
                                                                        damage):
    # A zip without Keras' config.json, or whose weights file is cut short, ended export (and
    # every load) with an internal error (KeyError, OSError: exit 70); a damaged config.json
    # inside it was named as weights that do not fit "models trained before 0.2.0".
    import zipfile

    from clinical_ner.cli import main
    from clinical_ner.pretrained import resolve_model_path

    model = tmp_path / "model"
    shutil.copytree(resolve_model_path("clinical"), model)
    with zipfile.ZipFile(model / "model.keras") as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    if damage == "other files":
        entries = {"notes.txt": b"not a model"}
    elif damage == "weights cut short":
        entries["model.weights.h5"] = entries["model.weights.h5"][:5000]
    else:
        entries["config.json"] = b'{"oops": ' if damage == "config damaged" else b"{}"
    with zipfile.ZipFile(model / "model.keras", "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    expected = f"{model}: model.keras is not a complete Keras archive (truncated or damaged)"
    with pytest.raises(ModelError, match=f"^{re.escape(expected)}"):
        ClinicalNER.load(model)
    assert main(["export", str(model), "--output", str(tmp_path / "out")]) == 4
    assert capsys.readouterr().err.startswith(f"clinical-ner export: error: {expected}")
    assert not (tmp_path / "out").exists()


def test_clinical_ner_is_the_factory_not_a_type():
    with pytest.raises(TypeError, match=r"ClinicalNER.load\(path\)"):
        ClinicalNER()


def test_a_keras_model_file_is_named_with_how_to_make_it_a_model_directory(tmp_path):
    # What model.save("tuned.keras") writes after model.fit: it was "not a clinical-ner model
    # directory or export (a file, not a folder); train one with 'clinical-ner train'".
    from clinical_ner.annotators.load import check_fine_tunable
    from clinical_ner.pretrained import bundled_model_path

    saved = tmp_path / "tuned.keras"
    shutil.copyfile(bundled_model_path("clinical") / "model.keras", saved)
    expected = (rf"^{saved}: a Keras model file, not a model directory; put it in a folder as "
                r"model.keras, beside the config.json and vocab.json of the model it was "
                r"trained from, and give that folder$")
    with pytest.raises(ModelError, match=expected):
        ClinicalNER.load(saved)
    with pytest.raises(ModelError, match=expected):
        check_fine_tunable(saved)
    other = tmp_path / "note.txt"
    other.write_text(NOTE, encoding="utf-8")
    with pytest.raises(ModelError, match=r"\(a file, not a folder\)"):
        ClinicalNER.load(other)
