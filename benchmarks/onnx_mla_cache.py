"""MLA in the ONNX export: KV cache bytes, accuracy on the fixtures, decode speed.

    .venv/bin/python benchmarks/onnx_mla_cache.py kv
    .venv/bin/python benchmarks/onnx_mla_cache.py kl [FIXTURE ...] [--more]
    .venv/bin/python benchmarks/onnx_mla_cache.py synthetic OUT [--layers 8] [--quant Q] [--tag T]
    .venv/bin/python benchmarks/onnx_mla_cache.py decode FOLDER [FOLDER ...] [--ctx 1024]

``kv``: cache bytes per token for the published GLM-4.7-Flash and GLM-5 shapes
(tests/fixtures/configs), with per-head k/v expanded from the latent (the
export before weight absorption) and with the latent cached (now), beside
llama.cpp's (planner formula: the latent K only, plus GLM-5's indexer keys).
``kl``: for each MLA fixture and precision, mean and median KL from the
transformers logits stored with the fixture (``--more``: and on four derived
texts against transformers run here), and the folder's bytes.
``synthetic``: benchmarks/synthetic.py's GLM-4.7-Flash-attention checkpoint,
converted. ``decode``: per folder, tokens per second of one-token steps after
a ``--ctx`` token prefill, on the backend's in-place cache; the folders take
turns, repeat after repeat, and the medians are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from helpers import HF_FIXTURES, load_reference  # noqa: E402

MLA_FIXTURES = ("glm4_moe_lite", "glm_moe_dsa", "glm_moe_dsa_sparse", "glm_moe_dsa-wide")
CONFIGS = HERE.parent / "tests" / "fixtures" / "configs"


def kv_bytes(cfg: dict[str, int], itemsize: int) -> dict[str, int]:
    """Bytes per token over the trunk's layers: expanded heads, latent, llama.cpp's."""
    heads, layers = cfg["num_attention_heads"], cfg["num_hidden_layers"]
    rope, nope, v, lora = (cfg[k] for k in ("qk_rope_head_dim", "qk_nope_head_dim",
                                            "v_head_dim", "kv_lora_rank"))  # fmt: skip
    index = int(cfg.get("index_head_dim", 0))
    expanded = 2 * heads * max(rope + nope, v + index)  # k and v, every head
    latent = 2 * (lora + max(rope, index))  # k and v, one head
    llama = lora + rope + index  # the latent K (no V) and the indexer keys
    return {
        "expanded": expanded * layers * itemsize,
        "latent": latent * layers * itemsize,
        "llamacpp": llama * layers * itemsize,
    }


def cmd_kv() -> None:
    for name in ("glm-4.7-flash", "glm-5"):
        cfg = json.loads((CONFIGS / f"{name}.json").read_text())
        for dtype, size in (("float32 (int4/int8/fp32 exports)", 4), ("float16 (fp16)", 2)):
            b = kv_bytes(cfg, size)
            row = {
                "model": name,
                "cache dtype": dtype,
                **b,
                "ratio": round(b["expanded"] / b["latent"], 2),
                "32k_context_GiB": {k: round(x * 32768 / 2**30, 2) for k, x in b.items()},
            }
            print(json.dumps(row))  # fmt: skip


def derived_texts(tokens: list[int]) -> list[list[int]]:
    """Four more token sequences of the fixture's length (reversed, shuffled, rotated,
    random), so that a handful of MoE expert flips weigh less in a mean."""
    rng = np.random.default_rng(3)
    half = len(tokens) // 2
    shuffled = [int(t) for t in rng.permutation(tokens)]
    random = [int(t) for t in rng.integers(0, 1000, len(tokens))]
    return [tokens[::-1], shuffled, tokens[half:] + tokens[:half], random]


def cmd_kl(names: list[str], more: bool) -> None:
    """``more``: the derived texts too, against transformers run here (needs torch)."""
    from edgeglm.backends.onnx import OnnxModel
    from edgeglm.converters.onnx import convert
    from edgeglm.metrics import kl_divergence

    with tempfile.TemporaryDirectory() as tmp:
        for name in names or MLA_FIXTURES:
            tokens, ref, _ = load_reference(HF_FIXTURES / name)
            texts, refs = [tokens], [ref]
            if more:
                import torch
                import transformers

                model = transformers.AutoModelForCausalLM.from_pretrained(
                    HF_FIXTURES / name, dtype=torch.float32, attn_implementation="eager"
                )
                texts += derived_texts(tokens)
                with torch.no_grad():
                    refs += [
                        model(input_ids=torch.tensor([t])).logits[0].numpy() for t in texts[1:]
                    ]
            for quant in ("fp32", "fp16", "int8", "int4"):
                folder = convert(HF_FIXTURES / name, Path(tmp) / f"{name}-{quant}", quant).output
                m = OnnxModel(folder, n_threads=1)
                try:
                    kl = np.concatenate(
                        [kl_divergence(r, m.score(t)) for t, r in zip(texts, refs, strict=True)]
                    )
                    shape = [1, m.n_kv_head, "n", m.head_dim]
                finally:
                    m.close()
                row = {
                    "fixture": name,
                    "quant": quant,
                    "positions": len(kl),
                    "kl_mean": float(f"{kl.mean():.4g}"),
                    "kl_median": float(f"{np.median(kl):.4g}"),
                    "over_0.05": int((kl > 0.05).sum()),
                    "bytes": sum(p.stat().st_size for p in folder.iterdir() if ".onnx" in p.name),
                    "cache": shape,
                }
                print(json.dumps(row), flush=True)


def cmd_synthetic(out: Path, layers: int, quant: str, tag: str) -> None:
    import synthetic

    from edgeglm.converters.onnx import convert

    src = synthetic.make(out / "hf", layers, mla=True)
    result = convert(src, out / f"onnx-{quant}{tag}", quant)
    print(json.dumps({"folder": str(result.output), "bytes": result.bytes}))


def cmd_decode(folders: list[Path], ctx: int, new: int, repeats: int, threads: int) -> None:
    from edgeglm.backends.onnx import OnnxModel

    models = [OnnxModel(f, n_threads=threads) for f in folders]
    rng = np.random.default_rng(0)
    prompt = rng.integers(16, 1000, ctx).tolist()
    rates: dict[Path, list[float]] = {f: [] for f in folders}
    prefill: dict[Path, list[float]] = {f: [] for f in folders}
    for _ in range(repeats):
        for f, m in zip(folders, models, strict=True):
            cache = m._new_cache(ctx + new + 1)
            t0 = time.perf_counter()
            logits = m._step(prompt, 0, cache)
            prefill[f].append(ctx / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for j in range(new):
                logits = m._step([int(logits.argmax())], ctx + j, cache)
            rates[f].append(new / (time.perf_counter() - t0))
    for f, m in zip(folders, models, strict=True):
        r = rates[f]
        print(json.dumps({
            "folder": str(f), "ctx": ctx, "new": new, "threads": threads,
            "cache": [1, m.n_kv_head, ctx + new + 1, m.head_dim],
            "tok_s_median": round(statistics.median(r), 2), "tok_s": [round(x, 2) for x in r],
            "prefill_tok_s_median": round(statistics.median(prefill[f]), 1),
        }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("kv")
    kl = sub.add_parser("kl")
    kl.add_argument("fixtures", nargs="*")
    kl.add_argument("--more", action="store_true", help="four derived texts too (needs torch)")
    syn = sub.add_parser("synthetic")
    syn.add_argument("out", type=Path)
    syn.add_argument("--layers", type=int, default=8)
    syn.add_argument("--quant", default="int4")
    syn.add_argument("--tag", default="", help="appended to the output folder's name")
    dec = sub.add_parser("decode")
    dec.add_argument("folders", type=Path, nargs="+")
    dec.add_argument("--ctx", type=int, default=1024)
    dec.add_argument("--new", type=int, default=32)
    dec.add_argument("--repeats", type=int, default=5)
    dec.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.cmd == "kv":
        cmd_kv()
    elif a.cmd == "kl":
        cmd_kl(a.fixtures, a.more)
    elif a.cmd == "synthetic":
        cmd_synthetic(a.out, a.layers, a.quant, a.tag)
    else:
        cmd_decode(a.folders, a.ctx, a.new, a.repeats, a.threads)


if __name__ == "__main__":
    main()
