"""A scripted Backend for app tests: fixed chunks, optional delay or gate, recorded prompts."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeglm.backends.base import Capabilities, Chunk, Completion, SamplingParams, Timings


class FakeBackend:
    name = "fake"
    capabilities = Capabilities(logits=False, device="cpu")

    def __init__(
        self,
        chunks: Sequence[str] = ("Hello", " from", " **GLM**", "."),
        *,
        delay: float = 0.0,
        gate: threading.Semaphore | None = None,
        fail: Exception | None = None,
        n_ctx: int = 2048,
    ) -> None:
        self.chunks = list(chunks)
        self.delay = delay
        self.gate = gate  # when given, each chunk waits for one release()
        self.fail = fail
        self.n_ctx = n_ctx
        self.texts: list[str] = []  # every text tokenized (the rendered prompts)
        self.prompts: list[list[int]] = []
        self.prompt_texts: list[str] = []  # each generation's prompt, words joined by spaces
        self._vocab: dict[str, int] = {}
        self.params: list[SamplingParams] = []
        self.closed = False
        self.path: Path | None = None  # the loaded file, as LlamaCppModel reports it
        self.yielded = 0  # chunks handed out, across generations

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        self.texts.append(text)
        # one "token" per word keeps counts readable
        return [self._vocab.setdefault(w, len(self._vocab)) for w in text.split()]

    def detokenize(self, tokens: list[int]) -> str:
        words = {i: w for w, i in self._vocab.items()}
        return " ".join(words[t] for t in tokens)

    def chat_template(self) -> str | None:
        return None  # the GLM fallback template

    def generate(
        self, prompt: list[int], params: SamplingParams
    ) -> Generator[Chunk, None, Completion]:
        self.prompts.append(prompt)
        self.prompt_texts.append(self.detokenize(prompt))
        self.params.append(params)
        if self.fail is not None:
            raise self.fail
        for i, text in enumerate(self.chunks):
            if self.gate is not None and not self.gate.acquire(timeout=60):
                raise TimeoutError("test never released the fake backend's gate")
            if self.delay:
                time.sleep(self.delay)
            self.yielded += 1
            yield Chunk(text, [i])
        timings = Timings(
            prompt_tokens=len(prompt),
            prompt_seconds=0.05,
            completion_tokens=len(self.chunks),
            decode_seconds=(len(self.chunks) - 1) / 20 or 0.0,
            time_to_first_token=0.05,
        )
        return Completion("".join(self.chunks), list(range(len(self.chunks))), "stop", timings)

    def score(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        return np.zeros((len(tokens), 8), dtype=np.float32)

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    """Hands out one FakeBackend (or raises) and records what was asked for."""

    def __init__(self, backend: FakeBackend | None = None, error: Exception | None = None) -> None:
        self.backend = backend or FakeBackend()
        self.error = error
        self.calls: list[tuple[str | None, str, int | None]] = []

    def __call__(self, ref: str | None, *, backend: str, n_ctx: int | None) -> FakeBackend:
        self.calls.append((ref, backend, n_ctx))
        if self.error is not None:
            raise self.error
        return self.backend
