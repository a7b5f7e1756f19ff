"""Helpers for tests (tests/ is on sys.path via pytest's pythonpath setting)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
HF_FIXTURES = Path(os.environ.get("EDGEGLM_HF_FIXTURES", FIXTURES / "hf"))


def write_safetensors(
    path: Path, tensors: dict[str, np.ndarray], *, bf16: set[str] = frozenset()
) -> None:
    """A spec-conformant safetensors writer (names in `bf16` are stored as BF16, truncating)."""
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name, arr in tensors.items():
        if name in bf16:
            raw = (
                (np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32) >> 16)
                .astype("<u2")
                .tobytes()
            )
            dtype = "BF16"
        else:
            dtype = {np.float32: "F32", np.float16: "F16", np.int64: "I64"}[arr.dtype.type]
            raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def fixture_names() -> list[str]:
    if not HF_FIXTURES.is_dir():
        return []
    return sorted(p.name for p in HF_FIXTURES.iterdir() if (p / "config.json").is_file())


def llama_probe(gguf: str, tokens: list[int], text: str) -> dict[str, object]:
    """In a child process: load a GGUF in llama.cpp, score tokens, tokenize text."""
    from edgeglm.backends.llamacpp import LlamaCppModel

    m = LlamaCppModel(Path(gguf), n_ctx=max(256, len(tokens) + 8), logits_all=True)
    try:
        return {
            "logits": m.score(tokens),
            "tokens": m.tokenize(text),
            "metadata": m.metadata,
        }
    finally:
        m.close()


def load_reference(fixture: Path) -> tuple[list[int], np.ndarray, str]:
    ref = np.load(fixture / "reference.npz")
    text = (HF_FIXTURES.parent / "reference_text.txt").read_text(encoding="utf-8")
    return ref["tokens"].astype(int).tolist(), ref["logits"], text


def llama_quantize(src: str, dst: str, ftype: int, nthread: int = 2) -> int:
    """In a child process: llama.cpp's own quantizer (what llama-quantize runs)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


def gguf_tensors(path: Path) -> dict[str, tuple[str, bytes]]:
    from gguf import GGUFReader

    r = GGUFReader(path)
    return {
        t.name: (t.tensor_type.name, bytes(np.asarray(t.data).view(np.uint8))) for t in r.tensors
    }


# Functions run in child processes by tests (spawned children import them from here).


def child_segfault() -> None:
    os.kill(os.getpid(), 11)


def child_abort() -> None:
    os.abort()  # what GGML_ASSERT does


def child_usage_error() -> None:
    from edgeglm.errors import UsageError

    raise UsageError("bad input")


def child_double(x: int) -> int:
    return x * 2


def child_decode_with_extra_buffers(path: str) -> None:
    """Decode with llama.cpp's extra buffer types forced on (AMX kernels on AMX CPUs)."""
    from edgeglm.backends.llamacpp import LlamaCppModel

    os.environ["EDGEGLM_LLAMA_EXTRA_BUFTS"] = "1"
    m = LlamaCppModel(Path(path), n_ctx=64)
    m.llm.eval(m.tokenize("hello world, this is a test")[:8])


def llama_quantize_with_imatrix(
    src: str, dst: str, ftype: int, weights: dict[str, np.ndarray]
) -> int:
    """In a child process: llama.cpp's quantizer with an imatrix (llama-quantize --imatrix)."""
    import ctypes

    import llama_cpp

    items = sorted(weights.items())
    arrays = [np.ascontiguousarray(w, dtype=np.float32).reshape(-1) for _, w in items]
    table = (llama_cpp.llama_model_imatrix_data * (len(items) + 1))()
    for i, ((name, _), arr) in enumerate(zip(items, arrays, strict=True)):
        table[i].name = name.encode()
        table[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        table[i].size = arr.size
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    params.imatrix = table
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))
