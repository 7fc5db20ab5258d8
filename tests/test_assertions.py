"""Assertion status from the same model: data, training, the inference graph, evaluation."""
import collections
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from clinical_ner.export import signatures
from clinical_ner.config import NERConfig
from clinical_ner.text.document import Mention, Sentence
from clinical_ner.training.dataset import (
    assertion_classes, encode_assertions, encode_tags, training_dataset,
)
from clinical_ner.errors import ConfigError, DataFormatError, ModelError
from clinical_ner.model.features import Featurizer
from clinical_ner.formats import load_corpus
from clinical_ner.formats.corpora import check_assertion_map_sources
from clinical_ner.model.network import NO_ASSERTION, ClinicalNERModel, assertion_cross_entropy
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.evaluation.evaluate import corpus_sentences
from clinical_ner.training.starting_model import fine_tuning_model
from clinical_ner.training.trainer import train
from clinical_ner.model.vocab import Vocabulary
from helpers import (
    assert_same_documents, negation_sentences, tiny_assertion_config, write_i2b2,
)

# ---------------------------------------------------------------- data -> targets

def test_assertion_targets_cover_the_problem_tokens_and_mask_everything_else():
    sentence = Sentence(tokens=["No", "chest", "pain", "on", "x-ray", "."],
                        tags=["O", "B-problem", "I-problem", "O", "B-test", "O"],
                        assertions={(1, 2): "absent", (4, 4): "present"})
    plain = Sentence(tokens=["Cough", "."], tags=["B-problem", "O"])
    # The test's assertion is neither a class nor a target: only problems carry one.
    assert assertion_classes([sentence, plain]) == ["absent"]
    assert encode_assertions([sentence, plain], ["present", "absent"]) == [
        [NO_ASSERTION, 1, 1, NO_ASSERTION, NO_ASSERTION, NO_ASSERTION],
        [NO_ASSERTION, NO_ASSERTION]]
    assert assertion_classes([plain]) == []


def test_cross_entropy_is_masked_and_summed_per_sentence():
    probabilities = tf.constant([[[0.5, 0.5], [0.9, 0.1]], [[0.2, 0.8], [0.3, 0.7]]])
    targets = tf.constant([[NO_ASSERTION, 0], [1, NO_ASSERTION]])
    expected = -(np.log(0.9) + np.log(0.8)) / 2
    assert float(assertion_cross_entropy(probabilities, targets)) == pytest.approx(expected)
    nothing = tf.fill([2, 2], NO_ASSERTION)
    assert float(assertion_cross_entropy(probabilities, nothing)) == 0.0


def test_class_weights_scale_each_class_s_tokens():
    probabilities = tf.constant([[[0.5, 0.5], [0.9, 0.1]], [[0.2, 0.8], [0.3, 0.7]]])
    targets = tf.constant([[NO_ASSERTION, 0], [1, NO_ASSERTION]])
    expected = -(2.0 * np.log(0.9) + 0.5 * np.log(0.8)) / 2
    assert float(assertion_cross_entropy(probabilities, targets, [2.0, 0.5])) == pytest.approx(
        expected)


def test_balanced_class_weights_come_from_the_training_problems(tmp_path):
    sentences = negation_sentences(30, seed=5)
    data = write_i2b2(tmp_path / "data", sentences)
    counts = collections.Counter(assertion for _, concepts in sentences
                                 for *_, label, assertion in concepts if label == "problem")
    lines = []
    config = tiny_assertion_config(epochs=1)
    for rule in ("balanced", "none"):
        train(data, tmp_path / rule, config=config.replace(assertion_class_weights=rule),
              progress=False, emit=lines.append)
    weighted = keras.saving.load_model(tmp_path / "balanced" / "model.keras", safe_mode=True)
    total = sum(counts.values())
    expected = [total / (len(counts) * counts[name]) for name in weighted.assertions]
    assert len(counts) > 1 and len(set(expected)) > 1
    assert weighted.get_config()["assertion_class_weights"] == pytest.approx(expected)
    assert any(line.startswith("assertion class weights (balanced): ") for line in lines)
    plain = keras.saving.load_model(tmp_path / "none" / "model.keras", safe_mode=True)
    assert plain.get_config()["assertion_class_weights"] == []
    losses = [json.loads((tmp_path / rule / "training_log.jsonl").read_text())["loss"]
              for rule in ("balanced", "none")]
    assert losses[0] != losses[1]


def test_the_dataset_carries_assertion_targets_padded_as_masked():
    sentences = [Sentence(tokens=["No", "fever"], tags=["O", "B-problem"],
                          assertions={(1, 1): "absent"}),
                 Sentence(tokens=["Cough", "today", "."], tags=["B-problem", "O", "O"])]
    vocab = Vocabulary(["", "<unk>", "no", "fever"], ["", "<unk>"],
                       ["O", "B-problem", "I-problem"], ["absent"])
    dataset = training_dataset(
        sentences, encode_tags(sentences, vocab.tags, "bio"), Featurizer(vocab.words, vocab.chars, 5),
        batch_size=4, use_casing=True, shuffle_seed=None, word_dropout=0.0,
        bucket_boundaries=(10,), assertion_ids=encode_assertions(sentences, vocab.assertions))
    (features, (tags, assertions)), = list(dataset)
    assert tags.numpy().tolist() == [[0, 1, 0], [1, 0, 0]]
    assert assertions.numpy().tolist() == [[-1, 0, -1], [-1, -1, -1]]


# ---------------------------------------------------------------- the model

