"""The engine: llama-cpp-python (llama.cpp) built for the hardware this machine has.

``make engine`` (which ``make install`` runs first) starts this file by its
path with the virtual environment's python, before edgeglm or any of its
dependencies is installed: so it imports nothing but the standard library.
Installed, it is also ``python -m edgeglm.hardware.engine``, and ``edgeglm
doctor`` reads :func:`installed_build` from it.

What it does:

1. chooses llama.cpp's backend: CUDA where a CUDA toolkit *and* an NVIDIA GPU
   with its driver are found, Metal on Apple Silicon, HIP where ROCm and an AMD
   GPU are found, Vulkan where the SDK, a loader and a GPU driver for it are
   found, the CPU otherwise. ``EDGEGLM_LLAMA_BACKEND`` overrides the choice and
   a user's own ``CMAKE_ARGS`` are added last (CMake lets the last ``-D`` win).
   llama.cpp's RPC backend (``GGML_RPC``) is always built in.
2. prints the choice and why;
3. makes the running interpreter's llama-cpp-python that build: nothing to do
   when it already is; the cached wheel when this build was made before; a
   new wheel otherwise.

Why a cache of our own, and why pip is called the way it is
------------------------------------------------------------
pip keeps two caches under ``pip cache dir``. The HTTP cache holds downloads
(index pages, the sdist, build dependencies such as scikit-build-core); it
only stores what the server allows to be cached. The wheel cache holds wheels
pip built, keyed by the *source link* (the sdist's URL and hash, plus the
interpreter): nothing in the key says which ``CMAKE_ARGS`` the build used.
Whether a built wheel goes there for good (``_should_cache`` in pip's
``wheel_builder``) depends on the link: an sdist whose file name looks like
``name-version`` (``_contains_egg_info``) does; a local directory does not
(pip builds it into an *ephemeral* cache, a temporary folder removed when pip
exits). Worse, pip looks the link up in the wheel cache before building, so
``CMAKE_ARGS=-DGGML_CUDA=ON pip install llama-cpp-python`` after a CPU build
quietly installs the old CPU wheel. ``--no-cache-dir`` avoids that, but also
turns off the HTTP cache, so every rebuild would fetch everything again.

So: ``pip download`` fetches the sdist once (through pip's HTTP cache) into
our cache; each build unpacks it into a fresh temporary directory named
``source`` (a directory: never stored in pip's wheel cache, and its URL is
new every time, so never found there either) and runs ``pip wheel`` on it
with the cache left on, so the build dependencies still come from pip's
caches. The wheel goes to ``<cache>/engine/<key>/``, where the key names
everything that changes the binary: llama-cpp-python's version, the backend,
the full ``CMAKE_ARGS``, the Python tag, the platform and the CPU (llama.cpp
builds with ``-march=native`` by default). The entry is written in a
temporary folder beside it and renamed into place whole. pip records where
an installed wheel came from (PEP 610 ``direct_url.json``): that record *is*
our marker, so a second ``make install`` compares keys and returns at once.
"""

from __future__ import annotations

import os
import sys

# Run by path (`python edgeglm/hardware/engine.py`), Python puts this file's
# folder first on sys.path, where edgeglm/hardware/profile.py would shadow the
# standard library's `profile`. Take it off before importing anything else.
if __name__ == "__main__" and sys.path:
    _here = os.path.dirname(os.path.abspath(__file__))
    if os.path.abspath(sys.path[0] or os.curdir) == _here:
        del sys.path[0]

import argparse
import contextlib
import ctypes
import ctypes.util
import hashlib
import importlib.metadata
import json
import platform
import re
import shlex
import shutil
import subprocess
import sysconfig
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The llama-cpp-python release EdgeGLM reads the C structs of; must equal the
# pin in pyproject.toml (a test checks).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
DIST_NAME = "llama-cpp-python"

BACKENDS = ("cpu", "cuda", "metal", "hip", "vulkan")
# llama.cpp's CMake option per backend (ggml/CMakeLists.txt).
CMAKE_FLAG = {
    "cuda": "GGML_CUDA",
    "metal": "GGML_METAL",
    "hip": "GGML_HIP",
    "vulkan": "GGML_VULKAN",
}
ENV_BACKEND = "EDGEGLM_LLAMA_BACKEND"
# The one command that rebuilds the engine, everywhere it is mentioned.
REBUILD = "make engine"


