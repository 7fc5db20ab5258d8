import json

import pytest

from clinical_ner.config import NERConfig
from clinical_ner.errors import ConfigError
from conftest import REPO_ROOT


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


def test_unknown_and_invalid_settings_are_rejected_with_the_file_name(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lstm_unit": 3}))
    with pytest.raises(ConfigError, match="c.json.*lstm_unit"):
        NERConfig.from_file(path)
    path.write_text("{\n  \"epochs\": 3,\n  oops\n}")
    with pytest.raises(ConfigError, match=r"c.json:3"):
        NERConfig.from_file(path)
    with pytest.raises(ConfigError, match="dropout"):
        NERConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="batch_size"):
        NERConfig(batch_size=0)
    with pytest.raises(ConfigError, match="tag_scheme"):
        NERConfig(tag_scheme="iob1")


def test_shipped_configs_are_valid_and_default_json_is_the_default():
    configs = REPO_ROOT / "training" / "configs"
    assert NERConfig.from_file(configs / "default.json") == NERConfig()
    for path in configs.glob("*.json"):
        NERConfig.from_file(path)
