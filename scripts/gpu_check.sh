#!/usr/bin/env bash
# gpu_check.sh: EdgeGLM's GPU checks on one NVIDIA machine, in one go, self-checking.
#
#   scripts/gpu_check.sh                                  # from anywhere; OUT=./gpu_check_out
#   OUT=/tmp/gc WHEELHOUSE=/wheels scripts/gpu_check.sh   # offline: pip reads /wheels only
#   SYNTHETIC_LAYERS=4 scripts/gpu_check.sh               # a smaller synthetic model (24)
# Big files (the 2.6 GB checkpoint, GGUFs, EdgeGLM's cache) go to $WORK (default
# ${TMPDIR:-/tmp}/edgeglm-gpu-check, reused by a rerun); $OUT gets logs, JSON and reports.
#
# Without an NVIDIA GPU (nvidia-smi lists none) it stops at once: one line, exit 7.
# Otherwise, each step timestamped in $OUT/log.txt (commands' output in $OUT/logs/):
#  1. the CUDA engine: EDGEGLM_LLAMA_BACKEND=cuda make engine (cached: instant when built),
#     then make install where edgeglm is not installed yet;
#  2. converts the synthetic 1.3 B GLM-Edge-shaped model (benchmarks/synthetic.py) to
#     Q4_K_M and the GLM-4.5 MoE fixture (tests/fixtures/hf/glm4_moe) to Q8_0;
#  3. each: `edgeglm plan --json`, `run --dry-run --json` (must be the plan's launch spec),
#     `run` (must load that spec, on the GPU); the MoE also with --cpu-moe (experts in RAM);
#  4. a split placement: the 1.3 B model planned for this machine with a third of the VRAM
#     it needs (a profile from the probe), run with its -ngl and benched with --hardware;
#  5. bench rows --device cpu, gpu and auto: device, launch spec and roofline memory as
#     asked; ONNX rows on the CPU, and on CUDA where ONNX Runtime's provider works
#     (elsewhere its one-line refusal);
#  6. every offloaded row of the 1.3 B model: the model's VRAM from NVML within 10% of the
#     plan's estimate for the spec that ran.
# $OUT/summary.txt lists every check and row; exit 0 when all passed, 1 when any failed.
# Offline: WHEELHOUSE=DIR (or PIP_FIND_LINKS=DIR) installs from DIR alone (PIP_NO_INDEX):
# it must hold edgeglm's dependencies, llama-cpp-python's sdist and its build requirements.
# Time on an H100 with 16 cores: the CUDA build (first run only) plus about 4 minutes.
set -euo pipefail

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi lists none); nothing checked" >&2
    exit 7
fi

OUT=$(realpath -m "${OUT:-./gpu_check_out}")
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=$(realpath -m "${WORK:-${TMPDIR:-/tmp}/edgeglm-gpu-check}")
mkdir -p "$OUT/logs" "$OUT/json" "$WORK"
W=$OUT/json
PY=.venv/bin/python
EG=.venv/bin/edgeglm
if [[ -n "${WHEELHOUSE:-}" ]]; then export PIP_FIND_LINKS=$WHEELHOUSE; fi
if [[ -n "${PIP_FIND_LINKS:-}" ]]; then export PIP_NO_INDEX=1; fi
export EDGEGLM_LLAMA_BACKEND=cuda
: >"$OUT/summary.txt"
FAILED=0

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/log.txt" >&2; }
die() { log "FATAL $*"; echo "FATAL $*" >>"$OUT/summary.txt"; exit 1; }
# check NAME CMD...: run CMD (output to logs/NAME.log), record ok or FAIL, and go on.
check() {
    local name=$1 t0=$SECONDS
    shift
    if "$@" >"$OUT/logs/$name.log" 2>&1; then
        log "ok   $name ($((SECONDS - t0)) s)"
        echo "ok   $name" >>"$OUT/summary.txt"
    else
        log "FAIL $name ($((SECONDS - t0)) s): see logs/$name.log"
        echo "FAIL $name: $(tail -n 1 "$OUT/logs/$name.log")" >>"$OUT/summary.txt"
        FAILED=1
    fi
}
# the checks on the commands' JSON, in Python (below)
pycheck() { "$PY" "$W/checks.py" "$@"; }

