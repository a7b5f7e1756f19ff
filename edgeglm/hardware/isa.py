"""Instruction-set features: the raw CPU flags that matter, and the names people use for them."""

from __future__ import annotations

# ISA features that matter to llama.cpp / ONNX Runtime kernels, as Linux names
# them in /proc/cpuinfo "flags" (x86) or "Features" (Arm).
ISA_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)
# Raw flag -> the family name people (and llama.cpp's build log) use. Order is
# display order; a family shows once however many of its flags are present.
ISA_FAMILIES = (
    ("avx", "AVX"),
    ("avx2", "AVX2"),
    ("fma", "FMA"),
    ("f16c", "F16C"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512f", "AVX512"),
    ("avx512_vnni", "AVX512-VNNI"),
    ("avx512_bf16", "AVX512-BF16"),
    ("amx_tile", "AMX"),
    ("asimd", "NEON"),
    ("asimddp", "DOTPROD"),
    ("i8mm", "I8MM"),
    ("sve", "SVE"),
    ("sve2", "SVE2"),
)


def isa_families(flags: list[str]) -> list[str]:
    have = set(flags)
    return [name for flag, name in ISA_FAMILIES if flag in have]