def small_model(assertions, head="shared"):
    settings = NERConfig(word_dim=4, char_dim=3, char_filters=4, lstm_units=3, casing_dim=2,
                         tag_scheme="bio", assertion_head=head, assertion_lstm_units=2)
    vocab = Vocabulary(words=[""] * 20, chars=[""] * 10, tags=["O", "B-problem", "I-problem"],
                       assertions=assertions)
    return ClinicalNERModel.from_settings(settings, vocab)


INPUTS = {"word_ids": np.array([[3, 4, 0]]), "char_ids": np.array([[[2, 3], [4, 0], [0, 0]]]),
          "casing_ids": np.array([[3, 3, 0]])}


@pytest.mark.parametrize("head", ["shared", "lstm"])
def test_a_model_with_assertions_survives_a_keras_save_and_load(tmp_path, head):
    keras.utils.set_random_seed(1)
    model = small_model(["present", "absent", "possible"], head)
    emissions, probabilities = model(INPUTS)
    assert emissions.shape == (1, 3, 3) and probabilities.shape == (1, 3, 3)
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, rtol=1e-5)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.get_config() == model.get_config()
    assert loaded.assertions == ["present", "absent", "possible"]
    for before, after in zip(model(INPUTS), loaded(INPUTS)):
        np.testing.assert_allclose(before, after, atol=1e-6)


def test_without_assertions_the_model_is_the_tagger_alone_with_the_same_weights():
    keras.utils.set_random_seed(1)
    plain = small_model([])
    keras.utils.set_random_seed(1)
    with_head = small_model(["present", "absent"])
    assert "assertion_probabilities" not in [layer.name for layer in plain.layers]
    assert plain(INPUTS).shape == (1, 3, 3)  # one output, as before assertions
    tagger_weights = {w.path: w.numpy() for w in plain.weights}
    for weight in with_head.weights:
        if weight.path in tagger_weights:
            np.testing.assert_array_equal(weight.numpy(), tagger_weights[weight.path])


def test_data_without_assertions_trains_exactly_as_before(tmp_path):
    """Same seed, same data: no assertion output and the very weights of a run without them."""
    sentences = negation_sentences(30, seed=5)
    stripped = [(tokens, [(f, l, label, None) for f, l, label, _ in concepts])
                for tokens, concepts in sentences]
    data = write_i2b2(tmp_path / "plain", stripped)
    (data / "ast" / "note.ast").unlink()
    config = tiny_assertion_config(epochs=2)
    train(data, tmp_path / "a", config=config, progress=False, emit=lambda _: None)
    train(data, tmp_path / "b", config=config, progress=False, emit=lambda _: None)
    vocab = json.loads((tmp_path / "a" / "vocab.json").read_text())
    assert vocab["assertions"] == []
    a = keras.saving.load_model(tmp_path / "a" / "model.keras", safe_mode=True)
    b = keras.saving.load_model(tmp_path / "b" / "model.keras", safe_mode=True)
    assert not any(layer.name.startswith("assertion") for layer in a.layers)
    for left, right in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(left, right)


