"""MODEL_CARD.md: written by training, rewritten by `card`, scores equal to a fresh evaluation."""
import json
import shutil

import pytest

from clinical_ner.formats import load_corpus
from clinical_ner.evaluation.card_render import score_table
from clinical_ner.evaluation.model_card import CARD_DATA_FILE, CARD_FILE, write_model_card
from clinical_ner.annotators.keras_annotator import KerasAnnotator
from clinical_ner.evaluation.evaluate import corpus_sentences, evaluate_sentences
from helpers import SAMPLE, train_sample_model

pytestmark = pytest.mark.slow

SECTIONS = ("## Description", "## How to use", "## Data source", "## Architecture and sizes",
            "## Training data", "## Effective configuration", "## Scores", "## Training time",
            "## Versions", "## Limitations")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    return train_sample_model(root / "model", lstm_units=8, char_filters=8, epochs=2, seed=5)


def fresh_scores(model_dir, data):
    sentences = corpus_sentences(load_corpus(data))
    return evaluate_sentences(KerasAnnotator.load(model_dir), sentences)


def test_training_writes_a_card_with_every_section(trained):
    card = (trained / CARD_FILE).read_text(encoding="utf-8")
    for section in SECTIONS:
        assert section in card
    facts = json.loads((trained / CARD_DATA_FILE).read_text(encoding="utf-8"))
    [summary] = facts["training"]["train_data"]
    corpus = load_corpus(SAMPLE / "train")
    sentences = corpus_sentences(corpus)
    assert summary["documents"] == len(corpus.documents) == 40
    assert summary["sentences"] == len(sentences)
    assert summary["tokens"] == sum(len(s.tokens) for s in sentences)
    begins = sum(tag.startswith("B-") for s in sentences for tag in s.tags)
    assert sum(summary["entities"].values()) == begins
    assert f"| `{SAMPLE / 'train'}` | i2b2 | 40 | {len(sentences)} |" in card
    # Scores on dev, said to be the data that chose the epoch, equal a fresh evaluation.
    assert "it was the dev data that chose the training epoch" in card
    for row in score_table(fresh_scores(trained, SAMPLE / "dev")):
        assert row in card
    log = [json.loads(line) for line in (trained / "training_log.jsonl").open()]
    assert f"- epochs run: {len(log)};" in card
    assert "tokens/s" in card and "TensorFlow 2.21" in card and "Keras 3." in card
    assert '"lstm_units": 8' in card and "| bilstm |" in card


def test_card_rewrites_with_scores_on_other_data_and_says_what_it_was(trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained, model)
    write_model_card(model, data=SAMPLE / "train", name="sample model", language="English")
    card = (model / CARD_FILE).read_text(encoding="utf-8")
    assert card.startswith("# Model card: sample model\n")
    assert "| language | English |" in card
    assert "WARNING: the model was trained on this data" in card
    for row in score_table(fresh_scores(model, SAMPLE / "train")):
        assert row in card
    # A rewrite without data keeps the scores and the fields set before.
    write_model_card(model)
    assert (model / CARD_FILE).read_text(encoding="utf-8") == card


def test_the_card_reads_each_file_once(trained, tmp_path, monkeypatch):
    from pathlib import Path

    from clinical_ner.evaluation.model_card import record_training
    from clinical_ner.formats import i2b2

    # The card at the end of training read the dev data twice (its counts, its scores).
    model = shutil.copytree(trained, tmp_path / "model")
    reads, read_i2b2 = [], i2b2.read_i2b2

    def counted(path, *args, **options):
        reads.append(Path(path).name)
        return read_i2b2(path, *args, **options)

    monkeypatch.setattr(i2b2, "read_i2b2", counted)
    record_training(model, SAMPLE / "train", SAMPLE / "dev")
    assert sorted(reads) == ["dev", "train"]
    reads.clear()
    write_model_card(model, data=SAMPLE / "dev")
    assert reads == ["dev"]


