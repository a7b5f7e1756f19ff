"""llama.cpp through llama-cpp-python.

One quirk handled here: on CPUs with AMX (Sapphire Rapids and later), the
AMX matmul path of the ggml build llama-cpp-python 0.3.36 compiles with
``-march=native`` segfaults on K-quant weights (seen here on Q4_K_M GLM
models, in ggml_backend_amx_mul_mat). Weight repacking into "extra buffer
types" is what routes weights to it, so on AMX machines we turn those off.

Another: ``llama_cpp.Llama`` compiles every chat template in the GGUF with
Jinja while it loads (``Jinja2ChatFormatter``, for ``create_chat_completion``).
A template is untrusted data, and compiling it is not harmless: a syntax error
makes the load raise ``TemplateSyntaxError``, and Jinja folds constant
expressions at compile time, so ``{{ 10 ** (10 ** 10) }}`` hangs the load and
``{{ 'x' * 2000000000 }}`` takes ~8 GB and 40 s before the model is usable.
EdgeGLM renders templates itself, in a bounded worker (edgeglm.chat_template),
and never uses llama-cpp-python's chat handlers, so the load skips them.
"""

from __future__ import annotations

import codecs
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


def extra_buffers_safe() -> bool:
    """False where ggml's AMX kernels would be used (they crash on K-quants)."""
    if os.environ.get("EDGEGLM_LLAMA_EXTRA_BUFTS") in ("0", "1"):
        return os.environ["EDGEGLM_LLAMA_EXTRA_BUFTS"] == "1"
    return not any(f.startswith("amx") for f in probe_cpu().flags)


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


@contextmanager
def _default_params(*, use_extra_bufts: bool, cb_eval: Any = None) -> Iterator[None]:
    """llama_cpp.Llama builds its model and context params from the library
    defaults and exposes neither field; wrap the two default factories while
    the model loads. Its chat-template compiler is switched off meanwhile
    (see the module docstring)."""
    with _LOAD_LOCK, _patched_load(use_extra_bufts=use_extra_bufts, cb_eval=cb_eval):
        yield


@contextmanager
def _patched_load(*, use_extra_bufts: bool, cb_eval: Any) -> Iterator[None]:
    import llama_cpp

    mod: Any = sys.modules["llama_cpp.llama"]
    orig_model, orig_ctx = (
        llama_cpp.llama_model_default_params,
        llama_cpp.llama_context_default_params,
    )

    def model_params() -> Any:
        p = orig_model()
        p.use_extra_bufts = use_extra_bufts
        return p

    def ctx_params() -> Any:
        p = orig_ctx()
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
        flash_attn: bool | None = None,
        type_k: int | None = None,
        type_v: int | None = None,
        n_ubatch: int | None = None,
        tensor_split: list[float] | None = None,
        seed: int = 0,
        cb_eval: Any = None,
    ) -> None:
        """``cb_eval``: a ggml_backend_sched_eval_callback (kept alive by the caller).

        llama-cpp-python 0.3.36 cannot pass tensor overrides (MoE expert
        placement) to llama.cpp; the planner prints them as llama.cpp flags."""
        import llama_cpp

        if not path.is_file():
            raise BackendError(f"{path}: no such GGUF file")
        kwargs: dict[str, Any] = {}
        if flash_attn is not None:
            kwargs["flash_attn"] = flash_attn
        if type_k is not None:
            kwargs["type_k"] = type_k
        if type_v is not None:
            kwargs["type_v"] = type_v
        if n_ubatch is not None:
            kwargs["n_ubatch"] = n_ubatch
        if tensor_split is not None:
            kwargs["tensor_split"] = tensor_split
        try:
            with _default_params(use_extra_bufts=extra_buffers_safe(), cb_eval=cb_eval):
                self.llm = llama_cpp.Llama(
                    str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads or usable_threads(),
                    n_threads_batch=n_threads or usable_threads(),
                    n_gpu_layers=n_gpu_layers,
                    logits_all=logits_all,
                    seed=seed,
                    verbose=False,
                    **kwargs,
                )
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            raise BackendError(f"{path}: llama.cpp could not load it ({e})") from e
        self.path = path
        # What llama.cpp was actually given, for "explain what ran" displays.
        self.settings: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_threads": n_threads or usable_threads(),
            "n_gpu_layers": n_gpu_layers,
            **kwargs,
        }
        offload = n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
        self.capabilities = Capabilities(
            logits=logits_all, gpu_offload=offload, device="gpu" if offload else "cpu"
        )
        self._vocab = self.llm._model.vocab

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
