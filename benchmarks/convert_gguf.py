"""HF -> Q4_K_M: EdgeGLM's one pass against llama.cpp's two steps, side by side.

    .venv/bin/python benchmarks/convert_gguf.py [--workdir /tmp/edgeglm-bench] [--repeat 1]

llama.cpp's pipeline is what users run today: convert_hf_to_gguf.py to a BF16
GGUF, then llama-quantize (here: llama_model_quantize, the same code) to
Q4_K_M. Both run on the same synthetic GLM-Edge-1.5B-shaped checkpoint
(benchmarks/synthetic.py), alternating, with the same thread count. Each
command runs under GNU time for wall time and peak resident memory. The
report gives ratios, since this machine is shared and noisy; the llama.cpp
converter comes from the llama-cpp-python sdist (downloaded, never committed)
and needs the `reference` extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from synthetic import make  # noqa: E402

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"


def llama_cpp_tree(cache: Path) -> Path:
    """vendor/llama.cpp from the llama-cpp-python sdist (convert script, conversion/, gguf-py)."""
    tree = cache / "llama.cpp"
    if (tree / "convert_hf_to_gguf.py").exists():
        return tree
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             LLAMA_CPP_PYTHON, "-d", d],
            check=False, capture_output=True,
        )  # fmt: skip
        sdists = list(Path(d).glob("llama_cpp_python-*.tar.gz"))
        if not sdists:
            sys.exit("could not download the llama-cpp-python sdist")
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
            tar.extractall(d, members=members, filter="data")
        src = next(Path(d).glob("llama_cpp_python-*/vendor/llama.cpp"))
        tree.parent.mkdir(parents=True, exist_ok=True)
        src.rename(tree)
    return tree


def timed(cmd: list[str], cwd: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a command, from GNU time.

    Runs outside the repo root, where `python -m edgeglm` would import the bare
    source folder instead of the installed package."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    assert wall and rss, r.stderr[-2000:]
    h, m, s = wall.groups()
    return (int(h or 0) * 3600 + int(m) * 60 + float(s)), int(rss.group(1)) * 1024


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "edgeglm-bench")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--quant", default="Q4_K_M")
    args = ap.parse_args()

    work = args.workdir
    src = make(work / f"glm-edge-synth-{args.layers}l", args.layers)
    tree = llama_cpp_tree(work)
    py = sys.executable
    rows = []
    for i in range(args.repeat):
        ours_out = work / "edgeglm.gguf"
        bf16_out, q_out = work / "llamacpp-bf16.gguf", work / "llamacpp-q.gguf"
        ours = timed([py, "-m", "edgeglm", "convert", str(src), "-o", str(ours_out),
                      "--quant", args.quant, "--threads", str(args.threads)], work)  # fmt: skip
        conv = timed([py, str(HERE / "_llamacpp_convert.py"), str(tree), str(src),
                      "--outtype", "bf16", "--outfile", str(bf16_out)], work)  # fmt: skip
        quant = timed([py, str(HERE / "_llamacpp_quantize.py"), str(bf16_out), str(q_out),
                       args.quant, str(args.threads)], work)  # fmt: skip
        theirs_wall = conv[0] + quant[0]
        theirs_rss = max(conv[1], quant[1])
        row = {
            "run": i,
            "edgeglm_s": round(ours[0], 2),
            "edgeglm_peak_rss_mib": round(ours[1] / 2**20),
            "llamacpp_convert_s": round(conv[0], 2),
            "llamacpp_quantize_s": round(quant[0], 2),
            "llamacpp_peak_rss_mib": round(theirs_rss / 2**20),
            "wall_ratio": round(ours[0] / theirs_wall, 3),
            "rss_ratio": round(ours[1] / theirs_rss, 3),
            "edgeglm_bytes": ours_out.stat().st_size,
            "llamacpp_bytes": q_out.stat().st_size,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        for p in (ours_out, bf16_out, q_out):
            p.unlink()
    print(json.dumps({"params": "see benchmarks/synthetic.py", "threads": args.threads,
                      "quant": args.quant, "runs": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
