"""llama.cpp through llama-cpp-python.

One quirk handled here: on CPUs with AMX (Sapphire Rapids and later), the
AMX matmul path of the ggml build llama-cpp-python 0.3.36 compiles with
``-march=native`` segfaults on K-quant weights (seen here on Q4_K_M GLM
models, in ggml_backend_amx_mul_mat). Weight repacking into "extra buffer
types" is what routes weights to it, so on AMX machines we turn those off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeglm.errors import BackendError
from edgeglm.hardware import probe_cpu, usable_threads


def extra_buffers_safe() -> bool:
    """False where ggml's AMX kernels would be used (they crash on K-quants)."""
    if os.environ.get("EDGEGLM_LLAMA_EXTRA_BUFTS") in ("0", "1"):
        return os.environ["EDGEGLM_LLAMA_EXTRA_BUFTS"] == "1"
    return not any(f.startswith("amx") for f in probe_cpu().flags)


@contextmanager
def _default_params(*, use_extra_bufts: bool, cb_eval: Any = None) -> Iterator[None]:
    """llama_cpp.Llama builds its model and context params from the library
    defaults and exposes neither field; wrap the two default factories while
    the model loads."""
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

    mod.llama_cpp.llama_model_default_params = model_params
    mod.llama_cpp.llama_context_default_params = ctx_params
    try:
        yield
    finally:
        mod.llama_cpp.llama_model_default_params = orig_model
        mod.llama_cpp.llama_context_default_params = orig_ctx


class LlamaCppModel:
    """A GGUF loaded in llama.cpp: tokenize, generate, score."""

    name = "llama.cpp"

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        logits_all: bool = False,
        seed: int = 0,
        cb_eval: Any = None,
    ) -> None:
        """``cb_eval``: a ggml_backend_sched_eval_callback (kept alive by the caller)."""
        import llama_cpp

        if not path.is_file():
            raise BackendError(f"{path}: no such GGUF file")
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
                )
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            raise BackendError(f"{path}: llama.cpp could not load it ({e})") from e
        self.path = path

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.llm.metadata)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def detokenize(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="replace")

    def score(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        """Next-token logits after each position: [len(tokens), n_vocab]."""
        if not self.llm._logits_all:
            raise BackendError("score() needs the model loaded with logits_all=True")
        self.llm.reset()  # type: ignore[no-untyped-call]
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float32)

    def chat_stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> Iterator[str]:
        """Stream the assistant's reply, using the GGUF's own chat template."""
        stream = self.llm.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            stream=True,
        )
        for chunk in stream:
            delta: Any = chunk["choices"][0]["delta"]  # type: ignore[index]
            if delta.get("content"):
                yield str(delta["content"])

    def close(self) -> None:
        self.llm.close()
