import json

import pytest

from clinical_ner.config import NERConfig
from clinical_ner.errors import ConfigError, ModelError, check_integer
from helpers import REPO_ROOT


def test_round_trip_through_model_directory(tmp_path):
    config = NERConfig(lstm_units=7, tag_scheme="bioes", embeddings="/x/vectors.txt")
    config.save(tmp_path)
    assert NERConfig.load(tmp_path) == config


def test_a_model_saved_before_a_setting_existed_loads_with_the_value_it_trained_with(tmp_path):
    # 0.2.0 and earlier had no word dropout; resuming such a run must not add it.
    values = NERConfig().to_dict()
    del values["word_dropout"]
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert NERConfig.load(tmp_path).word_dropout == 0.0
    assert NERConfig().word_dropout > 0


def test_a_settings_file_may_start_with_a_byte_order_mark(tmp_path):
    # Windows editors write one; label-map and corpus files were read with it, settings
    # files refused ("Unexpected UTF-8 BOM"), and a line number after it stays right.
    path = tmp_path / "c.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"epochs": 3}).encode("utf-8"))
    assert NERConfig.from_file(path).epochs == 3
    path.write_bytes(b"\xef\xbb\xbf{\n  \"epochs\": 3,\n  oops\n}")
    with pytest.raises(ConfigError, match=r"c.json:3"):
        NERConfig.from_file(path)


def test_unknown_and_invalid_settings_are_rejected_with_the_file_name(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lstm_unit": 3}))
    with pytest.raises(ConfigError, match="c.json.*lstm_unit"):
        NERConfig.from_file(path)
    path.write_text("{\n  \"epochs\": 3,\n  oops\n}")
    with pytest.raises(ConfigError, match=r"c.json:3"):
        NERConfig.from_file(path)
    path.write_text('{"epochs": ' + "[" * 100_000)
    with pytest.raises(ConfigError, match=r"c.json: not valid JSON \(arrays or objects nested"):
        NERConfig.from_file(path)
    with pytest.raises(ConfigError, match="dropout"):
        NERConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="batch_size"):
        NERConfig(batch_size=0)
    with pytest.raises(ConfigError, match="tag_scheme"):
        NERConfig(tag_scheme="iob1")
    for momentum in (1.0, -0.1):
        with pytest.raises(ConfigError, match=r"weights_ema must be in \[0, 1\)"):
            NERConfig(weights_ema=momentum)


@pytest.mark.parametrize("setting, value, expected", [
    ("patience", "5", "an integer"), ("epochs", 2.0, "an integer"), ("epochs", True, "an integer"),
    ("learning_rate", "0.001", "a number"), ("weights_ema", True, "a number"),
    ("weights_ema", "0.99", "a number"), ("assertion_cue_copies", "0.2", "a number"),
    # A string flag would be truthy: "false" would mean true.
    ("assertion_trains_tagger", "false", "true or false"), ("use_casing", 0, "true or false"),
    ("assertion_head", None, "a string"),
    # NumPy's seeds are unsigned 32-bit: training failed with an internal error.
    ("seed", -1, "an integer >= 0"), ("seed", 2**32, "at most 4294967295"),
])
def test_a_setting_of_the_wrong_json_type_is_refused_by_name(tmp_path, setting, value, expected):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({setting: value}), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: {setting} must be {expected}, got "):
        NERConfig.from_file(path)