@pytest.mark.parametrize("head", ["shared", "lstm"])
def test_a_head_that_does_not_train_the_tagger_leaves_its_weights_as_without_assertions(
        tmp_path, head):
    """assertion_trains_tagger=False: same seed, same data, the tagger's very weights.

    A clip norm that every step reaches: the head's gradients are clipped
    apart from the tagger's, or they would shrink its steps.
    """
    sentences = negation_sentences(30, seed=5)
    with_assertions = write_i2b2(tmp_path / "with", sentences)
    without = write_i2b2(tmp_path / "without", sentences)
    (without / "ast" / "note.ast").unlink()
    config = tiny_assertion_config(epochs=2, clip_norm=1e-3).replace(
        assertion_head=head, assertion_trains_tagger=False)
    train(with_assertions, tmp_path / "a", config=config, progress=False, emit=lambda _: None)
    train(without, tmp_path / "b", config=config, progress=False, emit=lambda _: None)
    a = keras.saving.load_model(tmp_path / "a" / "model.keras", safe_mode=True)
    b = keras.saving.load_model(tmp_path / "b" / "model.keras", safe_mode=True)
    assert a.assertions and not b.assertions
    assert a.get_config()["assertion_trains_tagger"] is False
    for layer in b.layers:
        for left, right in zip(a.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(left, right, err_msg=layer.name)
    assert sum(len(layer.get_weights()) for layer in b.layers) > 0


@pytest.mark.slow
def test_a_head_that_does_not_train_the_tagger_exports_to_every_runtime(tmp_path):
    """Its stop-gradient is training-only: the SavedModel (core ops) and LiteRT give Keras' answers."""
    pytest.importorskip("ai_edge_litert", reason="the [litert] extra is not installed")
    from clinical_ner import ClinicalNER
    from clinical_ner.export.litert import export_litert

    data = write_i2b2(tmp_path / "data", negation_sentences(60, seed=5))
    config = tiny_assertion_config(epochs=4).replace(
        assertion_head="lstm", assertion_lstm_units=8, assertion_trains_tagger=False)
    train(data, tmp_path / "model", config=config, progress=False, emit=lambda _: None)
    ner = ClinicalNER.load(tmp_path / "model")
    texts = ["No rash was seen. She has cough on the x-ray.", "Possible fever."]
    expected = ner.annotate(texts)
    assert any(entity.assertion for document in expected for entity in document)
    exported = ClinicalNER.load(ner.export(tmp_path / "export", 1))
    lite = ClinicalNER.load(export_litert(tmp_path / "model", tmp_path / "litert"))
    for runtime in (exported, lite):
        assert runtime.assertion_classes == ner.assertion_classes
        assert_same_documents(runtime.annotate(texts), expected)


# ---------------------------------------------------------------- training end to end

@pytest.mark.slow
def test_a_tiny_model_learns_that_no_x_is_absent(negation_model):
    output, messages = negation_model
    assert json.loads((output / "vocab.json").read_text())["assertions"] == [
        "present", "absent", "possible"]
    assert any("assertions: present, absent, possible" in m for m in messages)
    ner = KerasAnnotator.load(output)
    text = "No wheezing was seen. She has edema on the biopsy."
    wheezing, edema = text.index("wheezing"), text.index("edema")
    result = ner.classify_assertions(text, [(wheezing, wheezing + 8), (edema, edema + 5)])
    assert [name for name, _ in result] == ["absent", "present"]
    assert all(0.5 < confidence <= 1.0 for _, confidence in result)
    # annotate's graph gives every problem the same rule's assertion, tests none.
    outputs = ner.module.annotate_text(tf.constant([signatures.encode_text(text)]))
    labels = [v.decode() for v in outputs[signatures.ENTITY_LABEL].numpy()[0]]
    found = [v.decode() for v in outputs[signatures.ENTITY_ASSERTION].numpy()[0]]
    confidences = outputs[signatures.ENTITY_ASSERTION_CONFIDENCE].numpy()[0]
    assert labels == ["problem", "problem", "test"]
    assert found == ["absent", "present", ""]
    np.testing.assert_allclose(confidences[:2], [c for _, c in result], atol=1e-5)
    assert confidences[2] == 0.0


@pytest.mark.slow
def test_classify_assertions_checks_its_spans(negation_model):
    ner = KerasAnnotator.load(negation_model[0])
    with pytest.raises(ValueError, match="text 0, span 1"):
        ner.classify_assertions("No rash.", [(3, 7), (5, 40)])
    with pytest.raises(ValueError, match="covers no token"):
        ner.classify_assertions("No  rash.", [(2, 3)])
    # Batches: one list of spans per text, in the texts' order.
    texts = ["No rash was seen.", "Possible cough.", "Nothing here."]
    result = ner.classify_assertions(texts, [[(3, 7)], [(9, 14)], []])
    assert [[name for name, _ in row] for row in result] == [["absent"], ["possible"], []]


@pytest.mark.slow
def test_a_mention_of_separators_only_gets_no_assertion_and_counts_as_wrong(negation_model):
    # The i2b2 reader keeps a zero-width space as a token (MACCROBAT has some);
    # the model's tokenizer does not, so a problem predicted there covers no
    # token of the model: scored as wrong, where it used to stop the evaluation.
    from clinical_ner.evaluation.evaluate import evaluate_assertions

    ner = KerasAnnotator.load(negation_model[0])
    sentence = Sentence(tokens=["No", "rash", "\u200b", "."], tags=["O", "B-problem", "O", "O"],
                        assertions={(1, 1): "absent"})
    gold = [[Mention(1, 1, "problem")]]
    predicted = [[Mention(1, 1, "problem"), Mention(2, 2, "problem")]]
    report = evaluate_assertions(ner, [sentence], gold, predicted)
    assert report["gold_concepts"]["concepts"] == 1
    assert "" not in report["gold_concepts"]["per_class"]
    end_to_end = report["end_to_end"]
    # The zero-width problem is a prediction, and never a correct one.
    assert (end_to_end["predicted"], end_to_end["gold"]) == (2, 1)
    assert end_to_end["precision"] <= 0.5


def test_end_to_end_leaves_out_predictions_on_gold_problems_without_an_assertion():
    from clinical_ner.evaluation.evaluate import evaluate_assertions

    class AlwaysAbsent:
        def classify_assertions(self, texts, spans):
            return [[("absent", 0.9)] * len(row) for row in spans]

    # Audit: "cough" (its .ast leaves it out) and the note without an .ast file
    # counted as wrong predictions: end-to-end precision 0.33 for a model right on all.
    problem = "B-problem"
    sentences = [Sentence(tokens=["No", "rash", ",", "cough"], tags=["O", problem, "O", problem],
                          assertions={(1, 1): "absent"}),
                 Sentence(tokens=["She", "has", "fever"], tags=["O", "O", problem])]
    gold = [[Mention(1, 1, "problem"), Mention(3, 3, "problem")], [Mention(2, 2, "problem")]]
    # The tagger finds all three, and one problem that is not gold (a wrong span).
    predicted = [gold[0], gold[1] + [Mention(0, 0, "problem")]]
    end_to_end = evaluate_assertions(AlwaysAbsent(), sentences, gold, predicted)["end_to_end"]
    assert (end_to_end["correct"], end_to_end["predicted"], end_to_end["gold"]) == (1, 2, 1)


def test_a_model_without_assertions_refuses_to_classify_them(tmp_path):
    class NoAssertions(KerasAnnotator):
        def __init__(self):
            self.assertion_classes = []
    with pytest.raises(ModelError, match="without assertions"):
        NoAssertions().classify_assertions("No rash.", [(3, 7)])


# ---------------------------------------------------------------- reading assertions

def test_an_ast_value_outside_the_i2b2_classes_names_its_file_and_line(tmp_path):
    folder = write_i2b2(tmp_path / "data", [(["No", "fever", "."], [(1, 1, "problem", "absent")]),
                                            (["Cough", "."], [(0, 0, "problem", "present")])])
    ast = folder / "ast" / "note.ast"
    ast.write_text(ast.read_text().replace('a="present"', 'a="negated"'))
    with pytest.raises(DataFormatError) as error:
        load_corpus(folder)
    message = str(error.value)
    assert f"{ast}:2" in message and "'negated'" in message and "absent" in message
    assert "cough" not in message.lower()  # never the note's text


BRAT_TEXT = "No fever was seen. She has a cough. Possible rash on CT."
BRAT_ANN = """T1\tSign_symptom 3 8\tfever
E1\tSign_symptom:T1
A1\tPOLARITY E1 NEG
T2\tSign_symptom 29 34\tcough
T3\tDisease_disorder 45 49\trash
A2\tPOLARITY T3 UNCERTAIN
T4\tDiagnostic_procedure 53 55\tCT
E2\tDiagnostic_procedure:T4
A3\tPOLARITY E2 NEG
A4\tTREND E1 INC
"""
LABELS = {"Sign_symptom": "problem", "Disease_disorder": "problem",
          "Diagnostic_procedure": "test"}
MACCROBAT_MAP = json.loads(
    (Path(__file__).resolve().parent.parent / "training" / "configs"
     / "maccrobat-assertion-map.json").read_text())


def write_brat(folder, ann):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "note.txt").write_text(BRAT_TEXT)
    (folder / "note.ann").write_text(ann)
    return folder


