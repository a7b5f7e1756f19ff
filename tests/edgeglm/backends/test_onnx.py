"""The ONNX Runtime backend: the Backend protocol on a converted fixture, the
KV-cache decode loop against full-sequence scoring, streaming with stop strings,
and the numpy sampler it uses."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import HF_FIXTURES, load_reference

from edgeglm.backends.base import Backend, Chunk, Completion, SamplingParams
from edgeglm.backends.onnx import LOGITS_TO_KEEP, OnnxModel, usable_providers
from edgeglm.backends.sampling import Sampler, min_p, repeat_penalty, top_k, top_p
from edgeglm.converters.onnx import convert
from edgeglm.errors import BackendError, UsageError

SRC = HF_FIXTURES / "glm4"


@pytest.fixture(scope="module", params=["fp32", "int4"])
def model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OnnxModel]:
    out = tmp_path_factory.mktemp("onnx") / request.param
    m = OnnxModel(convert(SRC, out, request.param).output, n_threads=1)
    yield m
    m.close()


def run(m: OnnxModel, prompt: list[int], params: SamplingParams) -> tuple[list[Chunk], Completion]:
    chunks, gen = [], m.generate(prompt, params)
    while True:
        try:
            chunks.append(next(gen))
        except StopIteration as stop:
            return chunks, stop.value


def test_implements_the_backend_protocol(model: OnnxModel) -> None:
    assert isinstance(model, Backend)
    caps = model.capabilities
    assert caps.streaming and caps.logits
    # the provider that actually runs, not the first one onnxruntime-gpu lists
    assert caps.device == model.session.get_providers()[0]
    assert caps.gpu_offload == (caps.device != "CPUExecutionProvider")


def test_provider_probe_reports_only_providers_that_start(model: OnnxModel) -> None:
    found = usable_providers()
    assert found[-1] == "CPUExecutionProvider"
    assert set(found) <= set(ort.get_available_providers())
    # onnxruntime-gpu lists CUDA even where its libraries are missing: never claim it then
    if "CUDAExecutionProvider" not in found:
        assert model.capabilities.device == "CPUExecutionProvider"


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in usable_providers(), reason="no working CUDA provider here"
)
def test_cuda_decode_with_device_kv_cache_matches_cpu(model: OnnxModel) -> None:
    gpu = OnnxModel(model.folder, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert gpu.capabilities.device == "CUDAExecutionProvider" and gpu.capabilities.gpu_offload
    prompt = model.tokenize("def fibonacci(n):")
    ours = run(gpu, prompt, SamplingParams(max_tokens=16))[1].tokens
    cpu_logits = model.score(prompt + ours)
    assert cpu_logits[len(prompt) - 1 : -1].argmax(-1).tolist() == ours
    gpu.close()


def test_tokenizer_and_chat_template(model: OnnxModel) -> None:
    tokens, _, text = load_reference(SRC)
    assert model.tokenize(text) == tokens
    assert model.detokenize(tokens) == text
    user = model.tokenize("<|user|>", special=True)
    assert len(user) == 1 and user[0] in model.eos_ids
    assert len(model.tokenize("<|user|>")) > 1  # user text is never a control token
    tcfg = json.loads((SRC / "tokenizer_config.json").read_text())
    assert model.chat_template() == tcfg["chat_template"]
    assert model.eos_ids == {1012, 1019, 1021}


def test_cached_decode_matches_full_sequence_scoring(model: OnnxModel) -> None:
    prompt = model.tokenize("def fibonacci(n):")
    _, done = run(model, prompt, SamplingParams(max_tokens=24))
    logits = model.score(prompt + done.tokens)
    # greedy from the KV-cache loop == greedy under teacher forcing, step by step
    greedy = logits[len(prompt) - 1 : -1].argmax(-1)
    assert greedy[: len(done.tokens)].tolist() == done.tokens


def test_chunked_prefill_and_decode_give_the_scored_logits(model: OnnxModel) -> None:
    tokens = load_reference(SRC)[0][:40]
    full = model.score(tokens)
    cache = model._new_cache(48)
    rows = []
    for a, b in ((0, 17), (17, 30), *((i, i + 1) for i in range(30, 40))):
        rows.append(model._step(tokens[a:b], a, cache))
    np.testing.assert_allclose(np.stack(rows), full[[16, 29, *range(30, 40)]], atol=2e-3)


def _without_logits_to_keep(folder: Path, out: Path) -> Path:
    """``folder`` as EdgeGLM wrote it before logits_to_keep: no such input, and
    the final norm reads the whole hidden state again (the Slices unwired)."""
    shutil.copytree(folder, out)
    m = onnx.load(str(out / "model.onnx"))
    g, ours = m.graph, "/model/logits_to_keep/"
    sliced = {n.output[0]: n.input[0] for n in g.node if n.name.startswith(ours)}
    kept = [n for n in g.node if not n.name.startswith(ours)]
    for n in kept:
        n.input[:] = [sliced.get(x, x) for x in n.input]
    del g.node[:]
    g.node.extend(kept)
    (keep,) = [i for i in g.input if i.name == LOGITS_TO_KEEP]
    g.input.remove(keep)
    read = {x for n in kept for x in n.input}  # the default and the Slices' constants go
    for t in [t for t in g.initializer if t.name not in read]:
        g.initializer.remove(t)
    g.output[0].type.tensor_type.shape.dim[1].dim_param = "sequence_length"
    onnx.save(m, out / "model.onnx")
    return out


def test_generate_keeps_one_row_of_logits_and_decodes_as_before(model: OnnxModel) -> None:
    assert model.keeps_logits  # a folder from this converter has the input
    prompt = model.tokenize("def fibonacci(n):")
    with_input = run(model, prompt, SamplingParams(max_tokens=20))[1].tokens
    model.keeps_logits = False  # the same graph with the input not fed: every row
    try:
        without = run(model, prompt, SamplingParams(max_tokens=20))[1].tokens
    finally:
        model.keeps_logits = True
    assert with_input == without


def test_folders_without_logits_to_keep_still_run(
    model: OnnxModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    old_folder = _without_logits_to_keep(model.folder, tmp_path_factory.mktemp("old") / "m")
    graph = onnx.load(str(old_folder / "model.onnx")).graph
    assert LOGITS_TO_KEEP not in {i.name for i in graph.input}
    old = OnnxModel(old_folder, n_threads=1)
    try:
        assert not old.keeps_logits
        tokens = load_reference(SRC)[0][:40]
        np.testing.assert_allclose(old.score(tokens), model.score(tokens), rtol=1e-5, atol=1e-5)
        prompt = model.tokenize("def fibonacci(n):")
        params = SamplingParams(max_tokens=20)
        assert run(old, prompt, params)[1].tokens == run(model, prompt, params)[1].tokens
    finally:
        old.close()


def test_a_logits_to_keep_we_cannot_feed_is_refused(model: OnnxModel, tmp_path: Path) -> None:
    out = Path(shutil.copytree(model.folder, tmp_path / "m"))
    m = onnx.load(str(out / "model.onnx"))
    (keep,) = [i for i in m.graph.input if i.name == LOGITS_TO_KEEP]
    keep.type.tensor_type.elem_type = onnx.TensorProto.INT32
    onnx.save(m, out / "model.onnx")
    with pytest.raises(BackendError, match="logits_to_keep is not an int64 scalar"):
        OnnxModel(out, n_threads=1)


def test_streaming_text_tokens_and_timings(model: OnnxModel) -> None:
    prompt = model.tokenize("import numpy as np\n")
    chunks, done = run(model, prompt, SamplingParams(max_tokens=12))
    assert "".join(c.text for c in chunks) == done.text
    assert [t for c in chunks for t in c.tokens] == done.tokens
    t = done.timings
    assert t.prompt_tokens == len(prompt) and t.prompt_seconds > 0
    assert t.completion_tokens >= len(done.tokens) and t.time_to_first_token > 0
    if done.finish_reason == "length":
        assert len(done.tokens) == 12 and t.decode_tokens_per_second > 0


def test_stop_string_ends_generation_and_is_never_streamed(model: OnnxModel) -> None:
    prompt = model.tokenize("The quick brown fox")
    _, free = run(model, prompt, SamplingParams(max_tokens=30))
    text = free.text.replace("\ufffd", "")
    assert len(text) > 12, "the fixture model should ramble"
    stop = text[8:12]
    chunks, done = run(model, prompt, SamplingParams(max_tokens=30, stop=(stop,)))
    assert done.finish_reason == "stop"
    assert done.text == free.text[: free.text.index(stop)]
    assert stop not in "".join(c.text for c in chunks)


def test_eos_ids_stop_generation(model: OnnxModel) -> None:
    prompt = model.tokenize("hello")
    _, free = run(model, prompt, SamplingParams(max_tokens=5))
    model.eos_ids.add(free.tokens[2])
    try:
        _, done = run(model, prompt, SamplingParams(max_tokens=5))
    finally:
        model.eos_ids.discard(free.tokens[2])
    assert done.finish_reason == "stop" and done.tokens == free.tokens[:2]


def test_seeded_sampling_is_reproducible(model: OnnxModel) -> None:
    prompt = model.tokenize("Once upon a time")
    p = SamplingParams(max_tokens=16, temperature=1.0, top_k=40, top_p=0.95, min_p=0.01, seed=7)
    a, b = run(model, prompt, p)[1], run(model, prompt, p)[1]
    c = run(model, prompt, SamplingParams(max_tokens=16, temperature=1.0, seed=8))[1]
    assert a.tokens == b.tokens and a.tokens != c.tokens


def test_bad_requests(model: OnnxModel) -> None:
    with pytest.raises(UsageError, match="empty"):
        model.score([])
    with pytest.raises(UsageError, match="context of 2048"):
        model.score([1] * 5000)
    small = OnnxModel(model.folder, n_threads=1, n_ctx=8)
    with pytest.raises(UsageError, match="context of 8"):
        small.score([1] * 8)
    small.close()
    with pytest.raises(UsageError, match="top_p"):
        run(model, [1, 2], SamplingParams(top_p=0.0))
    with pytest.raises(UsageError, match="max_tokens"):  # refused for every backend
        run(model, [1, 2], SamplingParams(max_tokens=0))


# -- sampler ----------------------------------------------------------------------


def test_sampler_filters() -> None:
    x = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert top_k(x.copy(), 2)[0].tolist() == [0, 1]
    assert top_p(*top_k(x.copy(), 0), 0.75)[0].tolist() == [0, 1]  # 0.5 + 0.3 reaches 0.75
    assert top_p(*top_k(x.copy(), 0), 0.01)[0].tolist() == [0]
    assert min_p(*top_k(x.copy(), 0), 0.5)[0].tolist() == [0, 1]  # >= 0.25
    pen = repeat_penalty(np.array([2.0, -2.0, 1.0]), [0, 1, 1], 2.0)
    assert pen.tolist() == [1.0, -4.0, 1.0]


def test_sampler_draws_follow_the_distribution() -> None:
    logits = np.log(np.array([0.7, 0.2, 0.1]))
    s = Sampler(SamplingParams(temperature=1.0, seed=0))
    counts = np.bincount([s(logits) for _ in range(4000)], minlength=3) / 4000
    np.testing.assert_allclose(counts, [0.7, 0.2, 0.1], atol=0.03)
    assert Sampler(SamplingParams(temperature=0.0))(logits) == 0
    hot = Sampler(SamplingParams(temperature=1e-3, seed=1))
    assert {hot(logits) for _ in range(50)} == {0}
    assert Sampler(SamplingParams(repeat_penalty=100.0))(logits, [0]) == 1


@pytest.mark.parametrize(
    "bad", [dict(temperature=-1.0), dict(top_k=-1), dict(min_p=2.0), dict(repeat_penalty=0.0)]
)
def test_sampler_rejects_meaningless_settings(bad: dict[str, float]) -> None:
    with pytest.raises(UsageError, match="invalid sampling parameters"):
        Sampler(SamplingParams(**bad))  # type: ignore[arg-type]
