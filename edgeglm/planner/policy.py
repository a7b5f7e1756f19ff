"""The planner's policy, as data. Each number says where it comes from.

Change a rule here, not in the planner's code: the functions in planner.py
only combine these tables.
"""

from __future__ import annotations

# Quant candidates when converting a checkpoint, best quality first. Order
# and the Q4_K_M "balanced" default follow llama.cpp's quantize tool
# (tools/quantize/README.md perplexity table); IQ2/IQ1 need an imatrix.
QUANT_LADDER: tuple[str, ...] = (
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q4_K_M",
    "IQ4_XS",
    "Q3_K_M",
    "Q2_K",
    "IQ2_M",
    "IQ1_M",
)
# Below this, quality drops noticeably: used only when nothing better fits.
QUALITY_FLOOR = "Q4_K_M"
# Rough bits per weight of llama.cpp's mixes on GLM-sized models, for
# suggestions about GGUFs we cannot re-size exactly (a GGUF has one quant).
NOMINAL_BPW: dict[str, float] = {
    "Q8_0": 8.5,
    "Q6_K": 6.6,
    "Q5_K_M": 5.7,
    "Q4_K_M": 4.9,
    "IQ4_XS": 4.3,
    "Q3_K_M": 3.9,
    "Q2_K": 3.0,
    "IQ2_M": 2.7,
    "IQ1_M": 1.8,
}

# Context: llama.cpp's --fit never goes below 4096 tokens (common/common.h
# fit_params_min_ctx), and neither do we. Without --ctx we stop at 32k even
# when more fits: KV memory grows linearly and most chats never use it.
MIN_CTX = 4096
DEFAULT_MAX_CTX = 32768
# A quant that fits only by cutting the context below this ranks after one
# that keeps it: a long system prompt plus a document needs ~16k tokens.
GOOD_CTX = 16384

# Memory left unplanned. GPUs: llama.cpp's --fit keeps 1 GiB free per device
# (common/common.h fit_params_target) for the driver context and scratch.
# RAM: the OS and the rest of the user's programs keep running.
GPU_MARGIN_BYTES = 1 << 30
RAM_MARGIN_FRACTION = 0.05
RAM_MARGIN_MIN_BYTES = 1 << 30
# macOS lets Metal wire about 2/3 of RAM on machines up to 36 GB and 3/4
# above (MTLDevice.recommendedMaxWorkingSetSize).
APPLE_WORKING_SET = ((36 << 30, 2 / 3), (1 << 62, 3 / 4))

# Decode speed: a plan's ceiling is memory bandwidth / weight bytes read per
# token. llama.cpp reaches roughly 60-70% of it, so a 15 tok/s ceiling is
# about 10 tok/s of text: faster than people read. Above that, spend memory
# on quality; below it, on speed.
TARGET_CEILING_TPS = 15.0
# Below this ceiling a chat feels broken (under ~3 tok/s of real text): warn.
SLOW_CEILING_TPS = 5.0

# Threads: llama.cpp's default is the physical core count (hyper-threads
# share the memory bandwidth decode is bound by). Past ~32 threads decode
# gains nothing on one socket and loses to cross-socket traffic.
MAX_THREADS = 32
# With every layer on the GPU, CPU threads only feed it.
GPU_ONLY_THREADS = 4
# Cores other programs keep fully busy are not ours: llama.cpp's threads meet
# at a barrier after every graph node, so one thread sharing a core stalls
# them all (measured here: a 2-core machine with 1.5 cores taken by a training
# job decoded 10-50x slower on 2 threads than on 1).

# Placement strategies, fastest first; the planner takes the first that fits.
STRATEGIES: tuple[str, ...] = ("gpu_full", "unified", "gpu_moe_split", "gpu_partial", "cpu")
STRATEGY_LABELS: dict[str, str] = {
    "gpu_full": "everything on the GPU",
    "unified": "everything on the GPU, in unified memory",
    "gpu_moe_split": "attention and shared weights on the GPU, routed experts in RAM",
    "gpu_partial": "some layers on the GPU, the rest on the CPU",
    "cpu": "CPU only",
}

# KV cache types to try, in order: f16 is llama.cpp's default; q8_0 halves the
# cache at a negligible quality cost (and needs flash attention for V).
KV_TYPES: tuple[str, ...] = ("f16", "q8_0")

# ggml type ids (ggml.h enum ggml_type) for llama_cpp.Llama(type_k=, type_v=).
GGML_TYPE_IDS: dict[str, int] = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 8, "bf16": 30}

# ONNX Runtime providers that beat llama.cpp's CPU path when llama.cpp has no
# GPU backend here; CPUExecutionProvider alone never does.
ORT_ACCELERATED_PROVIDERS: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
    "OpenVINOExecutionProvider",
    "QNNExecutionProvider",
)