log "gpu_check in $PWD, output in $OUT: $(nvidia-smi -L | head -n 1)"
nvidia-smi >"$OUT/logs/nvidia-smi.log" 2>&1 || true

# -- 1. the CUDA engine --------------------------------------------------------------
make engine >"$OUT/logs/engine.log" 2>&1 || die "make engine failed: see logs/engine.log"
if [[ ! -x $EG ]]; then
    make install >"$OUT/logs/install.log" 2>&1 || die "make install failed: see logs/install.log"
fi
"$PY" -c 'import sys; from edgeglm.backends.llamacpp import gpu_count; sys.exit(not gpu_count())' ||
    die "llama.cpp was built, but finds no GPU device (see logs/engine.log)"
log "engine: CUDA ($("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)'))"
export EDGEGLM_CACHE_DIR=$WORK/cache # verified GGUFs, converted demo artifacts

cat >"$W/checks.py" <<'PYEOF'
"""gpu_check.sh's checks on what the commands printed; exit 1 with the reason on failure."""
import json
import sys
from pathlib import Path

MiB = 1 << 20
PLACED = ("n_gpu_layers", "main_gpu", "tensor_split", "tensor_overrides", "type_k", "type_v")


def load(path):
    return json.loads(Path(path).read_text())


def fail(why):
    sys.exit(f"check failed: {why}")


def plan_run(plan_path, dry_path, run_path):
    """The plan offloads, --dry-run prints its launch spec, and run loads that spec."""
    plan, dry, ran = load(plan_path), load(dry_path), load(run_path)
    launch = plan["launch"]
    if not plan["fits"] or launch is None:
        fail(f"{plan_path}: the plan does not fit")
    # threads follow other programs' load at each probe: the rest must be equal
    if {**dry, "n_threads": 0} != {**launch, "n_threads": 0}:
        fail(f"run --dry-run {dry} is not the plan's launch {launch}")
    got = {k: ran["settings"][k] for k in PLACED}
    if got != {k: launch[k] for k in PLACED}:
        fail(f"run loaded {got}, the plan says {launch}")
    if launch["n_gpu_layers"] == 0 or ran["device"] != "gpu":
        fail(f"plan n_gpu_layers {launch['n_gpu_layers']}, run device {ran['device']}")
    print(f"plan = dry-run = run: -ngl {launch['n_gpu_layers']}, device {ran['device']}")


def ran(run_path, ngl, want):
    """`edgeglm run --json` loaded on the GPU with these layers; ``want`` "yes": and
    with --cpu-moe's overrides (the experts in RAM)."""
    r = load(run_path)
    s = r["settings"]
    kept = [o for o in s["tensor_overrides"] if o["device"] == "CPU" and "exps" in o["pattern"]]
    if r["device"] != "gpu" or s["n_gpu_layers"] != int(ngl) or bool(kept) != (want == "yes"):
        fail(f"run loaded -ngl {s['n_gpu_layers']} with {s['tensor_overrides']} on {r['device']}")
    print(f"run: -ngl {s['n_gpu_layers']}, overrides {s['tensor_overrides']}, {r['device']}")


def small_profile(gguf, out):
    """This machine, one GPU with a third of the VRAM the plan needs: a split plan."""
    from edgeglm.hardware import load_profile, probe
    from edgeglm.planner.planner import make_plan
    from edgeglm.planner.policy import GPU_MARGIN_BYTES
    from edgeglm.planner.sources import open_model

    hw = probe(bandwidth=False)
    need = make_plan(open_model(gguf), hw).to_dict()["memory"]["devices"]
    gpu = sum(d["total_bytes"] for d in need if d["device"] != "CPU")
    d = hw.to_dict()
    d["gpus"] = d["gpus"][:1]
    d["gpus"][0]["memory_free_bytes"] = GPU_MARGIN_BYTES + gpu // 3
    Path(out).write_text(json.dumps(d, indent=2))
    plan = make_plan(open_model(gguf), load_profile(Path(out)))
    if plan.placement is None or plan.placement.strategy != "gpu_partial":
        fail(f"the small-VRAM profile plans {plan.placement}, not a partial offload")
    print(plan.placement.n_gpu_layers)


