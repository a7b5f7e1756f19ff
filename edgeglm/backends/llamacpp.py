"""llama.cpp through llama-cpp-python.

One quirk handled here: on CPUs with AMX (Sapphire Rapids and later), ggml's
AMX matmul kernels segfault on K-quant weights (seen here on Q4_K_M GLM
models, in ggml_backend_amx_mul_mat; llama.cpp issue 20824, closed without a
fix). They exist only in an engine compiled with AMX (``-march=native`` on
such a CPU); the engine EdgeGLM builds (edgeglm/hardware/engine.py) leaves
them out and keeps the repacked AVX-512 path. Where an engine with AMX
kernels runs on an AMX CPU anyway (a llama-cpp-python built elsewhere), the
"extra buffer types" that route weights to them are turned off: slower, but
no crash.

Another: ``llama_cpp.Llama`` compiles every chat template in the GGUF with
Jinja while it loads (``Jinja2ChatFormatter``, for ``create_chat_completion``).
A template is untrusted data, and compiling it is not harmless: a syntax error
makes the load raise ``TemplateSyntaxError``, and Jinja folds constant
expressions at compile time, so ``{{ 10 ** (10 ** 10) }}`` hangs the load and
``{{ 'x' * 2000000000 }}`` takes ~8 GB and 40 s before the model is usable.
EdgeGLM renders templates itself, in a bounded worker (edgeglm.chat_template),
and never uses llama-cpp-python's chat handlers, so the load skips them.

Models load from a LaunchSpec (edgeglm.planner.launch). ``llama_cpp.Llama``
has no parameter for tensor buffer overrides (MoE expert placement,
llama.cpp's ``-ot``), so they are set on ``llama_model_params`` at load, like
``use_extra_bufts``: a NULL-terminated array of ``llama_model_tensor_buft_override``
whose buffer types come from ggml's device registry.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import sys
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeglm.backends.base import (
    Capabilities,
    Chunk,
    Completion,
    SamplingParams,
    Timings,
)
from edgeglm.backends.text import StopStrings
from edgeglm.errors import BackendError, UsageError
from edgeglm.hardware import probe_cpu, usable_threads
from edgeglm.planner.launch import LaunchSpec, TensorOverride


def engine_has_amx_kernels() -> bool:
    """Whether the loaded libggml was compiled with AMX (its CPU feature list
    is what the build enabled, not what this CPU has)."""
    import llama_cpp

    return "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode(errors="replace")


def extra_buffers_safe() -> bool:
    """False where ggml's AMX kernels would be used (they crash on K-quants):
    an engine with AMX kernels on a CPU with AMX."""
    if os.environ.get("EDGEGLM_LLAMA_EXTRA_BUFTS") in ("0", "1"):
        return os.environ["EDGEGLM_LLAMA_EXTRA_BUFTS"] == "1"
    cpu_has_amx = any(f.startswith("amx") for f in probe_cpu().flags)
    return not (cpu_has_amx and engine_has_amx_kernels())


class _NoChatFormatter:
    """Stands in for llama-cpp-python's Jinja2ChatFormatter while a model loads:
    keeps the template text, compiles nothing."""

    def __init__(self, template: str, *args: Any, **kwargs: Any) -> None:
        self.template = template

    def to_chat_handler(self) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise BackendError(
                "llama-cpp-python's chat handlers are disabled in EdgeGLM "
                "(edgeglm.runtime.chat renders the model's template in a sandboxed worker)"
            )

        return refuse


# The patches below swap module attributes for the length of one load; loads
# from two threads must not interleave them.
_LOAD_LOCK = threading.RLock()


class llama_model_tensor_buft_override(ctypes.Structure):  # llama.h names it so
    """``struct llama_model_tensor_buft_override { const char * pattern;
    ggml_backend_buffer_type_t buft; }`` (llama.h); llama-cpp-python declares
    the field that points to an array of them as a bare ``void *``."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _ggml() -> Any:
    """libggml as llama-cpp-python loaded it (the same registry llama.cpp uses)."""
    from llama_cpp._ggml import libggml

    for name, res, args in (
        ("ggml_backend_dev_count", ctypes.c_size_t, []),
        ("ggml_backend_dev_get", ctypes.c_void_p, [ctypes.c_size_t]),
        ("ggml_backend_dev_name", ctypes.c_char_p, [ctypes.c_void_p]),
        ("ggml_backend_dev_type", ctypes.c_int, [ctypes.c_void_p]),
        ("ggml_backend_dev_by_name", ctypes.c_void_p, [ctypes.c_char_p]),
        ("ggml_backend_dev_buffer_type", ctypes.c_void_p, [ctypes.c_void_p]),
        ("ggml_backend_buft_name", ctypes.c_char_p, [ctypes.c_void_p]),
    ):
        fn = getattr(libggml, name)
        fn.restype, fn.argtypes = res, args
    return libggml


