"""How much memory llama.cpp needs for a model, a placement and a context.

Four parts, each from llama.cpp's own accounting (the vendored revision of
llama-cpp-python 0.3.36):

- weights: the GGUF tensors of the layers on each device (token embeddings
  always stay on the CPU; NextN/MTP blocks are not loaded);
- KV cache (llama-kv-cache.cpp): n_ctx, padded to 256, times per-layer K and V
  rows in the cache type; MLA models cache only their latent K;
- compute buffer (llama-context.cpp ``sched_reserve``): the worst-case graph
  for one micro-batch of n_ubatch tokens over a full cache. Calibrated
  against the sizes llama.cpp reports ("CPU compute buffer size") for every
  GLM family fixture over n_ctx 512-8192, n_ubatch 128/512, flash attention
  on/off: exact for dense GLM, an upper bound (<= 1.5 bytes per token and
  cell over) for MLA/DSA;
- runtime overhead: what a loaded llama.cpp context costs besides its
  buffers (vocab tables, graph metadata, thread pool, the output buffer).

The result is a peak for a worst-case batch at a full context: what a plan
must leave room for, not what a short chat touches.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeglm.planner.model import ModelFacts

# Bytes per cached element by llama.cpp cache type (ggml block sizes: q8_0 is
# 34 bytes per 32 values, q4_0 18 per 32).
KV_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
}
# llama-context.cpp: cparams.n_ctx = GGML_PAD(n_ctx, 256).
CTX_PAD = 256
# llama-cpp-python's Llama() defaults, which LlamaCppModel keeps.
DEFAULT_N_BATCH = 512
DEFAULT_N_UBATCH = 512
# Measured on this project's CI machine (x86-64 Linux, llama-cpp-python
# 0.3.36): a loaded context's resident cost outside its buffers is ~7.5 MiB
# with a 1k vocabulary and ~46 MiB with a 151k one (llama_vocab keeps token
# text, a token->id map and BPE merge ranks), so ~280 bytes per vocab entry.
# tests/edgeglm/planner/test_memory_measured.py re-checks the whole estimate.
RUNTIME_FIXED_BYTES = 15 << 19  # 7.5 MiB
RUNTIME_BYTES_PER_TOKEN = 280


def padded_ctx(n_ctx: int) -> int:
    return -(-n_ctx // CTX_PAD) * CTX_PAD


def kv_cache_bytes(
    facts: ModelFacts,
    n_ctx: int,
    type_k: str = "f16",
    type_v: str = "f16",
    layers: int | None = None,
) -> int:
    """KV cache for ``layers`` trunk layers (default all) at ``n_ctx`` tokens."""
    per_token = facts.kv_bytes_per_token(KV_TYPE_BYTES[type_k], KV_TYPE_BYTES[type_v])
    share = (layers if layers is not None else facts.n_layer) / max(facts.n_layer, 1)
    return int(per_token * share * padded_ctx(n_ctx))


def compute_buffer_bytes(
    facts: ModelFacts,
    n_ctx: int,
    *,
    flash_attn: bool,
    n_ubatch: int = DEFAULT_N_UBATCH,
    resident: bool = False,
) -> int:
    """The graph llama.cpp reserves for n_ubatch tokens attending to a full cache.

    Per token of the micro-batch: one attention row over every cache cell (the
    KQ scores in f32 for each head plus the f32 mask without flash attention;
    only the f16 mask with it), the logits row (n_vocab floats: the reserve
    graph asks for outputs at every position), two hidden-state rows, and the
    attention activations. Fitted and checked as the module docstring says.

    ``resident=True`` counts what generation actually touches in RAM: the
    reserve sizes logits for every position, but generating computes them for
    one, and malloc'd pages never written are never resident (measured: a
    151k-vocabulary model reserves ~300 MiB it never touches). GPU buffers are
    committed when allocated, so VRAM needs the reserved size.

    Without flash attention the backend also needs scratch outside that buffer
    (ggml-cpu's work buffer, CUDA's pool): the softmaxed scores converted to
    f16 for the KQ x V product, 2 bytes per head and cell. Measured here as
    resident memory, so it is counted too.
    """
    n_tok = min(n_ubatch, padded_ctx(n_ctx))
    n_kv = padded_ctx(n_ctx)
    per_cell = 2.0 if flash_attn else 4.0 * facts.n_head + 4.0
    if facts.indexer_heads:  # DSA lightning indexer: f32 scores per indexer head
        per_cell += 4.0 * facts.indexer_heads + 4.0
    if facts.is_mla:
        attn = 3 * facts.n_head * facts.n_embd_head_k  # absorbed q, kq inputs, latent out
    else:
        attn = (2 if flash_attn else 1) * facts.n_head * facts.n_embd_head_v
    per_token = 4.0 * (2 * facts.n_embd + attn)
    scratch = 0.0 if flash_attn else 2.0 * facts.n_head * n_kv
    logits = 4.0 * facts.n_vocab * (1 if resident else n_tok)
    return int(n_tok * (n_kv * per_cell + per_token + scratch) + logits)


def host_buffer_bytes(facts: ModelFacts, n_ctx: int, *, flash_attn: bool, n_ubatch: int) -> int:
    """CPU-side inputs when the graph runs on a GPU: token embeddings and the mask."""
    n_tok = min(n_ubatch, padded_ctx(n_ctx))
    return int(n_tok * (4 * facts.n_embd + padded_ctx(n_ctx) * (2 if flash_attn else 4)))


def runtime_overhead_bytes(facts: ModelFacts) -> int:
    return RUNTIME_FIXED_BYTES + RUNTIME_BYTES_PER_TOKEN * facts.n_vocab


@dataclass
class DeviceMemory:
    """What one device (the CPU's RAM, or one GPU) holds under a plan."""

    device: str
    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    overhead: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.overhead

    def to_dict(self) -> dict[str, int | str]:
        return {
            "device": self.device,
            "weights_bytes": self.weights,
            "kv_cache_bytes": self.kv_cache,
            "compute_bytes": self.compute,
            "overhead_bytes": self.overhead,
            "total_bytes": self.total,
        }


def cpu_only_estimate(
    facts: ModelFacts,
    n_ctx: int,
    *,
    flash_attn: bool = False,
    type_k: str = "f16",
    type_v: str = "f16",
    n_ubatch: int = DEFAULT_N_UBATCH,
) -> DeviceMemory:
    """Everything in RAM: what LlamaCppModel(path, n_ctx=...) costs on a CPU."""
    return DeviceMemory(
        device="CPU",
        weights=facts.resident_bytes,
        kv_cache=kv_cache_bytes(facts, n_ctx, type_k, type_v),
        compute=compute_buffer_bytes(
            facts, n_ctx, flash_attn=flash_attn, n_ubatch=n_ubatch, resident=True
        ),
        overhead=runtime_overhead_bytes(facts),
    )
