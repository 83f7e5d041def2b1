"""The parameter list itself, checked before Seldon's parser reads it (edgeservers/parameter_check.py): each
value Seldon cannot parse is named in one line."""

from __future__ import annotations

import pytest

from tests.support.harness import parameters

# (parameter list as the operator or a user writes it, the one line after "TFLiteServer: ")
PARAMETER_LIST_CASES = {
    "INT with a fraction": (
        '[{"name": "top_k", "value": "3.5", "type": "INT"}]',
        "parameter top_k: '3.5' is not an INT (a whole number in digits)",
    ),
    "INT that is a word": (
        '[{"name": "top_k", "value": "five", "type": "INT"}]',
        "parameter top_k: 'five' is not an INT (a whole number in digits)",
    ),
    "INT written 3.0": (
        '[{"name": "top_k", "value": "3.0", "type": "INT"}]',
        "parameter top_k: '3.0' is not an INT (write it in digits: 3)",
    ),
    "FLOAT that is a word": (
        '[{"name": "confidence_threshold", "value": "high", "type": "FLOAT"}]',
        "parameter confidence_threshold: 'high' is not a FLOAT",
    ),
    "DOUBLE that is empty": (
        '[{"name": "score_threshold", "value": "", "type": "DOUBLE"}]',
        "parameter score_threshold: '' is not a DOUBLE",
    ),
    "BOOL that is a word": (
        '[{"name": "return_mask", "value": "maybe", "type": "BOOL"}]',
        "parameter return_mask: 'maybe' is not a BOOL (true or false, yes or no, on or off, 1 or 0)",
    ),
    "BOOL as a JSON boolean": (
        '[{"name": "return_mask", "value": true, "type": "BOOL"}]',
        "parameter return_mask: True is not a BOOL (true or false, yes or no, on or off, 1 or 0)",
    ),
    "INT as JSON null": (
        '[{"name": "top_k", "value": null, "type": "INT"}]',
        "parameter top_k: None is not an INT (a whole number in digits)",
    ),
    "no value": ('[{"name": "top_k", "type": "INT"}]', "parameter top_k: no value"),
    "no type": (
        '[{"name": "top_k", "value": "3"}]',
        "parameter top_k: type None is not one of INT, FLOAT, DOUBLE, STRING, BOOL",
    ),
    "lowercase type": (
        '[{"name": "top_k", "value": "3", "type": "int"}]',
        "parameter top_k: type 'int' is not one of INT, FLOAT, DOUBLE, STRING, BOOL",
    ),
    "no name": (
        '[{"value": "3", "type": "INT"}]',
        'PREDICTIVE_UNIT_PARAMETERS: entry 1 has no name: \'{"value": "3", "type": "INT"}\'',
    ),
    "an object, not a list": (
        '{"top_k": 3}',
        'PREDICTIVE_UNIT_PARAMETERS must be a JSON list of {"name", "type", "value"} objects, got \'{"top_k": 3}\'',
    ),
    "a list of names": (
        '["top_k"]',
        'PREDICTIVE_UNIT_PARAMETERS must be a JSON list of {"name", "type", "value"} objects, got \'["top_k"]\'',
    ),
    "not JSON": (
        "top_k=3",
        "PREDICTIVE_UNIT_PARAMETERS is not valid JSON (Expecting value: line 1 column 1 (char 0)): 'top_k=3'",
    ),
}


@pytest.mark.parametrize("case", sorted(PARAMETER_LIST_CASES))
def test_a_parameter_list_seldon_cannot_parse_is_named(monkeypatch, case):
    """Seldon's own parse_args and parse_parameters, wrapped as the .pth wraps them in the real process."""
    from seldon_core import microservice

    from edgeservers.parameter_check import checked

    text, line = PARAMETER_LIST_CASES[case]
    monkeypatch.setenv("PREDICTIVE_UNIT_PARAMETERS", text)
    monkeypatch.setattr("sys.argv", ["seldon-core-microservice", "TFLiteServer", "--service-type", "MODEL"])
    with pytest.raises(SystemExit) as stopped:
        checked(microservice.parse_args, microservice.parse_parameters)()
    assert stopped.value.code == f"TFLiteServer: {line}"


def test_a_good_parameter_list_passes_unchanged(monkeypatch):
    from seldon_core import microservice

    from edgeservers.parameter_check import checked

    good = parameters({"model_uri": "/mnt/models", "top_k": 3, "confidence_threshold": 0.5, "return_mask": True})
    monkeypatch.setenv("PREDICTIVE_UNIT_PARAMETERS", good)
    monkeypatch.setattr("sys.argv", ["seldon-core-microservice", "edgeservers_x.TFLiteServer"])
    options, remaining = checked(microservice.parse_args, microservice.parse_parameters)()
    assert options.parameters == good and remaining == []