def test_brat_attributes_become_assertions_through_events_to_their_triggers(tmp_path):
    corpus = load_corpus(write_brat(tmp_path / "brat", BRAT_ANN), label_map=LABELS,
                         assertion_map=MACCROBAT_MAP)
    found = {}
    for sentence in corpus.documents[0].sentences:
        for (first, last), assertion in sentence.assertions.items():
            found[" ".join(sentence.tokens[first:last + 1])] = assertion
    # On the event (fever), on the text-bound annotation (rash), none (cough: present
    # by default); the test's attribute gives no assertion (only problems carry one);
    # TREND is not in the map and is ignored.
    assert found == {"fever": "absent", "cough": "present", "rash": "possible"}
    # Without a map, attributes are not read.
    plain = load_corpus(tmp_path / "brat", label_map=LABELS)
    assert not any(s.assertions for s in plain.documents[0].sentences)


def test_brat_attributes_of_the_older_m_prefix_become_assertions_too(tmp_path):
    # Audit: BioNLP-style "M1<TAB>Negation E1" lines were skipped: the rash trained as
    # present, and a map of M attributes alone was refused as naming none the data has.
    ann = ("T1\tSign_symptom 3 8\tfever\nE1\tSign_symptom:T1\nM1\tNegation E1\n"
           "T2\tSign_symptom 29 34\tcough\nT3\tDisease_disorder 45 49\trash\n"
           "M2\tSpeculation T3\n")
    data = write_brat(tmp_path / "brat", ann)
    speculation = {"Negation": "absent", "Speculation": "possible"}
    check_assertion_map_sources(speculation, [data], labels={"problem"})
    corpus = load_corpus(data, label_map=LABELS, assertion_map=speculation)
    assert [assertion for sentence in corpus.documents[0].sentences
            for assertion in sentence.assertions.values()] == ["absent", "present", "possible"]


@pytest.mark.parametrize("ann, line, problem", [
    (BRAT_ANN.replace("UNCERTAIN", "SOMETIMES"), 6, "POLARITY value 'SOMETIMES' is not in"),
    (BRAT_ANN + "A5\tPOLARITY E9 NEG\n", 11, "on E9, which is not defined"),
    (BRAT_ANN + "A5\tPOLARITY T1 POS\n", 11, "makes T1 present, but line 3 made it absent"),
    # Audit H finding 17: both were dropped without a word.
    (BRAT_ANN + "E3\tSign_symptom:T9\nA5\tPOLARITY E3 NEG\n", 12,
     "on E3, whose trigger T9 is not defined"),
    (BRAT_ANN + "R1\tMODIFY Arg1:T1 Arg2:T2\nA5\tPOLARITY R1 NEG\n", 12,
     "on R1, which is neither an entity (T) nor an event (E)"),
])
def test_brat_attribute_errors_name_the_file_and_line(tmp_path, ann, line, problem):
    folder = write_brat(tmp_path / "brat", ann)
    with pytest.raises(DataFormatError) as error:
        load_corpus(folder, label_map=LABELS, assertion_map=MACCROBAT_MAP)
    message = str(error.value)
    assert f"note.ann:{line}" in message and problem in message
    assert "fever" not in message and "cough" not in message


def test_an_assertion_map_must_target_assertion_classes_and_brat(tmp_path):
    folder = write_brat(tmp_path / "brat", BRAT_ANN)
    with pytest.raises(ConfigError, match="'negative', which is not an assertion class"):
        load_corpus(folder, label_map=LABELS, assertion_map={"POLARITY": {"NEG": "negative"}})
    i2b2 = write_i2b2(tmp_path / "i2b2", [(["Cough", "."], [(0, 0, "problem", "present")])])
    with pytest.raises(ConfigError, match="brat input only"):
        load_corpus(i2b2, assertion_map=MACCROBAT_MAP)


