"""Model facts for planning: shapes and tensor sizes, from a GGUF, an HF folder or a config.

Three inputs, one description (``ModelFacts``): the llama.cpp hyperparameters
(the GGUF metadata keys) and every GGUF tensor with its byte size, grouped by
the category that decides where it may live (token embeddings, attention,
dense FFN, routed experts, shared experts ...).

- A GGUF is read as it is: metadata and tensor sizes are facts.
- A Hugging Face folder, or a bare config.json, is run through the GGUF
  converter's own planning (family classes, ``choose_types``), so the sizes
  are those ``edgeglm convert -q QUANT`` would write, for any candidate quant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from edgeglm.errors import CheckpointError

# First match wins; MTP/NextN blocks are classified by index instead (see below).
_CATEGORIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (cat, re.compile(pat))
    for cat, pat in (
        ("token_embd", r"^token_embd\."),
        ("output", r"^output(_norm)?\."),
        ("routed_experts", r"_exps\."),
        ("shared_experts", r"_shexp\."),
        ("router", r"\.(ffn_gate_inp|exp_probs_b)\."),
        ("dense_ffn", r"\.ffn_(up|gate|down)\."),
        ("attention", r"\.(attn_|indexer\.)"),
        ("norms", r"_norm\."),
    )
)
CATEGORIES = (*(c for c, _ in _CATEGORIES), "mtp", "other")
_BLOCK = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class TensorBytes:
    name: str
    layer: int | None  # block index; None for token_embd/output
    category: str
    n_elements: int
    nbytes: int
    qtype: str


def categorize(name: str, n_layer: int) -> tuple[int | None, str]:
    m = _BLOCK.match(name)
    layer = int(m.group(1)) if m else None
    if layer is not None and layer >= n_layer:
        return layer, "mtp"  # NextN block: llama.cpp skips loading it unless asked to
    for cat, pat in _CATEGORIES:
        if pat.search(name):
            return layer, cat
    return layer, "other"


@dataclass(frozen=True)
class BlockTables:
    total: list[int]  # resident bytes
    experts: list[int]  # routed-expert bytes
    largest: list[int]  # largest single tensor
    largest_expert: list[int]


@dataclass
class ModelFacts:
    """What the planner needs to know about one model artifact (or would-be artifact)."""

    name: str
    source: str  # "gguf", "hf" or "config"
    path: str
    architecture: str  # llama.cpp's: chatglm, glm4, glm4moe, deepseek2, glm-dsa
    hf_architecture: str | None
    quant: str | None  # None: a checkpoint to be converted, sizes not yet fixed
    n_layer: int  # trunk blocks
    n_layer_all: int  # blocks as llama.cpp numbers them (NextN/MTP included)
    n_embd: int
    n_head: int
    n_head_kv: int
    n_embd_head_k: int
    n_embd_head_v: int
    kv_lora_rank: int
    n_ff: int
    n_expert: int
    n_expert_used: int
    n_expert_shared: int
    n_ff_exp: int
    n_layer_dense_lead: int
    n_ctx_train: int
    n_vocab: int
    indexer_head_dim: int = 0  # GLM-5 DSA lightning indexer: key width ...
    indexer_heads: int = 0  # ... and heads
    repo: str | None = None
    tensors: tuple[TensorBytes, ...] = field(default_factory=tuple, repr=False)

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 1

    @property
    def tied_embeddings(self) -> bool:
        """No output.weight: llama.cpp reuses token_embd as the output head."""
        return not any(t.name == "output.weight" for t in self.tensors)

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @cached_property
    def bytes_by_category(self) -> dict[str, int]:
        out = dict.fromkeys(CATEGORIES, 0)
        for t in self.tensors:
            out[t.category] += t.nbytes
        return out

    @cached_property
    def blocks(self) -> BlockTables:
        """Per block (all n_layer_all of them). NextN/MTP blocks count 0 resident
        bytes: llama.cpp does not load them unless asked to."""
        n = self.n_layer_all
        b = BlockTables([0] * n, [0] * n, [0] * n, [0] * n)
        for t in self.tensors:
            if t.layer is None or t.category == "mtp" or t.layer >= n:
                continue
            b.total[t.layer] += t.nbytes
            b.largest[t.layer] = max(b.largest[t.layer], t.nbytes)
            if t.category == "routed_experts":
                b.experts[t.layer] += t.nbytes
                b.largest_expert[t.layer] = max(b.largest_expert[t.layer], t.nbytes)
        return b

    @property
    def file_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def resident_bytes(self) -> int:
        """Weights llama.cpp loads (everything but NextN/MTP blocks)."""
        return self.file_bytes - self.bytes_by_category["mtp"]

    @property
    def parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors if t.category != "mtp")

    @property
    def active_bytes_per_token(self) -> int:
        """Weight bytes read to generate one token: all but unused experts and the
        embedding table (one row of it is read)."""
        c = self.bytes_by_category
        dense = self.resident_bytes - c["token_embd"] - c["routed_experts"]
        routed = c["routed_experts"] * self.n_expert_used / max(self.n_expert, 1)
        return int(dense + routed)

    @property
    def bits_per_weight(self) -> float:
        return self.resident_bytes * 8 / max(self.parameters, 1)

    def kv_bytes_per_token(self, type_k_bytes: float, type_v_bytes: float) -> float:
        """K/V cache bytes one token costs across all trunk layers (llama-kv-cache.cpp:
        MLA caches only the latent K, no V)."""
        if self.is_mla:
            per_layer = self.n_embd_head_k * type_k_bytes  # (kv_lora_rank + rope) x 1 "head"
        else:
            per_layer = self.n_head_kv * (
                self.n_embd_head_k * type_k_bytes + self.n_embd_head_v * type_v_bytes
            )
        per_layer += self.indexer_head_dim * type_k_bytes
        return per_layer * self.n_layer


# -- reading hyperparameters from GGUF metadata -----------------------------


def _first(v: Any) -> int:
    """Some keys may be per-layer arrays (head_count_kv); the planner needs the max."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return int(max(v)) if len(v) else 0
    return int(v)