# enum ggml_backend_dev_type (ggml-backend.h)
_DEV_GPU, _DEV_IGPU = 1, 2


def devices() -> dict[str, int]:
    """llama.cpp's devices here: name -> ggml_backend_dev_type ("CPU" always exists)."""
    lib = _ggml()
    out: dict[str, int] = {}
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        out[lib.ggml_backend_dev_name(dev).decode()] = int(lib.ggml_backend_dev_type(dev))
    return out


def device_array(rpc_devices: list[str]) -> ctypes.Array[Any]:
    """``llama_model_params.devices`` for a run with workers: their devices, then
    this machine's GPUs (the order llama.cpp's default selection uses, and so
    what ``tensor_split`` indexes), NULL-terminated. The engine leaves the
    default list empty here, so it is given explicitly, as llama.cpp's
    ``--device`` would."""
    lib = _ggml()
    local = [n for n, t in devices().items() if t in (_DEV_GPU, _DEV_IGPU) and n not in rpc_devices]
    handles = [lib.ggml_backend_dev_by_name(n.encode()) for n in rpc_devices + local]
    return (ctypes.c_void_p * (len(handles) + 1))(*handles, None)


def gpu_count() -> int:
    """Devices llama.cpp offloads layers to (what main_gpu and tensor_split index)."""
    return sum(1 for t in devices().values() if t in (_DEV_GPU, _DEV_IGPU))


def buffer_type(device: str) -> int:
    """The buffer type of a device named as ``-ot`` names it: a device name
    (``ggml_backend_dev_by_name``) or one of the buffer type names llama.cpp's
    own parser accepts. Unknown: UsageError naming what exists."""
    lib = _ggml()
    dev = lib.ggml_backend_dev_by_name(device.encode())
    if dev:
        buft = lib.ggml_backend_dev_buffer_type(dev)
        if buft:
            return int(buft)
    names: list[str] = []
    for i in range(lib.ggml_backend_dev_count()):
        buft = lib.ggml_backend_dev_buffer_type(lib.ggml_backend_dev_get(i))
        if not buft:
            continue
        name = lib.ggml_backend_buft_name(buft).decode()
        if name == device:
            return int(buft)
        names.append(name)
    raise UsageError(
        f"--override-tensor ...={device}: this llama.cpp has no device {device!r} "
        f"(available: {', '.join(sorted(set(names)))})"
    )


def override_array(overrides: tuple[TensorOverride, ...]) -> ctypes.Array[Any] | None:
    """The NULL-terminated array llama_model_params.tensor_buft_overrides points to
    (None for no overrides). The caller keeps it alive as long as the model."""
    if not overrides:
        return None
    import llama_cpp

    limit = int(llama_cpp.llama_max_tensor_buft_overrides())
    if len(overrides) > limit:
        raise UsageError(f"{len(overrides)} tensor overrides; llama.cpp takes at most {limit}")
    arr = (llama_model_tensor_buft_override * (len(overrides) + 1))()
    for i, o in enumerate(overrides):
        arr[i].pattern = o.pattern.encode()
        arr[i].buft = buffer_type(o.device)
    arr[len(overrides)].pattern = None  # the terminator llama.cpp stops at
    arr[len(overrides)].buft = None
    return arr


