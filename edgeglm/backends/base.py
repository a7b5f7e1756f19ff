"""The backend protocol: what the CLI, TUI, benchmark and server may ask of a model.

A backend loads one artifact (a GGUF for llama.cpp, an ONNX folder for ONNX
Runtime) and offers five things: tokenize, generate (streaming, with
sampling and stop strings), score (next-token logits for every position),
its chat template, and close. Optional abilities are declared in
``Capabilities`` with safe defaults, so callers check before they use them.

Every number and string a user can give a model (the CLI, the TUI, the
benchmark, the server) is checked here, once, the same way for every backend:
``SamplingParams`` refuses itself when built with meaningless settings, and
``check_text``, ``check_n_ctx`` and ``check_count`` bound the rest. Each
raises ``UsageError`` (exit 2) with one line that names the setting.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, runtime_checkable

import numpy as np
import numpy.typing as npt

from edgeglm.errors import UsageError

# llama.cpp keeps token counts (n_predict, top_k, n_ctx) in int32_t ...
INT32_MAX = 2**31 - 1
# ... and the sampler seed in a uint32_t, where 0xFFFFFFFF (LLAMA_DEFAULT_SEED)
# means "pick one at random": a seed the user gave must be reproducible, so
# that one is not a seed.
SEED_MAX = 2**32 - 2
# GGML_MAX_N_THREADS: ggml refuses thread pools larger than this.
MAX_THREADS = 512


def _is_int(v: object) -> TypeGuard[int | np.integer[Any]]:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (_is_int(v) or isinstance(v, (float, np.floating))) and math.isfinite(float(v))


def sampling_problems(values: Mapping[str, Any]) -> list[str]:
    """Why these sampling settings (SamplingParams' fields, by name) are meaningless.

    Absent fields count as their defaults. Empty when every value is usable.
    """

    def v(name: str) -> Any:
        return values.get(name, _DEFAULTS[name])

    out = []
    for name, lo in (("max_tokens", 1), ("top_k", 0)):
        if not (_is_int(v(name)) and lo <= v(name) <= INT32_MAX):
            out.append(f"{name} must be a whole number from {lo} to {INT32_MAX} (got {v(name)!r})")
    if not (_is_int(v("seed")) and 0 <= v("seed") <= SEED_MAX):
        out.append(f"seed must be a whole number from 0 to {SEED_MAX} (got {v('seed')!r})")
    # name: (lowest, is the lowest allowed, highest, the rule in words)
    ranges = {
        "temperature": (0.0, True, math.inf, ">= 0 (0 = greedy)"),
        "top_p": (0.0, False, 1.0, "in (0, 1]"),
        "min_p": (0.0, True, 1.0, "in [0, 1]"),
        "repeat_penalty": (0.0, False, math.inf, "> 0 (1 = off)"),
    }
    for name, (low, low_ok, high, rule) in ranges.items():
        num = float(v(name)) if _is_number(v(name)) else math.nan
        if not ((low <= num if low_ok else low < num) and num <= high):
            out.append(f"{name} must be a finite number {rule} (got {v(name)!r})")
    stop = v("stop")
    if not isinstance(stop, (tuple, list)) or not all(isinstance(s, str) and s for s in stop):
        out.append(f"stop must be a list of non-empty strings (got {stop!r})")
    else:
        out += [p for s in stop if (p := text_problem(s, "stop string"))]
    return out


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI/llama.cpp-style sampling settings. temperature 0 means greedy.

    Refuses to exist with meaningless values (``UsageError``), so no backend
    ever samples with them: see ``sampling_problems`` for the rules.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = sampling_problems(vars(self))
        if problems:
            raise UsageError("invalid sampling parameters: " + "; ".join(problems))


_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in SamplingParams.__dataclass_fields__.values()
}


def text_problem(text: object, what: str) -> str | None:
    """Why ``text`` is not valid Unicode text (None when it is).

    Command-line arguments that are not valid UTF-8 reach Python as lone
    surrogates (the ``surrogateescape`` error handler); no tokenizer takes them.
    """
    if not isinstance(text, str):
        return f"{what} must be text (got {type(text).__name__})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        ch = ord(text[e.start])
        bad = f"byte 0x{ch - 0xDC00:02x}" if 0xDC80 <= ch <= 0xDCFF else f"U+{ch:04X}"
        return f"{what} is not valid UTF-8 ({bad} at character {e.start})"
    return None


def check_text(text: object, what: str, *, empty_ok: bool = True) -> str:
    """``text`` if it is valid Unicode text (and not empty, unless ``empty_ok``)."""
    problem = text_problem(text, what)
    if problem is None and not empty_ok and not text:
        problem = f"{what} is empty"
    if problem is not None:
        raise UsageError(problem)
    return text  # type: ignore[return-value]


def check_count(what: str, value: object, lo: int, hi: int) -> int:
    """``value`` if it is a whole number in [lo, hi]."""
    if not (_is_int(value) and lo <= int(value) <= hi):
        raise UsageError(f"{what} must be a whole number from {lo} to {hi} (got {value!r})")
    return int(value)


def check_threads(n: object, what: str = "threads") -> int | None:
    """None (let the plan choose) or a thread count ggml accepts."""
    return None if n is None else check_count(what, n, 1, MAX_THREADS)


def check_n_ctx(n: object, n_ctx_train: int | None = None, what: str = "context size") -> int:
    """A context size of at least one token and at most what the model was trained
    for: llama.cpp would allocate a KV cache for any size first, and fail (or
    produce garbage past the trained length) only later."""
    n = check_count(what, n, 1, INT32_MAX)
    if n_ctx_train is not None and 0 < n_ctx_train < n:
        raise UsageError(f"{what} {n} exceeds the model's trained context ({n_ctx_train} tokens)")
    return n


@dataclass
class Timings:
    """Measured, never estimated: seconds come from perf_counter around real work."""

    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    completion_tokens: int = 0
    decode_seconds: float = 0.0
    time_to_first_token: float = 0.0

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        # the first completion token comes out of prefill; decode makes the rest
        n = self.completion_tokens - 1
        return n / self.decode_seconds if n > 0 and self.decode_seconds else 0.0


@dataclass
class Chunk:
    """One step of a streamed generation: new text, and the token ids it came from."""

    text: str
    tokens: list[int] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    tokens: list[int]
    finish_reason: str  # "stop" (eos/eot or a stop string) or "length"
    timings: Timings


@dataclass(frozen=True)
class Capabilities:
    streaming: bool = True
    logits: bool = True  # score() works
    gpu_offload: bool = False
    device: str = "cpu"  # what actually ran, e.g. "cpu", "cuda:0", "CUDAExecutionProvider"


@runtime_checkable
class Backend(Protocol):
    name: str
    capabilities: Capabilities

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """Token ids; ``special=True`` parses special tokens such as <|user|> in the text."""
        ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def chat_template(self) -> str | None:
        """The model's own Jinja chat template (GGUF or tokenizer_config.json)."""
        ...

    def generate(
        self, prompt: list[int], params: SamplingParams
    ) -> Generator[Chunk, None, Completion]:
        """Stream the continuation of ``prompt``; the generator's return value is a Completion."""
        ...

    def score(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        """Logits predicting token i+1 from tokens[:i+1], shape [len(tokens), n_vocab]."""
        ...

    def close(self) -> None: ...
