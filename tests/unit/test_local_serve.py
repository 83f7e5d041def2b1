"""A newcomer's first commands (edgeservers/local_serve.py behind `make serve`): `make help` lists every target,
`make serve` takes any parameter, typed as the settings' fields, and prints requests that fit the model it
serves (tests/e2e/test_local_serve.py runs them against it)."""

from __future__ import annotations

import re
import subprocess

import pytest
from seldon_core.microservice import parse_parameters

from edgeservers.local_serve import main, requests_for, typed_parameters
from edgeservers.settings import Settings, seldon_types
from tests.support.harness import MAKE
from tests.support.paths import DEEPLAB, FACE_MASK, MOBILENET_V2, ROOT


def test_make_help_lists_every_target_with_its_line():
    makefiles = [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]
    phony = {t for f in makefiles for line in re.findall(r"^\.PHONY:(.*)$", f.read_text(), re.M) for t in line.split()}
    # "## name: what it does" (more "## " lines may follow), right above the rule "name:"
    rule = re.compile(r"^## ([a-z][a-z0-9-]*): .*\n(?:## .*\n)*\1:", re.M)
    documented = {name for f in makefiles for name in rule.findall(f.read_text())}
    assert phony == documented, "every target has a `## target: what it does` line above its rule"
    shown = subprocess.run([*MAKE, "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0]: line for line in shown.splitlines() if line[:3].strip()}
    assert set(listed) == phony
    assert all(len(line.split()) > 1 for line in listed.values()), shown


def test_parameters_are_typed_as_the_settings_fields():
    types = seldon_types()
    assert set(types) == {f for f in Settings.__dataclass_fields__}
    assert (types["top_k"], types["confidence_threshold"], types["return_mask"], types["model_uri"]) == (
        "INT",
        "FLOAT",
        "BOOL",
        "STRING",
    )
    parsed = parse_parameters(typed_parameters({"top_k": "3", "confidence_threshold": "0.8", "return_mask": "yes"}))
    assert parsed == {"top_k": 3, "confidence_threshold": 0.8, "return_mask": True}


def test_a_pair_without_a_value_is_refused_with_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        main([str(MOBILENET_V2), "top_k"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "make serve: PARAMS takes name=value pairs, got 'top_k'\n"


@pytest.mark.parametrize(
    "model, postprocess, photo",
    [(FACE_MASK, "detection", "face_mask_demo.jpg"), (DEEPLAB, "segmentation", "bird_segmentation.bmp")],
)
def test_the_photo_fits_the_model(model, postprocess, photo):
    (prediction, *_) = requests_for({"model_uri": str(model), "postprocess": postprocess}, "http://h:1", "http://h:2")
    assert prediction == f"curl -s -F binData=@images/{photo} http://h:1/api/v1.0/predictions"
