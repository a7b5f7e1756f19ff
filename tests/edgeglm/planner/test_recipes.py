"""Every recipe validates, matches its model, and bad recipes fail with a clear error."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeglm.errors import HardwareError
from edgeglm.planner.recipes import find_recipe, load_recipe, load_recipes, recipes_dir
from edgeglm.planner.sources import ModelSource

EXPECTED = {
    "edgeglm-demo",
    "glm-edge-1.5b",
    "glm-edge-4b",
    "glm-4-9b-0414",
    "glm-z1-9b",
    "glm-4.5",
    "glm-4.5-air",
    "glm-4.6",
    "glm-4.7",
    "glm-4.7-flash",
    "glm-5",
}


def test_every_recipe_validates() -> None:
    recipes = load_recipes()
    assert {r.name for r in recipes} == EXPECTED
    for r in recipes:
        assert r.source_repo and r.recommended[-1].hardware_class == "*"


@pytest.mark.parametrize(
    ("config", "recipe"),
    [
        ("glm-edge-1.5b-chat", "glm-edge-1.5b"),
        ("glm-edge-4b-chat", "glm-edge-4b"),
        ("glm-4-9b-0414", "glm-4-9b-0414"),
        ("glm-4.7-flash", "glm-4.7-flash"),
        ("glm-4.5-air", "glm-4.5-air"),
        ("glm-4.5", "glm-4.5"),
    ],
)
def test_real_configs_find_their_recipe(
    config: str, recipe: str, config_source: Callable[[str], ModelSource]
) -> None:
    match = find_recipe(config_source(config).facts("Q4_K_M"), load_recipes())
    assert match is not None and match.recipe.name == recipe
    assert match.how == "shape and name"


def test_shapes_alone_do_not_pick_between_twins(
    config_source: Callable[[str], ModelSource],
) -> None:
    """GLM-4-9B-0414 and GLM-Z1-9B share every dimension: the name decides."""
    facts = config_source("glm-4-9b-0414").facts("Q4_K_M")
    twins = [r for r in load_recipes() if r.matches(facts)]
    assert {r.name for r in twins} == {"glm-4-9b-0414", "glm-z1-9b"}


def _write(tmp_path: Path, name: str, **changes: object) -> Path:
    data = json.loads((recipes_dir() / "glm-4.5-air.json").read_text())
    data.update(name=name, **changes)
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"recommended": [{"hardware_class": "*", "quants": ["Q9_K"]}]}, "unknown quant 'Q9_K'"),
        ({"recommended": [{"hardware_class": "toaster", "quants": ["Q4_K_M"]}]}, "'toaster'"),
        ({"recommended": [{"hardware_class": "sbc", "quants": ["Q4_K_M"]}]}, '"*" entry'),
        (
            {"match": {"architecture": "LlamaForCausalLM", "gguf_architecture": "llama"}},
            "not plannable",
        ),
        ({"match": {"gguf_architecture": "glm4moe"}}, "match.architecture: missing"),
        ({"parameters": 106}, "parameters: expected a string, got int 106"),
        ({"pitfall": ["typo"]}, "unknown key 'pitfall'"),
        ({"keep_higher_precision": [{"tensors": "(", "type": "Q8_0", "why": "x"}]}, "bad regex"),
        (
            {"keep_higher_precision": [{"tensors": "a", "type": "Q7", "why": "x"}]},
            "not a ggml type",
        ),
    ],
)
def test_bad_recipes_name_the_file_and_field(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    path = _write(tmp_path, "broken", **changes)
    with pytest.raises(HardwareError, match=r"broken\.json") as e:
        load_recipe(path)
    assert message in str(e.value)


def test_recipe_name_must_match_its_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "renamed")
    path.rename(tmp_path / "other.json")
    with pytest.raises(HardwareError, match="must match the file name"):
        load_recipe(tmp_path / "other.json")
