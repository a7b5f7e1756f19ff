"""The backend protocol: what the CLI, TUI, benchmark and server may ask of a model.

A backend loads one artifact (a GGUF for llama.cpp, an ONNX folder for ONNX
Runtime) and offers five things: tokenize, generate (streaming, with
sampling and stop strings), score (next-token logits for every position),
its chat template, and close. Optional abilities are declared in
``Capabilities`` with safe defaults, so callers check before they use them.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI/llama.cpp-style sampling settings. temperature 0 means greedy."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()


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
