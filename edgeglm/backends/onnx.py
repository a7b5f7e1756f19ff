"""ONNX Runtime: run a folder made by ``edgeglm convert --format onnx``.

The folder is onnxruntime-genai's layout (model.onnx, genai_config.json,
tokenizer files); we drive the decoder ourselves: one prefill run, then one
run per token with the KV cache kept in preallocated buffers that
GroupQueryAttention updates in place (IO binding, on CPU and GPU alike).

Two checks come before onnxruntime sees a file. External-data references
must name a regular file inside the model folder (no absolute paths, no
``..``, no symlinks): a model is data, and must not read /etc/passwd or
another user's files. And ``onnxruntime-gpu`` lists CUDAExecutionProvider on
machines without CUDA libraries, then silently runs on CPU; we report the
provider the session actually got.

Folders from EdgeGLM since logits_to_keep (transformers' name) take it as an
optional input: generate() feeds 1 and gets one row of logits from prefill
instead of one per prompt position; score() feeds 0 for all of them. Older
folders, without the input, give every row and run as they always did.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from edgeglm.backends.base import Capabilities, Chunk, Completion, SamplingParams, Timings
from edgeglm.backends.sampling import Sampler, check_params
from edgeglm.backends.text import StopStrings, TokenText
from edgeglm.errors import BackendError, EdgeGLMError, UsageError
from edgeglm.fileio import contained
from edgeglm.hardware import usable_threads
from edgeglm.hardware.runtimes import probe_onnxruntime

# Tried in this order; TensorRT is left out by default (minutes of engine builds).
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
# OrtValue device names, for the KV cache buffers a provider reads in place.
_DEVICES = {"CUDAExecutionProvider": "cuda"}
# The optional int64 scalar input: logits for the last k positions only, 0 = all.
# Not in genai_config.json (onnxruntime-genai's parser rejects unknown keys), so
# found by this name; the converter's graph (converters/onnx/base.py) declares it.
LOGITS_TO_KEEP = "logits_to_keep"


# -- model files ------------------------------------------------------------------


def check_external_data(
    model: onnx.ModelProto, base_dir: Path, *, error: type[EdgeGLMError] = BackendError
) -> None:
    """Every external-data location must be a regular file under ``base_dir``."""
    for t in _tensors(model.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        path = contained(base_dir, loc, what=f"{base_dir}: tensor {t.name!r}: external data",
                         error=error)  # fmt: skip
        if not path.is_file():
            raise error(f"{base_dir}: tensor {t.name!r}: external data file {loc!r} is missing")
        try:
            end = int(info.get("offset", 0)) + int(info.get("length", 0))
        except ValueError:
            raise error(f"{base_dir}: tensor {t.name!r}: bad external data offset/length") from None
        if end > path.stat().st_size:
            raise error(f"{base_dir}: tensor {t.name!r}: {loc!r} is truncated (needs {end} bytes)")


def _tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Initializers and constant tensors, subgraphs included."""
    out = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                out.append(a.t)
            out.extend(a.tensors)
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                out.extend(_tensors(sub))
    return out