def read_overrides(model_params: Any) -> list[tuple[str, str]]:
    """(pattern, buffer type name) pairs a llama_model_params points to."""
    ptr = model_params.tensor_buft_overrides
    if not ptr:
        return []
    lib = _ggml()
    items = ctypes.cast(ptr, ctypes.POINTER(llama_model_tensor_buft_override))
    out: list[tuple[str, str]] = []
    i = 0
    while items[i].pattern is not None:
        out.append((items[i].pattern.decode(), lib.ggml_backend_buft_name(items[i].buft).decode()))
        i += 1
    return out


@contextmanager
def _default_params(
    *,
    use_extra_bufts: bool,
    cb_eval: Any = None,
    overrides: ctypes.Array[Any] | None = None,
    op_offload: bool = True,
    n_seq_max: int = 1,
    devices: ctypes.Array[Any] | None = None,
) -> Iterator[None]:
    """llama_cpp.Llama builds its model and context params from the library
    defaults and exposes none of these fields; wrap the two default factories
    while the model loads. Its chat-template compiler is switched off meanwhile
    (see the module docstring)."""
    with (
        _LOAD_LOCK,
        _patched_load(
            use_extra_bufts=use_extra_bufts,
            cb_eval=cb_eval,
            overrides=overrides,
            op_offload=op_offload,
            n_seq_max=n_seq_max,
            devices=devices,
        ),
    ):
        yield


@contextmanager
def _patched_load(
    *,
    use_extra_bufts: bool,
    cb_eval: Any,
    overrides: ctypes.Array[Any] | None,
    op_offload: bool,
    n_seq_max: int = 1,
    devices: ctypes.Array[Any] | None = None,
) -> Iterator[None]:
    import llama_cpp

    mod: Any = sys.modules["llama_cpp.llama"]
    orig_model, orig_ctx = (
        llama_cpp.llama_model_default_params,
        llama_cpp.llama_context_default_params,
    )

    def model_params() -> Any:
        p = orig_model()
        p.use_extra_bufts = use_extra_bufts
        if overrides is not None:
            p.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
        if devices is not None:
            p.devices = ctypes.cast(devices, ctypes.c_void_p)
        return p

    def ctx_params() -> Any:
        p = orig_ctx()
        p.op_offload = op_offload
        # sequences decoded together (edgeglm serve --parallel); each gets n_ctx / n_seq_max
        p.n_seq_max = n_seq_max
        if cb_eval is not None:
            p.cb_eval = cb_eval
        return p

    orig_formatter = mod.llama_chat_format.Jinja2ChatFormatter
    mod.llama_cpp.llama_model_default_params = model_params
    mod.llama_cpp.llama_context_default_params = ctx_params
    mod.llama_chat_format.Jinja2ChatFormatter = _NoChatFormatter
    try:
        yield
    finally:
        mod.llama_cpp.llama_model_default_params = orig_model
        mod.llama_cpp.llama_context_default_params = orig_ctx
        mod.llama_chat_format.Jinja2ChatFormatter = orig_formatter


def _check_devices(spec: LaunchSpec) -> None:
    """Refuse what this llama.cpp build would silently ignore (UsageError)."""
    # Counted as devices: llama_supports_gpu_offload() is also true for a CPU
    # build with the RPC backend and no server connected.
    n_gpus = gpu_count()
    no_gpu = "llama.cpp has no GPU device here (its engine finds none, or was built for the CPU)"
    if spec.n_gpu_layers > 0 and n_gpus == 0:
        raise UsageError(f"-ngl {spec.n_gpu_layers}: {no_gpu}; use -ngl 0")
    if spec.main_gpu and spec.main_gpu >= max(n_gpus, 1):
        raise UsageError(f"main_gpu {spec.main_gpu}: llama.cpp sees {n_gpus} GPU(s) here")
    if spec.tensor_split and len(spec.tensor_split) > max(n_gpus, 1):
        raise UsageError(
            f"tensor_split {list(spec.tensor_split)}: {len(spec.tensor_split)} shares, but "
            f"llama.cpp sees {n_gpus} GPU(s) here"
        )


