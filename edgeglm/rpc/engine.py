"""llama.cpp's RPC backend (libggml-rpc, shipped with the engine) through ctypes.

Two halves: a worker serves this machine's devices
(``ggml_backend_rpc_start_server``, what ``rpc-server`` calls), and a client
registers workers (``ggml_backend_rpc_add_server``, what ``--rpc`` calls) so
their devices join ggml's registry beside the local ones. Both abort the
process on a network fault; callers pre-flight with ``edgeglm.rpc.probe`` and
run clients in the isolated child (``edgeglm.backends.isolated``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edgeglm.errors import BackendError, UsageError


@cache
def _lib() -> Any:
    """libggml-rpc beside the libllama llama-cpp-python loaded (the same
    handle, so the same ggml registry)."""
    import llama_cpp
    from llama_cpp._ggml import libggml

    path = Path(llama_cpp.__file__).parent / "lib" / "libggml-rpc.so"
    try:
        rpc = ctypes.CDLL(str(path))
    except OSError as e:
        raise BackendError(f"this llama.cpp engine has no RPC backend ({path}: {e})") from e
    for lib, name, res, args in (
        (rpc, "ggml_backend_rpc_start_server", None,
         [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]),
        (rpc, "ggml_backend_rpc_add_server", ctypes.c_void_p, [ctypes.c_char_p]),
        (libggml, "ggml_backend_register", None, [ctypes.c_void_p]),
        (libggml, "ggml_backend_dev_count", ctypes.c_size_t, []),
        (libggml, "ggml_backend_dev_get", ctypes.c_void_p, [ctypes.c_size_t]),
        (libggml, "ggml_backend_dev_name", ctypes.c_char_p, [ctypes.c_void_p]),
        (libggml, "ggml_backend_dev_description", ctypes.c_char_p, [ctypes.c_void_p]),
        (libggml, "ggml_backend_dev_type", ctypes.c_int, [ctypes.c_void_p]),
        (libggml, "ggml_backend_dev_memory", None,
         [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]),
        (libggml, "ggml_backend_reg_dev_count", ctypes.c_size_t, [ctypes.c_void_p]),
        (libggml, "ggml_backend_reg_dev_get", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]),
    ):  # fmt: skip
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    rpc.libggml = libggml  # type: ignore[attr-defined]
    return rpc


@dataclass(frozen=True)
class LocalDevice:
    """A device of this machine that a worker can offer."""

    handle: int
    name: str
    description: str
    free: int
    total: int


def _describe(handle: int) -> LocalDevice:
    g = _lib().libggml
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    g.ggml_backend_dev_memory(handle, ctypes.byref(free), ctypes.byref(total))
    return LocalDevice(
        handle,
        g.ggml_backend_dev_name(handle).decode(),
        g.ggml_backend_dev_description(handle).decode(errors="replace"),
        free.value,
        total.value,
    )


def local_devices() -> list[LocalDevice]:
    """This machine's devices, RPC ones (other workers) left out."""
    g = _lib().libggml
    devs = [_describe(g.ggml_backend_dev_get(i)) for i in range(g.ggml_backend_dev_count())]
    return [d for d in devs if not d.name.startswith("RPC")]


# enum ggml_backend_dev_type: CPU, GPU, IGPU, ACCEL
_DEV_CPU, _DEV_ACCEL = 0, 3


def served_devices(names: list[str]) -> list[LocalDevice]:
    """The devices ``--device`` names, or as rpc-server picks them by default:
    every GPU, else the CPU."""
    devs = local_devices()
    if names:
        by_name = {d.name: d for d in devs}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise UsageError(
                f"--device {', '.join(unknown)}: no such device (here: {', '.join(by_name)})"
            )
        return [by_name[n] for n in names]
    types = {d.name: _lib().libggml.ggml_backend_dev_type(d.handle) for d in devs}
    gpus = [d for d in devs if types[d.name] not in (_DEV_CPU, _DEV_ACCEL)]
    return gpus or [d for d in devs if types[d.name] == _DEV_CPU][:1]


def start_server(
    endpoint: str, cache_dir: Path | None, threads: int, devices: list[LocalDevice]
) -> None:
    """Serve until the process ends (llama.cpp's accept loop never returns on
    its own; it returns early only if it could not listen)."""
    handles = (ctypes.c_void_p * len(devices))(*[d.handle for d in devices])
    _lib().ggml_backend_rpc_start_server(
        endpoint.encode(),
        str(cache_dir).encode() if cache_dir else None,
        threads,
        len(devices),
        handles,
    )


_registered: set[str] = set()


def add_server(endpoint: str) -> list[str]:
    """Register a worker with ggml, as common/arg.cpp's ``--rpc`` does (once per
    endpoint: add_server hands back the same registry, and registering it twice
    would list its devices twice), and return the names of its devices
    (``RPC0``, ``RPC1``, ... across workers). Aborts the process if the worker is unreachable:
    probe it first."""
    lib = _lib()
    reg = lib.ggml_backend_rpc_add_server(endpoint.encode())
    if not reg:
        raise BackendError(f"worker {endpoint}: llama.cpp could not add it")
    g = lib.libggml
    if endpoint not in _registered:
        g.ggml_backend_register(reg)
        _registered.add(endpoint)
    return [
        g.ggml_backend_dev_name(g.ggml_backend_reg_dev_get(reg, i)).decode()
        for i in range(g.ggml_backend_reg_dev_count(reg))
    ]