def load_model_folder(path: Path) -> tuple[Path, dict[str, Any]]:
    """(model.onnx path, genai config) of an ONNX model folder, checked."""
    folder = path if path.is_dir() else path.parent
    cfg_path = folder / "genai_config.json"
    if not path.exists():
        raise BackendError(f"{path}: no such ONNX model folder")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        decoder = cfg["model"]["decoder"]
        filename = str(decoder["filename"])
    except FileNotFoundError:
        raise BackendError(
            f"{folder}: no genai_config.json; not an ONNX model folder "
            "(make one with `edgeglm convert --format onnx`)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BackendError(f"{cfg_path}: unreadable genai config ({e!r})") from e
    model_file = contained(folder, filename, what=f"{cfg_path}: decoder filename",
                           error=BackendError)  # fmt: skip
    if not model_file.is_file():
        raise BackendError(f"{model_file}: missing")
    try:
        proto = onnx.load(str(model_file), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, onnx's own: any means "not ONNX"
        raise BackendError(f"{model_file}: not a valid ONNX model ({e})") from e
    check_external_data(proto, folder)
    _check_decoder_io(proto, cfg, model_file)
    return model_file, cfg


def _check_decoder_io(proto: onnx.ModelProto, cfg: dict[str, Any], where: Path) -> None:
    """A foreign ONNX model (a classifier, another tool's decoder) fails here, by name."""
    dec = cfg["model"]["decoder"]
    n = int(dec.get("num_hidden_layers", 0))
    names = dec.get("inputs", {}) | dec.get("outputs", {})
    want_in = [names.get("input_ids", "input_ids"), names.get("attention_mask", "attention_mask")]
    want_out = [names.get("logits", "logits")]
    for key in ("past_key_names", "past_value_names", "present_key_names", "present_value_names"):
        pattern = str(names.get(key, ""))
        into = want_in if key.startswith("past") else want_out
        into += [pattern % i for i in range(n)] if "%d" in pattern else []
    have_in = {i.name for i in proto.graph.input}
    have_out = {o.name for o in proto.graph.output}
    missing = [x for x in want_in if x not in have_in] + [x for x in want_out if x not in have_out]
    if n <= 0 or missing:
        shown = ", ".join(missing[:4]) or "num_hidden_layers"
        raise BackendError(
            f"{where}: not a decoder with a KV cache as genai_config.json describes "
            f"it (missing {shown})"
        )
    keep = next((i for i in proto.graph.input if i.name == LOGITS_TO_KEEP), None)
    if keep is not None:  # optional; where present, a scalar as we feed it
        t = keep.type.tensor_type
        if t.elem_type != onnx.TensorProto.INT64 or len(t.shape.dim) != 0:
            raise BackendError(f"{where}: input {LOGITS_TO_KEEP} is not an int64 scalar")


# -- execution providers ------------------------------------------------------


@functools.cache
def usable_providers() -> tuple[str, ...]:
    """Preferred providers that really initialize here, CPU last (asked once per process)."""
    info = probe_onnxruntime(only=PREFERRED_PROVIDERS)
    working = [p for p in PREFERRED_PROVIDERS if p in info.working_providers]
    return (*(p for p in working if p != "CPUExecutionProvider"), "CPUExecutionProvider")


# -- the backend --------------------------------------------------------------------


def session_options(n_threads: int | None = None) -> Any:
    """The backend's ONNX Runtime session options (benchmarks profile with the same)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = n_threads or usable_threads()
    so.log_severity_level = 3
    return so


class OnnxModel:
    """An ONNX model folder in ONNX Runtime: tokenize, generate, score."""

    name = "onnxruntime"

    def __init__(
        self,
        path: Path,
        *,
        providers: Sequence[str] | None = None,
        n_threads: int | None = None,
        n_ctx: int | None = None,
    ) -> None:
        """``n_ctx`` caps prompt + generated tokens below the trained context (KV memory)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_file, cfg = load_model_folder(path)
        self.folder = model_file.parent
        m = cfg["model"]
        dec = m["decoder"]
        self.n_layer = int(dec["num_hidden_layers"])
        self.n_kv_head = int(dec["num_key_value_heads"])
        self.head_dim = int(dec["head_size"])
        self.context_length = min(int(m["context_length"]), n_ctx or 1 << 62)
        self.io = dec["inputs"] | dec["outputs"]
        so = session_options(n_threads)
        wanted = list(providers or [p for p in PREFERRED_PROVIDERS if p in usable_providers()])
        try:
            self.session = ort.InferenceSession(str(model_file), so, providers=wanted)
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise BackendError(f"{model_file}: ONNX Runtime could not load it ({e})") from e
        provider = self.session.get_providers()[0]
        self.device_type = _DEVICES.get(provider, "cpu")
        self.capabilities = Capabilities(
            streaming=True, logits=True, gpu_offload=self.device_type != "cpu", device=provider
        )
        past = self.io["past_key_names"] % 0
        kv_type = next(i.type for i in self.session.get_inputs() if i.name == past)
        self.kv_dtype = np.float16 if kv_type == "tensor(float16)" else np.float32
        # ORT lists an input with a default among the overridable initializers, not the
        # inputs, and binds it only as an OrtValue (bind_cpu_input looks in the inputs)
        takes = self.session.get_inputs() + self.session.get_overridable_initializers()
        self.keeps_logits = any(i.name == LOGITS_TO_KEEP for i in takes)
        self._last_only = ort.OrtValue.ortvalue_from_numpy(np.array(1, dtype=np.int64))
        try:
            self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise BackendError(f"{self.folder}/tokenizer.json: unusable ({e})") from e
        gen_eos = self._json("generation_config.json").get("eos_token_id")
        self.eos_ids = set(_ints(m.get("eos_token_id"))) | set(_ints(gen_eos))
        self.n_vocab = int(m["vocab_size"])

    # -- tokens -------------------------------------------------------------

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        # special=False: "<|user|>" in user text is text, not a control token
        self.tokenizer.encode_special_tokens = not special
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def detokenize(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=False))

    def chat_template(self) -> str | None:
        jinja = self.folder / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        tmpl = self._json("tokenizer_config.json").get("chat_template")
        if isinstance(tmpl, list):  # named templates: [{"name": "default", "template": ...}]
            tmpl = next((t.get("template") for t in tmpl if t.get("name") == "default"), None)
        return tmpl if isinstance(tmpl, str) else None

    # -- inference ------------------------------------------------------------

    def score(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        """Next-token logits after every position, in one run from an empty cache."""
        self._check_length(len(tokens))
        empty = np.zeros((1, self.n_kv_head, 0, self.head_dim), dtype=self.kv_dtype)
        feeds: dict[str, Any] = {
            self.io["input_ids"]: np.asarray([tokens], dtype=np.int64),
            self.io["attention_mask"]: np.ones((1, len(tokens)), dtype=np.int64),
        }
        if self.keeps_logits:
            feeds[LOGITS_TO_KEEP] = np.array(0, dtype=np.int64)  # all positions
        for i in range(self.n_layer):
            feeds[self.io["past_key_names"] % i] = empty
            feeds[self.io["past_value_names"] % i] = empty
        (logits,) = self.session.run([self.io["logits"]], feeds)
        return np.asarray(logits[0], dtype=np.float32)

    def generate(
        self, prompt: list[int], params: SamplingParams
    ) -> Generator[Chunk, None, Completion]:
        check_params(params)
        self._check_length(len(prompt))
        timings = Timings(prompt_tokens=len(prompt))
        sampler = Sampler(params)
        words, stops = TokenText(self.detokenize), StopStrings(params.stop)
        capacity = min(self.context_length, len(prompt) + params.max_tokens)
        cache = self._new_cache(capacity)
        t0 = time.perf_counter()
        logits = self._step(prompt, 0, cache)
        timings.prompt_seconds = time.perf_counter() - t0
        history, out, pending, parts = list(prompt), [], [], []
        finish, t_first, stopped = "length", 0.0, False
        while True:
            token = sampler(logits, history)
            timings.completion_tokens += 1
            if timings.completion_tokens == 1:
                t_first = time.perf_counter()
                timings.time_to_first_token = t_first - t0
            if token in self.eos_ids:
                finish = "stop"
                break
            out.append(token)
            history.append(token)
            pending.append(token)
            text, stopped = stops.feed(words.push(token))
            if text:
                parts.append(text)
                yield Chunk(text, pending)
                pending = []
            if stopped:
                finish = "stop"
                break
            if len(out) >= params.max_tokens or len(history) >= capacity:
                break
            logits = self._step([token], len(history) - 1, cache)
        timings.decode_seconds = time.perf_counter() - t_first
        tail = ""
        if not stopped:
            tail, stopped = stops.feed(words.flush())
            tail += "" if stopped else stops.flush()
        if tail or pending:
            parts.append(tail)
            yield Chunk(tail, pending)
        return Completion("".join(parts), out, finish, timings)

    def _check_length(self, n: int) -> None:
        if n == 0:
            raise UsageError("nothing to run: the token list is empty")
        if n >= self.context_length:
            raise UsageError(f"{n} tokens do not fit the context of {self.context_length}")

    def _new_cache(self, capacity: int) -> list[Any]:
        """One buffer per layer and K/V, [1, kv_heads, capacity, head_dim], on the device."""
        import onnxruntime as ort

        shape = [1, self.n_kv_head, capacity, self.head_dim]
        if self.device_type == "cpu":
            return [
                ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, self.kv_dtype))
                for _ in range(2 * self.n_layer)
            ]
        return [
            ort.OrtValue.ortvalue_from_shape_and_type(shape, self.kv_dtype, self.device_type, 0)
            for _ in range(2 * self.n_layer)
        ]

    def _step(self, tokens: list[int], past: int, cache: list[Any]) -> npt.NDArray[np.float32]:
        """The next-token logits after ``tokens``, run after ``past`` cached ones;
        the cache is updated in place."""
        io = self.session.io_binding()
        io.bind_cpu_input(self.io["input_ids"], np.asarray([tokens], dtype=np.int64))
        io.bind_cpu_input(self.io["attention_mask"], np.ones((1, past + len(tokens)), np.int64))
        if self.keeps_logits:  # the last position only: no head over the whole prompt
            io.bind_ortvalue_input(LOGITS_TO_KEEP, self._last_only)
        io.bind_output(self.io["logits"], "cpu")  # bound first: get_outputs()[0]
        for i in range(self.n_layer):
            for j, kind in enumerate(("key", "value")):
                buf = cache[2 * i + j]
                io.bind_ortvalue_input(self.io[f"past_{kind}_names"] % i, buf)
                io.bind_ortvalue_output(self.io[f"present_{kind}_names"] % i, buf)
        try:
            self.session.run_with_iobinding(io)
        except Exception as e:
            raise BackendError(f"ONNX Runtime failed to run the model ({e})") from e
        logits: npt.NDArray[np.float32] = io.get_outputs()[0].numpy()[0, -1]
        return logits

    def _json(self, name: str) -> dict[str, Any]:
        path = self.folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError) as e:
            raise BackendError(f"{path}: unreadable ({e})") from e
        return data if isinstance(data, dict) else {}

    def close(self) -> None:
        self.__dict__.pop("session", None)


def _ints(value: Any) -> list[int]:
    return [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int)]
