"""The llama.cpp backend against the real llama.cpp, on a fixture converted in the test."""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from pathlib import Path

import numpy as np
import pytest
from helpers import HF_FIXTURES, child_decode_with_extra_buffers, edgeglm

from edgeglm.backends.base import Backend, Chunk, Completion, SamplingParams
from edgeglm.backends.isolated import run_isolated
from edgeglm.backends.llamacpp import LlamaCppModel, engine_has_amx_kernels
from edgeglm.converters.gguf.convert import convert
from edgeglm.errors import BackendError


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(
        HF_FIXTURES / "glm4", tmp_path_factory.mktemp("llama") / "glm4.gguf", "Q8_0"
    ).output


@pytest.fixture(scope="module")
def model(gguf: Path) -> Generator[LlamaCppModel, None, None]:
    m = LlamaCppModel(gguf, n_ctx=256, logits_all=True)
    yield m
    m.close()


def _run(m: LlamaCppModel, prompt: list[int], params: SamplingParams) -> tuple[str, Completion]:
    gen = m.generate(prompt, params)
    pieces: list[Chunk] = []
    while True:
        try:
            pieces.append(next(gen))
        except StopIteration as stop:
            return "".join(p.text for p in pieces), stop.value


def test_implements_the_backend_protocol(model: LlamaCppModel) -> None:
    assert isinstance(model, Backend)
    assert model.chat_template() and "[gMASK]<sop>" in model.chat_template()  # type: ignore[operator]


def test_greedy_generation_is_the_argmax_chain_of_score(model: LlamaCppModel) -> None:
    prompt = model.tokenize("def read_lines(path):")
    text, done = _run(model, prompt, SamplingParams(max_tokens=12))
    assert done.finish_reason in ("length", "stop")
    seq = list(prompt)
    for tok in done.tokens:
        assert int(np.argmax(model.score(seq)[-1])) == tok
        seq.append(tok)
    assert text == model.detokenize(done.tokens)


def test_max_tokens_and_measured_timings(model: LlamaCppModel) -> None:
    _, done = _run(
        model, model.tokenize("Hello"), SamplingParams(max_tokens=5, temperature=0.8, seed=1)
    )
    t = done.timings
    if done.finish_reason == "length":
        assert len(done.tokens) == 5
    assert t.prompt_tokens == len(model.tokenize("Hello"))
    assert t.time_to_first_token > 0 and t.completion_tokens == len(done.tokens)


def test_seeded_sampling_is_reproducible(model: LlamaCppModel) -> None:
    p = model.tokenize("The context manager")
    a = _run(model, p, SamplingParams(max_tokens=16, temperature=1.0, seed=7))[1].tokens
    b = _run(model, p, SamplingParams(max_tokens=16, temperature=1.0, seed=7))[1].tokens
    assert a == b


def test_stop_string_ends_generation_before_it(model: LlamaCppModel) -> None:
    prompt = model.tokenize("import os\n")
    full, _ = _run(model, prompt, SamplingParams(max_tokens=24))
    assert len(full) > 6
    stop = full[3:6]
    text, done = _run(model, prompt, SamplingParams(max_tokens=24, stop=(stop,)))
    assert done.finish_reason == "stop"
    assert text == full[: full.index(stop)]


def test_missing_file() -> None:
    with pytest.raises(BackendError, match="no such GGUF"):
        LlamaCppModel(Path("/nonexistent.gguf"))


@pytest.mark.skipif(
    not re.search(r"^flags\s*:.*\bavx2\b", Path("/proc/cpuinfo").read_text(), re.M),
    reason="llama.cpp repacks Q4_K weights for AVX2 (x86) CPUs",
)
def test_k_quants_run_on_the_repacked_path_and_never_on_amx_kernels(tmp_path: Path) -> None:
    """The fast path is kept: Q4_K weights are repacked (CPU_REPACK buffer), on
    AMX CPUs too, where the engine EdgeGLM builds has no AMX kernels to crash
    in. An engine with AMX kernels on an AMX CPU would show no repack here."""
    q4 = convert(HF_FIXTURES / "glm4", tmp_path / "q4.gguf", "Q4_K_M").output
    env = {**os.environ, "EDGEGLM_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("EDGEGLM_LLAMA_EXTRA_BUFTS", None)
    r = edgeglm("run", str(q4), "--verbose", "-p", "hi", "-n", "1", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"CPU_REPACK model buffer size = +[0-9.]+ MiB", r.stderr), r.stderr
    assert "AMX model buffer" not in r.stderr


@pytest.mark.skipif(
    "amx" not in Path("/proc/cpuinfo").read_text() or not engine_has_amx_kernels(),
    reason="needs an AMX CPU and an engine compiled with ggml's AMX kernels",
)
def test_real_llama_cpp_crash_is_contained(tmp_path: Path) -> None:
    """ggml's AMX kernels segfault on K-quants (seen on an AMX CPU with a
    -march=native engine): the crash must surface as an error, and the default
    settings must avoid it."""
    q4 = convert(HF_FIXTURES / "glm4", tmp_path / "q4.gguf", "Q4_K_M").output
    with pytest.raises(BackendError, match="crashed"):
        run_isolated(child_decode_with_extra_buffers, str(q4))
    from edgeglm.artifacts import verify_gguf

    verify_gguf(q4)  # default settings: no crash