def facts_from_metadata(
    kv: dict[str, Any],
    tensors: list[tuple[str, int, int, str]],
    *,
    name: str,
    source: str,
    path: str,
    quant: str | None,
    hf_architecture: str | None = None,
    repo: str | None = None,
) -> ModelFacts:
    """``kv``: GGUF key -> value; ``tensors``: (name, n_elements, nbytes, ggml type)."""
    arch = str(kv.get("general.architecture", ""))
    if not arch:
        raise CheckpointError(f"{path}: no general.architecture in the GGUF metadata")

    def get(key: str, default: int | None = None) -> int:
        v = kv.get(f"{arch}.{key}")
        if v is None:
            if default is None:
                raise CheckpointError(f"{path}: GGUF metadata lacks {arch}.{key}")
            return default
        return _first(v)

    n_layer_all = get("block_count")
    n_mtp = get("nextn_predict_layers", 0)
    n_head = get("attention.head_count")
    n_embd = get("embedding_length")
    head = n_embd // max(n_head, 1)
    n_vocab = get("vocab_size", 0) or next(
        (n // n_embd for t, n, _, _ in tensors if t == "token_embd.weight"), 0
    )
    n_layer = n_layer_all - n_mtp
    by = [
        TensorBytes(t, *categorize(t, n_layer), n_elements=n, nbytes=b, qtype=q)
        for t, n, b, q in tensors
    ]
    return ModelFacts(
        name=name,
        source=source,
        path=path,
        architecture=arch,
        hf_architecture=hf_architecture,
        quant=quant,
        n_layer=n_layer,
        n_layer_all=n_layer_all,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=get("attention.head_count_kv", n_head),
        n_embd_head_k=get("attention.key_length", head),
        n_embd_head_v=get("attention.value_length", head),
        kv_lora_rank=get("attention.kv_lora_rank", 0),
        n_ff=get("feed_forward_length", 0),
        n_expert=get("expert_count", 0),
        n_expert_used=get("expert_used_count", 0),
        n_expert_shared=get("expert_shared_count", 0),
        n_ff_exp=get("expert_feed_forward_length", 0),
        n_layer_dense_lead=get("leading_dense_block_count", 0),
        n_ctx_train=get("context_length"),
        n_vocab=n_vocab,
        indexer_head_dim=get("attention.indexer.key_length", 0),
        indexer_heads=get("attention.indexer.head_count", 0),
        repo=repo,
        tensors=tuple(by),
    )
