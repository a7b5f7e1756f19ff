"""Where llama.cpp's GLM-5 (glm-dsa) DSA top-k differs from transformers', and why.

Runs a GlmMoeDsaForCausalLM checkpoint in transformers (float32, eager) and its
GGUF in llama.cpp, reads both indexers' scores and top-k selections per layer
(llama.cpp's through the ``cb_eval`` graph callback), and prints for each layer
the queries whose selected key sets differ and whether the keys that differ tie
in transformers' own scores. Then it runs transformers again with llama.cpp's
selections put in place of its own: if the logits then agree, the selection is
all that differs. Needs ``make reference`` (torch, transformers).

    .venv/bin/python scripts/dsa_topk_check.py CHECKPOINT_DIR MODEL.gguf [--kv f32|f16]

The tokens are the checkpoint's ``reference.npz`` (EdgeGLM fixtures) or the
tokenized ``--text``.
"""

from __future__ import annotations

import argparse
import ctypes
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeglm.metrics import kl_divergence

Array = npt.NDArray[Any]


def llama_run(gguf: Path, tokens: list[int], kv: str) -> tuple[Array, dict[str, Array]]:
    """llama.cpp's logits and its ``top_k-{il}`` / ``indexer_score-{il}`` tensors."""
    import llama_cpp

    from edgeglm.backends.llamacpp import LlamaCppModel
    from edgeglm.converters.gguf.calibrate import GGMLTensor, _Collector
    from edgeglm.converters.gguf.ggml import _lib_dir

    lib = ctypes.CDLL(str(_lib_dir() / "libggml-base.so"))
    lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    reader = _Collector(lib)
    seen: dict[str, Array] = {}

    def on_node(addr: int, ask: bool, user_data: Any) -> bool:
        name = GGMLTensor.from_address(addr).name.decode(errors="replace")
        if not name.startswith(("top_k-", "indexer_score-")) or " " in name:
            return False
        if not ask:
            seen[name] = reader.host_array(addr)[0, 0]  # the last write of that name
        return True

    callback = llama_cpp.ggml_backend_sched_eval_callback(on_node)
    m = LlamaCppModel(
        gguf, n_ctx=len(tokens) + 8, logits_all=True, type_k=kv, type_v=kv, cb_eval=callback
    )
    try:
        return m.score(tokens), seen
    finally:
        m.close()


def transformers_run(
    checkpoint: Path, tokens: list[int], forced: dict[int, Array] | None = None
) -> tuple[Array, dict[str, Array]]:
    """transformers' logits, top-k and index scores; ``forced``: top-k per layer to use."""
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(
        checkpoint, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    seen: dict[str, Array] = {}
    topk = torch.Tensor.topk

    for layer in model.model.layers:
        indexer = layer.self_attn.indexer
        if indexer is None:
            continue
        il = indexer.layer_idx

        def ranked(scores: Any, k: int, *args: Any, _il: int = il, **kwargs: Any) -> Any:
            seen[f"indexer_score-{_il}"] = scores[0].numpy().copy()
            return topk(scores, k, *args, **kwargs)

        def enter(module: Any, args: Any, _ranked: Any = ranked) -> None:
            torch.Tensor.topk = _ranked  # type: ignore[method-assign,unused-ignore]

        def leave(module: Any, args: Any, out: Any, _il: int = il) -> Any:
            torch.Tensor.topk = topk  # type: ignore[method-assign,unused-ignore]
            seen[f"top_k-{_il}"] = out[0].numpy()
            if forced is not None:
                return torch.from_numpy(forced[_il].astype(np.int32))[None]
            return None

        indexer.register_forward_pre_hook(enter)
        indexer.register_forward_hook(leave)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokens])).logits[0].numpy()
    return logits, seen


def compare(ours: dict[str, Array], theirs: dict[str, Array], n: int) -> dict[int, Array]:
    """Print per layer where the causal top-k sets differ; return llama.cpp's top-k."""
    chosen: dict[int, Array] = {}
    for name in sorted(k for k in theirs if k.startswith("top_k-")):
        il = int(name.split("-")[1])
        ref, got = ours[name], theirs[name][:n]
        chosen[il] = got
        scores = ours[f"indexer_score-{il}"]
        k = ref.shape[1]
        rows = [i for i in range(n) if set(ref[i][ref[i] <= i]) != set(got[i][got[i] <= i])]
        ties = 0
        for i in rows:
            only_ref = [j for j in ref[i] if j <= i and j not in got[i]]
            only_got = [j for j in got[i] if j <= i and j not in ref[i]]
            kth = np.sort(scores[i, : i + 1])[::-1][k - 1]
            ties += all(scores[i, j] == kth for j in only_ref + only_got)
        their = theirs[f"indexer_score-{il}"][:, :n]
        causal = np.tril(np.ones((n, n), dtype=bool))
        diff = float(np.abs(scores[causal] - their[causal]).max())
        print(
            f"layer {il}: index scores differ by up to {diff:.1e}; "
            f"{len(rows)} of {n - k} queries past index_topk select other keys "
            f"({ties} of them exact ties in transformers' scores); first {rows[:8]}"
        )
    return chosen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("gguf", type=Path)
    ap.add_argument("--kv", choices=("f32", "f16"), default="f32", help="llama.cpp KV cache")
    ap.add_argument("--text", help="text to tokenize instead of reference.npz")
    args = ap.parse_args()
    if args.text is None:
        tokens = np.load(args.checkpoint / "reference.npz")["tokens"].astype(int).tolist()
    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(args.checkpoint / "tokenizer.json"))
        tokens = tok.encode(args.text, add_special_tokens=False).ids
    llama_logits, llama_seen = llama_run(args.gguf, tokens, args.kv)
    ref_logits, ref_seen = transformers_run(args.checkpoint, tokens)
    k = next(v for key, v in ref_seen.items() if key.startswith("top_k-")).shape[1]
    kl = kl_divergence(ref_logits, llama_logits)
    print(
        f"{len(tokens)} tokens, index_topk {k}: KL up to index_topk max {kl[:k].max():.2e}; "
        f"past it mean {kl[k:].mean():.2e}, top-1 "
        f"{(ref_logits.argmax(-1) == llama_logits.argmax(-1))[k:].mean():.1%}"
    )
    chosen = compare(ref_seen, llama_seen, len(tokens))
    forced_logits, _ = transformers_run(args.checkpoint, tokens, forced=chosen)
    kl = kl_divergence(forced_logits, llama_logits)
    print(f"transformers given llama.cpp's top-k: mean KL {kl.mean():.2e}, max {kl.max():.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