class LlamaCppModel:
    """A GGUF loaded in llama.cpp, behind the Backend protocol (see base.py)."""

    name = "llama.cpp"

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        logits_all: bool = False,
        flash_attn: bool = False,
        type_k: str = "f16",
        type_v: str = "f16",
        n_ubatch: int = 512,
        tensor_split: list[float] | None = None,
        seed: int = 0,
        cb_eval: Any = None,
        verbose: bool = False,
    ) -> None:
        """Load ``path`` with these settings (llama-cpp-python's defaults where
        not given); ``from_spec`` loads a planned LaunchSpec.

        ``cb_eval``: a ggml_backend_sched_eval_callback (kept alive by the caller).
        ``verbose``: llama.cpp's own log, debug lines included, on stderr."""
        spec = LaunchSpec(
            artifact=str(path),
            n_gpu_layers=n_gpu_layers,
            tensor_split=tuple(tensor_split or ()),
            n_threads=n_threads,
            n_ctx=n_ctx,
            type_k=type_k,
            type_v=type_v,
            flash_attn=flash_attn,
            n_ubatch=n_ubatch,
        )
        self._load(spec, logits_all=logits_all, seed=seed, cb_eval=cb_eval, verbose=verbose)

    @classmethod
    def from_spec(
        cls,
        spec: LaunchSpec,
        *,
        logits_all: bool = False,
        seed: int = 0,
        cb_eval: Any = None,
        verbose: bool = False,
        n_seq_max: int = 1,
    ) -> LlamaCppModel:
        """Load the spec's artifact with every one of its fields, or refuse."""
        if spec.backend != "llama.cpp":
            raise UsageError(f"the launch spec is for {spec.backend}, not llama.cpp")
        if spec.artifact is None:
            raise UsageError(
                f"the launch spec has no GGUF yet: convert the model to {spec.quant} first"
            )
        self = cls.__new__(cls)
        self._load(
            spec,
            logits_all=logits_all,
            seed=seed,
            cb_eval=cb_eval,
            verbose=verbose,
            n_seq_max=n_seq_max,
        )
        return self

    def _load(
        self,
        spec: LaunchSpec,
        *,
        logits_all: bool,
        seed: int,
        cb_eval: Any,
        verbose: bool,
        n_seq_max: int = 1,
    ) -> None:
        import llama_cpp

        from edgeglm.planner.policy import GGML_TYPE_IDS

        assert spec.artifact is not None
        path = Path(spec.artifact)
        if not path.is_file():
            raise BackendError(f"{path}: no such GGUF file")
        # Kept for the model's lifetime, like the overrides: llama.cpp keeps the pointer.
        self._devices = None
        if spec.rpc:
            from edgeglm.rpc.client import connect

            self._devices = device_array(connect(spec.rpc))
        _check_devices(spec)
        # Kept for the model's lifetime: llama.cpp keeps the pointer.
        self._buft_overrides = override_array(spec.tensor_overrides)
        threads = spec.n_threads or usable_threads()
        kwargs: dict[str, Any] = {
            "n_ctx": spec.n_ctx,
            "n_threads": threads,
            "n_threads_batch": threads,
            "n_gpu_layers": spec.n_gpu_layers,
            "main_gpu": spec.main_gpu,
            "flash_attn": spec.flash_attn,
            "type_k": GGML_TYPE_IDS[spec.type_k],
            "type_v": GGML_TYPE_IDS[spec.type_v],
            "n_batch": spec.n_batch,
            "n_ubatch": spec.n_ubatch,
        }
        if spec.tensor_split:
            kwargs["tensor_split"] = list(spec.tensor_split)
        try:
            with _default_params(
                use_extra_bufts=extra_buffers_safe(),
                cb_eval=cb_eval,
                overrides=self._buft_overrides,
                op_offload=spec.on_gpu(),
                n_seq_max=n_seq_max,
                devices=self._devices,
            ):
                self.llm = llama_cpp.Llama(
                    str(path), logits_all=logits_all, seed=seed, verbose=verbose, **kwargs
                )
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            raise BackendError(f"{path}: llama.cpp could not load it ({e})") from e
        self.path = path
        self.spec = spec
        cp = self.llm.context_params
        # What llama.cpp was actually given, for "explain what ran" displays
        # (llama.cpp caps the batch at the context, as llama-cli does).
        self.settings: dict[str, Any] = {
            **{k: v for k, v in spec.to_dict().items() if k != "schema_version"},
            "n_threads": threads,
            "n_ctx": int(cp.n_ctx),
            "n_batch": int(cp.n_batch),
            "n_ubatch": int(cp.n_ubatch),
        }
        offload = spec.n_gpu_layers != 0 or any(o.device != "CPU" for o in spec.tensor_overrides)
        self.capabilities = Capabilities(
            logits=logits_all, gpu_offload=offload, device="gpu" if offload else "cpu"
        )
        self._vocab = self.llm._model.vocab

    def tensor_overrides(self) -> list[tuple[str, str]]:
        """The overrides llama_model_params carried at load: (pattern, buffer type)."""
        return read_overrides(self.llm.model_params)

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.llm.metadata)

    @property
    def n_ctx(self) -> int:
        return int(self.llm.n_ctx())

    def chat_template(self) -> str | None:
        return self.llm.metadata.get("tokenizer.chat_template")

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def detokenize(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="replace")

    def score(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        """Next-token logits after each position: [len(tokens), n_vocab]."""
        if not self.llm._logits_all:
            raise BackendError("score() needs the model loaded with logits_all=True")
        if len(tokens) > self.n_ctx:
            raise UsageError(f"{len(tokens)} tokens do not fit the {self.n_ctx}-token context")
        self.llm.reset()  # type: ignore[no-untyped-call]
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32)

    def generate(
        self, prompt: list[int], params: SamplingParams
    ) -> Generator[Chunk, None, Completion]:
        import llama_cpp

        if len(prompt) >= self.n_ctx:
            raise UsageError(
                f"the prompt ({len(prompt)} tokens) fills the {self.n_ctx}-token context"
            )
        self.llm.set_seed(params.seed)
        stops = StopStrings(params.stop)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out_tokens: list[int] = []
        text_parts: list[str] = []
        timings = Timings(prompt_tokens=len(prompt))
        finish = "length"
        budget = min(params.max_tokens, self.n_ctx - len(prompt))
        t0 = time.perf_counter()
        t_first = t0
        for tok in self.llm.generate(
            prompt,
            temp=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            repeat_penalty=params.repeat_penalty,
            reset=True,
        ):
            if not out_tokens:
                t_first = time.perf_counter()
                timings.time_to_first_token = timings.prompt_seconds = t_first - t0
            if llama_cpp.llama_vocab_is_eog(self._vocab, tok):
                finish = "stop"
                break
            out_tokens.append(int(tok))
            piece = utf8.decode(self.llm.detokenize([tok]))
            emit, stopped = stops.feed(piece)
            if emit:
                text_parts.append(emit)
                yield Chunk(emit, [int(tok)])
            if stopped:
                finish = "stop"
                break
            if len(out_tokens) >= budget:
                break
        tail = stops.flush() + utf8.decode(b"", final=True)
        if tail:
            text_parts.append(tail)
            yield Chunk(tail, [])
        timings.completion_tokens = len(out_tokens)
        timings.decode_seconds = time.perf_counter() - t_first if out_tokens else 0.0
        return Completion("".join(text_parts), out_tokens, finish, timings)

    def close(self) -> None:
        self.llm.close()
