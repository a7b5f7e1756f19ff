"""One set of sampling defaults (edgeglm.generation), read from real model files:
a checkpoint's generation_config.json, the GGUF the real converter makes from
it (general.sampling.*, read back by llama.cpp itself), an ONNX folder the
real converter makes, and llama.cpp's defaults where a model sets nothing.
The real ``run`` says where each value came from, and flags win."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import HF_FIXTURES, edgeglm

from edgeglm.cli.repl import ReplyWriter
from edgeglm.converters.gguf.convert import convert
from edgeglm.errors import ExitCode, UsageError
from edgeglm.generation import (
    COMMAND_LINE,
    GENERATION_CONFIG,
    LLAMA_CPP,
    LLAMA_CPP_DEFAULTS,
    Sampling,
    check_max_tokens,
    from_generation_config,
    from_gguf,
    from_onnx_folder,
    model_defaults,
)
from edgeglm.gguf_file import read_gguf
from edgeglm.tui.settings import ChatSettings

SAMPLED = {
    "do_sample": True,
    "temperature": 0.6,
    "top_p": 0.9,
    "top_k": 20,
    "repetition_penalty": 1.1,
    "max_new_tokens": 64,
}


def checkpoint(tmp: Path, name: str, gen: dict[str, Any] | str | None) -> Path:
    """The glm4 fixture with its generation_config.json replaced (``str``: raw
    text; None: the fixture's own, which names no sampling setting)."""
    out = tmp / name
    shutil.copytree(HF_FIXTURES / "glm4", out)
    path = out / "generation_config.json"
    if isinstance(gen, str):
        path.write_text(gen, encoding="utf-8")
    elif gen is not None:
        path.write_text(json.dumps({**json.loads(path.read_text()), **gen}), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint(tmp_path_factory.mktemp("sampled"), "glm4-sampled", SAMPLED)


@pytest.fixture(scope="module")
def sampled_gguf(sampled: Path) -> Path:
    return convert(sampled, sampled.parent / "sampled.gguf", "Q8_0").output


@pytest.fixture(scope="module")
def plain_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "plain.gguf"
    return convert(HF_FIXTURES / "glm4", out, "Q8_0").output


def values(s: Sampling) -> dict[str, Any]:
    return {k: v["value"] for k, v in s.to_dict().items()}


def test_a_checkpoint_samples_as_its_generation_config_says(sampled: Path) -> None:
    s = from_generation_config(sampled)
    assert values(s) == {
        "temperature": 0.6,
        "top_p": 0.9,
        "top_k": 20,
        "repeat_penalty": 1.1,
        "max_tokens": 64,
        "min_p": LLAMA_CPP_DEFAULTS["min_p"],  # the file does not set it
        "seed": 0,
    }
    assert s.source("temperature") == s.source("max_tokens") == GENERATION_CONFIG
    assert s.source("min_p") == LLAMA_CPP
    assert s.warnings == ()


def test_do_sample_false_or_absent_is_greedy_as_in_transformers(tmp_path: Path) -> None:
    for name, gen in (
        ("absent", {"temperature": 0.6, "top_p": 0.9}),
        ("false", {"do_sample": False, "temperature": 0.6}),
    ):
        s = from_generation_config(checkpoint(tmp_path, name, gen))
        assert s.temperature == 0.0
        assert f"do_sample {name}" in s.source("temperature")
        assert s.top_p == (0.9 if "top_p" in gen else LLAMA_CPP_DEFAULTS["top_p"])


def test_a_model_that_sets_nothing_gets_llama_cpp_defaults(plain_gguf: Path) -> None:
    # The fixture's generation_config.json names eos ids and nothing about sampling.
    for s in (from_generation_config(HF_FIXTURES / "glm4"), from_gguf(plain_gguf)):
        assert values(s) == {**LLAMA_CPP_DEFAULTS, "seed": 0}
        assert {s.source(k) for k in LLAMA_CPP_DEFAULTS} == {LLAMA_CPP}
    assert not any(k.startswith("general.sampling.") for k in read_gguf(plain_gguf).metadata)


def test_unusable_model_values_are_skipped_with_a_warning(tmp_path: Path) -> None:
    bad = {"do_sample": True, "temperature": "hot", "top_p": 2.0, "top_k": 1.5, "min_p": 0.1}
    s = from_generation_config(checkpoint(tmp_path, "bad", bad))
    assert (s.temperature, s.top_p, s.top_k) == (0.8, 0.95, 40)  # llama.cpp's
    assert s.min_p == 0.1
    assert len(s.warnings) == 3 and all("generation_config.json" in w for w in s.warnings)
    broken = from_generation_config(checkpoint(tmp_path, "broken", "{not json"))
    assert values(broken) == {**LLAMA_CPP_DEFAULTS, "seed": 0}
    assert len(broken.warnings) == 1 and "unreadable" in broken.warnings[0]


def test_the_gguf_converter_carries_the_defaults_llama_cpp_reads(
    sampled: Path, sampled_gguf: Path
) -> None:
    from edgeglm.backends.llamacpp import LlamaCppModel

    m = LlamaCppModel(sampled_gguf, n_ctx=64)
    try:
        meta = m.metadata  # as llama.cpp itself read them
    finally:
        m.close()
    assert float(meta["general.sampling.temp"]) == pytest.approx(0.6)
    assert int(meta["general.sampling.top_k"]) == 20
    assert float(meta["general.sampling.top_p"]) == pytest.approx(0.9)
    assert float(meta["general.sampling.penalty_repeat"]) == pytest.approx(1.1)
    assert "general.sampling.min_p" not in meta  # not in the checkpoint: not invented
    # the GGUF samples as its checkpoint does (GGUF has no key for a reply length)
    from_ckpt, from_file = values(from_generation_config(sampled)), values(from_gguf(sampled_gguf))
    assert from_file == {**from_ckpt, "max_tokens": -1}
    assert from_gguf(sampled_gguf).source("temperature") == "general.sampling.temp"


def test_a_greedy_checkpoint_converts_to_a_greedy_gguf(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path, "greedy", {"do_sample": False, "temperature": 0.7})
    gguf = convert(ckpt, tmp_path / "greedy.gguf", "Q8_0").output
    assert read_gguf(gguf).metadata["general.sampling.temp"] == 0.0
    assert from_gguf(gguf).temperature == 0.0


def test_an_onnx_folder_samples_as_its_checkpoint(sampled: Path, tmp_path: Path) -> None:
    from edgeglm.converters.onnx import convert as convert_onnx

    folder = convert_onnx(sampled, tmp_path / "onnx", "int4").output
    search = json.loads((folder / "genai_config.json").read_text())["search"]
    assert (search["do_sample"], search["temperature"], search["top_p"]) == (True, 0.6, 0.9)
    assert values(from_onnx_folder(folder)) == values(from_generation_config(sampled))
    # without generation_config.json: the search section, as onnxruntime-genai reads it
    (folder / "generation_config.json").unlink()
    s = from_onnx_folder(folder)
    assert (s.temperature, s.top_p, s.top_k) == (0.6, 0.9, 20)
    assert s.source("temperature") == "genai_config.json search"
    config = json.loads((folder / "genai_config.json").read_text())
    config["search"]["do_sample"] = False
    (folder / "genai_config.json").write_text(json.dumps(config))
    assert from_onnx_folder(folder).temperature == 0.0
    assert model_defaults("onnx", folder).temperature == 0.0


def test_an_onnx_export_fills_in_no_sampling_setting_the_checkpoint_leaves_out(
    tmp_path: Path,
) -> None:
    from edgeglm.converters.onnx import convert as convert_onnx

    folder = convert_onnx(HF_FIXTURES / "glm4", tmp_path / "onnx", "int4").output
    search = json.loads((folder / "genai_config.json").read_text())["search"]
    assert not {"do_sample", "temperature", "top_k", "top_p", "repetition_penalty"} & set(search)
    (folder / "generation_config.json").unlink(missing_ok=True)
    s = from_onnx_folder(folder)  # as from the checkpoint: nothing of the model's own
    assert values(s) == values(from_generation_config(HF_FIXTURES / "glm4"))
    assert s.source("temperature") == s.source("top_k") == LLAMA_CPP


def test_flags_win_and_are_checked() -> None:
    s = Sampling().override(temperature=0.2, top_k=None, max_tokens=-1)
    assert (s.temperature, s.top_k) == (0.2, 40)
    assert s.source("temperature") == COMMAND_LINE and s.source("top_k") == LLAMA_CPP
    assert s.params().max_tokens > 10**9  # -1: until the context is full
    for bad in ({"temperature": -1.0}, {"top_p": 0.0}, {"max_tokens": 0}):
        with pytest.raises(UsageError):
            Sampling().override(**bad)
    assert check_max_tokens(-1) == -1
    with pytest.raises(UsageError, match="-1"):
        check_max_tokens(-5)


def test_the_chat_app_starts_from_the_same_defaults(sampled: Path) -> None:
    settings = ChatSettings.for_artifact("hf", sampled)
    s = from_generation_config(sampled)
    assert (settings.temperature, settings.top_k, settings.max_tokens) == (0.6, 20, 64)
    assert settings.sampling() == s.params(stop=settings.sampling().stop)
    assert settings.source("temperature") == GENERATION_CONFIG
    edited = settings.edited(temperature=0.3, top_k=20)
    assert (
        edited.source("temperature") == "settings" and edited.source("top_k") == GENERATION_CONFIG
    )
    # a fresh app, before a model is chosen: llama.cpp's, as run's
    assert ChatSettings().sampling() == Sampling().params(stop=settings.sampling().stop)
    assert ChatSettings(max_tokens=-1).problems() == []
    assert ChatSettings(max_tokens=0).problems()


def run_json(*args: str, cwd: Path) -> dict[str, Any]:
    r = edgeglm("run", *args, "-p", "Hello", "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def test_run_says_where_each_value_came_from(
    sampled: Path, sampled_gguf: Path, plain_gguf: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    got = run_json(str(sampled_gguf), "-n", "3", cwd=tmp_path)["sampling"]
    assert got["temperature"] == {"value": 0.6, "source": "general.sampling.temp"}
    assert got["top_k"] == {"value": 20, "source": "general.sampling.top_k"}
    assert got["min_p"] == {"value": 0.05, "source": LLAMA_CPP}
    assert got["max_tokens"] == {"value": 3, "source": COMMAND_LINE}
    got = run_json(str(plain_gguf), "--temp", "0", "--top-k", "5", "-n", "2", cwd=tmp_path)
    assert got["sampling"]["temperature"] == {"value": 0.0, "source": COMMAND_LINE}
    assert got["sampling"]["top_p"] == {"value": 0.95, "source": LLAMA_CPP}
    assert got["timings"]["completion_tokens"] <= 2
    # a checkpoint: its own file (converted on first use)
    r = edgeglm("run", str(sampled), "-p", "Hello", "--no-plan", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["sampling"]["max_tokens"] == {"value": 64, "source": GENERATION_CONFIG}
    assert data["timings"]["completion_tokens"] <= 64
    # streamed: one line on stderr, grouped by source
    r = edgeglm("run", str(sampled_gguf), "-p", "Hello", "-n", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("sampling:"))
    assert "temperature=0.6 top_k=20 top_p=0.9 repeat_penalty=1.1 (GGUF general.sampling.*)" in line
    assert "(llama.cpp default)" in line and "max_tokens=2 (command line)" in line


def test_a_warning_names_a_skipped_model_value(tmp_path: Path, env: dict[str, str]) -> None:
    ckpt = checkpoint(tmp_path, "warn", {"do_sample": True, "temperature": -3})
    r = edgeglm("run", str(ckpt), "-p", "Hi", "-n", "2", "--no-plan", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "temperature -3" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_reply_writer_dims_or_hides_thinking_split_anywhere() -> None:
    import io

    chunks = ["<thi", "nk>why", " not</th", "ink>\n\nThe answer", "\x1b[2J."]
    plain = io.StringIO()
    w = ReplyWriter(plain, color=False)
    for c in chunks:
        w.write(c)
    w.finish()
    assert plain.getvalue() == "".join(chunks) + "\n"  # a pipe gets the text as it is
    hidden = io.StringIO()
    w = ReplyWriter(hidden, hide_thinking=True, color=False)
    for c in chunks:
        w.write(c)
    w.finish("[stopped]")
    assert hidden.getvalue() == "The answer\x1b[2J.\n[stopped]\n"
    dimmed = io.StringIO()
    w = ReplyWriter(dimmed, color=True)
    for c in chunks:
        w.write(c)
    w.finish()
    text = dimmed.getvalue()
    assert "\x1b[2mwhy\x1b[0m" in text and "\x1b[2m</think>\x1b[0m" in text
    assert "\x1b[2J" not in text and "\ufffd[2J." in text  # the model cannot drive the terminal


def test_max_tokens_minus_one_is_accepted_and_minus_five_is_not(
    plain_gguf: Path, tmp_path: Path
) -> None:
    got = run_json(str(plain_gguf), "-n", "-1", "--temp", "0", "-c", "64", cwd=tmp_path)
    assert got["sampling"]["max_tokens"]["value"] == -1
    assert got["finish_reason"] in ("stop", "length")
    r = edgeglm("run", str(plain_gguf), "-p", "Hi", "-n", "-5", cwd=tmp_path)
    assert r.returncode == ExitCode.USAGE and "max_tokens must be -1" in r.stderr