def test_an_assertion_map_that_reads_nothing_is_refused_before_training(tmp_path):
    # Each of these trained a model whose every problem was "present", without a word.
    folder = write_brat(tmp_path / "brat", BRAT_ANN)
    typo = {"POLARITIY": MACCROBAT_MAP["POLARITY"]}
    cases = [
        (typo, LABELS, "--assertion-map names attribute POLARITIY, which the data does not "
                       "have (it has POLARITY, TREND)"),
        ({}, LABELS, "--assertion-map maps no attribute"),
        (MACCROBAT_MAP, {"Diagnostic_procedure": "test"},
         "gives assertions to problems, but the data has no problem label"),
    ]
    for assertion_map, label_map, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            train(folder, tmp_path / "never", config=NERConfig(epochs=1),
                  label_map=label_map, assertion_map=assertion_map, progress=False)
        assert not (tmp_path / "never").exists()
    # A test split may lack one of the map's attributes (no speculation in it), not all.
    both = {**MACCROBAT_MAP, "SPECULATION": {"YES": "possible"}}
    check_assertion_map_sources(both, [folder], labels={"problem"}, training=False)
    with pytest.raises(ConfigError, match="names attribute SPECULATION"):
        check_assertion_map_sources(both, [folder], labels={"problem"})


def test_a_brat_corpus_of_a_corpus_file_trains_assertions_from_its_assertion_map(tmp_path):
    from clinical_ner.formats.corpora import read_corpus_file

    # Audit M: a corpus file had no assertion_map, and --assertion-map is refused beside it.
    write_brat(tmp_path / "brat", BRAT_ANN)
    write_brat(tmp_path / "dev", BRAT_ANN)
    (tmp_path / "map.json").write_text(json.dumps(MACCROBAT_MAP), encoding="utf-8")
    corpus_file = tmp_path / "c.toml"

    def corpora(assertion_map: str):
        corpus_file.write_text(
            'labels = ["problem", "test"]\n[[corpus]]\nname = "b"\ntrain = "brat"\ndev = "dev"\n'
            f'format = "brat"\nassertion_map = {assertion_map}\nlabel_map = {{ '
            + ", ".join(f'{k} = "{v}"' for k, v in LABELS.items()) + " }\n", encoding="utf-8")
        return read_corpus_file(corpus_file)

    corpus_set = corpora('"map.json"')  # relative to the corpus file
    assert corpus_set.corpora[0].to_dict()["assertion_map"] == str(tmp_path / "map.json")
    train(None, tmp_path / "model", config=tiny_assertion_config(epochs=1), progress=False,
          emit=lambda _: None, corpora=corpus_set)
    assert json.loads((tmp_path / "model" / "vocab.json").read_text())["assertions"]
    # The card's scores on the dev corpus read it with its assertion map too (they had none).
    assert "| assertion | precision | recall | F1 | gold | predicted |" in (
        tmp_path / "model" / "MODEL_CARD.md").read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{corpus_file}: corpus b: assertion_map: ")):
        corpora('"missing.json"')
    with pytest.raises(ConfigError, match="corpus b: assertion_map must be the path of a JSON"):
        corpora("1")
    (tmp_path / "typo.json").write_text(json.dumps({"POLARITIY": MACCROBAT_MAP["POLARITY"]}))
    with pytest.raises(ConfigError, match=re.escape(
            f"{corpus_file}: corpus b: assertion_map names attribute POLARITIY, which the data "
            "does not have")):
        train(None, tmp_path / "never", config=tiny_assertion_config(epochs=1),
              progress=False, corpora=corpora('"typo.json"'))


def test_the_maccrobat_map_reads_the_assertions_of_the_i2b2_conversion(shared_data):
    """The shipped map on MACCROBAT's brat files gives the counts of its .ast files."""
    label_map = {"Sign_symptom": "problem", "Disease_disorder": "problem",
                 "Diagnostic_procedure": "test", "Therapeutic_procedure": "treatment",
                 "Medication": "treatment"}
    corpus = load_corpus(shared_data / "maccrobat" / "brat", label_map=label_map,
                         assertion_map=MACCROBAT_MAP)
    brat_counts = collections.Counter(a for d in corpus.documents for s in d.sentences
                                      for a in s.assertions.values())
    ast_counts = collections.Counter(
        a for split in ("train", "dev")
        for d in load_corpus(shared_data / "maccrobat-i2b2" / split).documents
        for s in d.sentences for a in s.assertions.values())
    assert brat_counts == ast_counts == {"present": 3297, "absent": 700, "possible": 172}


# ---------------------------------------------------------------- evaluate, card, export, resume

@pytest.mark.slow
def test_evaluate_adds_the_assertion_report(negation_model, negation_data, tmp_path, capsys):
    from clinical_ner.cli import main

    scores = tmp_path / "scores.json"
    assert main(["evaluate", str(negation_model[0]), "--data", str(negation_data[1]),
                 "--json", str(scores)]) == 0
    printed = capsys.readouterr().out
    assert "assertion of the gold problems" in printed and "end to end" in printed
    report = json.loads(scores.read_text())["assertion"]
    gold_concepts = report["gold_concepts"]
    assert set(gold_concepts) >= {"accuracy", "per_class", "macro_f1"}
    assert set(gold_concepts["per_class"]) >= {"present", "absent"}
    for values in gold_concepts["per_class"].values():
        assert set(values) >= {"precision", "recall", "f1", "gold", "predicted"}
    assert sum(v["gold"] for v in gold_concepts["per_class"].values()) == 40  # one per sentence
    assert gold_concepts["accuracy"] > 0.9
    assert set(report["end_to_end"]) >= {"precision", "recall", "f1"}
    assert report["end_to_end"]["gold"] == 40 and report["end_to_end"]["f1"] > 0.9


@pytest.fixture(scope="module")
def model_without_assertions(negation_data, tmp_path_factory):
    """``(model, messages)``: trained on negation_data's training notes without their .ast
    files, beside its dev notes with them; tests only read it.

    One run for two tests: the notes its training says, and a model without assertions.
    """
    import shutil

    root = tmp_path_factory.mktemp("without-assertions")
    plain = shutil.copytree(negation_data[0], root / "plain",
                            ignore=shutil.ignore_patterns("ast"))
    messages = []
    train(plain, root / "model", dev_path=negation_data[1],
          config=tiny_assertion_config(epochs=1), progress=False, emit=messages.append)
    return root / "model", messages


