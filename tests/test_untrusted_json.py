"""JSON from outside: whatever json.loads raises becomes one error that never quotes the text."""
import doctest

import pytest

from clinical_ner import untrusted_json
from clinical_ner.untrusted_json import UntrustedJSONError, parse_untrusted_json

SECRET = "Zanzibarian"


@pytest.mark.parametrize("text, message, position", [
    ('{"note": "' + SECRET + '", }', "Expecting property name enclosed in double quotes",
     (24, 1, 25)),
    ("[" * 100_000, "arrays or objects nested too deeply", None),
    ('{"note": "' + SECRET + '", "x": ' + "{\"a\": " * 100_000, "arrays or objects nested",
     None),
    ('[' + "9" * 5000 + ']', "a number has more than 4300 digits", None),
    (('["' + SECRET + '"]').encode("utf-8") + b"\xff", "not utf-8 text (byte offset", None),
])
def test_every_failure_is_one_error_without_the_text(text, message, position):
    with pytest.raises(UntrustedJSONError) as raised:
        parse_untrusted_json(text)
    error = raised.value
    assert message in str(error) and SECRET not in str(error)
    if position is None:
        assert (error.pos, error.lineno, error.colno) == (None, None, None)
    else:
        assert (error.pos, error.lineno, error.colno) == position
    assert isinstance(error, ValueError)  # callers that caught ValueError still do


def test_nesting_the_parser_can_hold_is_still_read():
    assert parse_untrusted_json("[" * 200 + "]" * 200) is not None


def test_doctests():
    results = doctest.testmod(untrusted_json)
    assert results.attempted > 0 and results.failed == 0


@pytest.mark.parametrize("option", ["--label-map", "--assertion-map"])
def test_json_options_name_the_file_of_a_value_nested_too_deeply(tmp_path, option):
    from clinical_ner.cli.common import read_assertion_map, read_label_map
    from clinical_ner.errors import ConfigError

    path = tmp_path / "map.json"
    path.write_text('{"Drug": ' + "[" * 100_000, encoding="utf-8")
    read = read_label_map if option == "--label-map" else read_assertion_map
    with pytest.raises(ConfigError, match=f"{option} {path}: arrays or objects nested too deeply"):
        read(str(path))
