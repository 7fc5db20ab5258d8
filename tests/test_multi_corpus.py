"""Training from several corpora that label different things (a corpus file, partial labels)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from clinical_ner.cli import main
from clinical_ner.config import NERConfig
from clinical_ner.text.document import Sentence
from clinical_ner.training.dataset import encode_allowed_tags, encode_tags, training_dataset
from clinical_ner.errors import ConfigError
from clinical_ner.model.features import Featurizer
from clinical_ner.formats import load_corpus
from clinical_ner.formats.conll import write_conll
from clinical_ner.formats.corpora import check_corpus_labels, check_label_map, read_corpus_file
from clinical_ner.model.network import ClinicalNERModel
from clinical_ner.training.multi_corpus import TrainingCorpora
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.model.tag_space import tag_inventory
from clinical_ner.training.trainer import train
from clinical_ner.model.vocab import Vocabulary

from helpers import REPO_ROOT

SAMPLE = REPO_ROOT / "samples" / "maccrobat-i2b2"
VECTORS = REPO_ROOT / "samples" / "embeddings" / "glove.6B.50d.sample.txt"
LABELS = ["problem", "test", "treatment"]


def write_corpus_file(folder, corpora: str, top: str = "") -> object:
    path = folder / "corpora.toml"
    path.write_text(f'labels = ["problem", "test", "treatment"]\n{top}\n{corpora}',
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_data):
    """The sample (i2b2, complete) and 60 NCBI sentences (CoNLL, Disease partial)."""
    folder = tmp_path_factory.mktemp("corpora")
    ncbi = load_corpus(shared_data / "ncbi-disease" / "dev.conll")
    ncbi.documents[0].sentences = ncbi.documents[0].sentences[:60]
    write_conll(folder / "ncbi.conll", ncbi.documents)
    write_corpus_file(folder, f'''select = {{ sample = 1.0 }}

[[corpus]]
name = "sample"
train = "{SAMPLE / 'train'}"
dev = "{SAMPLE / 'dev'}"

[[corpus]]
name = "ncbi"
train = "ncbi.conll"
dev = "ncbi.conll"
weight = 0.5
label_map = {{ Disease = "problem" }}
coverage = {{ problem = "partial" }}
''')
    return folder


# -- the corpus file ----------------------------------------------------------------------

def test_corpus_file_defaults_and_open_labels(data):
    corpora = read_corpus_file(data / "corpora.toml")
    sample, ncbi = corpora.corpora
    assert sample.coverage == dict.fromkeys(LABELS, "complete") and sample.open_labels() == []
    assert ncbi.coverage == {"problem": "partial", "test": "none", "treatment": "none"}
    assert ncbi.open_labels() == LABELS and ncbi.scored_labels() == ["problem"]
    assert ncbi.train == [data / "ncbi.conll"]  # relative to the file
    assert corpora.selection == {"sample": 1.0} and corpora.is_partly_labelled()
    check_corpus_labels(corpora)


@pytest.mark.parametrize("corpus, message", [
    ('label_map = { Disease = "disease" }',
     "corpus c: label_map maps Disease onto disease, which is not one of the model's labels"),
    ('coverage = { problem = "some" }', "corpus c: coverage of problem must be one of"),
    ('coverage = { finding = "partial" }', "corpus c: coverage names label finding"),
    ('label_map = { Disease = "problem" }\ncoverage = { problem = "none" }',
     "corpus c: label_map maps onto problem but its coverage is none"),
    # Audit: trained as none, but scored, so every test the model found in the corpus's dev
    # data was wrong (the dev F1 that chooses the epoch, and evaluate --corpus).
    ('label_map = { Disease = "problem" }\ncoverage = { test = "partial" }',
     "corpus c: its coverage of test is partial, but its label_map maps no label onto test; "
     "say none"),
    ("weight = 0", "corpus c: weight must be a finite number > 0 and at most 1000"),
    # NaN passed "<= 0" and failed at the first epoch, after the model was built;
    # infinity and huge weights overflowed the epoch's sentence count.
    ("weight = nan", "corpus c: weight must be a finite number > 0"),
    ("weight = inf", "corpus c: weight must be a finite number > 0"),
    ("weight = 1e12", "corpus c: weight must be a finite number > 0 and at most 1000"),
    ("weight = 1" + "0" * 400, "corpus c: weight must be a finite number > 0"),
    ("path = 'x'", "corpus c: unknown key(s) path"),
    # Audit M: a corpus that maps or covers nothing added sentences that taught nothing.
    ('label_map = { Disease = "", Chemical = "" }',
     "corpus c: label_map maps no label onto a model label"),
    ('coverage = { problem = "none", test = "none", treatment = "none" }',
     "corpus c: its coverage of every label is none"),
])
def test_corpus_file_mistakes_name_the_file_the_corpus_and_the_label(tmp_path, corpus, message):
    path = write_corpus_file(tmp_path, f'[[corpus]]\nname = "c"\ntrain = "x.conll"\n{corpus}\n')
    with pytest.raises(ConfigError) as error:
        read_corpus_file(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


@pytest.mark.parametrize("top, message", [
    # NaN made every epoch's dev F1 NaN, so the first epoch was always kept.
    ("select = { c = nan }", "select weight of c must be a finite number >= 0"),
    ("select = { c = inf }", "select weight of c must be a finite number >= 0"),
    # An empty table turned dev selection off although dev files were given.
    ("select = {}", "select must be a table of corpus name = weight"),
    ("select = { c = 1.0 }", "corpus c: dev is one of its train paths, and select weighs it"),
])
def test_selection_weights_are_finite_and_never_choose_on_training_data(tmp_path, top, message):
    corpus = '[[corpus]]\nname = "c"\ntrain = "x.conll"\ndev = "x.conll"\n'
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_corpus_file(write_corpus_file(tmp_path, corpus, top))


def test_a_dev_file_that_chooses_the_epoch_is_no_train_path_of_another_corpus(tmp_path):
    # Audit M: the check looked within one corpus only.
    corpora = ('[[corpus]]\nname = "a"\ntrain = "a.conll"\ndev = "a-dev.conll"\n'
               '[[corpus]]\nname = "b"\ntrain = ["b.conll", "./a-dev.conll"]\n')
    with pytest.raises(ConfigError, match=re.escape(
            f"corpus a: its dev {tmp_path / 'a-dev.conll'} is a train path of corpus b")):
        read_corpus_file(write_corpus_file(tmp_path, corpora, "select = { a = 1 }"))
    with pytest.raises(ConfigError, match="is a train path of corpus b"):
        read_corpus_file(write_corpus_file(tmp_path, corpora))
    # A dev corpus that does not choose the epoch is only reported on.
    corpora += 'dev = "b-dev.conll"\n'
    read_corpus_file(write_corpus_file(tmp_path, corpora, "select = { a = 0, b = 1 }"))


def test_a_training_path_listed_twice_is_refused(tmp_path):
    corpus = '[[corpus]]\nname = "c"\ntrain = ["x.conll", "./x.conll"]\n'
    with pytest.raises(ConfigError, match="corpus c: train lists a path twice; give the corpus "
                                          "a weight"):
        read_corpus_file(write_corpus_file(tmp_path, corpus))


def test_hostile_corpus_files_are_one_line_errors(tmp_path):
    cases = {"deep.toml": "labels = " + "[" * 5000,
             "deep.json": "[" * 100_000,
             "long.json": '{"labels": ["problem"], "select": {"c": 1' + "0" * 5000 + "}}",
             "twice.json": '{"labels": ["problem"], "labels": ["test"], "corpus": []}',
             "outside.json": '{"labels": ["problem", "O"], "corpus": []}'}
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"^{tmp_path / name}: "):
            read_corpus_file(tmp_path / name)
    with pytest.raises(ConfigError, match="the key 'labels' appears twice"):
        read_corpus_file(tmp_path / "twice.json")
    with pytest.raises(ConfigError, match="labels must not include O, the tag of a token"):
        read_corpus_file(tmp_path / "outside.json")


def test_a_label_no_corpus_annotates_and_a_select_without_dev_are_errors(tmp_path):
    only_problem = ('[[corpus]]\nname = "c"\ntrain = "x.conll"\nlabel_map = { Disease = '
                    '"problem" }\n')
    with pytest.raises(ConfigError, match="no corpus annotates label test"):
        read_corpus_file(write_corpus_file(tmp_path, only_problem))
    complete = '[[corpus]]\nname = "c"\ntrain = "x.conll"\n'
    with pytest.raises(ConfigError, match="select names 'c', which is not a corpus with a dev"):
        read_corpus_file(write_corpus_file(tmp_path, complete, "select = { c = 1.0 }"))


def test_label_maps_are_checked_against_the_data(data, tmp_path):
    text = (data / "corpora.toml").read_text().replace("Disease =", "Diseases =")
    (tmp_path / "corpora.toml").write_text(text.replace('"ncbi.conll"',
                                                        f'"{data / "ncbi.conll"}"'))
    with pytest.raises(ConfigError, match="corpus ncbi: label_map names label Diseases, which "
                                          "the corpus does not have \\(it has Disease\\)"):
        check_corpus_labels(read_corpus_file(tmp_path / "corpora.toml"))
    # Every label of the corpus must be mapped (or dropped explicitly).
    (tmp_path / "corpora.toml").write_text(
        text.replace('"ncbi.conll"', f'"{data / "ncbi.conll"}"').replace(
            'Diseases = "problem"', 'Disease = "problem", Gene = "treatment"'))
    with pytest.raises(ConfigError, match="label_map names label Gene"):
        check_corpus_labels(read_corpus_file(tmp_path / "corpora.toml"))
    two_labels = tmp_path / "two.conll"
    two_labels.write_text("BRCA1\tB-Gene\ncancer\tB-Disease\n\n", encoding="utf-8")
    (tmp_path / "corpora.toml").write_text(
        text.replace('"ncbi.conll"', f'"{two_labels}"').replace("Diseases =", "Disease ="))
    with pytest.raises(ConfigError, match='corpus ncbi: label Gene is not in its label_map; '
                                          'map it, or drop it with Gene = ""'):
        check_corpus_labels(read_corpus_file(tmp_path / "corpora.toml"))
    # Without a map, the corpus's own labels must be the model's.
    unmapped = text.replace('label_map = { Diseases = "problem" }\n', "")
    (tmp_path / "corpora.toml").write_text(unmapped.replace('"ncbi.conll"',
                                                            f'"{data / "ncbi.conll"}"'))
    with pytest.raises(ConfigError, match="corpus ncbi: label Disease is not one of the model"):
        check_corpus_labels(read_corpus_file(tmp_path / "corpora.toml"))
    # Without a map every label is complete by default: one the files never use is a
    # mistake (the model would learn that it never occurs), unless its coverage is none.
    drug = text.replace('labels = ["problem", "test", "treatment"]',
                        'labels = ["problem", "test", "treatment", "drug"]')
    (tmp_path / "corpora.toml").write_text(drug.replace('"ncbi.conll"', f'"{data / "ncbi.conll"}"'))
    with pytest.raises(ConfigError, match=r"corpus sample: its files have no drug mention, but "
                                          r"its coverage of drug is complete; set coverage "
                                          r'drug = "none"'):
        check_corpus_labels(read_corpus_file(tmp_path / "corpora.toml"))


@pytest.mark.parametrize("name", sorted(path.name for path in
                                         (REPO_ROOT / "training" / "configs").glob("*.toml")))
def test_shipped_corpus_files_read_and_their_label_maps_match_the_public_corpora(name):
    # The files the guides tell users to train with (and the bundled build's): each
    # parses, every path it names exists, and every label map fits its data.
    corpus_set = read_corpus_file(REPO_ROOT / "training" / "configs" / name)
    for spec in corpus_set.corpora:
        for path in list(spec.train) + ([spec.dev] if spec.dev else []):
            assert path.exists(), f"{name}: corpus {spec.name}: {path}"
        if spec.dev:
            check_label_map(corpus_set, spec, [spec.dev], spec.format, training=False)
    check_corpus_labels(corpus_set)


def test_cli_mapping_errors_exit_2_with_one_line_before_training(data, tmp_path, capsys):
    text = (data / "corpora.toml").read_text().replace("Disease =", "Diseases =")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('"ncbi.conll"', f'"{data / "ncbi.conll"}"'))
    code = main(["train", "--corpus", str(bad), "--output", str(tmp_path / "never")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error
    assert "corpus ncbi: label_map names label Diseases" in error
    assert not (tmp_path / "never").exists()
    # The options of one corpus beside a corpus file: refused, never ignored (an
    # --assertion-map was, and the model trained without assertions).
    for extra in (["--train", "x.conll"], ["--assertion-map", "map.json"],
                  ["--input-format", "conll"]):
        assert main(["train", "--corpus", str(bad), *extra, "--output",
                     str(tmp_path / "never")]) == 2
        assert "a corpus file (--corpus) replaces --train, --dev, --label-map, --input-format " \
               "and --assertion-map" in capsys.readouterr().err
    assert main(["train", "--output", str(tmp_path / "never")]) == 2
    assert "--train DATA (repeatable) or --corpus FILE" in capsys.readouterr().err
    # A second --corpus silently replaced the first.
    assert main(["train", "--corpus", str(bad), "--corpus", str(data / "corpora.toml"),
                 "--output", str(tmp_path / "never")]) == 2
    assert capsys.readouterr().err == ("clinical-ner train: error: --corpus given 2 times; give "
                                       "one corpus file (it lists every corpus)\n")


def test_a_label_map_naming_a_label_the_data_lacks_is_an_error(data, tmp_path, capsys):
    # Without the check, the misspelt type maps nothing: its mentions would train as O,
    # or every model would score 0 on it.
    ncbi = str(data / "ncbi.conll")
    assert main(["train", "--train", ncbi, "--label-map", "Diseases=problem",
                 "--output", str(tmp_path / "never"), "--epochs", "1"]) == 2
    assert capsys.readouterr().err == (
        "clinical-ner train: error: --label-map names label Diseases, which the data does not "
        "have (it has Disease)\n")
    assert not (tmp_path / "never").exists()
    assert main(["evaluate", "clinical", "--data", ncbi, "--label-map", "Diseases=problem"]) == 2
    assert capsys.readouterr().err == (
        "clinical-ner evaluate: error: --label-map names label Diseases, which the data does "
        "not have (it has Disease)\n")
    # A test file may lack one of the map's types (no chemical in this split), not all.
    assert main(["evaluate", "clinical", "--data", ncbi, "--label-map",
                 "Disease=problem,Chemical=treatment"]) == 0


# -- sampling and the loss ---------------------------------------------------------------------

def test_epoch_draws_follow_the_weights_and_repeat_per_seed_and_epoch(data):
    corpora = read_corpus_file(data / "corpora.toml")
    index = np.array([0] * 10 + [1] * 6)
    training = TrainingCorpora(corpora, [], index)
    first = training.epoch_indices(seed=3, epoch=0)
    assert first[:10].tolist() == list(range(10))  # weight 1: every sentence once
    assert len(first) == 13 and set(first[10:]) <= set(range(10, 16))  # 0.5 of 6
    np.testing.assert_array_equal(first, training.epoch_indices(seed=3, epoch=0))
    assert any(not np.array_equal(first, training.epoch_indices(seed=3, epoch=epoch))
               for epoch in range(1, 6))
    corpora.corpora[1].weight = 1.5
    drawn = training.epoch_indices(seed=3, epoch=0)[10:]
    assert len(drawn) == 9 and set(drawn[:6]) == set(range(10, 16))
    corpora.corpora[1].weight = 1.0
    np.testing.assert_array_equal(training.epoch_indices(seed=3, epoch=4), np.arange(16))


def test_fully_labelled_sentences_train_as_today_in_a_batch_with_partly_labelled_ones():
    tags = tag_inventory(LABELS, "bioes")
    sentences = [
        Sentence(["Fever", "and", "CT", "scan", "done"],
                 ["B-problem", "O", "B-test", "I-test", "O"]),
        Sentence(["aspirin", "given"], ["B-treatment", "O"]),
        Sentence(["chest", "pain", "with", "rash"], ["B-problem", "I-problem", "O", "O"]),
        Sentence(["no", "cough"], ["O", "B-problem"]),
    ]
    open_labels = [[], [], LABELS, ["test"]]  # two complete, two partly labelled
    vocab = Vocabulary(words=["", "<unk>"] + [w.lower() for s in sentences for w in s.tokens],
                       chars=["", "<unk>"] + sorted({c for s in sentences for w in s.tokens
                                                     for c in w}), tags=tags)
    settings = NERConfig(word_dim=4, char_dim=4, char_filters=4, lstm_units=4, casing_dim=2)
    tf.keras.utils.set_random_seed(1)
    model = ClinicalNERModel.from_settings(settings, vocab)
    featurizer = Featurizer(vocab.words, vocab.chars, settings.max_word_length)
    tag_ids = encode_tags(sentences, tags, "bioes")
    allowed = encode_allowed_tags(sentences, open_labels, tags, "bioes")
    arguments = dict(featurizer=featurizer, batch_size=4, use_casing=True, shuffle_seed=None,
                     word_dropout=0.0, bucket_boundaries=[100])
    features, targets = next(iter(training_dataset(sentences, tag_ids, allowed_tags=allowed,
                                                   **arguments)))
    _, plain_targets = next(iter(training_dataset(sentences, tag_ids, **arguments)))
    emissions = model(features, training=False)
    lengths = model.sequence_lengths(features)
    partial = model.crf.partial_log_likelihood(emissions, targets["allowed_tags"], lengths)
    today = model.crf.log_likelihood(emissions, plain_targets, lengths)
    np.testing.assert_array_equal(partial.numpy()[:2], today.numpy()[:2])
    assert (partial.numpy()[2:] > today.numpy()[2:]).all()
    # A batch of completely labelled sentences: the same loss as tag ids.
    complete = encode_allowed_tags(sentences, [[]] * 4, tags, "bioes")
    features, targets = next(iter(training_dataset(sentences, tag_ids, allowed_tags=complete,
                                                   **arguments)))
    emissions = model(features, training=False)
    assert float(model.compute_loss(features, targets, emissions)) \
        == float(model.compute_loss(features, plain_targets, emissions))


# -- end to end (slow) ----------------------------------------------------------------------

def tiny(**changes) -> NERConfig:
    values = dict(embeddings=str(VECTORS), char_dim=8, char_filters=8, lstm_units=8,
                  batch_size=16, seed=7, epochs=2, patience=2)
    return NERConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def joint(data, tmp_path_factory):
    output = tmp_path_factory.mktemp("joint") / "model"
    messages = []
    result = train(None, output, config=tiny(), corpora=read_corpus_file(data / "corpora.toml"),
                   progress=False, emit=messages.append)
    return output, result, messages


@pytest.mark.slow
def test_training_from_a_corpus_file_logs_and_records_each_corpus(joint):
    output, result, messages = joint
    assert result.epochs_completed == 2
    log = [json.loads(line) for line in (output / "training_log.jsonl").read_text().splitlines()]
    for entry in log:
        assert set(entry["dev_corpora"]) == {"sample", "ncbi"}
        assert entry["dev_f1"] == entry["dev_corpora"]["sample"]["f1"]  # select = sample
    assert any("(sample F1 " in message and "ncbi F1 " in message for message in messages)
    card = (output / "MODEL_CARD.md").read_text()
    assert "| ncbi | 0.5 | problem partial, test none, treatment none | Disease -> problem |" \
        in card
    assert KerasAnnotator.load(output).vocab.tags == tag_inventory(LABELS, "bioes")


@pytest.mark.slow
def test_a_corpus_file_with_assertions_logs_and_cards_them(shared_data, tmp_path):
    """The corpus that chooses the epoch has assertions: they are logged and in the card."""
    source = shared_data / "maccrobat-i2b2"
    for split, count in (("train", 12), ("dev", 3)):
        names = sorted(path.stem for path in (source / split / "txt").glob("*.txt"))[:count]
        for sub, suffix in (("txt", "txt"), ("concept", "con"), ("ast", "ast")):
            (tmp_path / split / sub).mkdir(parents=True)
            for name in names:
                (tmp_path / split / sub / f"{name}.{suffix}").write_bytes(
                    (source / split / sub / f"{name}.{suffix}").read_bytes())
    corpora = write_corpus_file(tmp_path, f'''select = {{ cases = 1.0 }}

[[corpus]]
name = "cases"
train = "{tmp_path / 'train'}"
dev = "{tmp_path / 'dev'}"
format = "i2b2"
''')
    messages = []
    output = tmp_path / "model"
    train(None, output, config=tiny(epochs=1), corpora=read_corpus_file(corpora),
          progress=False, emit=messages.append)
    entry = json.loads((output / "training_log.jsonl").read_text().splitlines()[-1])
    assert 0 <= entry["dev_corpora"]["cases"]["assertion_accuracy"] <= 1
    assert any("(cases F1 " in message and " assertion accuracy " in message
               for message in messages)
    card = (output / "MODEL_CARD.md").read_text()
    # Scored on the dev corpus that chose the epoch, per assertion class too.
    assert f"On `{tmp_path / 'dev'}`" in card and "it was the dev data that chose" in card
    assert "| assertion | precision | recall | F1 | gold | predicted |" in card
    assert "These assertion figures come from the dev data" in card
    assert "| absent |" in card and "| present |" in card


@pytest.mark.slow
def test_resume_and_init_from_work_with_a_corpus_file(data, joint, tmp_path):
    corpora = read_corpus_file(data / "corpora.toml")
    straight, _, _ = joint
    interrupted = tmp_path / "interrupted"
    train(None, interrupted, config=tiny(epochs=1), corpora=corpora, progress=False,
          emit=lambda m: None)
    result = train(None, interrupted, config=tiny(epochs=2), corpora=corpora, resume=True,
                   progress=False, emit=lambda m: None)
    assert result.epochs_completed == 2
    for a, b in zip(KerasAnnotator.load(straight).model.get_weights(),
                    KerasAnnotator.load(interrupted).model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    tuned = train(None, tmp_path / "tuned", config=NERConfig.load(straight).replace(epochs=1),
                  corpora=corpora, init_from=straight, progress=False, emit=lambda m: None)
    assert tuned.epochs_completed == 1


@pytest.mark.slow
def test_resume_refuses_a_corpus_file_whose_weights_coverage_or_select_changed(data, tmp_path):
    # Audit: only the sentences were compared, so a resume with another weight, coverage
    # or select went on silently: draws, loss and the kept epoch's score changed meaning
    # mid-run, and the card described the second file as the whole run's.
    text = (data / "corpora.toml").read_text().replace('"ncbi.conll"',
                                                       f'"{data / "ncbi.conll"}"')
    output = tmp_path / "run"
    train(None, output, config=tiny(epochs=1), corpora=read_corpus_file(data / "corpora.toml"),
          progress=False, emit=lambda m: None)
    # The same dev sentences in a file of their own, so that select may weigh them.
    (tmp_path / "ncbi-dev.conll").write_bytes((data / "ncbi.conll").read_bytes())
    own_dev = text.replace(f'dev = "{data / "ncbi.conll"}"', 'dev = "ncbi-dev.conll"')
    changed = tmp_path / "corpora.toml"
    for variant in (text.replace("weight = 0.5", "weight = 1.5"),
                    text.replace('coverage = { problem = "partial" }', ""),
                    own_dev.replace("sample = 1.0", "sample = 1.0, ncbi = 1.0")):
        assert variant != text
        changed.write_text(variant)
        with pytest.raises(ConfigError, match=r"--resume continues .* but --corpus differs "
                                              r"\(its corpora's sentences, weights or coverage"):
            train(None, output, config=tiny(epochs=2), corpora=read_corpus_file(changed),
                  resume=True, progress=False, emit=lambda m: None)
    # The same choice of epoch, written otherwise: resumed.
    changed.write_text(own_dev.replace("sample = 1.0", "sample = 2.0, ncbi = 0"))
    assert train(None, output, config=tiny(epochs=2), corpora=read_corpus_file(changed),
                 resume=True, progress=False, emit=lambda m: None).epochs_completed == 2


@pytest.mark.slow
def test_mirrored_training_and_evaluate_with_a_corpus(data, joint, tmp_path, capsys):
    (tmp_path / "tiny.json").write_text(json.dumps({k: v for k, v in tiny(epochs=1).to_dict()
                                                    .items() if k != "bucket_boundaries"}))
    run = subprocess.run(
        [sys.executable, "-m", "clinical_ner.cli", "train", "--corpus", str(data / "corpora.toml"),
         "--output", str(tmp_path / "mirrored"), "--config", str(tmp_path / "tiny.json"),
         "--distribute", "mirrored", "--cpu-devices", "2", "--quiet"],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True,
        timeout=600, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "mirrored over 2 devices" in run.stderr and "ncbi F1" in run.stderr
    output, _, _ = joint
    # Only the corpus's labels count: problem alone on NCBI.
    assert main(["evaluate", str(output), "--data", str(data / "ncbi.conll"), "--corpus",
                 str(data / "corpora.toml"), "--corpus-name", "ncbi"]) == 0
    report = capsys.readouterr().out
    assert "problem" in report and "test" not in report and "treatment" not in report
    assert main(["evaluate", str(output), "--data", str(data / "ncbi.conll"),
                 "--label-map", "Disease=disease"]) == 2
    assert "--label-map maps onto label disease, which the model does not know" \
        in capsys.readouterr().err


def test_evaluate_names_a_corpus_label_the_model_lacks_by_its_coverage(tmp_path, capsys):
    # It said "corpus c maps onto label drug" of a corpus without a label map.
    data = tmp_path / "gold.conll"
    data.write_text("Fever\tB-problem\n\nAspirin\tB-drug\n\n", encoding="utf-8")
    corpus_file = tmp_path / "c.toml"
    corpus_file.write_text(f'labels = ["problem", "drug"]\n[[corpus]]\nname = "c"\n'
                           f'train = "{data}"\n', encoding="utf-8")
    assert main(["evaluate", "clinical", "--data", str(data), "--corpus", str(corpus_file),
                 "--corpus-name", "c"]) == 2
    assert capsys.readouterr().err == (
        f"clinical-ner evaluate: error: {corpus_file}: corpus c annotates label drug (its "
        "coverage of drug is not none), which the model does not know (it has problem, test, "
        "treatment)\n")


def test_corpora_that_would_train_or_choose_on_nothing_are_refused(data, tmp_path):
    from clinical_ner.errors import DataFormatError
    from clinical_ner.training.multi_corpus import read_dev_corpora, read_training_corpora

    ncbi = data / "ncbi.conll"
    empty = tmp_path / "empty.conll"
    empty.write_text("\n\n", encoding="utf-8")
    base = (f'[[corpus]]\nname = "c"\ntrain = "{ncbi}"\nlabel_map = {{ Disease = "problem" }}'
            '\ncoverage = { problem = "partial" }\n')
    top = 'labels = ["problem"]\n'
    # round(0.001 * 60) is 0: every epoch drew none of the corpus, silently.
    small = tmp_path / "small.toml"
    small.write_text(top + base + "weight = 0.001\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"corpus c: weight 0.001 draws none of its 60 "
                                          r"sentences per epoch; give it at least 0.0167"):
        read_training_corpora(read_corpus_file(small), False, print)
    # An empty dev file would score nothing and choose the first epoch.
    no_dev = tmp_path / "no-dev.toml"
    no_dev.write_text(top + base + f'dev = "{empty}"\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match="corpus c: no dev sentences to score"):
        read_dev_corpora(read_corpus_file(no_dev), False, print)
    # Audit: a dev file without a mention of the corpus's labels (every token O, or its
    # only type dropped) scored 0 every epoch: epoch 1 kept, training stopped early.
    plain = tmp_path / "plain.conll"
    plain.write_text("Well\tO\n.\tO\n\nAspirin\tB-Chemical\n\n", encoding="utf-8")
    no_mention = tmp_path / "no-mention.toml"
    no_mention.write_text(top + base.replace("Disease = \"problem\"",
                                             "Disease = \"problem\", Chemical = \"\"")
                          + f'dev = "{plain}"\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=re.escape(
            f"{plain}: corpus c: no entities to score (no problem mention)")):
        read_dev_corpora(read_corpus_file(no_mention), False, print)


def test_every_path_exists_and_every_training_file_has_sentences(tmp_path):
    from clinical_ner.errors import DataFormatError
    from clinical_ner.training.multi_corpus import read_training_corpora

    good, empty = tmp_path / "good.conll", tmp_path / "empty.conll"
    good.write_text("Fever\tB-problem\n\n", encoding="utf-8")
    empty.write_text("\n\n", encoding="utf-8")
    garbled = tmp_path / "garbled.conll"
    garbled.write_text("Fever\tB-problem\textra\tcolumns\n\n", encoding="utf-8")
    corpus_file = tmp_path / "c.toml"

    def read(train: str, dev: str = "", reads_dev: bool = True):
        corpus_file.write_text(f'labels = ["problem"]\n[[corpus]]\nname = "c"\n'
                               f'train = {train}\n{dev}', encoding="utf-8")
        return read_training_corpora(read_corpus_file(corpus_file), False, print, reads_dev)

    # As with --train: an empty file in the list was skipped silently.
    with pytest.raises(DataFormatError, match=re.escape(
            f"{corpus_file}: corpus c: {empty}: no sentences to train on")):
        read('["good.conll", "empty.conll"]')
    # A missing path names its corpus file and corpus; a missing dev path is found
    # before any file is read (it was found after every training corpus).
    with pytest.raises(DataFormatError, match=re.escape(
            f"{corpus_file}: corpus c: {tmp_path / 'nope.conll'}: no such file or folder")):
        read('["good.conll", "nope.conll"]')
    with pytest.raises(DataFormatError, match=re.escape(
            f"corpus c: {tmp_path / 'nope.conll'}: no such file or folder")):
        read('"garbled.conll"', 'dev = "nope.conll"\n')
    # A worker other than the chief reads no dev file.
    assert len(read('"good.conll"', 'dev = "nope.conll"\n', reads_dev=False).sentences) == 1
    # A line its format refuses names its corpus too (its map decides what a line means).
    bad_tag = tmp_path / "bad-tag.conll"
    bad_tag.write_text("Fever\tB-problem\n\nchills\tX-problem\n\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=re.escape(f"{bad_tag}:3: invalid tag") + ".*"
                                              + re.escape("(corpus c)") + "$"):
        read('["good.conll", "bad-tag.conll"]')


def test_coverage_none_for_a_label_an_unmapped_corpus_has_is_refused(tmp_path):
    # Without a label map every label maps onto itself (audit M: this was accepted).
    train_file = tmp_path / "train.conll"
    train_file.write_text("Fever\tB-problem\ntreated\tO\nwith\tO\naspirin\tB-treatment\n\n",
                          encoding="utf-8")
    corpus_file = tmp_path / "c.toml"
    corpus_file.write_text(f'labels = ["problem", "treatment"]\n[[corpus]]\nname = "c"\n'
                           f'train = "{train_file}"\ncoverage = {{ treatment = "none" }}\n'
                           '[[corpus]]\nname = "d"\ntrain = "x.conll"\n', encoding="utf-8")
    corpus_set = read_corpus_file(corpus_file)
    with pytest.raises(ConfigError, match="corpus c: its files have treatment mentions, but "
                                          "its coverage of treatment is none"):
        check_label_map(corpus_set, corpus_set.corpora[0], [train_file], "auto")


def test_a_dev_file_may_lack_a_label_its_training_files_have(tmp_path):
    # The audit's case: a dev split of real sentences without any treatment was refused,
    # with advice (coverage "none") that would have changed training.
    train_file, dev_file = tmp_path / "train.conll", tmp_path / "dev.conll"
    train_file.write_text("Fever\tB-problem\ntreated\tO\nwith\tO\naspirin\tB-treatment\n\n",
                          encoding="utf-8")
    dev_file.write_text("Cough\tB-problem\n.\tO\n\n", encoding="utf-8")
    corpus_file = tmp_path / "c.toml"
    corpus_file.write_text(f'labels = ["problem", "treatment"]\n[[corpus]]\nname = "c"\n'
                           f'train = "{train_file}"\ndev = "{dev_file}"\n', encoding="utf-8")
    corpus_set = read_corpus_file(corpus_file)
    from clinical_ner.training.multi_corpus import read_dev_corpora

    check_corpus_labels(corpus_set, dev=False)
    assert len(read_dev_corpora(corpus_set, False, print)["c"]) == 1
    # Training files still must mention every label the corpus annotates.
    train_file.write_text("Fever\tB-problem\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="its files have no treatment mention"):
        check_corpus_labels(corpus_set, dev=False)


def test_a_label_map_may_name_a_label_only_the_dev_file_has(tmp_path):
    # Audit: the map was checked against the training files alone, so a dev file with a
    # type they lack could not be trained on at all: mapping it was "a label the corpus
    # does not have", leaving it out "a label not in its label_map".
    train_file, dev_file = tmp_path / "train.conll", tmp_path / "dev.conll"
    train_file.write_text("Fever\tB-Disease\n.\tO\n\n", encoding="utf-8")
    dev_file.write_text("Cough\tB-Disease\nafter\tO\naspirin\tB-Chemical\n\n",
                        encoding="utf-8")
    corpus_file = tmp_path / "c.toml"

    def corpus_set(label_map: str):
        corpus_file.write_text(f'labels = ["problem"]\n[[corpus]]\nname = "c"\n'
                               f'train = "{train_file}"\ndev = "{dev_file}"\n'
                               f'label_map = {{ {label_map} }}\n', encoding="utf-8")
        return read_corpus_file(corpus_file)

    from clinical_ner.training.multi_corpus import read_dev_corpora, read_training_corpora

    mapped = corpus_set('Disease = "problem", Chemical = ""')
    assert len(read_training_corpora(mapped, False, print).sentences) == 1
    assert len(read_dev_corpora(mapped, False, print)["c"]) == 1
    check_corpus_labels(mapped, dev=False)  # a worker reads no dev file: the chief checks
    with pytest.raises(ConfigError, match="corpus c: label_map names label Chemicals, which "
                                          "the corpus does not have \\(it has Chemical, "
                                          "Disease\\)"):
        read_training_corpora(corpus_set('Disease = "problem", Chemicals = ""'), False, print)
    with pytest.raises(ConfigError, match="corpus c: label Chemical is not in its label_map"):
        read_dev_corpora(corpus_set('Disease = "problem"'), False, print)


def _problem_corpus(folder, train_text: str) -> tuple:
    """A CoNLL file of ``train_text`` and a corpus file of it alone (corpus c, problem)."""
    train_file = folder / "train.conll"
    train_file.write_text(train_text, encoding="utf-8")
    corpus_file = folder / "c.toml"
    corpus_file.write_text(f'labels = ["problem"]\n[[corpus]]\nname = "c"\n'
                           f'train = "{train_file}"\n', encoding="utf-8")
    return train_file, corpus_file


def test_a_line_its_format_refuses_is_named_before_the_label_checks(tmp_path, capsys):
    # Audit: the label checks read the files skipping invalid sentences, so a file whose
    # mentions were all on refused lines was "no problem mention ... set coverage problem =
    # none" (advice that changes training), or a --label-map "names a label the data does
    # not have", instead of the line.
    from clinical_ner.errors import DataFormatError

    train_file, corpus_file = _problem_corpus(tmp_path, "Fever\tX-problem\n.\tO\n\n"
                                                        "Cough\tB-problem\n\n")
    invalid = re.escape(f"{train_file}:1: invalid tag")
    with pytest.raises(DataFormatError, match=invalid + ".*" + re.escape("(corpus c)") + "$"):
        check_corpus_labels(read_corpus_file(corpus_file))
    check_corpus_labels(read_corpus_file(corpus_file), skip_invalid=True)  # as training reads
    train_file.write_text("Fever\tX-Disease\n.\tO\n\n", encoding="utf-8")
    assert main(["evaluate", "clinical", "--data", str(train_file),
                 "--label-map", "Disease=problem"]) == 3
    assert re.fullmatch("clinical-ner evaluate: error: " + invalid + r".*\n",
                        capsys.readouterr().err)


def test_a_corpus_whose_every_sentence_is_skipped_says_nothing_is_left(tmp_path, capsys):
    # train --corpus --skip-invalid said "its files have no problem mention, but its coverage
    # of problem is complete; set coverage problem = none", advice for a corpus it is not.
    train_file, corpus_file = _problem_corpus(tmp_path, "Fever\tB-problem\n.\tX-test\n\n")
    assert main(["train", "--corpus", str(corpus_file), "--skip-invalid",
                 "--output", str(tmp_path / "out")]) == 3
    assert capsys.readouterr().err.endswith(
        f"clinical-ner train: error: {train_file}: every sentence is invalid (1 skipped): "
        "nothing is left to read (corpus c)\n")


def test_a_brat_corpus_whose_every_document_is_skipped_says_nothing_is_left(tmp_path, capsys):
    # Its label check read the .ann files' type names whatever reading would skip: .txt files
    # without an .ann said "its files have no problem mention, but its coverage of problem is
    # complete; set coverage problem = none".
    brat = tmp_path / "brat"
    brat.mkdir()
    (brat / "a.txt").write_text("Fever and cough.\n", encoding="utf-8")
    (brat / "b.txt").write_text("Rash.\n", encoding="utf-8")
    corpus_file = tmp_path / "c.toml"
    corpus_file.write_text(f'labels = ["problem"]\n[[corpus]]\nname = "c"\ntrain = "{brat}"\n'
                           'format = "brat"\n', encoding="utf-8")
    assert main(["train", "--corpus", str(corpus_file), "--skip-invalid",
                 "--output", str(tmp_path / "out")]) == 3
    assert capsys.readouterr().err.endswith(
        f"clinical-ner train: error: {brat}: every document is invalid (2 skipped): "
        "nothing is left to read (corpus c)\n")


def test_training_reads_a_corpus_s_files_once_as_it_starts(tmp_path, monkeypatch):
    # Its label check, the dev read and the dev read's own label check each read it: three
    # times for a file that can be large (BC5CDR's); a training file, twice.
    from clinical_ner.formats import conll
    from clinical_ner.training import trainer

    (tmp_path / "train.conll").write_text("Fever\tB-Disease\n.\tO\n\nCT\tB-Test\n\n",
                                          encoding="utf-8")
    (tmp_path / "dev.conll").write_text("Rash\tB-Disease\n.\tO\n\n", encoding="utf-8")
    corpus_file = tmp_path / "c.toml"
    corpus_file.write_text('labels = ["problem", "test"]\n[[corpus]]\nname = "c"\n'
                           'train = "train.conll"\ndev = "dev.conll"\n'
                           'label_map = { Disease = "problem", Test = "test" }\n',
                           encoding="utf-8")
    reads, read_conll = [], conll.read_conll

    def counted(path, *args, **options):
        reads.append(os.path.basename(path))
        return read_conll(path, *args, **options)

    class Started(Exception):
        """Raised where training has read its data, before the model is built."""

    def started(train, dev, *args, **options):
        raise Started(dev)

    monkeypatch.setattr(conll, "read_conll", counted)
    monkeypatch.setattr(trainer, "data_facts", started)
    with pytest.raises(Started) as raised:
        train(None, tmp_path / "out", corpora=read_corpus_file(corpus_file), progress=False,
              emit=lambda message: None)
    assert sorted(reads) == ["dev.conll", "train.conll"]
    [[dev_sentence]] = raised.value.args[0].values()
    assert (dev_sentence.tokens, dev_sentence.tags) == (["Rash", "."], ["B-problem", "O"])


def test_a_brat_corpus_that_is_no_brat_folder_is_named(data, tmp_path):
    from clinical_ner.errors import DataFormatError

    corpus_file = tmp_path / "c.toml"
    for train, problem in ((data / "ncbi.conll", "not a brat corpus"),
                           (tmp_path / "missing", "no such file or folder")):
        corpus_file.write_text(
            f'labels = ["problem"]\n[[corpus]]\nname = "c"\ntrain = "{train}"\nformat = "brat"\n'
            'label_map = { Disease = "problem" }\n', encoding="utf-8")
        with pytest.raises(DataFormatError, match=problem):
            check_corpus_labels(read_corpus_file(corpus_file))
