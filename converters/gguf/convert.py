"""HF safetensors -> GGUF in one pass: map, quantize and write tensor by tensor.

No full-precision intermediate file: each tensor is read (memory-mapped),
reshaped by its family, quantized in process by ggml and appended to a
temporary file beside the target, which is renamed into place only when
complete. An error, Ctrl-C or kill leaves nothing at the final path, and the
inputs are only ever opened for reading.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGUFWriter, Keys
from gguf import GGMLQuantizationType as T

from edgeglm import __version__
from edgeglm.checkpoint.hf import HFCheckpoint, resolve_checkpoint
from edgeglm.converters.gguf import ggml
from edgeglm.converters.gguf.base import Family, OutTensor
from edgeglm.converters.gguf.imatrix import Imatrix
from edgeglm.converters.gguf.policy import (
    PlannedTensor,
    allows_quantization,
    choose_types,
    requires_imatrix,
)
from edgeglm.converters.gguf.quant_types import QuantScheme, scheme
from edgeglm.converters.gguf.registry import family_for
from edgeglm.converters.gguf.vocab import Vocab, load_vocab
from edgeglm.converters.output import (
    ConvertResult,
    check_output,
    clean_stale_temps,
    sha256_file,
)
from edgeglm.errors import ConversionError, InsufficientDiskError, QuantizationError, UsageError
from edgeglm.fileio import atomic_output
from edgeglm.generation import sampling_metadata
from edgeglm.hardware import usable_threads

# Called after each tensor: (tensor name, tensors done, tensors total, bytes done, bytes total).
Progress = Callable[[str, int, int, int, int], None]
_TMP_MARK = ".edgeglm-tmp-"


@dataclass
class Plan:
    """Everything decided before a byte is written."""

    family: Family
    scheme: QuantScheme
    tensors: list[OutTensor]
    types: dict[str, T]
    warnings: list[str]

    def nbytes(self, t: OutTensor) -> int:
        qtype = self.types[t.name]
        block, size = GGML_QUANT_SIZES[qtype]
        return int(np.prod(t.shape)) // block * size

    @property
    def total_bytes(self) -> int:
        return sum(self.nbytes(t) for t in self.tensors)

    @property
    def parameters(self) -> int:
        return sum(int(np.prod(t.shape)) for t in self.tensors)


def _bpw(t: T) -> float:
    block, size = GGML_QUANT_SIZES[t]
    return size * 8 / block


def plan_conversion(
    ckpt: HFCheckpoint,
    quant: str,
    imatrix: Imatrix | None,
    keep: Sequence[tuple[str, str]] = (),
) -> Plan:
    fam = family_for(ckpt.architecture)(ckpt)
    sch = scheme(quant)
    fam.check_consistency()  # before mapping: a config may claim a billion blocks
    tensors = list(fam.tensors())
    fam.check(tensors)
    # Tensors llama.cpp's converter writes in F32 enter the mix as F32: kept so
    # by float schemes, quantized like any weight where llama-quantize would.
    planned = [
        PlannedTensor(t.name, tuple(reversed(t.shape)), T.F32 if t.force_f32 else _float_type(t))
        for t in tensors
    ]
    types = choose_types(planned, sch, fam.model_shape(), has_imatrix=imatrix is not None)
    warnings: list[str] = []
    # Recipe rules ("keep these tensors at Q8_0 or better") only ever add bits:
    # a tensor already above the floor keeps its type.
    for pattern, floor_name in keep:
        try:
            floor = T[floor_name.upper()]
            rx = re.compile(pattern)
        except (KeyError, re.error) as e:
            raise UsageError(
                f"bad keep-higher-precision rule {pattern!r} -> {floor_name!r}: {e}"
            ) from e
        for p in planned:
            upgrade = rx.search(p.name) and _bpw(types[p.name]) < _bpw(floor)
            if upgrade and p.shape[0] % GGML_QUANT_SIZES[floor][0] == 0:
                types[p.name] = floor
    for t in tensors:
        if t.force_f32 and (sch.is_float or not allows_quantization(t.name, t.shape)):
            types[t.name] = T.F32
        elif imatrix is None and requires_imatrix(t.name, types[t.name], sch):
            raise QuantizationError(
                f"{sch.name} quantizes {t.name} to {types[t.name].name}, which needs an "
                "importance matrix: pass --imatrix FILE or --calibrate TEXT_FILE"
            )
    if imatrix is not None:
        for name, experts in sorted(imatrix.unseen_experts.items()):
            warnings.append(
                f"imatrix: {name}: experts {experts} never fired on the calibration text; "
                "they are quantized with uniform weights"
            )
    return Plan(fam, sch, tensors, types, warnings)


def _float_type(t: OutTensor) -> T:
    return T.BF16 if t.source_dtype == "BF16" else T.F16


def convert(
    src: str | Path,
    out: Path,
    quant: str,
    *,
    imatrix: Imatrix | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    keep: Sequence[tuple[str, str]] = (),
) -> ConvertResult:
    """``keep``: (tensor-name regex, minimum ggml type) rules, e.g. from a recipe."""
    t0 = time.perf_counter()
    root = resolve_checkpoint(str(src))
    ckpt = HFCheckpoint(root)
    try:
        check_output(out, root, folder=False, also=ckpt.files)
        plan = plan_conversion(ckpt, quant, imatrix, keep)
        fam = plan.family
        vocab = load_vocab(root, fam.vocab_size, fam.special_tokens())
        need = plan.total_bytes + (16 << 20)
        free = shutil.disk_usage(out.parent).free
        if free < need:
            raise InsufficientDiskError(
                f"{out.parent}: {free / 2**30:.2f} GiB free, the GGUF needs {need / 2**30:.2f} GiB"
            )
        clean_stale_temps(out, (_TMP_MARK,))
        # A full disk (exit 5) or an unwritable folder (exit 2) comes out of
        # here as one message; the temporary is gone and nothing is at ``out``.
        with atomic_output(out, mark=_TMP_MARK) as tmp:
            digest = _write(plan, vocab, tmp, root, imatrix, threads, progress)
    finally:
        ckpt.close()
    counts = Counter(plan.types[t.name].name for t in plan.tensors)
    size = out.stat().st_size
    return ConvertResult(
        output=out,
        format="gguf",
        quant=plan.scheme.name,
        architecture=fam.gguf_arch,
        bytes=size,
        parameters=plan.parameters,
        bits_per_weight=plan.total_bytes * 8 / max(plan.parameters, 1),
        tensor_types=dict(sorted(counts.items())),
        sha256=digest,
        seconds=time.perf_counter() - t0,
        warnings=plan.warnings,
    )


# Elements per work item: big enough to amortize a ggml call, small enough
# that a few in flight per thread keep memory flat and cores busy.
_CHUNK_ELEMS = 1 << 20
_F16_MAX = 65504.0


def _write(
    plan: Plan,
    vocab: Vocab,
    tmp: Path,
    root: Path,
    imatrix: Imatrix | None,
    threads: int | None,
    progress: Progress | None,
) -> str:
    fam = plan.family
    w = GGUFWriter(tmp, fam.gguf_arch)
    try:
        return _write_all(w, plan, vocab, tmp, root, imatrix, threads, progress)
    except BaseException:
        for f in w.fout or []:  # the caller removes the file; don't leak its handle
            with contextlib.suppress(OSError):
                f.close()
        raise


def _write_all(
    w: GGUFWriter,
    plan: Plan,
    vocab: Vocab,
    tmp: Path,
    root: Path,
    imatrix: Imatrix | None,
    threads: int | None,
    progress: Progress | None,
) -> str:
    fam = plan.family
    _write_general(w, plan, root, imatrix)
    fam.write_hparams(w)
    vocab.write(w)
    for t in plan.tensors:
        qtype = plan.types[t.name]
        w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), plan.nbytes(t), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    assert w.fout is not None
    fout = w.fout[0]
    n_threads = threads or usable_threads()
    total, done = plan.total_bytes, 0
    # Work items stream through a bounded window: tensor data is read, converted
    # and quantized chunk by chunk in the pool, and written strictly in order.
    window: deque[tuple[int, bool, bool, Future[bytes]]] = deque()
    tasks = _chunk_tasks(plan, imatrix)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for idx, first, last, fn in tasks:
            window.append((idx, first, last, pool.submit(fn)))
            if len(window) > 2 * n_threads + 2:
                done += _drain_one(window, w, fout, plan, done, total, progress)
        while window:
            done += _drain_one(window, w, fout, plan, done, total, progress)
    fout.flush()
    os.fsync(fout.fileno())
    w.close()
    return sha256_file(tmp)


def _drain_one(
    window: deque[tuple[int, bool, bool, Future[bytes]]],
    w: GGUFWriter,
    fout: BinaryIO,
    plan: Plan,
    done: int,
    total: int,
    progress: Progress | None,
) -> int:
    """Write the oldest finished chunk; returns tensor bytes completed by it."""
    idx, first, last, fut = window.popleft()
    data = fut.result()
    t = plan.tensors[idx]
    if first:
        w.write_padding(fout, fout.tell())  # every tensor starts aligned
    fout.write(data)
    if not last:
        return 0
    nbytes = plan.nbytes(t)
    w.write_padding(fout, nbytes)
    if progress is not None:
        progress(t.name, idx + 1, len(plan.tensors), done + nbytes, total)
    return nbytes


def _chunk_tasks(
    plan: Plan, imatrix: Imatrix | None
) -> Iterator[tuple[int, bool, bool, Callable[[], bytes]]]:
    """(tensor index, first chunk?, last chunk?, work) for every chunk, in file order."""
    for idx, t in enumerate(plan.tensors):
        qtype = plan.types[t.name]
        n_per_row, nrows = t.n_per_row, t.nrows
        # Stacked experts: each expert has its own importance row, so a chunk
        # never spans two experts.
        n_mat = t.shape[0] if len(t.shape) == 3 else 1
        weights = None
        if imatrix is not None and qtype != T.F32:
            weights = imatrix.get(t.name, n_per_row, n_mat)
        per_group = nrows // n_mat
        step = max(1, min(per_group, _CHUNK_ELEMS // max(n_per_row, 1)))
        spans = [
            (g, r0, min(r0 + step, (g + 1) * per_group))
            for g in range(n_mat)
            for r0 in range(g * per_group, (g + 1) * per_group, step)
        ]
        for k, (g, r0, r1) in enumerate(spans):
            row_w = weights[g] if weights is not None else None
            yield idx, k == 0, k == len(spans) - 1, partial(_encode_chunk, t, qtype, r0, r1, row_w)


def _encode_chunk(
    t: OutTensor, qtype: T, r0: int, r1: int, weights: npt.NDArray[np.float32] | None
) -> bytes:
    data = t.rows(r0, r1)
    if data.shape != (r1 - r0, t.n_per_row):
        raise ConversionError(f"{t.name}: rows {r0}:{r1} came out as {data.shape}")
    if qtype == T.F32:
        return np.ascontiguousarray(data, dtype=np.float32).tobytes()
    if not np.isfinite(data).all():
        raise ConversionError(f"{t.name}: contains NaN or Inf values ({', '.join(t.sources)})")
    if qtype == T.F16 and (peak := float(np.abs(data).max(initial=0.0))) > _F16_MAX:
        # Some GLM checkpoints hold weights beyond float16's range; they would
        # silently become inf. BF16 keeps float32's range.
        raise ConversionError(
            f"{t.name}: |values| up to {peak:.4g} exceed float16's range ({_F16_MAX:g}); "
            "use --quant BF16 or F32 for this model"
        )
    return ggml.quantize(data, qtype, imatrix=weights).tobytes()


def _write_general(w: GGUFWriter, plan: Plan, root: Path, imatrix: Imatrix | None) -> None:
    cfg = plan.family.cfg
    from edgeglm.store.layout import store_entry_of

    repo = _hf_repo_id(root)
    entry = store_entry_of(root)  # a store model's folder is called "source": use its name
    folder = entry.name if entry is not None else root.name
    name = str(cfg.get("_name_or_path", default="") or folder).rstrip("/").split("/")[-1]
    w.add_type("model")
    w.add_name(name or folder)
    w.add_quantized_by(f"EdgeGLM {__version__}")
    w.add_file_type(int(plan.scheme.ftype))
    w.add_quantization_version(2)
    if repo:
        w.add_source_repo_url(f"https://huggingface.co/{repo}")
        w.add_string("general.source.huggingface.repository", repo)
    else:
        w.add_source_url(root.resolve().as_uri())
    _write_sampling(w, root)
    if imatrix is not None:
        w.add_string("quantize.imatrix.dataset", ",".join(imatrix.datasets))
        w.add_int32("quantize.imatrix.entries_count", len(imatrix.weights))
        w.add_int32("quantize.imatrix.chunks_count", imatrix.chunks)


def _write_sampling(w: GGUFWriter, root: Path) -> None:
    """The checkpoint's sampling defaults (generation_config.json) as the
    ``general.sampling.*`` keys llama.cpp reads as the model's own: a GGUF
    samples as its checkpoint does, in EdgeGLM and in llama-cli alike."""
    for key, value in sampling_metadata(root).items():
        if key == Keys.General.SAMPLING_TOP_K:  # llama.cpp reads it as int32
            w.add_int32(key, int(value))
        else:
            w.add_float32(key, float(value))


def _hf_repo_id(root: Path) -> str | None:
    """org/name for a folder inside the Hugging Face cache
    (models--org--name/snapshots/rev), or for a store model's checkpoint (the
    repo its manifest records)."""
    from edgeglm.store.layout import store_entry_of

    entry = store_entry_of(root)
    if entry is not None and entry.manifest.source.repo:
        return entry.manifest.source.repo
    parts = root.resolve().parts
    for p in parts:
        if p.startswith("models--"):
            return p[len("models--") :].replace("--", "/", 1)
    return None