@pytest.mark.parametrize("setting, json_value, expected", [
    # NaN passed every check: the weights became NaN in the first step, and the run
    # ended as a success with a model that finds nothing.
    ("learning_rate", "NaN", "a finite number > 0"),
    ("clip_norm", "Infinity", "a finite number > 0"), ("lr_decay", "NaN", "a finite number >= 0"),
    ("assertion_loss_weight", "NaN", "a finite number > 0"),
    # An internal error once training read the vectors.
    ("embeddings_format", '"bin"', "one of auto, text, word2vec-binary"),
    # Internal errors (ResourceExhaustedError) when the model was built.
    ("lstm_units", "1000000000000", "at most 10000"), ("word_dim", "20000", "at most 10000"),
    # The inference graph's int32 chunk count overflowed at the first dev scoring.
    ("inference_chunk_size", str(2**31 - 1), "at most 1073741824"),
])
def test_a_setting_out_of_its_range_is_refused_by_name(tmp_path, setting, json_value, expected):
    path = tmp_path / "c.json"
    path.write_text(f'{{"{setting}": {json_value}}}', encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: {setting} must be {expected}, got "):
        NERConfig.from_file(path)


# One word where a setting goes: a patient's name, a record number or a one-word note.
WORD = "Zanzibarian"
NOT_SHOWN = f"a str of {len(WORD)} characters (not shown: it may be a note)"


@pytest.mark.parametrize("setting, expected", [
    ("batch_size", "an integer"), ("dropout", "a number"), ("use_casing", "true or false"),
    ("tag_scheme", "one of bio, bioes"), ("assertion_head", "one of shared, lstm"),
    ("embeddings_format", "one of auto, text, word2vec-binary"),
    ("bucket_boundaries", "a list of integers"),
])
def test_a_word_given_for_a_setting_is_described_not_quoted(tmp_path, setting, expected):
    # Audit: a string with whitespace was described, but a single word was quoted:
    # "tag_scheme must be one of bio, bioes, got 'Zanzibarian'".
    with pytest.raises(ConfigError) as raised:
        NERConfig(**{setting: WORD})
    assert str(raised.value) == f"{setting} must be {expected}, got {NOT_SHOWN}"
    path = tmp_path / "c.json"
    path.write_text(json.dumps({setting: WORD}), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        NERConfig.from_file(path)
    assert WORD not in str(raised.value) and str(raised.value).endswith(NOT_SHOWN)


def test_a_number_given_for_a_numeric_setting_is_still_quoted():
    # What the user typed for a number says what went wrong, and it is no clinical text.
    for value, shown in (("32", "'32'"), (1.5, "1.5")):
        with pytest.raises(ConfigError, match=rf"^batch_size must be an integer, got {shown}$"):
            NERConfig(batch_size=value)
    with pytest.raises(ConfigError, match=r"^batch_size must be a positive integer, got 0$"):
        check_integer("batch_size", 0)
    with pytest.raises(ConfigError) as raised:
        check_integer("batch_size", WORD)
    assert str(raised.value) == f"batch_size must be a positive integer, got {NOT_SHOWN}"


def test_a_setting_given_twice_in_a_file_is_refused(tmp_path):
    # json.loads keeps the last value: the first was ignored without a word.
    path = tmp_path / "c.json"
    path.write_text('{"epochs": 3,\n "lstm_units": 8,\n "epochs": 30}', encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid JSON \(the key 'epochs' appears "
                                          r"twice in one object\)"):
        NERConfig.from_file(path)


def test_shipped_configs_are_valid_and_default_json_is_the_default():
    configs = REPO_ROOT / "training" / "configs"
    assert NERConfig.from_file(configs / "default.json") == NERConfig()
    # Every setting, as the settings guide says.
    assert json.loads((configs / "default.json").read_text()) == NERConfig().to_dict()
    for path in configs.glob("*.json"):
        if not path.name.endswith("-map.json"):  # the maps beside them are not settings
            NERConfig.from_file(path)


def test_a_config_file_from_before_the_runtime_settings_loads_with_the_old_constants(tmp_path):
    values = NERConfig().to_dict()
    for name in ("bucket_boundaries", "inference_chunk_size", "fused_lstm_max_batch",
                 "annotate_batch_size", "annotate_max_batch_characters", "tag_batch_size"):
        del values[name]
    (tmp_path / "config.json").write_text(json.dumps(values))
    loaded = NERConfig.load(tmp_path)
    # The values that were constants in the code up to 0.2.4.
    assert loaded.bucket_boundaries == (8, 12, 16, 20, 25, 30, 40, 50, 64, 80, 100, 128, 160)
    assert (loaded.inference_chunk_size, loaded.fused_lstm_max_batch) == (128, 4)
    assert (loaded.annotate_batch_size, loaded.annotate_max_batch_characters,
            loaded.tag_batch_size) == (256, 100_000, 64)


@pytest.mark.parametrize("content, problem", [
    ("{\n  oops\n}", r":2: not valid JSON \("), ("[1]", ": expected a JSON object of settings"),
])
def test_a_model_s_damaged_config_file_is_a_model_that_cannot_be_used(tmp_path, content, problem):
    # It was a ConfigError (exit 2), as if an option were wrong; a bad setting in a
    # readable file stays one (docs/guide/settings.md).
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ModelError, match=rf"^{tmp_path}/config.json{problem}") as error:
        NERConfig.load(tmp_path)
    assert error.value.exit_code == 4


def test_bucket_boundaries_round_trip_through_json_and_are_checked(tmp_path):
    config = NERConfig(bucket_boundaries=[4, 9])
    assert config.bucket_boundaries == (4, 9)
    config.save(tmp_path)
    assert NERConfig.load(tmp_path) == config
    assert config.to_dict() == json.loads((tmp_path / "config.json").read_text())
    for bad in ([9, 4], [0, 3], 5, [2, 2]):
        with pytest.raises(ConfigError, match="bucket_boundaries"):
            NERConfig(bucket_boundaries=bad)
    with pytest.raises(ConfigError, match="fused_lstm_max_batch"):
        NERConfig(fused_lstm_max_batch=-1)
    (tmp_path / "config.json").write_text(json.dumps({"inference_chunk_size": 0}))
    with pytest.raises(ConfigError, match=r"config.json: inference_chunk_size must be a positive"):
        NERConfig.load(tmp_path)
    assert NERConfig(fused_lstm_max_batch=0).fused_lstm_max_batch == 0


def test_the_model_has_no_defaults_of_its_own():
    # A default in the model or a layer could drift from NERConfig's again
    # (the model's char_filters default was 50 while the configuration's was 100).
    import inspect

    from clinical_ner.model.layers.bilstm import BiLSTM
    from clinical_ner.model.layers.char_cnn import CharCNNEncoder
    from clinical_ner.model.network import ClinicalNERModel

    for constructor in (ClinicalNERModel.__init__, CharCNNEncoder.__init__, BiLSTM.__init__):
        defaults = [name for name, parameter in inspect.signature(constructor).parameters.items()
                    if parameter.default is not inspect.Parameter.empty]
        assert defaults == [], (constructor.__qualname__, defaults)
