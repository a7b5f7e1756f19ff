"""Helpers for tests (tests/ is on sys.path via pytest's pythonpath setting)."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TypedDict

import numpy as np
import numpy.typing as npt

FIXTURES = Path(__file__).parent / "fixtures"
HF_FIXTURES = Path(os.environ.get("EDGEGLM_HF_FIXTURES", FIXTURES / "hf"))


def write_safetensors(
    path: Path, tensors: dict[str, np.ndarray], *, bf16: AbstractSet[str] = frozenset()
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


class Probe(TypedDict):
    logits: npt.NDArray[np.float32]
    tokens: list[int]
    metadata: dict[str, str]


def llama_probe(gguf: str, tokens: list[int], text: str, kv_type: str = "f16") -> Probe:
    """In a child process: load a GGUF in llama.cpp, score tokens, tokenize text."""
    from edgeglm.backends.llamacpp import LlamaCppModel

    m = LlamaCppModel(
        Path(gguf),
        n_ctx=max(256, len(tokens) + 8),
        logits_all=True,
        type_k=kv_type,
        type_v=kv_type,
    )
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


def child_ggml_assert() -> None:
    """A real GGML_ASSERT in ggml itself: ggml_mul_mat on mismatched shapes, as
    llama.cpp's glm-dsa graph hits on an unsupported indexer head size."""
    import ctypes

    import llama_cpp

    class InitParams(ctypes.Structure):
        _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p),
                    ("no_alloc", ctypes.c_bool)]  # fmt: skip

    ggml = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    ggml.ggml_init.restype = ctypes.c_void_p
    ggml.ggml_init.argtypes = [InitParams]
    ggml.ggml_new_tensor_2d.restype = ctypes.c_void_p
    ggml.ggml_new_tensor_2d.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64,
                                        ctypes.c_int64]  # fmt: skip
    ggml.ggml_mul_mat.restype = ctypes.c_void_p
    ggml.ggml_mul_mat.argtypes = [ctypes.c_void_p] * 3
    ctx = ggml.ggml_init(InitParams(1 << 20, None, True))
    a = ggml.ggml_new_tensor_2d(ctx, 0, 64, 64)
    b = ggml.ggml_new_tensor_2d(ctx, 0, 32, 4)
    ggml.ggml_mul_mat(ctx, a, b)


def child_usage_error() -> None:
    from edgeglm.errors import UsageError

    raise UsageError("bad input")


# What a spawned child saw while importing this module (during unpickling,
# before its target ran): whether SIGINT was blocked then.
_SIGINT_BLOCKED_AT_IMPORT = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, ())


def child_signal_state() -> tuple[bool, bool, bool]:
    """(SIGINT blocked at import, SIGINT ignored now, SIGINT blocked now)."""
    now = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    return _SIGINT_BLOCKED_AT_IMPORT, ignored, signal.SIGINT in now


def child_interrupt_self() -> str:
    os.kill(os.getpid(), signal.SIGINT)
    return "survived"


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

    table, _keep = _imatrix_table(weights)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    params.imatrix = table
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


def _imatrix_table(weights: dict[str, np.ndarray]) -> tuple[object, list[np.ndarray]]:
    import ctypes

    import llama_cpp

    items = sorted(weights.items())
    arrays = [np.ascontiguousarray(w, dtype=np.float32).reshape(-1) for _, w in items]
    table = (llama_cpp.llama_model_imatrix_data * (len(items) + 1))()
    for i, ((name, _), arr) in enumerate(zip(items, arrays, strict=True)):
        table[i].name = name.encode()
        table[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        table[i].size = arr.size
    return table, arrays  # the arrays own the memory the table points into


_TENSOR_LINE = re.compile(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\w+), ")


def llama_quantize_types(
    src: str, jobs: list[tuple[int, dict[str, np.ndarray] | None]]
) -> list[list[tuple[str, str]] | str]:
    """In a child process: the (name, type) list that llama.cpp's quantizer would write, in
    its order, for each (ftype, imatrix) job. A dry run (llama-quantize --dry-run) takes
    every type from the same llama_tensor_get_type as a real run, without quantizing.
    A job that needs an imatrix it lacks gives "requires an imatrix"; one that fails,
    the end of llama.cpp's log."""
    import ctypes

    import llama_cpp

    log: list[str] = []

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    results: list[list[tuple[str, str]] | str] = []
    for ftype, weights in jobs:
        log.clear()
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.nthread = 1
        params.dry_run = True
        if weights is not None:
            table, _keep = _imatrix_table(weights)
            params.imatrix = table
        rc = llama_cpp.llama_model_quantize(src.encode(), b"/dev/null", ctypes.byref(params))
        text = "".join(log)
        if rc != 0:
            results.append(text[-500:])
            continue
        found = []
        # each record runs from its "[ i/ n] name - [shape], type = t, " header to the next
        heads = list(_TENSOR_LINE.finditer(text))
        for m, nxt in zip(heads, [*heads[1:], None], strict=True):
            body = text[m.end() : nxt.start() if nxt else len(text)]
            new = re.search(r"->\s*[\d.]+ MiB \((\w+)\)", body)
            found.append((m.group(1), (new.group(1) if new else m.group(2)).upper()))
        if "will require an imatrix" in text:
            results.append("requires an imatrix")
            continue
        results.append(found)
    return results


def convert_and_llama_quantize(
    jobs: list[tuple[str, str, str, str, str, dict[str, np.ndarray] | None]],
) -> None:
    """In a child process: for each (checkpoint, its F32 GGUF, quant, our output, llama.cpp's
    output, imatrix), EdgeGLM's one-pass conversion and llama.cpp's quantizer on the F32 file.

    Both sides in one process share ggml's IQ lookup tables, whose one-time set-up
    (seconds per IQ1/IQ2 type) would otherwise be paid by each.
    """
    import ctypes

    import llama_cpp

    from edgeglm.converters.gguf.convert import convert
    from edgeglm.converters.gguf.imatrix import Imatrix

    for ckpt, f32, quant, ours, theirs, weights in jobs:
        from edgeglm.converters.gguf.quant_types import scheme

        im = Imatrix(weights=weights, datasets=["random"], chunks=1) if weights else None
        convert(Path(ckpt), Path(ours), quant, imatrix=im)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = int(scheme(quant).ftype)
        params.nthread = 2
        if weights is not None:
            table, _keep = _imatrix_table(weights)
            params.imatrix = table
        rc = int(
            llama_cpp.llama_model_quantize(f32.encode(), theirs.encode(), ctypes.byref(params))
        )
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize {quant} of {f32} returned {rc}")


def edgeglm(
    *args: str, cwd: Path, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``edgeglm`` command in a subprocess. ``cwd`` must not be the
    repository root, whose bare edgeglm/ folder would shadow the installed package.
    ``input``: its standard input (else an empty one, never the terminal pytest
    runs in: ``run`` without a prompt reads a pipe, and chats on a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "edgeglm", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
    )


def record_artifacts(store: str, name: str, tags: list[str]) -> None:
    """A store writer in its own process (tests/edgeglm/store): one artifact per tag."""
    import os

    os.environ["EDGEGLM_MODELS"] = store
    from edgeglm.store.layout import add_artifact, open_entry

    entry = open_entry(name)
    for tag in tags:
        path = entry.artifacts_dir / f"{tag}.gguf"
        path.write_bytes(tag.encode())
        add_artifact(entry, path)
