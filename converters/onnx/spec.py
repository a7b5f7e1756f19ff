"""What the graph builder needs from config.json, read once and checked.

Families read their extra keys through ``Config``; everything shared by the
dense GLM blocks lands in a frozen ``ModelSpec`` so the builder never looks a
key up twice or guesses a default silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeglm.checkpoint.config import Config
from edgeglm.errors import CheckpointError, UnsupportedArchitectureError


@dataclass(frozen=True)
class ModelSpec:
    """Hyperparameters of a dense GLM decoder, as the ONNX graph uses them."""

    hidden: int
    intermediate: int
    n_layer: int
    n_head: int
    n_kv_head: int
    head_dim: int
    vocab: int
    context_length: int
    rms_eps: float
    rope_theta: float
    rotary_dim: int
    tie_embeddings: bool

    @classmethod
    def from_config(cls, cfg: Config) -> ModelSpec:
        n_head = int(cfg.need("num_attention_heads"))
        hidden = int(cfg.need("hidden_size"))
        head_dim = int(cfg.get("head_dim", default=hidden // n_head))
        rope_type = cfg.rope_get("rope_type", cfg.rope_get("type", "default"))
        if rope_type not in ("default", None):
            # Scaled RoPE (yarn, dynamic, ...) changes the cos/sin caches; we
            # would silently produce a different model, so refuse instead.
            raise UnsupportedArchitectureError(
                f"{cfg.where}: rope_type {rope_type!r} is not supported by the ONNX converter "
                "(only unscaled RoPE)"
            )
        rotary_dim = int(head_dim * float(cfg.rope_get("partial_rotary_factor", 1.0)))
        if rotary_dim % 2 or not 0 < rotary_dim <= head_dim:
            raise CheckpointError(
                f"{cfg.where}: partial_rotary_factor gives rotary dim {rotary_dim}"
            )
        spec = cls(
            hidden=hidden,
            intermediate=int(cfg.need("intermediate_size")),
            n_layer=int(cfg.need("num_hidden_layers")),
            n_head=n_head,
            n_kv_head=int(cfg.get("num_key_value_heads", default=n_head)),
            head_dim=head_dim,
            vocab=int(cfg.need("vocab_size")),
            # The trained context, which also sizes the rotary caches.
            context_length=int(cfg.need("max_position_embeddings", "seq_length")),
            rms_eps=float(cfg.get("rms_norm_eps", default=1e-5)),
            rope_theta=float(cfg.rope_get("rope_theta", 10000.0)),
            rotary_dim=rotary_dim,
            tie_embeddings=bool(cfg.get("tie_word_embeddings", default=False)),
        )
        if spec.n_head % spec.n_kv_head:
            raise CheckpointError(
                f"{cfg.where}: num_attention_heads={spec.n_head} is not a multiple of "
                f"num_key_value_heads={spec.n_kv_head}"
            )
        return spec

    @property
    def q_size(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.n_kv_head * self.head_dim