def rows(report_path, device, gate, provider=""):
    """Every row ran where asked; ``gate``: the model's VRAM within 10% of the plan's."""
    rep = load(report_path)
    bad = []
    for r in rep["rows"]:
        ngl = (r["launch"] or {}).get("n_gpu_layers")
        model, plan = r["vram_model_bytes"], r["vram_planned_bytes"]
        off = None if not model or not plan else (model - plan) / plan
        line = (
            f"{r['label']:<28} {r['backend']:<9} {r['device']:<5} {r['provider'] or '':<22} "
            f"ngl {ngl!s:<4} decode {r['decode_tps']['median']:8.1f} t/s  VRAM "
            f"{_mib(r['vram_bytes'])} model {_mib(model)} plan {_mib(plan)} "
            f"({'–' if off is None else f'{off:+.1%}'})  roofline {r['roofline_note']}"
        )
        print(line)
        with open(SUMMARY, "a") as f:
            f.write(f"row  {Path(report_path).stem}: {line}\n")
        if r["device"] != device:
            bad.append(f"{r['label']}: device {r['device']}, asked {device}")
        if provider and r["provider"] != provider:
            bad.append(f"{r['label']}: provider {r['provider']}, asked {provider}")
        if r["backend"] == "llama.cpp" and not (r["roofline_note"] or "").startswith(device):
            bad.append(f"{r['label']}: roofline '{r['roofline_note']}' is not for {device}")
        if device == "cpu" and r["vram_bytes"] not in (0, None):
            bad.append(f"{r['label']}: a CPU row holds {_mib(r['vram_bytes'])} of VRAM")
        if device != "cpu" and r["vram_model_bytes"] is None:
            bad.append(f"{r['label']}: VRAM not measured ({r['vram_note']})")
        if gate == "gate" and (off is None or abs(off) > 0.10):
            bad.append(f"{r['label']}: model VRAM {_mib(model)} vs planned {_mib(plan)}")
    if bad:
        fail("; ".join(bad))


def _mib(v):
    return "–" if v is None else f"{v / MiB:.0f} MiB"


SUMMARY = Path(__file__).parents[1] / "summary.txt"
cmd, *args = sys.argv[1:]
{"plan-run": plan_run, "ran": ran, "small-profile": small_profile, "rows": rows}[cmd](*args)
PYEOF

# -- 2. the models ----------------------------------------------------------------------
LAYERS=${SYNTHETIC_LAYERS:-24}
SYN=$WORK/synthetic-$LAYERS-Q4_K_M.gguf
MOE=$WORK/glm4_moe-Q8_0.gguf
if [[ ! -f $SYN ]]; then
    check synthetic-checkpoint "$PY" benchmarks/synthetic.py "$WORK/synthetic-$LAYERS" \
        --layers "$LAYERS"
    check convert-synthetic "$EG" convert "$WORK/synthetic-$LAYERS" -o "$SYN" --quant Q4_K_M
fi
if [[ ! -f $MOE ]]; then
    check convert-moe "$EG" convert tests/fixtures/hf/glm4_moe -o "$MOE" --quant Q8_0
fi
[[ -f $SYN && -f $MOE ]] || die "conversion failed: see logs/"

# -- 3. plan, dry run, run ---------------------------------------------------------------
for name in synthetic moe; do
    if [[ $name == moe ]]; then gguf=$MOE; else gguf=$SYN; fi
    check "plan-$name" sh -c "'$EG' plan '$gguf' --json >'$W/$name.plan.json'"
    check "dry-run-$name" sh -c "'$EG' run '$gguf' --dry-run --json >'$W/$name.dry.json'"
    check "run-$name" sh -c "'$EG' run '$gguf' -p 'Hello, GLM.' -n 16 --json >'$W/$name.run.json'"
    check "plan-is-what-runs-$name" pycheck plan-run "$W/$name."{plan,dry,run}.json
