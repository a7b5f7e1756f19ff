"""Config variants of the fixtures, made at test time, against transformers run on them.

Each variant copies a fixture, changes its config (and drops the tensors the
change removes), and scores the fixture's tokens in transformers (float32,
eager attention) as the reference: these tests need torch and transformers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import HF_FIXTURES, load_reference, write_safetensors

from edgeglm.backends.onnx import OnnxModel
from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.converters.onnx import convert
from edgeglm.metrics import kl_divergence

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def make_variant(
    tmp: Path,
    base: str,
    name: str,
    config: dict[str, Any],
    keep: Callable[[str], bool] = lambda _: True,
    tensors: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = lambda t: t,
) -> Path:
    """``base`` with ``config`` merged into its config.json, only the tensors ``keep``
    keeps, then rewritten by ``tensors``."""
    d = Path(shutil.copytree(HF_FIXTURES / base, tmp / name))
    (d / "reference.npz").unlink()
    cfg = json.loads((d / "config.json").read_text()) | config
    (d / "config.json").write_text(json.dumps(cfg))
    ckpt = HFCheckpoint(HF_FIXTURES / base)
    kept = {n: np.asarray(ckpt.load(n), dtype=np.float32) for n in ckpt if keep(n)}
    ckpt.close()
    write_safetensors(d / "model.safetensors", tensors(kept))
    return d


def transformers_logits(folder: Path, tokens: list[int]) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    )
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens])).logits[0]
    return np.asarray(out.float().numpy())


def onnx_kl(folder: Path, out: Path, tokens: list[int], ref: np.ndarray) -> np.ndarray:
    m = OnnxModel(convert(folder, out, "fp32").output, n_threads=1)
    try:
        return kl_divergence(ref, m.score(tokens))
    finally:
        m.close()


def test_glm4_moe_without_attention_biases(tmp_path: Path) -> None:
    """attention_bias false is a valid Glm4MoeForCausalLM config (GLM-4.5 sets it true)."""
    src = make_variant(
        tmp_path,
        "glm4_moe",
        "glm4_moe_nobias",
        {"attention_bias": False},
        keep=lambda n: not n.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")),
    )
    tokens = load_reference(HF_FIXTURES / "glm4_moe")[0][:96]
    ref = transformers_logits(src, tokens)
    kl = onnx_kl(src, tmp_path / "out", tokens, ref)
    assert kl.mean() < 1e-6, f"mean KL {kl.mean():.3g}"
