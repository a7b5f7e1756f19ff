"""``--backends`` and ``--quants`` honoured or refused in every combination,
and one quality reference per model across backends. The real CLI: refusals
come before anything is converted or measured (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import HF_FIXTURES, edgeglm

from edgeglm.bench.select import Selection, parse
from edgeglm.converters.gguf.convert import convert
from edgeglm.errors import ExitCode, UsageError

CHECKPOINT = str(HF_FIXTURES / "glm4")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A GGUF and an ONNX export of the same checkpoint, and a GGUF of another model."""
    from edgeglm.converters.onnx import convert as onnx_convert

    folder = tmp_path_factory.mktemp("inputs")
    return {
        "gguf": str(convert(HF_FIXTURES / "glm4", folder / "glm4-q8.gguf", "Q8_0").output),
        "onnx": str(onnx_convert(HF_FIXTURES / "glm4", folder / "glm4-int4", "int4").output),
        "other": str(convert(HF_FIXTURES / "glm4_moe", folder / "moe-q8.gguf", "Q8_0").output),
        "checkpoint": CHECKPOINT,
    }


# (models, flags, a fragment of the one line); every refusal names what to do
REFUSED = {
    "quants_with_only_a_gguf": (["gguf"], ["--quants", "Q4_K_M"], "--quants applies to Hugging"),
    "quants_with_only_an_onnx_folder": (["onnx"], ["--quants", "int4"], "has its own quant"),
    "quants_with_a_gguf_and_an_onnx_folder": (["gguf", "onnx"], ["--quants", "Q8_0"], "--quants"),
    "onnx_backend_for_a_gguf": (["gguf"], ["--backends", "onnx"], "a GGUF runs in llama.cpp"),
    "llama_backend_for_an_onnx_folder": (
        ["onnx"],
        ["--backends", "llama.cpp"],
        "an ONNX folder runs in ONNX Runtime",
    ),
    "onnx_backend_for_a_gguf_beside_a_checkpoint": (
        ["checkpoint", "gguf"],
        ["--backends", "onnx"],
        "a GGUF runs in llama.cpp",
    ),
    "gguf_quants_without_llama_cpp": (
        ["checkpoint"],
        ["--backends", "onnx", "--quants", "Q8_0,int4"],
        "GGUF quants are measured in llama.cpp",
    ),
    "onnx_quants_without_onnx": (
        ["checkpoint"],
        ["--backends", "llama.cpp", "--quants", "Q8_0,int4"],
        "ONNX quants are measured in onnx",
    ),
    "a_backend_with_none_of_its_quants": (
        ["checkpoint"],
        ["--backends", "llama.cpp,onnx", "--quants", "Q8_0"],
        "--backends onnx: --quants names none of its quants",
    ),
    "unknown_backend": (["checkpoint"], ["--backends", "tensorrt"], "unknown backend"),
    "auto_among_others": (["checkpoint"], ["--backends", "auto,onnx"], "auto alone"),
    "no_backend": (["checkpoint"], ["--backends", ","], "names no backend"),
    "unknown_quant": (["checkpoint"], ["--quants", "Q9_K"], "unknown quant 'Q9_K'"),
    "no_quant": (["checkpoint"], ["--quants", ","], "names no quant"),
    "imatrix_quant": (["checkpoint"], ["--quants", "IQ2_XXS"], "needs an importance matrix"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_in_one_line_before_anything_is_converted(
    name: str, inputs: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    models, flags, says = REFUSED[name]
    r = edgeglm("bench", *[inputs[m] for m in models], *flags, cwd=tmp_path, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "cache" / "artifacts").exists()  # nothing was converted


def test_names_are_checked_and_sorted_by_backend() -> None:
    assert parse(None, None) == Selection(None, None, None)
    assert parse(("auto",), None).backends is None  # auto alone: each model's own
    sel = parse(("onnx", "llama.cpp", "onnx"), ("q8_0", "INT4", "fp16", "Q4_K", "Q8_0"))
    assert sel.backends == ("onnx", "llama.cpp")  # duplicates dropped, order kept
    assert sel.gguf_quants == ("Q8_0", "Q4_K_M")  # llama-quantize's names and aliases
    assert sel.onnx_quants == ("int4", "fp16")  # fp16 is ONNX's, not llama.cpp's F16
    # left out, a checkpoint's backends follow its quants
    assert parse(None, ("int4",)).checkpoint_backends() == ("onnx",)
    assert parse(None, ("F16", "int8")).checkpoint_backends() == ("llama.cpp", "onnx")
    assert parse(None, None).checkpoint_backends() == ("llama.cpp",)
    with pytest.raises(UsageError, match="unknown backend"):
        parse(("vllm",), None)


def _bench_json(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, object]:
    r = edgeglm("bench", *args, "--repeat", "1", "--json", cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    report: dict[str, object] = json.loads(r.stdout)
    return report


def test_a_gguf_and_an_onnx_export_of_one_checkpoint_share_one_reference(
    inputs: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    report = _bench_json([inputs["onnx"], inputs["gguf"]], tmp_path, env)
    rows = report["rows"]
    assert isinstance(rows, list)
    ref, onnx = rows  # the higher precision first, whatever the order given
    assert (ref["backend"], ref["quant"], ref["reference"]) == ("llama.cpp", "Q8_0", True)
    assert (onnx["backend"], onnx["quant"], onnx["reference"]) == ("onnx", "int4", False)
    assert onnx["reference_label"] == ref["label"] and onnx["kl_mean"] > 0
    # bits per weight from the ONNX weights: what the converter reported for them
    assert onnx["bits_per_weight"] == pytest.approx(5.55, abs=0.01)


def test_different_models_each_get_their_own_reference(
    inputs: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    report = _bench_json([inputs["gguf"], inputs["other"]], tmp_path, env)
    rows = report["rows"]
    assert isinstance(rows, list)
    assert [r["reference"] for r in rows] == [True, True]
    assert [r["kl_mean"] for r in rows] == [None, None]


def test_quants_choose_the_backend_of_a_checkpoint(tmp_path: Path, env: dict[str, str]) -> None:
    """--quants int4 alone: ONNX rows, against ONNX Runtime's own fp32 export."""
    report = _bench_json([CHECKPOINT, "--quants", "int4"], tmp_path, env)
    rows = report["rows"]
    assert isinstance(rows, list)
    assert [(r["backend"], r["quant"], r["reference"]) for r in rows] == [
        ("onnx", "fp32", True),
        ("onnx", "int4", False),
    ]
    assert all(r["bits_per_weight"] for r in rows)
    settings = report["settings"]
    assert isinstance(settings, dict) and Path(settings["text"]).name == "heldout.txt"
