"""Accuracy: EdgeGLM's ONNX int4 against llama.cpp Q4_0, as mean KL from transformers.

    .venv/bin/python benchmarks/onnx_int4_kl.py [FIXTURE ...]

For each committed fixture (tests/fixtures/hf; default: every one the ONNX
converter supports) it converts to ONNX int4 and to GGUF Q4_0, scores the
fixture's reference text with both, and prints the mean KL divergence of each
from the transformers logits stored with the fixture, and the output sizes.
The suite asserts int4 <= Q4_0 (tests/converters/onnx/test_convert.py); this
prints the figures. Sizes of these tiny models are dominated by the vocabulary;
benchmarks/onnx_vs_llamacpp.py gives the 1.3 B model's.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from helpers import HF_FIXTURES, llama_probe, load_reference  # noqa: E402

from edgeglm.backends.isolated import run_isolated  # noqa: E402
from edgeglm.backends.onnx import OnnxModel  # noqa: E402
from edgeglm.checkpoint.hf import HFCheckpoint  # noqa: E402
from edgeglm.converters.gguf.convert import convert as to_gguf  # noqa: E402
from edgeglm.converters.onnx import convert as to_onnx  # noqa: E402
from edgeglm.converters.onnx.registry import supported_architectures  # noqa: E402
from edgeglm.errors import UnsupportedArchitectureError  # noqa: E402
from edgeglm.metrics import kl_divergence  # noqa: E402


def main() -> None:
    names = sys.argv[1:] or sorted(
        p.name
        for p in HF_FIXTURES.iterdir()
        if (p / "config.json").is_file()
        and HFCheckpoint(p).config.get("architectures", [""])[0] in supported_architectures()
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            tokens, ref, text = load_reference(HF_FIXTURES / name)
            try:
                folder = to_onnx(HF_FIXTURES / name, Path(tmp) / name, "int4").output
            except UnsupportedArchitectureError as e:  # e.g. YaRN: GGUF-only for now
                print(json.dumps({"fixture": name, "skipped": str(e)}), flush=True)
                continue
            m = OnnxModel(folder, n_threads=1)
            try:
                ours = float(kl_divergence(ref, m.score(tokens)).mean())
            finally:
                m.close()
            gguf = to_gguf(HF_FIXTURES / name, Path(tmp) / f"{name}.gguf", "Q4_0").output
            probe = run_isolated(llama_probe, str(gguf), tokens, text)
            theirs = float(kl_divergence(ref, probe["logits"]).mean())
            row = {
                "fixture": name,
                "onnx_int4_kl": round(ours, 4),
                "llamacpp_q4_0_kl": round(theirs, 4),
                "onnx_bytes": sum(p.stat().st_size for p in folder.iterdir()),
                "gguf_bytes": gguf.stat().st_size,
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
