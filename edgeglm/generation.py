"""One set of sampling defaults for every way of talking to a model.

``run``, ``chat --cli`` and the chat app start from the same values, and each
value says where it came from:

1. the model's own defaults, where it has them:

   - a Hugging Face checkpoint's ``generation_config.json``, read with
     transformers' meaning: ``do_sample`` false or absent means greedy
     decoding (temperature 0), whatever temperature the file also names;
     ``temperature``, ``top_p``, ``top_k``, ``min_p``,
     ``repetition_penalty`` and ``max_new_tokens`` are taken as given. A
     file that names none of the sampling keys (only eos ids, say) says
     nothing about sampling; nothing is taken from it then but what it names.
     ``max_length`` is not a reply length (it bounds prompt plus reply, and
     the context size does that already).
   - a GGUF's ``general.sampling.*`` keys (``temp``, ``top_k``, ``top_p``,
     ``min_p``, ``penalty_repeat``), the keys llama.cpp itself reads as a
     model's defaults. EdgeGLM's converter writes them from
     generation_config.json (``sampling_metadata``), greedy as ``temp`` 0.
   - an ONNX folder's generation_config.json (EdgeGLM's converter copies the
     checkpoint's), else its genai_config.json ``search`` section (what
     onnxruntime-genai samples with: ``do_sample`` false means greedy).

2. llama.cpp's own defaults (common/common.h, ``common_params_sampling``) for
   every value the model does not set: temperature 0.8, top-k 40, top-p 0.95,
   min-p 0.05, repeat penalty 1.0 (off).

Reply length: llama.cpp's ``n_predict`` default, -1: the reply goes on until
the model ends its turn or the context is full. ``llama-cli`` and ``ollama
run`` do the same; a fixed cap (256, 512) cuts a thinking GLM model off in
the middle of its reasoning, before it has said anything. A model's own
``max_new_tokens`` replaces it.

Seed: EdgeGLM's 0, so the same prompt gives the same reply (llama.cpp's
default is a random seed every run).

Explicit flags (``--temp``, ``-n``...) win over all of these. A value in a
model file that is not a usable number is skipped with a warning (the model
still runs, with the next source's value): a model's optional defaults
should not make it unusable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeglm.backends.base import INT32_MAX, SamplingParams, sampling_problems

# common_params_sampling in llama.cpp's common/common.h.
LLAMA_CPP_DEFAULTS: dict[str, float | int] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "repeat_penalty": 1.0,
    "max_tokens": -1,  # n_predict
}
# llama.cpp's n_predict -1: until the end of the turn or a full context.
UNTIL_CONTEXT_FULL = -1
DEFAULT_SEED = 0

LLAMA_CPP = "llama.cpp default"
EDGEGLM = "EdgeGLM default"
COMMAND_LINE = "command line"
GENERATION_CONFIG = "generation_config.json"
GENAI_CONFIG = "genai_config.json"
GGUF_KEYS = "GGUF general.sampling"

FIELDS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "max_tokens", "seed")

# generation_config.json key -> our field
_HF_KEYS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repetition_penalty": "repeat_penalty",
}
# GGUF key (gguf-py Keys.General.SAMPLING_*) -> our field
GGUF_SAMPLING_KEYS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_k": "top_k",
    "general.sampling.top_p": "top_p",
    "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repeat_penalty",
}
# genai_config.json search key -> our field
_GENAI_KEYS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "repetition_penalty": "repeat_penalty",
}
_INT_FIELDS = ("top_k", "max_tokens", "seed")


@dataclass(frozen=True)
class Sampling:
    """Sampling settings and, for each, where it came from."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    max_tokens: int = UNTIL_CONTEXT_FULL  # -1: until the turn ends or the context is full
    seed: int = DEFAULT_SEED
    sources: Mapping[str, str] = field(default_factory=dict)  # absent: the default's
    warnings: tuple[str, ...] = ()  # model values that were skipped, and why

    def source(self, name: str) -> str:
        return self.sources.get(name) or (EDGEGLM if name == "seed" else LLAMA_CPP)

    def override(self, **given: float | int | None) -> Sampling:
        """These values, from the command line; None leaves a value as it is.
        Refused (UsageError) where they are meaningless."""
        chosen: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        unknown = set(chosen) - set(FIELDS)
        if unknown:
            raise TypeError(f"not a sampling setting: {sorted(unknown)[0]}")
        sources = {**self.sources, **dict.fromkeys(chosen, COMMAND_LINE)}
        out = replace(self, **chosen, sources=sources)
        out.params()  # checks every value
        return out

    def params(self, stop: tuple[str, ...] = ()) -> SamplingParams:
        """The backends' SamplingParams (UsageError on a meaningless value)."""
        return SamplingParams(
            max_tokens=max_tokens_param(self.max_tokens),
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            seed=self.seed,
            stop=stop,
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """{field: {"value": v, "source": where}} for --json."""
        return {n: {"value": getattr(self, n), "source": self.source(n)} for n in FIELDS}

    def describe(self) -> str:
        """One line: the values grouped by where they came from."""
        groups: dict[str, list[str]] = {}
        for name in FIELDS:
            where = self.source(name)
            if where.startswith("general.sampling."):  # one group for the GGUF's keys
                where = f"{GGUF_KEYS}.*"
            groups.setdefault(where, []).append(_show(name, getattr(self, name)))
        return "; ".join(f"{' '.join(items)} ({where})" for where, items in groups.items())


def _show(name: str, value: float | int) -> str:
    if name == "max_tokens":
        return "max_tokens=until end of turn or full context" if value < 0 else f"{name}={value}"
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"


def max_tokens_param(n: int) -> int:
    """-1 (llama.cpp's "no limit") as the backends take it: a budget no
    context reaches (every backend stops at its context's end)."""
    return INT32_MAX if n == UNTIL_CONTEXT_FULL else n


def check_max_tokens(n: object, what: str = "max_tokens") -> int:
    """-1 or a reply length SamplingParams takes (UsageError otherwise)."""
    from edgeglm.errors import UsageError

    if n == UNTIL_CONTEXT_FULL and not isinstance(n, bool):
        return UNTIL_CONTEXT_FULL
    if sampling_problems({"max_tokens": n}):
        raise UsageError(
            f"{what} must be -1 (until the context is full) or a whole number "
            f"from 1 to {INT32_MAX} (got {n!r})"
        )
    assert isinstance(n, int)
    return n


# -- reading a model's defaults -----------------------------------------------------


def _number(field_name: str, value: object) -> float | int | None:
    """A finite number of the field's kind, or None. GGUF values read through
    llama-cpp-python arrive as text ("0.600000")."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    if field_name in _INT_FIELDS:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _apply(
    values: dict[str, float | int], sources: dict[str, str], warnings: list[str],
    raw: Mapping[str, Any], keys: Mapping[str, str], where: str,
) -> None:  # fmt: skip
    """Take each key of ``keys`` that ``raw`` has and that is usable."""
    for key, name in keys.items():
        if key not in raw or raw[key] is None:
            continue
        value = _number(name, raw[key])
        problems = sampling_problems({name: value}) if value is not None else ["bad"]
        if name == "max_tokens" and value == UNTIL_CONTEXT_FULL:
            problems = []
        if problems:
            warnings.append(f"{where}: {key} {raw[key]!r} is not a usable value; ignored")
            continue
        assert value is not None
        values[name] = value
        sources[name] = where


def _finish(
    values: dict[str, float | int], sources: dict[str, str], warnings: list[str]
) -> Sampling:
    return Sampling(**values, sources=sources, warnings=tuple(warnings))  # type: ignore[arg-type]


def _read_json(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``; None (with a warning) when it cannot be used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        warnings.append(f"{path}: unreadable ({reason}); its sampling defaults are ignored")
        return None
    if not isinstance(data, dict):
        warnings.append(f"{path}: not a JSON object; its sampling defaults are ignored")
        return None
    return data


def speaks_about_sampling(gen: Mapping[str, Any]) -> bool:
    """Whether a generation_config.json names any sampling setting at all."""
    return "do_sample" in gen or any(k in gen for k in _HF_KEYS)


def hf_sampling(gen: Mapping[str, Any], where: str = GENERATION_CONFIG) -> tuple[
    dict[str, float | int], dict[str, str], list[str]
]:  # fmt: skip
    """(values, sources, warnings) a generation_config.json sets, with
    transformers' meaning (see the module docstring); nothing else."""
    values: dict[str, float | int] = {}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    if speaks_about_sampling(gen):
        _apply(values, sources, warnings, gen, _HF_KEYS, where)
        do_sample = gen.get("do_sample", False)
        if do_sample is not True:  # false or absent: transformers decodes greedily
            values["temperature"] = 0.0
            said = "absent" if "do_sample" not in gen else json.dumps(do_sample)
            sources["temperature"] = f"{where}: do_sample {said}, greedy"
    _apply(values, sources, warnings, gen, {"max_new_tokens": "max_tokens"}, where)
    return values, sources, warnings


def from_generation_config(folder: Path, where: str = GENERATION_CONFIG) -> Sampling:
    """A Hugging Face checkpoint's defaults (llama.cpp's where it sets none)."""
    warnings: list[str] = []
    path = folder / "generation_config.json"
    gen = _read_json(path, warnings) if path.is_file() else None
    if gen is None:
        return _finish({}, {}, warnings)
    values, sources, more = hf_sampling(gen, where)
    return _finish(values, sources, warnings + more)


def from_gguf_metadata(metadata: Mapping[str, Any]) -> Sampling:
    """A GGUF's ``general.sampling.*`` defaults (llama.cpp's where it sets none)."""
    values: dict[str, float | int] = {}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    for key, name in GGUF_SAMPLING_KEYS.items():
        _apply(values, sources, warnings, metadata, {key: name}, key)
    for name, value in values.items():
        if isinstance(value, float):  # stored as float32: 0.6 reads back as 0.6000000238
            values[name] = float(f"{value:.7g}")
    return _finish(values, sources, warnings)


def from_gguf(path: Path) -> Sampling:
    from edgeglm.gguf_file import read_gguf

    return from_gguf_metadata(read_gguf(path).metadata)


def from_onnx_folder(folder: Path) -> Sampling:
    """An ONNX folder's defaults: its generation_config.json (the checkpoint's,
    copied by the converter), else genai_config.json's ``search`` section."""
    if (folder / "generation_config.json").is_file():
        return from_generation_config(folder)
    warnings: list[str] = []
    path = folder / "genai_config.json"
    cfg = _read_json(path, warnings) if path.is_file() else None
    search = cfg.get("search") if cfg is not None else None
    if not isinstance(search, dict):
        return _finish({}, {}, warnings)
    where = f"{GENAI_CONFIG} search"
    values: dict[str, float | int] = {}
    sources: dict[str, str] = {}
    if search.get("do_sample") is True:
        _apply(values, sources, warnings, search, _GENAI_KEYS, where)
    elif "do_sample" in search:  # onnxruntime-genai's own default is greedy too
        values["temperature"] = 0.0
        sources["temperature"] = f"{where}: do_sample {json.dumps(search['do_sample'])}, greedy"
    return _finish(values, sources, warnings)


def model_defaults(kind: str, path: Path) -> Sampling:
    """The defaults of an artifact (``edgeglm.artifacts.Artifact``'s kind and path)."""
    if kind == "gguf":
        return from_gguf(path)
    if kind == "onnx":
        return from_onnx_folder(path)
    return from_generation_config(path)


def sampling_metadata(folder: Path) -> dict[str, float | int]:
    """The ``general.sampling.*`` keys a GGUF converted from ``folder`` carries:
    exactly what its generation_config.json sets (greedy as temp 0), so the
    GGUF samples as the checkpoint does, in EdgeGLM and in llama.cpp alike."""
    path = folder / "generation_config.json"
    warnings: list[str] = []
    gen = _read_json(path, warnings) if path.is_file() else None
    if gen is None:
        return {}
    values, _, _ = hf_sampling(gen)
    by_field = {name: key for key, name in GGUF_SAMPLING_KEYS.items()}
    return {by_field[name]: v for name, v in values.items() if name in by_field}
