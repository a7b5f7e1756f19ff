"""Recipes: what we know about each GLM model, as validated files in recipes/.

A recipe names the model's source repo and architecture, how to recognize it
(shape facts, and a name pattern where shapes collide: GLM-4.6 and 4.7 share
every dimension), which quants to prefer on each hardware class, which
tensors deserve more precision, and known pitfalls. The planner uses the
recommendations when a model matches; a recipe that does not validate fails
loudly at load time, naming the file and the field.

Files live in ``recipes/`` at the repository root (``$EDGEGLM_RECIPES_DIR``
overrides, for tests and installs that keep them elsewhere).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgeglm.errors import HardwareError
from edgeglm.planner.model import ModelFacts
from edgeglm.schema import load_json_file

RECIPE_SCHEMA_VERSION = 1
ANY_CLASS = "*"


@dataclass(frozen=True)
class RecipeMatch:
    """All given fields must equal the model's; ``name_pattern`` only breaks ties."""

    architecture: str  # Hugging Face architecture, e.g. Glm4MoeForCausalLM
    gguf_architecture: str  # llama.cpp's, e.g. glm4moe
    n_layer: int | None = None  # trunk blocks (NextN/MTP not counted)
    n_embd: int | None = None
    n_expert: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    name_pattern: str | None = None  # case-insensitive regex on model name / repo


@dataclass(frozen=True)
class Recommendation:
    hardware_class: str  # a class from hardware_classes.json, or "*" for any other
    quants: list[str]  # preferred first; the planner takes the first that fits well
    ctx: int | None = None  # default context for this class (else policy.DEFAULT_MAX_CTX)
    note: str | None = None


@dataclass(frozen=True)
class HigherPrecision:
    tensors: str  # regex on GGUF tensor names
    type: str  # ggml type to keep them at, e.g. Q8_0
    why: str


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    source_repo: str
    match: RecipeMatch
    recommended: list[Recommendation]
    schema_version: int = RECIPE_SCHEMA_VERSION
    parameters: str | None = None  # "355B total, 32B active"
    keep_higher_precision: list[HigherPrecision] = field(default_factory=list)
    pitfalls: list[str] = field(default_factory=list)

    def recommendation(self, hardware_class: str) -> Recommendation:
        for r in self.recommended:
            if r.hardware_class == hardware_class:
                return r
        return next(r for r in self.recommended if r.hardware_class == ANY_CLASS)

    def matches(self, facts: ModelFacts) -> bool:
        m = self.match
        if facts.architecture != m.gguf_architecture:
            return False
        if facts.hf_architecture is not None and facts.hf_architecture != m.architecture:
            return False
        pairs = (
            (m.n_layer, facts.n_layer),
            (m.n_embd, facts.n_embd),
            (m.n_expert, facts.n_expert),
            (m.vocab_size, facts.n_vocab),
            (m.context_length, facts.n_ctx_train),
        )
        return all(want is None or want == have for want, have in pairs)

    def name_matches(self, facts: ModelFacts) -> bool:
        if self.match.name_pattern is None:
            return False
        text = " ".join(x for x in (facts.name, facts.repo or "", facts.path) if x)
        return re.search(self.match.name_pattern, text, re.IGNORECASE) is not None


def recipes_dir() -> Path:
    env = os.environ.get("EDGEGLM_RECIPES_DIR")
    if env:
        return Path(env)
    # A source checkout (editable installs link back to it): <repo>/recipes.
    return Path(__file__).resolve().parents[2] / "recipes"


def validate(recipe: Recipe, where: str) -> None:
    """Cross-field checks the types alone cannot express."""
    from gguf import GGMLQuantizationType

    from edgeglm.converters.gguf.quant_types import SCHEMES
    from edgeglm.planner.machine import hardware_classes
    from edgeglm.planner.virtual import plannable_architectures

    def bad(msg: str) -> HardwareError:
        return HardwareError(f"{where}: {msg}")

    if recipe.schema_version != RECIPE_SCHEMA_VERSION:
        raise bad(f"schema_version {recipe.schema_version}, expected {RECIPE_SCHEMA_VERSION}")
    if Path(where).stem != recipe.name:
        raise bad(f"name {recipe.name!r} must match the file name {Path(where).stem!r}")
    plannable = plannable_architectures()
    if recipe.match.architecture not in plannable:
        raise bad(
            f"match.architecture {recipe.match.architecture!r} is not plannable; "
            f"known: {', '.join(plannable)}"
        )
    classes = {c.name for c in hardware_classes()} | {ANY_CLASS}
    seen: set[str] = set()
    for i, r in enumerate(recipe.recommended):
        if r.hardware_class not in classes:
            raise bad(
                f"recommended[{i}].hardware_class {r.hardware_class!r} is unknown; "
                f"known: {', '.join(sorted(classes))}"
            )
        if r.hardware_class in seen:
            raise bad(f"recommended[{i}]: hardware_class {r.hardware_class!r} listed twice")
        seen.add(r.hardware_class)
        if not r.quants:
            raise bad(f"recommended[{i}].quants is empty")
        for q in r.quants:
            if q not in SCHEMES:
                raise bad(f"recommended[{i}]: unknown quant {q!r}; known: {', '.join(SCHEMES)}")
    if ANY_CLASS not in seen:
        raise bad('recommended needs a "*" entry for machines no other entry covers')
    for i, h in enumerate(recipe.keep_higher_precision):
        try:
            re.compile(h.tensors)
        except re.error as e:
            raise bad(f"keep_higher_precision[{i}].tensors: bad regex ({e})") from e
        if h.type not in GGMLQuantizationType.__members__:
            raise bad(f"keep_higher_precision[{i}].type {h.type!r} is not a ggml type")
    if recipe.match.name_pattern is not None:
        try:
            re.compile(recipe.match.name_pattern)
        except re.error as e:
            raise bad(f"match.name_pattern: bad regex ({e})") from e


def load_recipe(path: Path) -> Recipe:
    recipe = load_json_file(path, Recipe, error=HardwareError)
    validate(recipe, str(path))
    return recipe


def load_recipes(directory: Path | None = None) -> list[Recipe]:
    d = directory or recipes_dir()
    if not d.is_dir():
        return []
    return [load_recipe(p) for p in sorted(d.glob("*.json"))]


@dataclass(frozen=True)
class RecipeMatchResult:
    recipe: Recipe
    how: str  # "shape and name", "shape", "shape (ambiguous: also ...)"


def find_recipe(facts: ModelFacts, recipes: list[Recipe]) -> RecipeMatchResult | None:
    by_shape = [r for r in recipes if r.matches(facts)]
    if not by_shape:
        return None
    named = [r for r in by_shape if r.name_matches(facts)]
    if named:
        return RecipeMatchResult(named[0], "shape and name")
    if len(by_shape) == 1:
        return RecipeMatchResult(by_shape[0], "shape")
    others = ", ".join(r.name for r in by_shape[1:])
    return RecipeMatchResult(by_shape[0], f"shape; ambiguous, also fits {others}")
