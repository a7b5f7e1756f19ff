"""The family base class: how one GLM architecture becomes GGUF.

The pipeline (``convert.py``) drives; a family answers a few questions:
which llama.cpp architecture it is, how checkpoint tensor names map to GGUF
names (data, in ``tensor_map``), which hyperparameters llama.cpp needs, and
how fused or per-expert tensors are reshaped. Families override hooks, not
the pipeline.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from gguf import GGUFWriter

from edgeglm.checkpoint.config import Config
from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.converters.consistency import check_family
from edgeglm.converters.gguf.policy import ModelShape
from edgeglm.converters.layout import MTP_OPTIONAL, Layout, checkpoint_tensors
from edgeglm.errors import CheckpointError

F32Array = npt.NDArray[np.float32]
_BLOCK = re.compile(r"\.(\d+)\.")


@dataclass
class OutTensor:
    """One GGUF tensor, produced on demand in row chunks.

    ``rows(r0, r1)`` returns rows [r0, r1) of the tensor seen as 2-D
    ``[nrows, n_per_row]`` in float32, so the pipeline can stream a tensor
    through the quantizer without ever holding it whole.
    """

    name: str
    shape: tuple[int, ...]  # numpy order (the reverse of ggml's ne)
    rows: Callable[[int, int], F32Array]
    source_dtype: str = "F32"
    force_f32: bool = False
    sources: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_per_row(self) -> int:
        return self.shape[-1] if self.shape else 1

    @property
    def nrows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1

    def load(self) -> F32Array:
        return self.rows(0, self.nrows).reshape(self.shape)

    @classmethod
    def computed(
        cls, name: str, shape: tuple[int, ...], compute: Callable[[], F32Array], **kw: Any
    ) -> OutTensor:
        """A tensor that must be built whole (a split or a transpose); small ones only."""
        cache: list[F32Array] = []

        def rows(r0: int, r1: int) -> F32Array:
            if not cache:
                cache.append(
                    np.ascontiguousarray(compute(), dtype=np.float32).reshape(-1, shape[-1])
                )
            out = cache[0][r0:r1]
            if r1 >= cache[0].shape[0]:
                cache.clear()  # last chunk served: free it
            return out

        return cls(name, shape, rows, **kw)


class Family:
    """Base of every GLM family. Subclasses must set ``gguf_arch`` and ``tensor_map``."""

    hf_architectures: ClassVar[tuple[str, ...]] = ()
    gguf_arch: ClassVar[str]
    # HF name with the block index written as {bid} -> GGUF name.
    tensor_map: ClassVar[dict[str, str]]
    # Checkpoint tensors that carry nothing llama.cpp uses.
    ignored_suffixes: ClassVar[tuple[str, ...]] = ("rotary_emb.inv_freq",)
    # GGUF tensors llama.cpp expects in F32 even when 2-D (routers, DSA indexer weights).
    f32_suffixes: ClassVar[tuple[str, ...]] = ("ffn_gate_inp.weight",)
    # The checkpoint's tensors as a function of config.json (planning without weights);
    # None: this family cannot be planned from a config alone.
    layout: ClassVar[Layout | None] = None
    # Checkpoint names of the transformer blocks: PREFIX{i}.
    block_prefix: ClassVar[str] = "model.layers."
    # Blocks after the trunk (NextN/MTP) may be in the checkpoint.
    has_nextn_blocks: ClassVar[bool] = False
    # rope_parameters.rope_type values whose llama.cpp metadata write_hparams writes;
    # any other (scaled) rope would load and run silently wrong, so it is refused.
    rope_types: ClassVar[tuple[str, ...]] = ("default",)

    def __init__(self, ckpt: HFCheckpoint) -> None:
        self.ckpt = ckpt
        self.cfg = Config(ckpt.config, str(ckpt.root / "config.json"))
        self._consistent = False

    # -- hyperparameters --------------------------------------------------

    @property
    def rope_type(self) -> str:
        return str(self.cfg.rope_get("rope_type", self.cfg.rope_get("type", "default")))

    @property
    def n_layer(self) -> int:
        """Transformer blocks in the trunk (without NextN/MTP blocks)."""
        return int(self.cfg.need("num_hidden_layers", "num_layers"))

    @property
    def block_count(self) -> int:
        """Blocks as llama.cpp counts them (NextN/MTP blocks included)."""
        return self.n_layer

    @property
    def n_head(self) -> int:
        return int(self.cfg.need("num_attention_heads"))

    @property
    def n_head_kv(self) -> int:
        return int(self.cfg.get("num_key_value_heads", default=self.n_head))

    @property
    def vocab_size(self) -> int:
        return int(self.cfg.need("vocab_size"))

    @property
    def head_dim(self) -> int:
        return int(self.cfg.get("head_dim", default=self.cfg.need("hidden_size") // self.n_head))

    @property
    def context_length(self) -> int:
        # The true trained context. llama.cpp's converter writes seq_length or
        # hidden_size for GlmForCausalLM, which gives a 4096-token GLM-4-9B.
        return int(self.cfg.need("max_position_embeddings", "seq_length"))

    @property
    def nextn_blocks(self) -> range:
        """The NextN/MTP blocks this conversion writes (after the trunk)."""
        return range(self.n_layer, self.block_count)

    def required_tensors(self) -> list[str]:
        """Checkpoint tensors the config implies, in checkpoint-name order of a layout:
        transformers' for the trunk, llama.cpp's required ones for NextN blocks."""
        if self.layout is None:
            raise NotImplementedError(f"{type(self).__name__} must list its required tensors")
        tensors = checkpoint_tensors(self.layout, self.cfg.data, mtp_blocks=self.nextn_blocks)
        nextn = tuple(f"{self.block_prefix}{i}." for i in self.nextn_blocks)
        return [n for n in tensors if not (n.startswith(nextn) and n.endswith(MTP_OPTIONAL))]

    def check_consistency(self) -> None:
        """The shared check of checkpoint against config (converters/consistency.py), once."""
        if not self._consistent:
            check_family(self)
            self._consistent = True

    def model_shape(self) -> ModelShape:
        return ModelShape(
            n_layer=self.block_count,
            n_head=self.n_head,
            n_head_kv=self.n_head_kv,
            n_expert=int(self.cfg.get("n_routed_experts", "num_experts", default=0)),
        )

    def write_hparams(self, w: GGUFWriter) -> None:
        """The keys every llama.cpp architecture reads."""
        c = self.cfg
        w.add_context_length(self.context_length)
        w.add_embedding_length(int(c.need("hidden_size")))
        w.add_block_count(self.block_count)
        w.add_feed_forward_length(int(c.need("intermediate_size")))
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_head_kv)
        w.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", default=1e-5)))
        w.add_rope_freq_base(float(c.rope_get("rope_theta", 10000.0)))
        rope_type = self.rope_type
        if rope_type not in self.rope_types:
            raise CheckpointError(
                f"{c.where}: rope_type {rope_type!r} is not supported for "
                f"{type(self).__name__} (supported: {', '.join(self.rope_types)})"
            )
        w.add_vocab_size(self.vocab_size)

    # -- tokenizer --------------------------------------------------------

    def special_tokens(self) -> dict[str, str]:
        """GGUF special-token role -> token text. GLM stops on <|user|> and
        <|observation|>; <|endoftext|> as eot makes generation run on."""
        return {
            "eos": "<|endoftext|>",
            "eot": "<|user|>",
            "eom": "<|observation|>",
            "unk": "<|endoftext|>",
            "pad": "<|endoftext|>",
        }

    # -- tensors ------------------------------------------------------------

    def map_name(self, hf_name: str) -> str | None:
        """GGUF name for a checkpoint tensor, or None if it is not in the map."""
        m = _BLOCK.search(hf_name)
        if m is None:
            return self.tensor_map.get(hf_name)
        key = hf_name[: m.start()] + ".{bid}." + hf_name[m.end() :]
        target = self.tensor_map.get(key)
        return target.format(bid=m.group(1)) if target is not None else None

    def simple(self, hf_name: str, gguf_name: str) -> OutTensor:
        info = self.ckpt.info(hf_name)
        return OutTensor(
            name=gguf_name,
            shape=info.shape,
            rows=lambda r0, r1: self.ckpt.read_rows(hf_name, r0, r1).astype(np.float32, copy=False),
            source_dtype=info.dtype,
            force_f32=len(info.shape) < 2 or gguf_name.endswith(self.f32_suffixes),
            sources=(hf_name,),
        )

    def tensors(self) -> Iterator[OutTensor]:
        """Every GGUF tensor in file order. Families override to fuse or split."""
        for hf_name in self.ckpt:
            if hf_name.endswith(self.ignored_suffixes):
                continue
            yield self.simple(hf_name, self.require_name(hf_name))

    def require_name(self, hf_name: str) -> str:
        name = self.map_name(hf_name)
        if name is None:
            raise CheckpointError(
                f"{self.ckpt.root}: tensor {hf_name!r} has no GGUF mapping for "
                f"{self.gguf_arch}; the checkpoint does not look like {self.hf_architectures[0]}"
            )
        return name

    def check(self, planned: list[OutTensor]) -> None:
        """Config and tensors must agree; llama.cpp would fail later and less clearly."""
        self.check_consistency()
        c = self.cfg
        hidden = int(c.need("hidden_size"))
        vocab = self.vocab_size
        by_name = {t.name: t for t in planned}
        emb = by_name.get("token_embd.weight")
        if emb is None:
            raise CheckpointError(f"{self.ckpt.root}: no token embedding tensor")
        if emb.shape != (vocab, hidden):
            raise CheckpointError(
                f"{self.cfg.where}: vocab_size={vocab}, hidden_size={hidden}, but the "
                f"embedding tensor {emb.sources[0]} has shape {list(emb.shape)}"
            )
        blocks = {int(t.name.split(".")[1]) for t in planned if t.name.startswith("blk.")}
        if blocks != set(range(self.block_count)):
            raise CheckpointError(
                f"{self.cfg.where}: config describes {self.block_count} blocks, "
                f"checkpoint has tensors for {len(blocks)}"
            )
        for t in planned:
            for dim_name, expected in self.expected_dims(t.name).items():
                axis, want = expected
                if t.shape[axis] != want:
                    raise CheckpointError(
                        f"{self.cfg.where}: {dim_name}={want} does not match tensor "
                        f"{t.sources[0] if t.sources else t.name} of shape {list(t.shape)}"
                    )

    def expected_dims(self, gguf_name: str) -> dict[str, tuple[int, int]]:
        """Per tensor: config field -> (numpy axis, expected size). Families extend."""
        hidden = int(self.cfg.need("hidden_size"))
        leaf = gguf_name.split(".", 2)[-1] if gguf_name.startswith("blk.") else gguf_name
        if leaf == "attn_q.weight":
            return {
                "num_attention_heads*head_dim": (0, self.n_head * self.head_dim),
                "hidden_size": (1, hidden),
            }
        if leaf in ("attn_k.weight", "attn_v.weight"):
            return {
                "num_key_value_heads*head_dim": (0, self.n_head_kv * self.head_dim),
                "hidden_size": (1, hidden),
            }
        if leaf == "attn_output.weight":
            return {"hidden_size": (0, hidden)}
        return {}


def stack_experts(family: Family, names: list[str], gguf_name: str) -> OutTensor:
    """Per-expert 2-D weights -> one 3-D [n_expert, rows, cols] tensor (llama.cpp MUL_MAT_ID)."""
    infos = [family.ckpt.info(n) for n in names]
    shape0 = infos[0].shape
    for n, i in zip(names, infos, strict=True):
        if i.shape != shape0:
            raise CheckpointError(
                f"{family.ckpt.root}: expert tensor {n} has shape "
                f"{list(i.shape)}, others {list(shape0)}"
            )

    rows_per_expert = int(np.prod(shape0[:-1], dtype=np.int64))

    def rows(r0: int, r1: int) -> F32Array:
        parts = []
        while r0 < r1:
            e, off = divmod(r0, rows_per_expert)
            n = min(r1 - r0, rows_per_expert - off)
            parts.append(
                family.ckpt.read_rows(names[e], off, off + n).astype(np.float32, copy=False)
            )
            r0 += n
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return OutTensor(gguf_name, (len(names), *shape0), rows, infos[0].dtype, sources=tuple(names))


def group_experts(names: list[str]) -> dict[tuple[str, str], dict[int, str]]:
    """{(block, proj): {expert_id: hf_name}} for names like
    model.layers.3.mlp.experts.7.gate_proj.weight."""
    groups: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    pat = re.compile(r"^model\.layers\.(\d{1,9})\.mlp\.experts\.(\d{1,9})\.(\w+)\.weight$")
    for n in names:
        m = pat.match(n)
        if m:
            groups[(m.group(1), m.group(3))][int(m.group(2))] = n
    return groups
