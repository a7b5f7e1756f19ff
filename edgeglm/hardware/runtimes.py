"""What the installed runtimes can really use: llama.cpp's ggml devices, ONNX Runtime's providers.

A GPU in the machine is no use to a runtime built without its backend, and
the reverse: onnxruntime-gpu *lists* CUDAExecutionProvider on machines with
no CUDA libraries at all. So both probes ask the runtime itself: ggml's device
registry (through ctypes on the libggml that llama-cpp-python ships), and a
one-node ONNX session per provider, checking which provider the session
actually got.
"""

from __future__ import annotations

import ctypes
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from edgeglm.hardware.profile import DeviceType, LlamaCppDevice, LlamaCppInfo, OnnxRuntimeInfo

# enum ggml_backend_dev_type (ggml/include/ggml-backend.h), in declaration order.
_DEV_TYPES: tuple[DeviceType, ...] = ("cpu", "gpu", "igpu", "accel", "meta")
# libggml's file name by platform (llama_cpp/lib/ in the wheel).
_GGML_LIB = {"linux": "libggml.so", "darwin": "libggml.dylib", "win32": "ggml.dll"}


def probe_llama_cpp() -> LlamaCppInfo:
    try:
        import llama_cpp
    except ImportError as e:
        return LlamaCppInfo(error=f"llama-cpp-python is not importable ({e})")
    info = LlamaCppInfo(version=str(llama_cpp.__version__))
    try:
        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except (AttributeError, OSError) as e:
        offload = None
        info.error = f"llama_supports_gpu_offload failed ({e})"
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    lib_path = lib_dir / _GGML_LIB.get(sys.platform, "libggml.so")
    try:
        lib = _ggml(lib_path)
        info.backends = _backends(lib)
        info.devices = _devices(lib)
    except (OSError, AttributeError) as e:  # missing library or symbol
        info.error = f"{lib_path}: cannot enumerate ggml devices ({e})"
        # llama_supports_gpu_offload() also counts the RPC backend (remote
        # devices), so with RPC built in it says nothing about a local GPU.
        try:
            rpc = bool(llama_cpp.llama_supports_rpc())
        except (AttributeError, OSError):
            rpc = True  # cannot tell: assume the worst
        info.gpu_offload = None if rpc else offload
        return info
    # GPU offload here means a local GPU device: llama_supports_gpu_offload() is
    # also true for a CPU-only build with the RPC backend (`make engine` always
    # builds it in).
    info.gpu_offload = any(d.type in ("gpu", "igpu") for d in info.devices)
    return info


def _ggml(path: Path) -> Any:
    """libggml with the signatures from ggml-backend.h declared (handles are opaque pointers)."""
    lib = ctypes.CDLL(str(path))
    vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    sigs: dict[str, tuple[list[Any], Any]] = {
        "ggml_backend_dev_count": ([], sz),
        "ggml_backend_dev_get": ([sz], vp),
        "ggml_backend_dev_name": ([vp], cp),
        "ggml_backend_dev_description": ([vp], cp),
        "ggml_backend_dev_type": ([vp], ctypes.c_int),
        "ggml_backend_dev_memory": ([vp, ctypes.POINTER(sz), ctypes.POINTER(sz)], None),
        "ggml_backend_reg_count": ([], sz),
        "ggml_backend_reg_get": ([sz], vp),
        "ggml_backend_reg_name": ([vp], cp),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


def _str(raw: bytes | None) -> str:
    return raw.decode(errors="replace") if raw else ""


def _backends(lib: Any) -> list[str]:
    return [
        _str(lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)))
        for i in range(lib.ggml_backend_reg_count())
    ]


def _devices(lib: Any) -> list[LlamaCppDevice]:
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        kind = lib.ggml_backend_dev_type(dev)
        out.append(
            LlamaCppDevice(
                name=_str(lib.ggml_backend_dev_name(dev)),
                description=_str(lib.ggml_backend_dev_description(dev)),
                type=_DEV_TYPES[kind] if 0 <= kind < len(_DEV_TYPES) else "unknown",
                memory_total_bytes=int(total.value) or None,
                memory_free_bytes=int(free.value) or None,
            )
        )
    return out


# -- ONNX Runtime ---------------------------------------------------------


def _probe_model() -> bytes:
    """A one-node Identity graph: the cheapest model every provider can take."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    # IR 8 / opset 13: old enough for any onnxruntime we support.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return bytes(model.SerializeToString())


@contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Silence ORT while it probes, keeping what it said so failures have a reason.

    Failing providers print through three channels: Python ``print`` (the "EP
    Error" banner, stdout), the C++ logger (stderr) and ``warnings``. Redirecting
    file descriptors 1 and 2 catches the first two, even from C code.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    text: list[str] = []
    py = io.StringIO()  # Python-level writes, wherever sys.stdout points (pytest, IDEs)
    with (
        tempfile.TemporaryFile(mode="w+b") as sink,
        warnings.catch_warnings(),
        redirect_stdout(py),
        redirect_stderr(py),
    ):
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text.append(py.getvalue() + sink.read().decode(errors="replace"))


# The useful sentence in ORT's provider-failure output, most specific first.
_REASONS = (
    re.compile(r"with error: ([^\n\x1b]+)"),
    re.compile(r"(Please install [^\n\x1b]*?)(?:,| as mentioned|\n|$)"),
    re.compile(r"(Failed to create \w+\.[^\n\x1b]*?)(?:\.|\n|$)"),
)


def _reason(output: str, fallback: str) -> str:
    for pat in _REASONS:
        m = pat.search(output)
        if m:
            return m.group(1).strip()
    return fallback


def probe_onnxruntime(only: Sequence[str] | None = None) -> OnnxRuntimeInfo:
    """Which listed providers start a session; ``only`` limits the providers tried."""
    try:
        import onnxruntime as ort
    except ImportError:
        return OnnxRuntimeInfo()
    info = OnnxRuntimeInfo(
        version=str(ort.__version__), available_providers=list(ort.get_available_providers())
    )
    try:
        model = _probe_model()
    except ImportError as e:
        info.errors = {
            p: f"cannot build the probe model: onnx missing ({e})" for p in info.available_providers
        }
        return info
    for provider in info.available_providers:
        if only is not None and provider not in only:
            continue
        ok, why = _try_provider(ort, model, provider)
        if ok:
            info.working_providers.append(provider)
        else:
            info.errors[provider] = why
    return info


def _try_provider(ort: Any, model: bytes, provider: str) -> tuple[bool, str]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: the expected failures are not news
    chain = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    with _captured_output() as said:
        try:
            session = ort.InferenceSession(model, sess_options=opts, providers=chain)
            got = session.get_providers()[0]
            error = None
        except Exception as e:  # ORT raises plain RuntimeError/Fail for provider trouble
            got, error = None, str(e)
    if got == provider:
        return True, ""
    fallback = error or f"session fell back to {got}"
    return False, _reason(said[0] if said else "", fallback)
