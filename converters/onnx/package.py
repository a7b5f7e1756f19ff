"""The output folder: model.onnx (+ data), tokenizer files, genai_config.json.

The folder is assembled in a temp directory beside the target and renamed
into place only when complete, so an error, Ctrl-C or kill never leaves a
half-written model folder at the target path.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgeglm.chat import GLM_STOP_TOKENS
from edgeglm.checkpoint.config import Config
from edgeglm.checkpoint.hf import model_file, read_json
from edgeglm.converters import output
from edgeglm.converters.onnx.spec import ModelSpec
from edgeglm.errors import CheckpointError, UsageError

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
GENAI_CONFIG = "genai_config.json"
# Copied when present; tokenizer.json is required (the backend tokenizes with it).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
)
TMP_MARK = ".edgeglm-tmp-"
_OLD_MARK = ".edgeglm-old-"


def copy_tokenizer(src: Path, dst: Path) -> list[str]:
    if not model_file(src, "tokenizer.json").is_file():
        raise CheckpointError(f"{src}: no tokenizer.json (the ONNX folder needs one)")
    copied = []
    for name in TOKENIZER_FILES:
        path = model_file(src, name)
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError as e:  # a read error is the checkpoint's, not the output's
                raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e
            (dst / name).write_bytes(data)
            copied.append(name)
    return copied


def stop_token_ids(src: Path, cfg: Config) -> list[int]:
    """eos ids from config.json and generation_config.json, plus GLM's turn and tool-call
    boundaries, which end a reply as surely as <|endoftext|>."""
    ids: list[int] = []
    gen = _optional_json(src, "generation_config.json")
    for value in (cfg.get("eos_token_id"), gen.get("eos_token_id")):
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)
    vocab = read_json(model_file(src, "tokenizer.json")).get("added_tokens") or []
    by_text = {t.get("content"): t.get("id") for t in vocab if isinstance(t, dict)}
    for text in GLM_STOP_TOKENS:
        tid = by_text.get(text)
        if isinstance(tid, int) and tid not in ids:
            ids.append(tid)
    return ids


def genai_config(src: Path, cfg: Config, spec: ModelSpec, eos: list[int]) -> dict[str, Any]:
    """onnxruntime-genai's decoder config (its parser rejects unknown keys: add none)."""
    gen = _optional_json(src, "generation_config.json")
    pad = cfg.get("pad_token_id", default=gen.get("pad_token_id"))
    pad = pad if isinstance(pad, int) else (eos[0] if eos else 0)
    bos = cfg.get("bos_token_id", default=gen.get("bos_token_id"))
    return {
        "model": {
            "bos_token_id": bos if isinstance(bos, int) else pad,
            "context_length": spec.context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": MODEL_FILE,
                "head_size": spec.head_dim,
                "hidden_size": spec.hidden,
                # The graph's logits_to_keep input is left out: genai has no key for it,
                # and its default (0, every position) gives the logits genai expects.
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": spec.n_head,
                "num_hidden_layers": spec.n_layer,
                "num_key_value_heads": spec.n_kv_head,
            },
            "eos_token_id": eos,
            "pad_token_id": pad,
            # genai's name for the GLM decoder; our graph uses its generic IO.
            "type": "chatglm",
            "vocab_size": spec.vocab,
        },
        "search": {
            "diversity_penalty": 0.0,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": spec.context_length,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            # GroupQueryAttention updates one preallocated cache in place.
            "past_present_share_buffer": True,
            **_sampling(gen),
        },
    }


def _sampling(gen: dict[str, Any]) -> dict[str, bool | float | int]:
    """The sampling keys generation_config.json sets, and only those: a key
    left out means onnxruntime-genai's default, as an absent key means
    transformers' default, and EdgeGLM's defaults (edgeglm/generation.py)
    never mistake a filled-in value for the model's own."""
    out: dict[str, bool | float | int] = {}
    if isinstance(gen.get("do_sample"), bool):
        out["do_sample"] = gen["do_sample"]
    for key in ("repetition_penalty", "temperature", "top_k", "top_p"):
        value = _number(gen, key)
        if value is not None:
            out[key] = int(value) if key == "top_k" else value
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _number(gen: dict[str, Any], key: str) -> float | None:
    """A sampling default from generation_config.json; anything but a finite number is ignored."""
    value = gen.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _optional_json(src: Path, name: str) -> dict[str, Any]:
    path = model_file(src, name)
    return read_json(path) if path.is_file() else {}


# -- atomic placement -------------------------------------------------------


def check_target(out: Path, src: Path, shards: Iterable[Path] = ()) -> None:
    output.check_output(out, src, folder=True, also=shards)
    if out.is_dir() and any(out.iterdir()) and not _is_model_folder(out):
        raise UsageError(
            f"{out}: exists and is not an ONNX model folder; refusing to replace its contents"
        )


def temp_folder(out: Path) -> Path:
    clean_stale_temps(out)
    tmp = out.parent / f".{out.name}{TMP_MARK}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def place(tmp: Path, out: Path) -> None:
    """Move the finished folder to ``out``, replacing an earlier model folder there."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}{_OLD_MARK}{os.getpid()}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)  # the earlier model stays where it was
        raise
    shutil.rmtree(old, ignore_errors=True)


def clean_stale_temps(out: Path) -> None:
    """Remove folders of earlier conversions to this target whose process is gone."""
    output.clean_stale_temps(out, (TMP_MARK, _OLD_MARK))


def _is_model_folder(path: Path) -> bool:
    return (path / MODEL_FILE).is_file() and (path / GENAI_CONFIG).is_file()
