"""HF safetensors -> ONNX folder in one pass: plan, build the graph, write, check, place.

Weights are read one tensor at a time, converted (or block-quantized) and
written straight out, inline for models under protobuf's 2 GB limit and to
one external data file above it. Nothing reaches the target path until the
whole folder is written and checked.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import onnx

from edgeglm import __version__
from edgeglm.backends.onnx import check_external_data
from edgeglm.checkpoint.hf import HFCheckpoint, resolve_checkpoint
from edgeglm.converters.consistency import check_checkpoint
from edgeglm.converters.onnx.base import Family, Progress
from edgeglm.converters.onnx.graph import GraphBuilder, TensorStore
from edgeglm.converters.onnx.package import (
    DATA_FILE,
    GENAI_CONFIG,
    MODEL_FILE,
    check_target,
    copy_tokenizer,
    genai_config,
    place,
    stop_token_ids,
    temp_folder,
    write_json,
)
from edgeglm.converters.onnx.quant import Precision, WeightFormat, precision
from edgeglm.converters.onnx.registry import family_for
from edgeglm.converters.output import ConvertResult, sha256_file
from edgeglm.errors import ConversionError, InsufficientDiskError
from edgeglm.fileio import write_error

# Above this the weights go to an external data file: a protobuf message
# cannot exceed 2 GiB, and the estimate below is an upper bound.
EXTERNAL_ABOVE = 1_800_000_000


def estimate_bytes(fam: Family, prec: Precision) -> int:
    """An upper bound on the weight bytes the model will hold."""
    total = 0
    for name in fam.expected_tensors():
        info = fam.ckpt.info(name)
        if len(info.shape) < 2:
            total += info.numel * 4
            continue
        fmt = max(prec.linear, prec.head, prec.embedding, key=lambda f: f.bits)
        # int blocks carry a scale (and zero point) per 32 weights
        total += info.numel * fmt.bits // 8 + (info.numel // 8 if fmt.quantized else 0)
    s = fam.spec
    if s.tie_embeddings:
        total += s.vocab * s.hidden * 4  # the head is stored apart from the embedding
    return total + s.context_length * s.rotary_dim * 4  # rotary caches


def convert(
    src: str | Path, out_dir: Path, quant: str, *, progress: Progress | None = None
) -> ConvertResult:
    t0 = time.perf_counter()
    prec = precision(quant)
    root = resolve_checkpoint(str(src))
    ckpt = HFCheckpoint(root)
    try:
        check_target(out_dir, root, ckpt.files)
        family = family_for(ckpt.architecture)
        # Config against checkpoint first, as the GGUF converter does: the graph
        # builder would otherwise loop over whatever layer count the config claims.
        check_checkpoint(ckpt)
        fam = family(ckpt, prec, progress)
        need = estimate_bytes(fam, prec)
        free = shutil.disk_usage(out_dir.parent).free
        if free < need + (16 << 20):
            raise InsufficientDiskError(
                f"{out_dir.parent}: {free / 2**30:.2f} GiB free, "
                f"the ONNX model may need {need / 2**30:.2f} GiB"
            )
        external = need > EXTERNAL_ABOVE
        tmp: Path | None = None
        try:
            tmp = temp_folder(out_dir)
            g = _write_folder(fam, prec, root, tmp, external)
            place(tmp, out_dir)
        except BaseException as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):  # full disk: exit 5; unwritable place: exit 2
                raise write_error(e, out_dir) from e
            raise
    finally:
        ckpt.close()
    files = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir())}
    # rotary caches and shape constants live under /model/, and an input's default
    # (logits_to_keep's) is named as the input: none of them are weights
    defaults = {i.name for i in g.inputs}
    weight_bytes = sum(_nbytes(t) for t in g.initializers
                       if not t.name.startswith("/model/") and t.name not in defaults)  # fmt: skip
    params = sum(ckpt.info(n).numel for n in fam.used)
    return ConvertResult(
        output=out_dir,
        format="onnx",
        quant=prec.name,
        architecture=ckpt.architecture,
        bytes=sum(files.values()),
        parameters=params,
        bits_per_weight=weight_bytes * 8 / max(params, 1),
        tensor_types=dict(sorted(g.formats.items())),
        sha256=sha256_file(out_dir / MODEL_FILE),
        seconds=time.perf_counter() - t0,
        files=files,
        external_data=external,
        data_sha256=sha256_file(out_dir / DATA_FILE) if external else None,
    )


def _write_folder(
    fam: Family, prec: Precision, root: Path, tmp: Path, external: bool
) -> GraphBuilder:
    store = TensorStore(tmp / DATA_FILE if external else None)
    g = GraphBuilder(store)
    try:
        fam.build(g)
    finally:
        store.close()
    model = g.model(
        "edgeglm_" + fam.hf_architectures[0],
        {
            "edgeglm.version": __version__,
            "edgeglm.architecture": fam.ckpt.architecture,
            "edgeglm.quant": prec.name,
            "edgeglm.rotary_interleaved": str(int(fam.rotary_interleaved)),
        },
    )
    path = tmp / MODEL_FILE
    onnx.save_model(model, path)
    # onnx.checker cannot help here: it rejects ORT's SimplifiedLayerNormalization
    # (an ONNX-domain op only ORT registers). The builder checks its own wiring.
    check_external_data(model, tmp, error=ConversionError)
    copy_tokenizer(root, tmp)
    eos = stop_token_ids(root, fam.cfg)
    write_json(tmp / GENAI_CONFIG, genai_config(root, fam.cfg, fam.spec, eos))
    return g


def _nbytes(t: onnx.TensorProto) -> int:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return int({e.key: e.value for e in t.external_data}["length"])
    return len(t.raw_data)


__all__ = ["WeightFormat", "convert"]