def rebuild_command(backend: str | None = None) -> str:
    return f"{ENV_BACKEND}={backend} {REBUILD}" if backend else REBUILD


class EngineError(Exception):
    """A problem to report in one line, with the exit code it maps to."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- what is installed -------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """Where to look. ``root`` is "/" except in tests and when checking a
    mounted system image: the well-known paths (/usr/local/cuda, /dev/nvidia0,
    /opt/rocm ...) are looked up under it; PATH and the *_HOME/*_PATH/*_SDK
    variables are taken as they are."""

    root: Path
    env: Mapping[str, str]
    system: str = field(default_factory=platform.system)
    machine: str = field(default_factory=platform.machine)

    @property
    def real(self) -> bool:
        """Libraries can only be loaded (NVML, the Vulkan loader) on the real root."""
        return self.root == Path("/")

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.env.get("PATH", os.defpath))

    def exe(self, p: Path) -> bool:
        suffix = ".exe" if self.system == "Windows" else ""
        q = p.with_name(p.name + suffix)
        return q.is_file() and os.access(q, os.X_OK)


@dataclass(frozen=True)
class Found:
    path: str  # the compiler found
    where: str  # how it was found, for people


def _tool(host: Host, name: str, env_vars: tuple[str, ...], default_root: str) -> Found | None:
    """``name`` on PATH, else in ``$VAR/bin`` for each of env_vars, else under default_root."""
    on_path = host.which(name)
    if on_path:
        return Found(on_path, f"{on_path} (on PATH)")
    for var in env_vars:
        base = host.env.get(var)
        if base and host.exe(Path(base) / "bin" / name):
            return Found(str(Path(base) / "bin" / name), f"${var}={base}")
    base_path = host.path(default_root)
    if host.exe(base_path / "bin" / name):
        return Found(str(base_path / "bin" / name), str(base_path))
    return None


def _nvml_gpu_count() -> int:
    """NVIDIA GPUs the driver reports through NVML (0 without a driver or a GPU)."""
    names = {"Windows": "nvml.dll", "Linux": "libnvidia-ml.so.1"}
    name = names.get(platform.system())
    if name is None:
        return 0
    try:
        lib = ctypes.CDLL(name)
        init, count_fn, shutdown = lib.nvmlInit_v2, lib.nvmlDeviceGetCount_v2, lib.nvmlShutdown
    except (OSError, AttributeError):
        return 0
    if init() != 0:  # NVML_SUCCESS
        return 0
    try:
        count = ctypes.c_uint(0)
        return int(count.value) if count_fn(ctypes.byref(count)) == 0 else 0
    finally:
        shutdown()


def nvidia_gpu(host: Host) -> str | None:
    """Evidence of an NVIDIA GPU with its driver loaded, or None."""
    if host.real:
        n = _nvml_gpu_count()
        if n:
            return f"NVML reports {n} GPU{'s' if n > 1 else ''}"
    for p in ("/proc/driver/nvidia/version", "/dev/nvidia0"):
        if host.path(p).exists():
            return str(host.path(p))
    return None


def amd_gpu(host: Host) -> str | None:
    """/dev/kfd: the ROCm kernel driver's device, present when an AMD GPU is usable."""
    kfd = host.path("/dev/kfd")
    return str(kfd) if kfd.exists() else None


_LIB_DIRS = (
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
)
_ICD_DIRS = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d")
# Vulkan drivers that run on the CPU: llama.cpp's CPU backend is faster.
_SOFTWARE_ICDS = ("lvp", "lavapipe", "swiftshader", "llvmpipe")


def _vulkan_loader(host: Host) -> str | None:
    sdk = host.env.get("VULKAN_SDK")
    dirs = [Path(sdk) / "lib"] if sdk else []
    dirs += [host.path(d) for d in _LIB_DIRS]
    for d in dirs:
        for name in ("libvulkan.so.1", "libvulkan.1.dylib", "vulkan-1.dll"):
            if (d / name).is_file():
                return str(d / name)
    if host.real:
        found = ctypes.util.find_library("vulkan") or ctypes.util.find_library("vulkan-1")
        if found:
            return found
    return None


def _vulkan_headers(host: Host) -> str | None:
    sdk = host.env.get("VULKAN_SDK")
    dirs = [Path(sdk) / "include"] if sdk else []
    dirs += [host.path("/usr/include"), host.path("/usr/local/include")]
    for d in dirs:
        if (d / "vulkan" / "vulkan.h").is_file():
            return str(d / "vulkan" / "vulkan.h")
    return None


def _vulkan_gpu_driver(host: Host) -> str | None:
    """A Vulkan ICD (driver manifest) for a real GPU."""
    for d in _ICD_DIRS:
        icd_dir = host.path(d)
        if not icd_dir.is_dir():
            continue
        for icd in sorted(icd_dir.glob("*.json")):
            if not any(s in icd.name.lower() for s in _SOFTWARE_ICDS):
                return str(icd)
    return None


# -- the choice --------------------------------------------------------------


@dataclass
class Choice:
    backend: str
    reason: str
    cmake_args: list[str]  # ours, as shlex-split words
    user_cmake_args: str  # the user's CMAKE_ARGS, taken as given ("" when unset)
    notes: list[str] = field(default_factory=list)

    @property
    def full_cmake_args(self) -> str:
        """CMAKE_ARGS for the build: ours, then the user's (the last -D wins in CMake)."""
        ours = shlex.join(self.cmake_args)
        return f"{ours} {self.user_cmake_args}" if self.user_cmake_args else ours


def _args(host: Host, backend: str, compiler: list[str] | None = None) -> list[str]:
    args = [f"-D{CMAKE_FLAG[backend]}=ON"] if backend in CMAKE_FLAG else []
    return [*args, *(compiler or []), "-DGGML_RPC=ON", *_cpu_args(host)]


# ggml's x86 ISA options (ggml/CMakeLists.txt) and the /proc/cpuinfo flags
# each needs. GGML_AVX512 compiles with -mavx512f/cd/vl/dq/bw, so it needs all five.
_X86_ISA = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_AVX2": ("avx2",),
    "GGML_BMI2": ("bmi2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}
AMX_NOTE = (
    "AMX CPU: built for its own AVX-512/AVX2 features without ggml's AMX kernels, which "
    "segfault on K-quants (llama.cpp issue 20824); weight repacking stays on"
)


def _cpu_flags(host: Host) -> set[str]:
    with contextlib.suppress(OSError):
        text = host.path("/proc/cpuinfo").read_text(errors="replace")
        for line in text.splitlines():
            if line.lower().startswith("flags"):
                return set(line.partition(":")[2].split())
    return set()


def _cpu_args(host: Host) -> list[str]:
    """On an x86 CPU with AMX, everything -march=native would enable except AMX.

    With GGML_NATIVE (the default) such a CPU gets ggml's AMX buffer type,
    whose matmul crashes on K-quant weights; the only way around it at run
    time is to turn off weight repacking altogether (about 2.7x slower
    decoding). GGML_NATIVE off with this CPU's own ISA options keeps the
    repacked AVX-512 path and compiles no AMX kernel (ggml-cpu defines
    __AMX_INT8__ only with GGML_AMX_INT8). -mtune=native keeps the
    scheduling of a native build. Elsewhere: llama.cpp's default build."""
    flags = _cpu_flags(host)
    if not any(f.startswith("amx") for f in flags):
        return []
    isa = [
        f"-D{opt}={'ON' if all(f in flags for f in need) else 'OFF'}"
        for opt, need in _X86_ISA.items()
    ]
    amx = [f"-DGGML_AMX_{k}=OFF" for k in ("TILE", "INT8", "BF16")]
    tune = ["-DCMAKE_C_FLAGS=-mtune=native", "-DCMAKE_CXX_FLAGS=-mtune=native"]
    return ["-DGGML_NATIVE=OFF", *isa, *amx, *tune]


def _cuda_compiler(toolkit: Found | None) -> list[str]:
    """nvcc not on PATH: tell CMake where it is (it only searches PATH and CUDACXX)."""
    if toolkit is None or "(on PATH)" in toolkit.where:
        return []
    return [f"-DCMAKE_CUDA_COMPILER={toolkit.path}"]


def _hip_compiler(host: Host, toolkit: Found | None) -> list[str]:
    """ROCm's clang, as llama.cpp's HIP instructions set HIPCXX."""
    if toolkit is None or host.env.get("HIPCXX"):
        return []
    clang = Path(toolkit.path).parent.parent / "llvm" / "bin" / "clang"
    return [f"-DCMAKE_HIP_COMPILER={clang}"] if host.exe(clang) else []


_NO_CUDA = "no CUDA toolkit (looked for nvcc on PATH, in $CUDA_HOME, $CUDA_PATH, /usr/local/cuda)"


def choose(host: Host) -> Choice:
    """The backend for this host, why, and llama.cpp's CMake arguments for it."""
    choice = _choose(host)
    if _cpu_args(host):
        choice.notes.append(AMX_NOTE)
    return choice


def _choose(host: Host) -> Choice:
    user = host.env.get("CMAKE_ARGS", "").strip()
    try:
        shlex.split(user)
    except ValueError as e:
        raise EngineError(f"CMAKE_ARGS cannot be split into words ({e}): {user}", 2) from None
    wanted = host.env.get(ENV_BACKEND, "").strip().lower()
    if wanted not in ("", "auto", *BACKENDS):
        raise EngineError(
            f"{ENV_BACKEND}={host.env[ENV_BACKEND]!r} is not one of auto, {', '.join(BACKENDS)}", 2
        )
    cuda = _tool(host, "nvcc", ("CUDA_HOME", "CUDA_PATH"), "/usr/local/cuda")
    hip = _tool(host, "hipcc", ("ROCM_PATH",), "/opt/rocm")
    if wanted in BACKENDS:
        return _forced(host, wanted, user, cuda, hip)

    notes: list[str] = []
    nv = nvidia_gpu(host)
    if cuda and nv:
        reason = f"NVIDIA GPU ({nv}) and CUDA toolkit ({cuda.where})"
        return Choice("cuda", reason, _args(host, "cuda", _cuda_compiler(cuda)), user)
    if cuda:
        notes.append(
            f"CUDA toolkit found at {cuda.where} but no NVIDIA GPU/driver; "
            f"{ENV_BACKEND}=cuda builds it anyway"
        )
    elif nv:
        notes.append(f"NVIDIA GPU found ({nv}) but {_NO_CUDA}: install it, then {REBUILD}")

    if host.system == "Darwin" and host.machine == "arm64":
        return Choice("metal", "macOS on Apple Silicon: Metal", _args(host, "metal"), user, notes)

    amd = amd_gpu(host)
    if hip and amd:
        reason = f"AMD GPU ({amd}) and ROCm/HIP ({hip.where})"
        return Choice("hip", reason, _args(host, "hip", _hip_compiler(host, hip)), user, notes)
    if hip:
        notes.append(f"ROCm found at {hip.where} but no AMD GPU (/dev/kfd)")
    elif amd:
        notes.append(f"AMD GPU found ({amd}) but no ROCm (hipcc on PATH, $ROCM_PATH, /opt/rocm)")

    vk = _vulkan(host)
    if not isinstance(vk, str):
        return Choice("vulkan", vk[0], _args(host, "vulkan"), user, notes)
    if vk:
        notes.append(vk)

    reason = "; ".join(notes) if notes else "no GPU with a toolkit to build for was found"
    return Choice("cpu", reason, _args(host, "cpu"), user)


def _vulkan(host: Host) -> tuple[str] | str:
    """(reason,) when Vulkan can be built and used here, else what was missing."""
    sdk = host.env.get("VULKAN_SDK")
    glslc = host.which("glslc")
    if not glslc and sdk and host.exe(Path(sdk) / "bin" / "glslc"):
        glslc = str(Path(sdk) / "bin" / "glslc")
    headers, loader, driver = _vulkan_headers(host), _vulkan_loader(host), _vulkan_gpu_driver(host)
    if glslc and headers and loader and driver:
        return (f"Vulkan SDK (glslc {glslc}, {headers}), loader {loader}, GPU driver {driver}",)
    parts = (
        ("glslc", glslc),
        ("vulkan/vulkan.h", headers),
        ("the Vulkan loader", loader),
        ("a Vulkan GPU driver", driver),
    )
    if not any(ok for _, ok in parts):
        return ""  # no trace of Vulkan: nothing worth a note
    missing = [what for what, ok in parts if not ok]
    return f"Vulkan only in part: {', '.join(missing)} not found"


def _forced(host: Host, backend: str, user: str, cuda: Found | None, hip: Found | None) -> Choice:
    reason = f"{ENV_BACKEND}={backend}"
    notes: list[str] = []
    compiler: list[str] = []
    if backend == "cuda":
        if cuda is None:
            notes.append(f"{_NO_CUDA}: the build will fail")
        compiler = _cuda_compiler(cuda)
        if not nvidia_gpu(host) and "CMAKE_CUDA_ARCHITECTURES" not in user:
            notes.append(
                "no NVIDIA GPU here for llama.cpp to read its architecture from: add "
                "-DCMAKE_CUDA_ARCHITECTURES=<e.g. 89> to CMAKE_ARGS"
            )
    elif backend == "hip":
        if hip is None:
            notes.append("no ROCm (hipcc on PATH, $ROCM_PATH, /opt/rocm): the build will fail")
        compiler = _hip_compiler(host, hip)
    elif backend == "metal" and host.system != "Darwin":
        notes.append("Metal exists on macOS only: the build will fail")
    elif backend == "vulkan":
        vk = _vulkan(host)
        if isinstance(vk, str):
            notes.append(vk or "no Vulkan SDK, loader or GPU driver found: the build will fail")
    return Choice(backend, reason, _args(host, backend, compiler), user, notes)


# -- the cache key -------------------------------------------------------------


def python_tag() -> str:
    impl = {"cpython": "cp", "pypy": "pp"}.get(sys.implementation.name, sys.implementation.name)
    return f"{impl}{sys.version_info.major}{sys.version_info.minor}"


def cpu_signature() -> str:
    """What -march=native sees (GGML_NATIVE is on by default): model and feature flags."""
    text = ""
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text(errors="replace")
        keep = ("model name", "flags", "features", "cpu part", "cpu implementer")
        lines = [ln for ln in info.splitlines() if ln.lower().startswith(keep)]
        text = "\n".join(dict.fromkeys(lines))  # the same on every core: once
    if not text and platform.system() == "Darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
    text = f"{platform.machine()}\n{text or platform.processor()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def key_parts(choice: Choice) -> dict[str, str]:
    return {
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "backend": choice.backend,
        "cmake_args": choice.full_cmake_args,
        "python": python_tag(),
        "platform": sysconfig.get_platform(),
        "cpu": cpu_signature(),
    }


def cache_key(parts: Mapping[str, str]) -> str:
    """A folder name: readable in front, a digest of every part behind."""
    digest = hashlib.sha256(json.dumps(dict(parts), sort_keys=True).encode()).hexdigest()[:16]
    plat = re.sub(r"[^A-Za-z0-9.]+", "_", parts["platform"])
    return f"{parts['llama_cpp_python']}-{parts['backend']}-{parts['python']}-{plat}-{digest}"


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """``<edgeglm cache>/engine``: the same base as edgeglm.paths.cache_dir()."""
    env = os.environ if env is None else env
    if env.get("EDGEGLM_CACHE_DIR"):
        base = Path(env["EDGEGLM_CACHE_DIR"])
    else:
        xdg = env.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "edgeglm"
    return base / "engine"


# -- what is installed now -------------------------------------------------------


def _installed_wheel() -> Path | None:
    """The wheel file the installed llama-cpp-python came from (pip's direct_url.json)."""
    try:
        dist = importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != LLAMA_CPP_PYTHON_VERSION:
        return None
    try:
        url = json.loads(dist.read_text("direct_url.json") or "null")["url"]
    except (TypeError, KeyError, ValueError):
        return None  # installed from an index, or by something that records nothing
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "file" or not parsed.path.endswith(".whl"):
        return None
    return Path(urllib.request.url2pathname(parsed.path))


def installed_key() -> str | None:
    """The cache key of the installed engine, if ``make engine`` installed it."""
    wheel = _installed_wheel()
    if wheel is None or not wheel.parent.name.startswith(LLAMA_CPP_PYTHON_VERSION + "-"):
        return None
    return wheel.parent.name


def installed_build() -> dict[str, str] | None:
    """How the installed engine was built (the key's parts), if ``make engine`` built it."""
    wheel = _installed_wheel()
    if wheel is None or installed_key() is None:
        return None
    try:
        parts = json.loads((wheel.parent / "key.json").read_text())
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in parts.items()} if isinstance(parts, dict) else None


# -- building and installing --------------------------------------------------------


def _say(msg: str) -> None:
    print(f"engine: {msg}", flush=True)


def _pip(*args: str, what: str) -> None:
    """pip in the running interpreter; its own output only when it fails."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise EngineError(f"{what} failed (pip exit {proc.returncode}):\n{tail}")


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One build per key at a time (two `make install` in parallel share the result)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the rename below still keeps entries whole
        yield
        return
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            _say(f"waiting for another build of the same engine ({path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sdist(root: Path) -> Path:
    """llama-cpp-python's source, fetched once through pip (and pip's HTTP cache)."""
    final = root / "sdist" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    _say(f"fetching the {DIST_NAME} {LLAMA_CPP_PYTHON_VERSION} source")
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".download-") as tmp:
        _pip(
            "download",
            "--no-deps",
            "--no-binary",
            DIST_NAME,
            "--dest",
            tmp,
            f"{DIST_NAME}=={LLAMA_CPP_PYTHON_VERSION}",
            what="downloading the source",
        )
        got = [p for p in Path(tmp).iterdir() if p.name.endswith(".tar.gz")]
        if len(got) != 1:
            raise EngineError(f"pip download left {[p.name for p in got]} in {tmp}")
        os.replace(got[0], final)
    return final


def _unpack(sdist: Path, dest: Path) -> Path:
    """The sdist, unpacked at dest/source (a folder name pip never caches a wheel for)."""
    out = dest / "unpacked"
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(out, filter="data")
        else:  # Python before 3.10.12: the same check by hand
            for m in tar.getmembers():
                target = (out / m.name).resolve()
                if not target.is_relative_to(out.resolve()) or m.issym() or m.islnk():
                    raise EngineError(f"{sdist}: unsafe member {m.name}")
            tar.extractall(out)
    tops = list(out.iterdir())
    if len(tops) != 1 or not tops[0].is_dir():
        raise EngineError(f"{sdist}: expected one top folder, found {[t.name for t in tops]}")
    return tops[0].rename(dest / "source")


_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")


def _build_wheel(source: Path, dist: Path, cmake_args: str, log: Path) -> Path:
    env = dict(os.environ, CMAKE_ARGS=cmake_args)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--no-deps"]
    cmd += ["--wheel-dir", str(dist), "--verbose", str(source)]
    shown = -1
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            m = _NINJA_STEP.match(line.strip())
            if m and int(m.group(2)) > 0:
                tenth = 10 * int(m.group(1)) // int(m.group(2))
                if tenth > shown:
                    shown = tenth
                    _say(f"  compiling {10 * tenth}% ({m.group(1)}/{m.group(2)})")
        rc = proc.wait()
    wheels = list(dist.glob("*.whl"))
    if rc != 0 or len(wheels) != 1:
        raise EngineError(f"building llama.cpp failed (pip exit {rc}):\n{_first_error(log)}")
    return wheels[0]


# Where a failed build says why: CMake, the compilers, ninja.
_ERROR_LINE = re.compile(r"CMake Error|: error:|: fatal error:|^\s*FAILED:")


def _first_error(log: Path) -> str:
    """The first error in a build log and the lines after it (pip's summary says nothing)."""
    lines = log.read_text(errors="replace").splitlines()
    at = next((i for i, ln in enumerate(lines) if _ERROR_LINE.search(ln)), None)
    shown = lines[at : at + 12] if at is not None else lines[-30:]
    return "\n".join(ln.rstrip() for ln in shown)


def _build_entry(root: Path, key: str, parts: Mapping[str, str], choice: Choice) -> Path:
    """Build the wheel for key into root/key (whole or not at all)."""
    entry = root / key
    sdist = _sdist(root)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{key}.") as tmp:
        work = Path(tmp)
        staged = work / "entry"
        staged.mkdir()
        log = staged / "build.log"
        _say(f"building llama.cpp ({choice.backend}); this takes minutes")
        source = _unpack(sdist, work)
        started = time.monotonic()
        try:
            wheel = _build_wheel(source, work / "dist", choice.full_cmake_args, log)
        except EngineError as e:
            kept = root / f"{key}.failed.log"
            shutil.copyfile(log, kept)
            raise EngineError(f"{e}\nthe whole build log: {kept}") from None
        minutes = (time.monotonic() - started) / 60
        _say(f"compiled in {minutes:.1f} min")
        os.replace(wheel, staged / wheel.name)
        (staged / "key.json").write_text(json.dumps(dict(parts), indent=2) + "\n")
        os.replace(staged, entry)  # a folder rename: other readers see all of it or nothing
    return entry


def _wheel_in(entry: Path) -> Path | None:
    wheels = sorted(entry.glob("*.whl")) if entry.is_dir() else []
    return wheels[0] if len(wheels) == 1 else None


def _requires(wheel: Path) -> list[str]:
    """The wheel's own dependencies (no extras), to install after it with --no-deps."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = z.read(name).decode()
    reqs = [
        ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")
    ]
    return [r for r in reqs if "extra ==" not in r.replace('"', "").replace("'", "")]


def _install(wheel: Path) -> None:
    # --force-reinstall: the same version is often installed already (another
    # build); --no-deps: reinstalling numpy and friends is not our business.
    _pip("install", "--quiet", "--no-deps", "--force-reinstall", str(wheel), what="installing")
    reqs = _requires(wheel)
    if reqs:
        _pip("install", "--quiet", *reqs, what="installing its dependencies")


def ensure(choice: Choice, root: Path) -> str:
    """Make the running interpreter's llama-cpp-python this choice's build; what was done."""
    parts = key_parts(choice)
    key = cache_key(parts)
    if installed_key() == key:
        return f"the installed {DIST_NAME} is this build ({key}): nothing to do"
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    wheel = _wheel_in(entry)
    built = False
    if wheel is None:
        with _lock(root / f".{key}.lock"):
            wheel = _wheel_in(entry)
            if wheel is None:
                if entry.exists():  # a half entry cannot happen (rename), but a hand edit can
                    shutil.rmtree(entry)
                wheel = _wheel_in(_build_entry(root, key, parts, choice))
                built = True
    if wheel is None:
        raise EngineError(f"{entry} holds no single wheel after the build")
    _say(f"installing {wheel}")
    _install(wheel)
    if installed_key() != key:
        raise EngineError(f"installed {wheel}, but {DIST_NAME} in {sys.prefix} is not it")
    return f"{'built and ' if built else 'from the cache: '}installed {key}"


# -- command line -------------------------------------------------------------------


def describe(choice: Choice, root: Path) -> dict[str, Any]:
    parts = key_parts(choice)
    key = cache_key(parts)
    return {
        **asdict(choice),
        "full_cmake_args": choice.full_cmake_args,
        "key": key,
        "key_parts": parts,
        "cache_entry": str(root / key),
        "installed_key": installed_key(),
    }


def _print_choice(choice: Choice, root: Path) -> None:
    _say(f"{DIST_NAME} {LLAMA_CPP_PYTHON_VERSION}, backend {choice.backend}")
    _say(f"  why: {choice.reason}")
    for note in choice.notes:
        _say(f"  note: {note}")
    _say(f"  CMAKE_ARGS: {choice.full_cmake_args}")
    if choice.user_cmake_args:
        _say(f"  (your CMAKE_ARGS, added last so they win: {choice.user_cmake_args})")
    _say(f"  cache: {root / cache_key(key_parts(choice))}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edgeglm.hardware.engine",
        description=f"Build and install {DIST_NAME} {LLAMA_CPP_PYTHON_VERSION} for this "
        f"machine's hardware. {ENV_BACKEND}=auto|{'|'.join(BACKENDS)} overrides the backend; "
        "CMAKE_ARGS from the environment are added last.",
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="Only print the choice and the cmake arguments."
    )
    ap.add_argument("--json", action="store_true", help="With --dry-run: print it as JSON.")
    ap.add_argument(
        "--check",
        action="store_true",
        help="Exit 0 when the installed engine is this choice's build, 1 when not; build nothing.",
    )
    ap.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="Look for toolkits and GPU devices under this folder instead of / "
        "(a mounted system image, or a test's fake layout).",
    )
    args = ap.parse_args(argv)
    root = cache_root()
    try:
        choice = choose(Host(root=args.root, env=os.environ))
        if args.dry_run and args.json:
            print(json.dumps(describe(choice, root), indent=2))
            return 0
        _print_choice(choice, root)
        if args.dry_run:
            return 0
        if args.check:
            ok = installed_key() == cache_key(key_parts(choice))
            _say("the installed engine is this build" if ok else "the installed engine differs")
            return 0 if ok else 1
        _say(ensure(choice, root))
    except EngineError as e:
        print(f"engine: error: {e}", file=sys.stderr)
        return e.code
    except OSError as e:  # disk full, unwritable cache ...
        print(f"engine: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("engine: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
