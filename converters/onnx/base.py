"""The family base class: how a dense GLM decoder becomes one ONNX graph.

``Family.build`` drives; every subgraph is a ``make_*`` method a family may
override (GLM-4 adds sandwich norms, GLM-4.5 MoE swaps the MLP and adds q/k
norms). One decoder layer, with the residual stream in float32::

    residual -+-------------------------------+
              |                               |
    pending -> SkipRMSNorm -> attn -> [norm] -> SkipRMSNorm -> mlp -> [norm] -> pending'
              (input_layernorm)               (post_attention_layernorm)

``pending`` is the previous block's output, not yet added to the residual:
the add is fused into the next norm (SkipSimplifiedLayerNormalization).
After the last block only the positions ``logits_to_keep`` asks for go on to
the final norm and the vocab-wide head (``make_logits_to_keep``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import onnx

from edgeglm.backends.onnx import LOGITS_TO_KEEP
from edgeglm.checkpoint.config import Config
from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.converters.onnx.attention import (
    PAST_KEY,
    PAST_VALUE,
    PRESENT_KEY,
    PRESENT_VALUE,
    AttentionInputs,
    make_attention_inputs,
    make_group_query_attention,
)
from edgeglm.converters.onnx.graph import GraphBuilder
from edgeglm.converters.onnx.ops import (
    make_linear,
    make_quantized_gather,
    make_rms_norm,
    make_skip_rms_norm,
    make_swiglu,
    stored,
)
from edgeglm.converters.onnx.quant import Precision, WeightFormat
from edgeglm.converters.onnx.spec import ModelSpec
from edgeglm.errors import CheckpointError

F32Array = npt.NDArray[np.float32]
# Called after each checkpoint tensor: (name, tensors done, tensors total, bytes done, bytes total).
Progress = Callable[[str, int, int, int, int], None]


class Family:
    """Base of every GLM family. Subclasses must set ``rotary_interleaved``."""

    hf_architectures: ClassVar[tuple[str, ...]] = ()
    # GLM and GLM-4 rotate adjacent channel pairs; GLM-4.5 MoE rotates halves.
    rotary_interleaved: ClassVar[bool]
    # q/k/v biases when the config does not say: GLM and GLM-4 always carry them.
    attention_bias_default: ClassVar[bool] = True
    # Checkpoint tensors that carry nothing the graph uses.
    ignored_suffixes: ClassVar[tuple[str, ...]] = ("rotary_emb.inv_freq",)

    def __init__(self, ckpt: HFCheckpoint, prec: Precision, progress: Progress | None = None):
        self.ckpt = ckpt
        self.prec = prec
        self.cfg = Config(ckpt.config, str(ckpt.root / "config.json"))
        self.spec = ModelSpec.from_config(self.cfg)
        self.attention_bias = bool(
            self.cfg.get("attention_bias", default=self.attention_bias_default)
        )
        self.progress = progress
        self.used: set[str] = set()
        self._bytes_done = 0
        self._ai: AttentionInputs | None = None

    # -- checkpoint access ------------------------------------------------

    def expected_tensors(self) -> list[str]:
        """Checkpoint tensors this family consumes; anything else is an error."""
        return [n for n in self.ckpt if not n.endswith(self.ignored_suffixes)]

    def take(self, name: str, shape: tuple[int, ...] | None = None) -> F32Array:
        """Load a checkpoint tensor as float32, check its shape, report progress."""
        if name not in self.ckpt:
            raise CheckpointError(
                f"{self.ckpt.root}: tensor {name!r} is missing; the checkpoint does not look "
                f"like {self.hf_architectures[0]}"
            )
        info = self.ckpt.info(name)
        if shape is not None and info.shape != shape:
            raise CheckpointError(
                f"{self.cfg.where}: tensor {name} has shape {list(info.shape)}, "
                f"the config implies {list(shape)}"
            )
        array = np.asarray(self.ckpt.load(name), dtype=np.float32)
        if name not in self.used:
            self.used.add(name)
            self._bytes_done += info.nbytes
            if self.progress is not None:
                count, total = self._totals
                self.progress(name, len(self.used), count, self._bytes_done, total)
        return array

    @functools.cached_property
    def _totals(self) -> tuple[int, int]:
        expected = self.expected_tensors()
        return len(expected), sum(self.ckpt.info(n).nbytes for n in expected)

    def check_all_used(self) -> None:
        unused = sorted(set(self.expected_tensors()) - self.used)
        if unused:
            more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
            raise CheckpointError(
                f"{self.ckpt.root}: tensors the {self.hf_architectures[0]} graph has no place for: "
                f"{', '.join(unused[:5])}{more}"
            )

    # -- shorthands over ops.py -------------------------------------------------

    def linear(
        self, g: GraphBuilder, name: str, x: str, w: F32Array, b: F32Array | None, wname: str,
        fmt: WeightFormat | None = None,
    ) -> str:  # fmt: skip
        return make_linear(g, name, x, w, b, fmt or self.prec.linear, self.prec, wname)

    def norm(self, g: GraphBuilder, name: str, x: str, wname: str, size: int | None = None) -> str:
        gamma = self.take(wname, (size or self.spec.hidden,))
        return make_rms_norm(g, name, x, gamma, self.spec.rms_eps, wname)

    def skip_norm(
        self, g: GraphBuilder, name: str, x: str, residual: str, wname: str
    ) -> tuple[str, str]:
        gamma = self.take(wname, (self.spec.hidden,))
        return make_skip_rms_norm(g, name, x, residual, gamma, self.spec.rms_eps, wname)

    # -- the pipeline -------------------------------------------------------

    def build(self, g: GraphBuilder) -> None:
        s = self.spec
        ids = g.add_input("input_ids", np.int64, ["batch_size", "sequence_length"])
        mask = g.add_input("attention_mask", np.int64, ["batch_size", "total_sequence_length"])
        kv_shape = ["batch_size", s.n_kv_head, "past_sequence_length", s.head_dim]
        for i in range(s.n_layer):
            g.add_input(PAST_KEY.format(i), self.prec.compute, kv_shape)
            g.add_input(PAST_VALUE.format(i), self.prec.compute, kv_shape)
        self._ai = make_attention_inputs(g, s, mask, self.prec.compute)

        residual = self.make_embedding(g, ids)
        pending: str | None = None
        for i in range(s.n_layer):
            residual, pending = self.make_layer(g, i, residual, pending)
        assert pending is not None
        pending, residual = self.make_logits_to_keep(g, pending, residual)
        normed, _ = self.skip_norm(g, "/model/norm", pending, residual, "model.norm.weight")
        self.make_lm_head(g, normed)

        # sequence_length positions unless logits_to_keep asks for fewer
        g.add_output("logits", np.float32, ["batch_size", "logits_length", s.vocab])
        present = ["batch_size", s.n_kv_head, "total_sequence_length", s.head_dim]
        for i in range(s.n_layer):
            g.add_output(PRESENT_KEY.format(i), self.prec.compute, present)
            g.add_output(PRESENT_VALUE.format(i), self.prec.compute, present)
        self.check_all_used()

    def make_logits_to_keep(self, g: GraphBuilder, pending: str, residual: str) -> tuple[str, str]:
        """The last ``logits_to_keep`` positions of the hidden state, 0 meaning all
        (transformers' ``hidden_states[:, -logits_to_keep:]``): a prefill that
        samples one token need not run the vocab-wide head on every prompt position.

        The input has a default, an initializer of the same name (ONNX IR >= 4),
        so a caller that does not feed it, onnxruntime-genai among them, gets
        every position's logits, as genai_config.json's decoder expects::

            logits_to_keep (int64 scalar, default 0) --> Neg --> Unsqueeze --> start
            pending, residual --> Slice(start:, axis 1) --> final norm --> lm_head
        """
        name = "/model/logits_to_keep"
        keep = g.add_input(LOGITS_TO_KEEP, np.int64, [])
        # The default is 0-d like the input (g.weight stores arrays at least 1-d).
        default = onnx.numpy_helper.from_array(np.array(0, dtype=np.int64), LOGITS_TO_KEEP)
        g.initializers.append(default)
        start = g.one("Unsqueeze", [g.one("Neg", [keep], name), g.const([0])], name)
        # -0 = 0 keeps everything; a start before the first position clamps to it
        end, axis = g.const([np.iinfo(np.int64).max]), g.const([1])
        pending = g.one("Slice", [pending, start, end, axis], f"{name}/hidden")
        residual = g.one("Slice", [residual, start, end, axis], f"{name}/residual")
        return pending, residual

    def make_embedding(self, g: GraphBuilder, ids: str) -> str:
        s, fmt, name = self.spec, self.prec.embedding, "model.embed_tokens.weight"
        table = self.take(name, (s.vocab, s.hidden))
        g.formats[fmt.value] += 1
        if fmt.quantized:
            return make_quantized_gather(g, "/model/embed_tokens", ids, table, self.prec, name)
        dtype = np.float16 if fmt is WeightFormat.F16 else np.float32
        rows = g.one("Gather", [g.weight(name, stored(table, dtype, name)), ids],
                     "/model/embed_tokens", axis=0)  # fmt: skip
        return g.cast(rows, np.float32, "/model/embed_tokens", have=dtype)

    def make_layer(
        self, g: GraphBuilder, i: int, residual: str, pending: str | None
    ) -> tuple[str, str]:
        p, name = f"model.layers.{i}.", f"/model/layers.{i}"
        norm_name, w = f"{name}/input_layernorm", p + "input_layernorm.weight"
        if pending is None:  # first layer: the residual is the embedding itself
            normed = self.norm(g, norm_name, residual, w)
        else:
            normed, residual = self.skip_norm(g, norm_name, pending, residual, w)
        attn = self.make_post_attention(g, i, self.make_attention(g, i, normed))
        normed, residual = self.skip_norm(g, f"{name}/post_attention_layernorm", attn, residual,
                                          p + "post_attention_layernorm.weight")  # fmt: skip
        return residual, self.make_post_mlp(g, i, self.make_mlp(g, i, normed))

    # -- hooks --------------------------------------------------------------

    def make_post_attention(self, g: GraphBuilder, i: int, x: str) -> str:
        """A norm on the attention output before the residual add (GLM-4 has one)."""
        return x

    def make_post_mlp(self, g: GraphBuilder, i: int, x: str) -> str:
        """A norm on the MLP output before the residual add (GLM-4 has one)."""
        return x

    def make_qkv(self, g: GraphBuilder, i: int, x: str) -> str | tuple[str, str, str]:
        """q, k and v stacked [q; k; v] into one MatMul; GQA takes the result as its query."""
        s, p = self.spec, f"model.layers.{i}.self_attn."
        sizes = (("q", s.q_size), ("k", s.kv_size), ("v", s.kv_size))
        w = np.concatenate([self.take(p + f"{n}_proj.weight", (n_out, s.hidden))
                            for n, n_out in sizes])  # fmt: skip
        b = None
        if self.attention_bias:
            b = np.concatenate([self.take(p + f"{n}_proj.bias", (n_out,)) for n, n_out in sizes])
        return self.linear(g, f"/model/layers.{i}/attn/qkv_proj", x, w, b, p + "qkv_proj.weight")

    def make_attention(self, g: GraphBuilder, i: int, x32: str) -> str:
        s, name, c = self.spec, f"/model/layers.{i}/attn", self.prec.compute
        x = g.cast(x32, c, f"{name}/input", have=np.float32)
        qkv = self.make_qkv(g, i, x)
        attn = make_group_query_attention(
            g, f"{name}/gqa", i, s, self.attention_inputs, qkv, interleaved=self.rotary_interleaved
        )
        w = f"model.layers.{i}.self_attn.o_proj.weight"
        o = self.linear(g, f"{name}/o_proj", attn, self.take(w, (s.hidden, s.q_size)), None, w)
        return g.cast(o, np.float32, f"{name}/output", have=c)

    def make_mlp(self, g: GraphBuilder, i: int, x32: str) -> str:
        s, p = self.spec, f"model.layers.{i}.mlp."
        gate_up = self.take(p + "gate_up_proj.weight", (2 * s.intermediate, s.hidden))
        down = self.take(p + "down_proj.weight", (s.hidden, s.intermediate))
        return self.make_swiglu_mlp(g, f"/model/layers.{i}/mlp", x32, gate_up, down, p)

    def make_swiglu_mlp(
        self, g: GraphBuilder, name: str, x32: str, gate_up: F32Array, down: F32Array, wp: str
    ) -> str:
        """x -> fused gate|up -> SwiGLU (float32, where GLM's activations peak) -> down."""
        c = self.prec.compute
        x = g.cast(x32, c, f"{name}/input", have=np.float32)
        gu = self.linear(g, f"{name}/gate_up_proj", x, gate_up, None, wp + "gate_up_proj.weight")
        gu32 = g.cast(gu, np.float32, f"{name}/gate_up_proj/output", have=c)
        act = make_swiglu(g, f"{name}/act", gu32, down.shape[1])
        act = g.cast(act, c, f"{name}/act", have=np.float32)
        y = self.linear(g, f"{name}/down_proj", act, down, None, wp + "down_proj.weight")
        return g.cast(y, np.float32, f"{name}/output", have=c)

    def make_lm_head(self, g: GraphBuilder, x32: str) -> None:
        s, c = self.spec, self.prec.compute
        name = "lm_head.weight"
        if name not in self.ckpt and s.tie_embeddings:
            name = "model.embed_tokens.weight"  # tied: the embedding doubles as the head
        w = self.take(name, (s.vocab, s.hidden))
        x = g.cast(x32, c, "/lm_head/input", have=np.float32)
        y = self.linear(g, "/lm_head", x, w, None, name, fmt=self.prec.head)
        g.rename_output(g.cast(y, np.float32, "/lm_head/output", have=c), "logits")

    @property
    def attention_inputs(self) -> AttentionInputs:
        if self._ai is None:
            raise RuntimeError("attention inputs are made in build(); call it first")
        return self._ai