@pytest.mark.slow
def test_evaluate_says_when_a_model_without_assertions_gives_no_assertion_scores(
        negation_data, model_without_assertions, tmp_path, capsys):
    from clinical_ner.cli import main

    # Audit M: neither an assertion section nor a word of why.
    model = model_without_assertions[0]
    assert json.loads((model / "vocab.json").read_text())["assertions"] == []
    assert main(["evaluate", str(model), "--data", str(negation_data[1])]) == 0
    captured = capsys.readouterr()
    assert "assertion" not in captured.out
    assert (f"note: {negation_data[1]}: its problems carry assertions, but the model has none: "
            "no assertion scores\n") in captured.err
    # An explicit --assertion-map asks for them: an error.
    assertion_map = tmp_path / "map.json"
    assertion_map.write_text(json.dumps(MACCROBAT_MAP), encoding="utf-8")
    assert main(["evaluate", str(model), "--data", str(write_brat(tmp_path / "brat", BRAT_ANN)),
                 "--label-map", ",".join(f"{k}={v}" for k, v in LABELS.items()),
                 "--assertion-map", str(assertion_map)]) == 2
    assert capsys.readouterr().err.endswith(
        f"error: --assertion-map asks for assertion scores, but the model {model} has no "
        "assertions\n")


@pytest.mark.slow
def test_training_and_evaluate_say_when_the_data_has_an_assertion_class_the_model_lacks(
        negation_data, tmp_path, capsys):
    from clinical_ner.cli import main

    # Audit: a model of present and absent on data with possible scored every possible
    # problem as wrong without a word, where labels the model lacks get a note; on dev data
    # in training too, at every epoch.
    two_classes = write_i2b2(tmp_path / "two", [
        sentence for sentence in negation_sentences(30, seed=4)
        if sentence[1][0][3] != "possible"])
    model = tmp_path / "model"
    messages = []
    train(two_classes, model, dev_path=negation_data[1], config=tiny_assertion_config(epochs=1),
          progress=False, emit=messages.append)
    note = (f"note: {negation_data[1]}: the model does not know the assertion class(es) "
            "possible (it has present, absent): their problems' assertions score as wrong")
    assert messages.count(note) == 1
    assert main(["evaluate", str(model), "--data", str(negation_data[1])]) == 0
    assert note + "\n" in capsys.readouterr().err
    assert main(["evaluate", str(model), "--data", str(two_classes)]) == 0
    assert "assertion class" not in capsys.readouterr().err


def test_card_checks_its_assertion_map_as_evaluate_does(negation_model, tmp_path, capsys,
                                                        monkeypatch):
    import shutil

    from clinical_ner.cli import main
    from clinical_ner.formats import brat

    # Audit: a misspelt attribute put every problem on the card as gold present, and
    # --assertion-map without --data was ignored; evaluate refuses both.
    model = shutil.copytree(negation_model[0], tmp_path / "model")
    card = (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"POLARITIY": MACCROBAT_MAP["POLARITY"]}), encoding="utf-8")
    data = ["--data", str(write_brat(tmp_path / "brat", BRAT_ANN)),
            "--label-map", ",".join(f"{k}={v}" for k, v in LABELS.items())]
    for arguments, error in [
            (data, "--assertion-map names attribute POLARITIY, which the data does not have "
                   "(it has POLARITY, TREND)"),
            ([], "--assertion-map needs --data (the data it reads assertions of)")]:
        assert main(["card", str(model), *arguments, "--assertion-map", str(typo)]) == 2
        assert capsys.readouterr().err.endswith(f"error: {error}\n")
    assert (model / "MODEL_CARD.md").read_text(encoding="utf-8") == card
    # A good map: the data read once (its check read it a second time).
    reads, read_brat = [], brat.read_brat
    monkeypatch.setattr(brat, "read_brat", lambda *args, **options: (
        reads.append(args[0]), read_brat(*args, **options))[1])
    good = tmp_path / "map.json"
    good.write_text(json.dumps(MACCROBAT_MAP), encoding="utf-8")
    assert main(["card", str(model), *data, "--assertion-map", str(good)]) == 0
    assert len(reads) == 1


def test_the_saved_model_classifies_assertions_with_core_ops(negation_model, tmp_path):
    """export_saved_model checks core ops and TF Serving's restore; the signatures answer."""
    ner = KerasAnnotator.load(negation_model[0])
    version = ner.export(tmp_path / "export", 1)
    loaded = tf.saved_model.load(str(version))
    text = "No rash was seen. She has cough on the x-ray."
    classify = loaded.signatures[signatures.CLASSIFY_ASSERTIONS]
    out = classify(text=tf.constant([text.encode()]),
                   span_start=tf.constant([[3, 26, -1]], tf.int32),
                   span_end=tf.constant([[7, 31, -1]], tf.int32))
    assert [v.decode() for v in out[signatures.ASSERTION].numpy()[0]] == ["absent", "present", ""]
    expected = ner.classify_assertions(text, [(3, 7), (26, 31)])
    np.testing.assert_allclose(out[signatures.ASSERTION_CONFIDENCE].numpy()[0][:2],
                               [c for _, c in expected], atol=1e-5)
    entities = loaded.signatures[signatures.SERVING_DEFAULT](text=tf.constant([text.encode()]))
    labels = [v.decode() for v in entities[signatures.ENTITY_LABEL].numpy()[0]]
    found = [v.decode() for v in entities[signatures.ENTITY_ASSERTION].numpy()[0]]
    assert [a for label, a in zip(labels, found) if label == "problem"] == ["absent", "present"]
    assert all(a == "" for label, a in zip(labels, found) if label != "problem")