def test_training_reads_its_training_and_dev_files_once_for_the_model_and_the_card(
        tmp_path, monkeypatch):
    from pathlib import Path

    from clinical_ner.formats import i2b2

    # Audit: the card written at the end of training read the training and dev files again
    # (after hours of training, the files perhaps changed since), besides the trainer.
    reads, read_i2b2 = [], i2b2.read_i2b2

    def counted(path, *args, **options):
        reads.append(Path(path).name)
        return read_i2b2(path, *args, **options)

    monkeypatch.setattr(i2b2, "read_i2b2", counted)
    model = train_sample_model(tmp_path / "model", lstm_units=8, char_filters=8, epochs=1,
                               seed=5)
    assert sorted(reads) == ["dev", "train"]
    facts = json.loads((model / CARD_DATA_FILE).read_text(encoding="utf-8"))["training"]
    assert facts["train_data"][0]["documents"] == len(load_corpus(SAMPLE / "train").documents)
    assert facts["dev_data"]["documents"] == len(load_corpus(SAMPLE / "dev").documents)


def test_the_training_card_scores_the_epoch_it_kept_not_the_last(negation_data, tmp_path,
                                                                  monkeypatch):
    # The card takes the trainer's dev report of the kept epoch instead of loading
    # model.keras and scoring dev again: it must be that epoch's, not the last one's.
    from clinical_ner.training import trainer
    from helpers import tiny_assertion_config

    reports, evaluate = [], trainer.evaluate_sentences

    def first_epoch_best(ner, sentences, labels=None):
        report = evaluate(ner, sentences, labels)
        reports.append(report)
        report["epoch_scored"] = len(reports)
        if len(reports) == 1:  # no later epoch beats it: epoch 1 is kept
            report["exact"]["micro"]["f1"] = 2.0
        return report

    monkeypatch.setattr(trainer, "evaluate_sentences", first_epoch_best)
    train_dir, dev_dir = negation_data
    output = tmp_path / "model"
    trainer.train(train_dir, output, dev_path=dev_dir, config=tiny_assertion_config(epochs=2),
                  progress=False, emit=lambda _: None)
    log = [json.loads(line) for line in (output / "training_log.jsonl").open()]
    assert [entry["best"] for entry in log] == [True, False]
    evaluation = json.loads((output / CARD_DATA_FILE).read_text(encoding="utf-8"))["evaluation"]
    assert evaluation["report"]["epoch_scored"] == 1
    assert "assertion" in evaluation["report"]


def test_a_model_without_recorded_facts_gets_a_card_that_says_so(trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained, model)
    (model / CARD_DATA_FILE).unlink()
    write_model_card(model, data=SAMPLE / "dev")
    card = (model / CARD_FILE).read_text(encoding="utf-8")
    assert "Not recorded (the model was trained before model cards" in card
    assert "whether it saw this data is unknown" in card



def test_the_card_counts_the_weights_of_the_model_file_it_sits_beside(trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained, model)
    facts = json.loads((model / CARD_DATA_FILE).read_text(encoding="utf-8"))
    layers = facts["parameters"]["layers"]
    network = KerasAnnotator.load(model).model
    assert sum(row["parameters"] for row in layers) == network.count_params()
    # Weights recorded for another model.keras (a retrained one) are counted again.
    facts["parameters"] = {"model_sha256": "0" * 64,
                           "layers": [{"layer": "stale", "shapes": ["1"], "parameters": 1}]}
    (model / CARD_DATA_FILE).write_text(json.dumps(facts), encoding="utf-8")
    write_model_card(model)
    card = (model / CARD_FILE).read_text(encoding="utf-8")
    assert "| stale |" not in card
    assert f"| all | | {network.count_params():,} |" in card

def test_card_command_rewrites_the_card_and_reports_errors_in_one_line(trained, tmp_path,
                                                                       capsys):
    from clinical_ner.cli import main

    model = tmp_path / "model"
    shutil.copytree(trained, model)
    assert main(["card", str(model), "--data", str(SAMPLE / "dev"), "--name", "renamed"]) == 0
    assert capsys.readouterr().out.strip() == str(model / CARD_FILE)
    card = (model / CARD_FILE).read_text(encoding="utf-8")
    assert card.startswith("# Model card: renamed\n")
    for row in score_table(fresh_scores(model, SAMPLE / "dev")):
        assert row in card
    assert main(["card", str(tmp_path / "missing")]) == 4
    error = capsys.readouterr().err.strip()
    assert error == (f"clinical-ner card: error: {tmp_path / 'missing'}: not a clinical-ner "
                     "model directory or export (no such folder); train one with 'clinical-ner "
                     "train', or use the bundled model 'clinical'")


