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
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NoReturn

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

_U32_MAX = 2**32 - 1  # llama.cpp keeps these hyperparameters as uint32_t
LLAMA_MAX_LAYERS = 512  # llama-hparams.h
LLAMA_MAX_EXPERTS = 1024


def _first(v: Any) -> int:
    """Some keys may be per-layer arrays (head_count_kv); the planner needs the max."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return int(max(v)) if len(v) else 0
    return int(v)


def _is_count(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and bool(0 <= v <= _U32_MAX)


def _count(kv: Mapping[str, Any], key: str, path: str) -> int | tuple[int, ...] | None:
    """A hyperparameter the planner sizes from: a whole number (or one per layer)."""
    v = kv.get(key)
    if v is None:
        return None
    if _is_count(v):
        return int(v)
    if isinstance(v, (list, tuple, np.ndarray)) and len(v) and all(_is_count(x) for x in v):
        return tuple(int(x) for x in v)
    shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
    raise CheckpointError(f"{path}: {key} must be a whole number from 0 to {_U32_MAX}, not {shown}")


class _Hparams:
    """Checked access to ARCH.* counts, per layer where the file gives arrays."""

    def __init__(self, kv: Mapping[str, Any], arch: str, n_layer: int, path: str) -> None:
        self.kv, self.arch, self.n_layer, self.path = kv, arch, n_layer, path

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def get(self, name: str) -> int | tuple[int, ...] | None:
        v = _count(self.kv, self.key(name), self.path)
        if isinstance(v, tuple) and len(v) != self.n_layer:
            raise CheckpointError(
                f"{self.path}: {self.key(name)} has {len(v)} per-layer values "
                f"for {self.n_layer} blocks ({self.key('block_count')})"
            )
        return v

    def at(self, name: str, il: int, default: int = 0) -> int:
        v = self.get(name)
        if v is None:
            return default
        return v[il] if isinstance(v, tuple) else v

    def scalar(self, name: str, default: int = 0) -> int:
        v = self.get(name)
        return default if v is None else _first(v)

    def fail(self, name: str, says: str) -> NoReturn:
        raise CheckpointError(f"{self.path}: {self.key(name)} {says}")


def check_gguf_metadata(
    kv: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], path: str
) -> None:
    """Refuse GGUF metadata that disagrees with the tensors it describes.

    Every count the planner sizes memory from is checked against the tensor
    shapes that witness it (``shapes``: name -> ggml ne, row length first):
    block_count against the blk.N tensors, embedding_length and the vocab
    against token_embd, head counts and head sizes against the attention
    projections, feed-forward and expert sizes against the FFN tensors, and
    the expert counts against each other as llama.cpp asserts them. A file
    that fails here would make a plan from fiction (or llama.cpp abort).
    """
    arch = kv.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise CheckpointError(f"{path}: no general.architecture in the GGUF metadata")
    n_layer_all = _count(kv, f"{arch}.block_count", path)
    if n_layer_all is None:
        raise CheckpointError(f"{path}: GGUF metadata lacks {arch}.block_count")
    if not isinstance(n_layer_all, int) or not 1 <= n_layer_all <= LLAMA_MAX_LAYERS:
        raise CheckpointError(
            f"{path}: {arch}.block_count is {n_layer_all!r}; "
            f"llama.cpp needs 1 to {LLAMA_MAX_LAYERS}"
        )
    h = _Hparams(kv, arch, n_layer_all, path)

    n_nextn = h.scalar("nextn_predict_layers")
    if n_nextn >= n_layer_all:
        h.fail("nextn_predict_layers", f"is {n_nextn}, not fewer than {n_layer_all} blocks")
    blocks: dict[int, dict[str, tuple[int, ...]]] = {}
    for name, ne in shapes.items():
        m = _BLOCK.match(name)
        if m:
            blocks.setdefault(int(m.group(1)), {})[name[m.end() :]] = ne
    beyond = sorted(i for i in blocks if i >= n_layer_all)
    if beyond:
        h.fail("block_count", f"is {n_layer_all}, but the file has tensors for block {beyond[-1]}")
    missing = [i for i in range(n_layer_all - n_nextn) if i not in blocks]
    if missing:
        h.fail(
            "block_count",
            f"is {n_layer_all}, but the file has no tensors for block {missing[0]}"
            + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""),
        )

    def expect(key: str, value: int, tensor: str, dim: int, got: int) -> None:
        if value != got:
            h.fail(key, f"is {value}, but {tensor} has {got} in dimension {dim}")

    n_embd = h.scalar("embedding_length", -1)
    if n_embd < 1:
        h.fail("embedding_length", "is missing or 0")
    if h.scalar("context_length", -1) < 1:
        h.fail("context_length", "is missing or 0")
    if h.scalar("attention.head_count") < 1:
        h.fail("attention.head_count", "is missing or 0")
    for name in ("token_embd.weight", "output.weight"):
        if name in shapes:
            expect("embedding_length", n_embd, name, 0, shapes[name][0])
    if "token_embd.weight" in shapes and len(shapes["token_embd.weight"]) > 1:
        rows = shapes["token_embd.weight"][1]
        vocab = h.get("vocab_size")
        if vocab is not None:
            expect("vocab_size", _first(vocab), "token_embd.weight", 1, rows)
        tokens = kv.get("tokenizer.ggml.tokens")
        if tokens is not None and len(tokens) != rows:
            raise CheckpointError(
                f"{path}: tokenizer.ggml.tokens has {len(tokens)} tokens, "
                f"but token_embd.weight has {rows} rows"
            )

    n_expert = h.scalar("expert_count")
    n_used = h.scalar("expert_used_count")
    if n_expert > LLAMA_MAX_EXPERTS:
        h.fail("expert_count", f"is {n_expert}, over llama.cpp's {LLAMA_MAX_EXPERTS}")
    if n_used > n_expert:
        h.fail("expert_used_count", f"is {n_used}, more than {arch}.expert_count ({n_expert})")
    if n_expert > 0 and n_used == 0:
        h.fail("expert_used_count", f"is 0 (or missing) with {n_expert} experts")
    mla = h.scalar("attention.kv_lora_rank") > 0

    for il, ts in sorted(blocks.items()):
        if il >= n_layer_all - n_nextn:
            continue  # NextN/MTP blocks: llama.cpp does not size from them
        n_head, n_head_kv = h.at("attention.head_count", il), h.at("attention.head_count_kv", il)
        n_head_kv = n_head_kv if h.get("attention.head_count_kv") is not None else n_head
        head = n_embd // max(n_head, 1)
        k, v = h.at("attention.key_length", il, head), h.at("attention.value_length", il, head)
        b = f"blk.{il}."
        for t, ne in ts.items():
            if "_exps." in t and n_expert == 0:
                h.fail("expert_count", f"is missing or 0, but the file has {b}{t}")
            if "_exps." in t and len(ne) == 3:
                expect("expert_count", n_expert, b + t, 2, ne[2])
        if "ffn_gate_inp.weight" in ts and len(ts["ffn_gate_inp.weight"]) > 1:
            expect(
                "expert_count", n_expert, b + "ffn_gate_inp.weight", 1, ts["ffn_gate_inp.weight"][1]
            )
        if "ffn_down_exps.weight" in ts and h.get("expert_feed_forward_length") is not None:
            n_ff_exp = h.at("expert_feed_forward_length", il)
            got = ts["ffn_down_exps.weight"][0]
            expect("expert_feed_forward_length", n_ff_exp, b + "ffn_down_exps.weight", 0, got)
        if "ffn_down.weight" in ts and h.get("feed_forward_length") is not None:
            expect(
                "feed_forward_length",
                h.at("feed_forward_length", il),
                b + "ffn_down.weight",
                0,
                ts["ffn_down.weight"][0],
            )
        if mla:
            rank = h.at("attention.kv_lora_rank", il)
            if "attn_kv_a_norm.weight" in ts:
                got = ts["attn_kv_a_norm.weight"][0]
                expect("attention.kv_lora_rank", rank, b + "attn_kv_a_norm.weight", 0, got)
            mqa = ts.get("attn_kv_a_mqa.weight")
            if mqa is not None and len(mqa) > 1:
                expect("attention.key_length", k, b + "attn_kv_a_mqa.weight", 1, mqa[1])
            kb = ts.get("attn_k_b.weight")
            if kb is not None and len(kb) == 3:
                expect("attention.head_count", n_head, b + "attn_k_b.weight", 2, kb[2])
        else:
            for t, key, count, want in (
                ("attn_q.weight", "attention.head_count", n_head, n_head * k),
                ("attn_k.weight", "attention.head_count_kv", n_head_kv, n_head_kv * k),
                ("attn_v.weight", "attention.head_count_kv", n_head_kv, n_head_kv * v),
                (
                    "attn_qkv.weight",
                    "attention.head_count",
                    n_head,
                    n_head * k + n_head_kv * (k + v),
                ),
            ):
                shape = ts.get(t)
                if shape is not None and len(shape) > 1 and shape[1] != want:
                    h.fail(
                        key,
                        f"is {count}: with head size {k} that makes {want} rows "
                        f"of {b}{t}, which has {shape[1]}",
                    )
        for t, key in (("indexer.attn_k.weight", "attention.indexer.key_length"),
                       ("indexer.proj.weight", "attention.indexer.head_count")):  # fmt: skip
            shape = ts.get(t)
            if shape is not None and len(shape) > 1 and h.get(key) is not None:
                expect(key, h.at(key, il), b + t, 1, shape[1])


def facts_from_metadata(
    kv: Mapping[str, Any],
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
        v = _count(kv, f"{arch}.{key}", path)
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