def test_the_saved_model_refuses_spans_it_would_answer_with_a_guess(negation_model, tmp_path):
    """Stock TF Serving runs the signature alone: bad spans fail there, naming the element."""
    loaded = tf.saved_model.load(str(KerasAnnotator.load(negation_model[0]).export(tmp_path)))
    classify = loaded.signatures[signatures.CLASSIFY_ASSERTIONS]
    text = tf.constant(["No rash was seen.".encode()])

    def call(starts, ends, texts=text):
        return classify(text=texts, span_start=tf.constant(starts, tf.int32),
                        span_end=tf.constant(ends, tf.int32))

    refused = [  # each was answered: [3, 99) "absent", the others ""
        ([[3, 3]], [[7, 99]], r"element \[0, 1\]: span \[3, 99\) is neither -1, -1 \(padding\) "
                              r"nor 0 <= start < end <= 17"),
        ([[7]], [[3]], r"element \[0, 0\]: span \[7, 3\)"),
        ([[-1]], [[7]], r"element \[0, 0\]: span \[-1, 7\)"),
        ([[3, 8]], [[7]], r"must have the same shape, got \[1 2\] and \[1 1\]"),
    ]
    for starts, ends, message in refused:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call(starts, ends)
    with pytest.raises(tf.errors.InvalidArgumentError, match="got 1 rows for 2 documents"):
        call([[3]], [[7]], tf.constant([b"No rash.", b"No rash."]))
    assert [v.decode() for v in call([[3, -1]], [[7, -1]])[signatures.ASSERTION].numpy()[0]] \
        == ["absent", ""]


