"""A model split over this machine and two loopback workers computes what it
computes here alone: the same greedy text, logits within KL 1e-6."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rpc_workers import Worker

from edgeglm.backends.base import Backend, SamplingParams
from edgeglm.runtime import open_backend

PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"


def _greedy(m: Backend, prompt: list[int]) -> str:
    gen = m.generate(prompt, SamplingParams(temperature=0.0, max_tokens=24))
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return str(stop.value.text)


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return np.asarray(x - np.log(np.exp(x).sum(-1, keepdims=True)))

    p, q = log_softmax(p_logits), log_softmax(q_logits)
    return float((np.exp(p) * (p - q)).sum(-1).max())


@pytest.mark.parametrize("model", ["demo_gguf", "moe_gguf"])
def test_split_over_two_workers_matches_local(
    model: str, two_workers: tuple[Worker, Worker], request: pytest.FixtureRequest
) -> None:
    gguf: Path = request.getfixturevalue(model)
    rpc = tuple(w.endpoint for w in two_workers)
    local = open_backend(str(gguf), logits=True, n_ctx=256)
    split = open_backend(str(gguf), logits=True, n_ctx=256, rpc=rpc)
    try:
        # layers really are on the workers: the planner gives each a share by free memory
        settings = split.settings  # type: ignore[attr-defined]  # llama.cpp's, as run
        assert settings["rpc"] == list(rpc)
        assert settings["n_gpu_layers"] > 1
        assert len(settings["tensor_split"]) == 2
        prompt = local.tokenize(PROMPT)
        assert split.tokenize(PROMPT) == prompt
        assert _greedy(split, prompt) == _greedy(local, prompt)
        assert _kl(local.score(prompt), split.score(prompt)) < 1e-6
    finally:
        split.close()
        local.close()