def test_the_card_command_lists_the_sentences_skip_invalid_skipped(trained, tmp_path, capsys):
    # Audit: --help says "skip invalid sentences/annotations and list them"; card skipped
    # them without a word, while evaluate lists them.
    from clinical_ner.cli import main

    model = shutil.copytree(trained, tmp_path / "model")
    data = tmp_path / "dev.conll"
    data.write_text("chest\tB-problem\npain\tI-problem\n\nbad\tNOTATAG\n\n", encoding="utf-8")
    assert main(["card", str(model), "--data", str(data), "--skip-invalid"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(model / CARD_FILE)
    assert captured.err.splitlines()[0] == f"{data}: 1 item(s) skipped or adjusted:"
    assert captured.err.splitlines()[1].startswith(f"  {data}:4: ")


@pytest.mark.parametrize("options, error", [
    (["--label-map", "Disease=problem"],
     "--label-map needs --data (the data whose labels it maps)"),
    (["--input-format", "conll"], "--input-format needs --data (the data whose format it names)"),
    (["--skip-invalid"], "--skip-invalid needs --data (the data whose invalid sentences it skips)"),
])
def test_the_card_command_refuses_options_of_the_data_without_data(trained, tmp_path, capsys,
                                                                  options, error):
    # Audit: accepted and ignored, the card rewritten as if they had been used.
    from clinical_ner.cli import main

    model = shutil.copytree(trained, tmp_path / "model")
    card = (model / CARD_FILE).read_bytes()
    assert main(["card", str(model), *options]) == 2
    assert capsys.readouterr().err == f"clinical-ner card: error: {error}\n"
    assert (model / CARD_FILE).read_bytes() == card


def test_the_card_command_leaves_the_bundled_model_s_card_as_shipped(tmp_path, capsys,
                                                                     monkeypatch):
    # It rewrote the package's card (and, with --data, its scores) in place.
    from clinical_ner.cli import main
    from clinical_ner.pretrained import bundled_model_path

    shipped = bundled_model_path() / CARD_FILE
    before = shipped.read_bytes()
    assert main(["card", "clinical"]) == 2
    assert capsys.readouterr().err.startswith(
        "clinical-ner card: error: clinical: the bundled model's card ships with the package")
    assert shipped.read_bytes() == before
    monkeypatch.chdir(tmp_path)  # a folder of that name in the working directory is not it
    shutil.copytree(bundled_model_path(), tmp_path / "clinical")
    assert main(["card", "clinical"]) == 0


@pytest.mark.parametrize("damage, problem", [
    (lambda log: log[:30], "line 1: not a JSON object (truncated?)"),
    (lambda log: '{"epoch": 1}\n', "line 1: not an epoch's entry"),
])
def test_a_damaged_training_log_costs_the_card_its_training_time_only(trained, tmp_path, caplog,
                                                                      damage, problem):
    # It ended `clinical-ner card` with an internal error (JSONDecodeError, KeyError).
    from clinical_ner.cli import main

    model = tmp_path / "model"
    shutil.copytree(trained, model)
    log = model / "training_log.jsonl"
    log.write_text(damage(log.read_text(encoding="utf-8")), encoding="utf-8")
    assert main(["card", str(model)]) == 0
    card = (model / CARD_FILE).read_text(encoding="utf-8")
    assert f"## Training time\n\nNot readable: `training_log.jsonl` {problem}" in card
    for section in SECTIONS:
        assert section in card
    [warning] = [record.getMessage() for record in caplog.records
                 if record.levelname == "WARNING"]
    assert f"{log}:{problem[len('line '):]}" in warning
    assert warning.endswith("the card leaves out the training time")


def test_card_label_map_scores_and_checks_as_evaluate_does(tmp_path, capsys):
    # Audit: `card --data D --label-map problem=problem` scored every label of the model, so
    # the tests and treatments it found, which data read with that map cannot annotate, were
    # false positives on the card, whose figures were not `evaluate`'s with the same options;
    # a misspelt type was not refused, and the card was scored on data without its mentions.
    from clinical_ner.cli import main
    from clinical_ner.pretrained import bundled_model_path

    model = shutil.copytree(bundled_model_path(), tmp_path / "model")
    scores = tmp_path / "scores.json"
    options = ["--data", str(SAMPLE / "dev"), "--label-map", "problem=problem"]
    assert main(["evaluate", str(model), *options, "--json", str(scores)]) == 0
    assert main(["card", str(model), *options]) == 0
    report = json.loads(scores.read_text(encoding="utf-8"))
    assert list(report["exact"]["per_label"]) == ["problem"]
    card = (model / CARD_FILE).read_text(encoding="utf-8")
    for row in score_table(report):
        assert row in card
    assert "| exact | test |" not in card and "| exact | treatment |" not in card
    capsys.readouterr()
    # A misspelt type (each mention became O), and a label the model lacks (each gold
    # mention of it scored as missed).
    for label_map, error in [
            ("problen=problem", "--label-map names label problen, which the data does not "
                                "have (it has problem, test, treatment)"),
            ("problem=disease", "--label-map maps onto label disease, which the model does not "
                                "know (it has problem, test, treatment)")]:
        assert main(["card", str(model), "--data", str(SAMPLE / "dev"),
                     "--label-map", label_map]) == 2
        assert capsys.readouterr().err == f"clinical-ner card: error: {error}\n"
        assert (model / CARD_FILE).read_text(encoding="utf-8") == card


def test_card_names_the_data_s_labels_the_model_does_not_know_as_evaluate_does(tmp_path,
                                                                              capsys):
    # `evaluate` said why the scores were 0 (BC5CDR's label names); `card` wrote them silently.
    from clinical_ner.cli import main
    from clinical_ner.pretrained import bundled_model_path

    model = shutil.copytree(bundled_model_path(), tmp_path / "model")
    gold = tmp_path / "gold.conll"
    gold.write_text("Fever\tB-Disease\nand\tO\naspirin\tB-Chemical\nCT\tB-test\n\n",
                    encoding="utf-8")
    note = (f"note: {gold}: the model does not know the label(s) Chemical, Disease (it has "
            "problem, test, treatment): they score 0; map them onto its labels with "
            "--label-map\n")
    assert main(["evaluate", str(model), "--data", str(gold)]) == 0
    assert capsys.readouterr().err == note
    assert main(["card", str(model), "--data", str(gold)]) == 0
    assert capsys.readouterr().err == note


def _damaged_card_problem(path):
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        return f"{path}:{error.lineno}: not valid JSON ({error.msg})"
    return f"{path}: not a JSON object (damaged?)"


@pytest.mark.parametrize("damage", [lambda facts: facts[:len(facts) // 2], lambda facts: "[]"])
def test_a_damaged_card_record_is_a_one_line_error_naming_the_file(tmp_path, capsys, damage):
    # Audit: a model_card.json cut short (a full disk while `card` rewrote it) or not an
    # object ended `card` with `internal error (JSONDecodeError)` (AttributeError), exit 70.
    from clinical_ner.cli import main
    from clinical_ner.pretrained import bundled_model_path

    model = shutil.copytree(bundled_model_path(), tmp_path / "model")
    facts = model / CARD_DATA_FILE
    facts.write_text(damage(facts.read_text(encoding="utf-8")), encoding="utf-8")
    card = (model / CARD_FILE).read_bytes()
    assert main(["card", str(model)]) == 4
    assert capsys.readouterr().err == (
        f"clinical-ner card: error: {_damaged_card_problem(facts)}\n")
    assert (model / CARD_FILE).read_bytes() == card


def test_the_card_command_on_an_export_names_it_as_one(model_base, capsys):
    # Audit: it said "not a clinical-ner model directory (no model.keras); train one ...", of
    # an export, after reading --data.
    from clinical_ner.cli import main

    assert main(["card", str(model_base), "--data", str(SAMPLE / "dev")]) == 4
    assert capsys.readouterr().err == (
        f"clinical-ner card: error: {model_base}: a SavedModel export cannot have a model card "
        "written; give the Keras model directory it was exported from (the one with "
        "model.keras)\n")