done
check run-moe-experts-in-ram sh -c \
    "'$EG' run '$MOE' --cpu-moe -p 'Hello, GLM.' -n 16 --json >'$W/moe-cpu-moe.run.json'"
NGL_MOE=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["launch"]["n_gpu_layers"])' \
    "$W/moe.plan.json" 2>/dev/null || echo 0)
check ran-moe-experts-in-ram pycheck ran "$W/moe-cpu-moe.run.json" "$NGL_MOE" yes

# -- 4. a split placement --------------------------------------------------------------------
check small-vram-profile sh -c "'$PY' '$W/checks.py' small-profile '$SYN' '$W/small-vram.json' >'$W/split.ngl'"
if [[ -s $W/split.ngl ]]; then
    NGL=$(cat "$W/split.ngl")
    check run-split sh -c "'$EG' run '$SYN' -ngl $NGL -p 'Hello, GLM.' -n 16 --json >'$W/split.run.json'"
    check ran-split pycheck ran "$W/split.run.json" "$NGL" no
fi

# -- 5. bench rows ----------------------------------------------------------------------------
bench() { # NAME MODEL ARGS...: a report at $OUT/bench-NAME.{json,csv,md,svg}; MODEL "": demo
    local name=$1 model=()
    [[ -n $2 ]] && model=("$2")
    shift 2
    check "bench-$name" "$EG" bench ${model[@]+"${model[@]}"} --repeat 1 -o "$OUT/bench-$name.json" "$@"
}
bench synthetic-cpu "$SYN" --device cpu
bench synthetic-gpu "$SYN" --device gpu
bench synthetic-auto "$SYN" --device auto
bench synthetic-split "$SYN" --device auto --hardware "$W/small-vram.json"
bench moe-cpu "$MOE" --device cpu
bench moe-gpu "$MOE" --device gpu
check rows-synthetic-cpu pycheck rows "$OUT/bench-synthetic-cpu.json" cpu -
check rows-synthetic-gpu pycheck rows "$OUT/bench-synthetic-gpu.json" gpu gate
check rows-synthetic-auto pycheck rows "$OUT/bench-synthetic-auto.json" gpu gate
check rows-synthetic-split pycheck rows "$OUT/bench-synthetic-split.json" split gate
check rows-moe-cpu pycheck rows "$OUT/bench-moe-cpu.json" cpu -
check rows-moe-gpu pycheck rows "$OUT/bench-moe-gpu.json" gpu - # tiny: fixed costs dominate

# ONNX rows (the demo model at int4; its quality reference is a llama.cpp row)
ONNX=(--backends onnx --quants int4)
bench onnx-cpu "" "${ONNX[@]}" --device cpu
check rows-onnx-cpu "$PY" - "$OUT/bench-onnx-cpu.json" <<'PYEOF'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
onnx = [r for r in rows if r["backend"] == "onnx"]
assert onnx and all(r["provider"] == "CPUExecutionProvider" for r in onnx), onnx
assert all(r["device"] == "cpu" for r in rows), [r["device"] for r in rows]
PYEOF
if "$PY" -c 'import sys; from edgeglm.backends.onnx import usable_providers as u
sys.exit("CUDAExecutionProvider" not in u())'; then
    bench onnx-gpu "" "${ONNX[@]}" --device gpu
    check rows-onnx-gpu "$PY" - "$OUT/bench-onnx-gpu.json" <<'PYEOF'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
onnx = [r for r in rows if r["backend"] == "onnx"]
assert onnx and all(r["provider"] == "CUDAExecutionProvider" for r in onnx), onnx
assert all(r["device"] == "gpu" and r["vram_model_bytes"] for r in rows), rows
PYEOF
else
    check onnx-gpu-refused sh -c "'$EG' bench --backends onnx --quants int4 --device gpu \
        2>'$W/onnx-gpu.err'; test \$? = 2 && test \$(wc -l <'$W/onnx-gpu.err') = 1 &&
        grep -q 'ONNX Runtime has no working GPU provider' '$W/onnx-gpu.err'"
fi

log "done in $SECONDS s; summary: $OUT/summary.txt"
cat "$OUT/summary.txt" >&2
if ((FAILED)); then exit 1; fi
