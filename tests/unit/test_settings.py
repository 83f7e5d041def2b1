"""The parameters (edgeservers/settings.py): each bad one named, strings typed, explicit values over adaptive ones."""

from __future__ import annotations

import pytest

from edgeservers.errors import ModelLoadError
from edgeservers.settings import Settings


@pytest.mark.parametrize(
    "parameters, words",
    [
        ({"model_uri": "m", "top_k": "five"}, "top_k='five': expected int"),
        ({"model_uri": "m", "top_k": 0}, "top_k=0: expected a whole number >= 1"),
        ({"model_uri": "m", "score_threshold": 1.5}, "expected a number from 0 to 1"),
        ({"model_uri": "m", "return_mask": "maybe"}, "return_mask='maybe': expected bool"),
        ({"model_uri": "m", "input_scale": "mean_std", "input_std": "0"}, "input_mean and input_std (non-zero)"),
        ({"model_uri": "m", "postprocess": "detection", "anchor_sizes": "0.1"}, "need 5 ';'-separated anchor_sizes"),
        ({"model_uri": "m", "labels": "l.txt", "label_names": "a,b"}, "parameters labels and label_names: set one"),
    ],
)
def test_settings_name_the_bad_parameter(parameters, words):
    with pytest.raises(ModelLoadError) as error:
        Settings.from_parameters(parameters)
    assert words in str(error.value)


def test_settings_accept_strings_for_typed_values():
    settings = Settings.from_parameters(
        {"model_uri": "m", "top_k": "3", "return_mask": "true", "confidence_threshold": "0.7"}
    )
    assert (settings.top_k, settings.return_mask, settings.confidence_threshold) == (3, True, 0.7)


def test_explicit_parameters_win_over_adaptive_defaults():
    defaults = {"pool_size": 2, "num_threads": 1}
    assert Settings.from_parameters({"model_uri": "m"}, defaults).pool_size == 2
    chosen = Settings.from_parameters({"model_uri": "m", "pool_size": "4", "num_threads": 3}, defaults)
    assert (chosen.pool_size, chosen.num_threads) == (4, 3)


def test_the_charts_parameter_types_and_names_come_from_settings():
    """charts/edge-model: the schema accepts exactly the Settings fields (model_uri is the operator's), and the
    types table of _helpers.tpl types every non-STRING field as its Settings field, no STRING one, nothing else.
    (tests/kubernetes/test_charts.py renders them with helm.)"""
    import json
    import re
    from dataclasses import fields

    from edgeservers.settings import seldon_types
    from tests.support.paths import ROOT

    chart = ROOT / "charts" / "edge-model"
    schema = json.loads((chart / "values.schema.json").read_text())
    assert set(schema["properties"]["parameters"]["properties"]) == {f.name for f in fields(Settings)} - {"model_uri"}
    (table,) = re.findall(r"\$types := dict (.*?) -\}\}", (chart / "templates" / "_helpers.tpl").read_text())
    pairs = re.findall(r'"(\w+)" "(\w+)"', table)
    assert dict(pairs) == {name: kind for name, kind in seldon_types().items() if kind != "STRING"}
    assert len(pairs) == len(dict(pairs))