@pytest.mark.slow
def test_fine_tuning_on_data_without_assertions_keeps_the_assertion_output(
        negation_model, tmp_path):
    base = negation_model[0]
    sentences = [(tokens, [(f, l, label, None) for f, l, label, _ in concepts])
                 for tokens, concepts in negation_sentences(20, seed=9)]
    data = write_i2b2(tmp_path / "plain", sentences)
    (data / "ast" / "note.ast").unlink()
    messages = []
    train(data, tmp_path / "tuned", init_from=base, config=NERConfig.load(base).replace(epochs=1),
          progress=False, emit=messages.append)
    assert any("assertion output (present, absent, possible) is kept as it was" in m
               for m in messages)
    before = keras.saving.load_model(base / "model.keras", safe_mode=True)
    after = keras.saving.load_model(tmp_path / "tuned" / "model.keras", safe_mode=True)
    for old, new in zip(before.get_layer("assertion_probabilities").get_weights(),
                        after.get_layer("assertion_probabilities").get_weights()):
        np.testing.assert_array_equal(old, new)
    assert json.loads((tmp_path / "tuned" / "vocab.json").read_text())["assertions"] == [
        "present", "absent", "possible"]
    # The card listed only this data as what the model learnt from, as if its assertions had
    # been trained on it too.
    card = (tmp_path / "tuned" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert ("The assertion output (present, absent, possible) is the base model's as it was: "
            "the data above has no assertions (or one class only, which teaches nothing), so "
            "it was not trained on it") in card
    base_card = (base / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "is the base model's as it was" not in base_card


@pytest.mark.slow
def test_data_of_one_assertion_class_trains_no_assertion_output(negation_model, tmp_path):
    # Audit: every problem present gave an output of one class, which answered present at
    # confidence 1.0 for "No fever was seen ." too; fine-tuning taught the base's output that.
    sentences = [(tokens, [(f, l, label, assertion and "present")
                           for f, l, label, assertion in concepts])
                 for tokens, concepts in negation_sentences(20, seed=9)]
    data = write_i2b2(tmp_path / "present", sentences)
    messages = []
    train(data, tmp_path / "fresh", config=tiny_assertion_config(epochs=1), progress=False,
          emit=messages.append)
    one_class = ("assertions: every problem of the data is present, and one class teaches "
                 "nothing but to answer it for every problem: the model has no assertion output")
    assert one_class in messages
    assert KerasAnnotator.load(tmp_path / "fresh").vocab.assertions == []
    base = negation_model[0]
    messages.clear()
    train(data, tmp_path / "tuned", init_from=base, config=NERConfig.load(base).replace(epochs=1),
          progress=False, emit=messages.append)
    assert any(m.startswith("assertions: every problem of the data is present, and one class "
                            "teaches nothing but to answer it for every problem: the base "
                            "model's assertion output (present, absent, possible) is kept as it "
                            "was and not trained") for m in messages)
    before = keras.saving.load_model(base / "model.keras", safe_mode=True)
    after = keras.saving.load_model(tmp_path / "tuned" / "model.keras", safe_mode=True)
    for old, new in zip(before.get_layer("assertion_probabilities").get_weights(),
                        after.get_layer("assertion_probabilities").get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.slow
def test_training_data_without_assertions_beside_dev_data_with_them_says_so(
        negation_data, model_without_assertions, tmp_path):
    # Audit: training data whose .ast files were left behind gave a model without an
    # assertion output, and the dev data's assertions went unscored, without a word.
    messages = list(model_without_assertions[1])
    assert ("note: the dev data's problems carry assertions, but the training data's have "
            "none: the model has no assertion output, and the dev assertions are not "
            "scored") in messages
    # With them in both, no such note.
    messages.clear()
    train(negation_data[0], tmp_path / "asserted", dev_path=negation_data[1],
          config=tiny_assertion_config(epochs=1), progress=False, emit=messages.append)
    assert not any("have none" in message for message in messages)


@pytest.mark.slow
def test_labels_without_problem_give_no_assertion_output_and_say_so(negation_model, tmp_path):
    # Only problems carry assertions. Fine-tuned onto labels without problem, the base's
    # assertion output was kept though it could never answer; trained afresh, the data's
    # assertions were read and left unused without a word.
    base = negation_model[0]
    data = write_i2b2(tmp_path / "data", negation_sentences(20, seed=9))
    no_problem = {"problem": "test", "test": "test"}
    runs = [("tuned", dict(init_from=base, config=NERConfig.load(base).replace(
                epochs=1, assertion_cue_copies=0.5)),
             "the base model's (present, absent, possible) is dropped"),
            ("fresh", dict(config=tiny_assertion_config(epochs=1, assertion_cue_copies=0.5)),
             "the data's assertions are not used")]
    for name, options, consequence in runs:
        messages = []
        train(data, tmp_path / name, label_map=no_problem, progress=False,
              emit=messages.append, **options)
        assert (f"assertions: the labels (test) have no problem, and only problems carry "
                f"assertions: the model has no assertion output; {consequence}") in messages
        # The cued copies are of problems, for the assertion output: none.
        assert "assertion cues: 0 cued copies of training sentences (assertion_cue_copies " \
               "0.5)" in messages
        assert KerasAnnotator.load(tmp_path / name).vocab.assertions == []


def test_fine_tuning_on_a_new_assertion_class_keeps_the_classes_both_have(negation_model,
                                                                          tmp_path):
    base = negation_model[0]
    # "Possible" problems annotated as hypothetical: a class the base lacks.
    sentences = [(tokens, [(f, l, label, "hypothetical" if assertion == "possible" else assertion)
                           for f, l, label, assertion in concepts])
                 for tokens, concepts in negation_sentences(20, seed=9)]
    data = write_i2b2(tmp_path / "hypothetical", sentences)
    config = NERConfig.load(base)
    messages = []
    model, vocab = fine_tuning_model(
        base, config, corpus_sentences(load_corpus(data)),
        KerasAnnotator.load(base).vocab.tags, messages.append)
    assert vocab.assertions == ["present", "absent", "hypothetical"]
    # The whole assertion output was re-initialised, present and absent included.
    before = keras.saving.load_model(base / "model.keras", safe_mode=True)
    kernel, bias = model.get_layer("assertion_probabilities").get_weights()
    base_kernel, base_bias = before.get_layer("assertion_probabilities").get_weights()
    np.testing.assert_array_equal(kernel[:, :2], base_kernel[:, :2])
    np.testing.assert_array_equal(bias[:2], base_bias[:2])
    assert bias[2] == 0 and not any(np.allclose(kernel[:, 2], column) for column in base_kernel.T)
    assert any("the assertion output keeps the base model's weights for present, absent" in m
               for m in messages)


@pytest.mark.slow
def test_resume_with_assertions_equals_the_uninterrupted_run(negation_data, tmp_path):
    train_dir, dev_dir = negation_data
    config = tiny_assertion_config(epochs=3, assertion_head="lstm", assertion_lstm_units=4,
                                   assertion_class_weights="sqrt-balanced")
    quiet = dict(progress=False, emit=lambda _: None)
    train(train_dir, tmp_path / "whole", dev_path=dev_dir, config=config, **quiet)
    train(train_dir, tmp_path / "parts", dev_path=dev_dir, config=config.replace(epochs=2),
          **quiet)
    train(train_dir, tmp_path / "parts", dev_path=dev_dir, resume=True, config=config, **quiet)
    logs = [[json.loads(line) for line in (tmp_path / run / "training_log.jsonl").read_text()
             .splitlines()] for run in ("whole", "parts")]
    assert [e["loss"] for e in logs[0]] == [e["loss"] for e in logs[1]]
    assert all("dev_assertion_accuracy" in entry for entry in logs[0])
    card = (tmp_path / "whole" / "MODEL_CARD.md").read_text()
    assert "| assertion | precision | recall | F1 | gold | predicted |" in card
    assert "come from the dev data, the split that chose the epoch" in card
    # The uninterrupted run's card has the trainer's report of the kept epoch; where the
    # resumed run kept an epoch from before the resume (epoch 2 of 3 here), its card scored
    # model.keras afresh: the same figures.
    reports = [json.loads((tmp_path / run / "model_card.json").read_text())["evaluation"]
               ["report"] for run in ("whole", "parts")]
    assert reports[0] == reports[1]


def test_scores_of_labels_without_problem_have_no_assertion_scores(tmp_path):
    # Audit: `evaluate --label-map test=test` (or `card`) on data with assertions printed
    # "assertion of the gold problems (accuracy 0.0000, macro F1 0.0000)", of 0 concepts.
    from clinical_ner import ClinicalNER
    from clinical_ner.evaluation.evaluate import evaluate_sentences

    data = write_i2b2(tmp_path / "gold", [(["She", "has", "fever", "on", "the", "x-ray", "."],
                                           [(2, 2, "problem", "present"), (5, 5, "test", None)])])
    sentences = corpus_sentences(load_corpus(data))
    ner = ClinicalNER.load("clinical")
    assert evaluate_sentences(ner, sentences)["assertion"]["gold_concepts"]["concepts"] == 1
    assert "assertion" not in evaluate_sentences(ner, sentences, labels=["test"])
