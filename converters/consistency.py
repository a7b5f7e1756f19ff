"""A checkpoint against its own config.json: the one check before any converter uses it.

Both converters and ``edgeglm plan`` run it first, before anything is built
or written, so a checkpoint that llama.cpp could not load, or that would make
the ONNX graph builder loop over a billion layers, is refused at once with
the first thing that is wrong:

- blocks: the config's layer count must match the blocks the checkpoint has
  (checked without ever counting up to the config's number, which may be
  absurd);
- tensors: every tensor the config implies must be present (the family's
  ``required_tensors``: transformers' layout, and for NextN/MTP blocks what
  llama.cpp loads), the first missing one named;
- dtypes: every tensor a converter reads is float32, float16 or bfloat16;
- context: the trained context length is a sane whole number.

The families' knowledge (layouts, block names, NextN blocks) lives on the
GGUF family classes, which cover every architecture the ONNX converter does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from edgeglm.errors import CheckpointError

if TYPE_CHECKING:
    from edgeglm.checkpoint.hf import HFCheckpoint
    from edgeglm.converters.gguf.base import Family

# Float weights; GLM checkpoints hold nothing else a converter reads.
FLOAT_DTYPES = ("F32", "F16", "BF16")
# 16 Mi tokens: far past any GLM (GLM-4.x: 128 Ki, GLM-5: 200 Ki).
MAX_CONTEXT = 1 << 24


def check_checkpoint(ckpt: HFCheckpoint) -> None:
    """Refuse a checkpoint that disagrees with its config (``CheckpointError``, exit 4)."""
    from edgeglm.converters.gguf.registry import family_for

    check_family(family_for(ckpt.architecture)(ckpt))


def check_family(fam: Family) -> None:
    _check_blocks(fam)
    _check_context(fam)
    root = fam.ckpt.root
    for name in fam.required_tensors():
        if name not in fam.ckpt:
            raise CheckpointError(
                f"{root}: tensor {name!r} is missing; {fam.cfg.where} implies it for "
                f"{fam.hf_architectures[0]}"
            )
    for name in fam.ckpt:
        if name.endswith(fam.ignored_suffixes):
            continue
        info = fam.ckpt.info(name)
        if info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{info.path}: tensor {name!r} is stored as {info.dtype}; "
                f"{fam.hf_architectures[0]} weights must be F32, F16 or BF16"
            )


def _check_context(fam: Family) -> None:
    """The trained context is the one size no tensor witnesses; the ONNX
    rotary tables and the GGUF's u32 field are sized from it."""
    n = fam.cfg.get("max_position_embeddings", "seq_length")
    if n is None:
        return  # families that need it ask for it (Config.need) and say so
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CONTEXT:
        raise CheckpointError(
            f"{fam.cfg.where}: max_position_embeddings is {n!r}; "
            f"expected a whole number from 1 to {MAX_CONTEXT}"
        )


def _check_blocks(fam: Family) -> None:
    n_layer = fam.n_layer
    where = fam.cfg.where
    if n_layer < 1:
        raise CheckpointError(f"{where}: the config describes {n_layer} blocks")
    # At most 9 digits: a longer index is no block of a real model (and int()
    # of a 100 MB digit string is a denial of service of its own).
    pattern = re.compile(rf"^{re.escape(fam.block_prefix)}(\d{{1,9}})\.")
    have = {int(m.group(1)) for name in fam.ckpt if (m := pattern.match(name))}
    first_gap = 0
    while first_gap in have:  # bounded by the checkpoint, never by the config
        first_gap += 1
    if first_gap < n_layer:
        raise CheckpointError(
            f"{where}: the config describes {n_layer} blocks, but the checkpoint has no "
            f"tensors for block {first_gap} (it has tensors for {len(have)} blocks)"
        )
    beyond = sorted(i for i in have if i >= n_layer)
    if beyond and not fam.has_nextn_blocks:
        raise CheckpointError(
            f"{where}: the config describes {n_layer} blocks, but the checkpoint has "
            f"tensors for block {beyond[0]} too"
        )
