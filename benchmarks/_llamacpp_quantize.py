"""llama.cpp's quantizer (llama_model_quantize, what llama-quantize runs).

Usage: _llamacpp_quantize.py IN.gguf OUT.gguf FTYPE_NAME THREADS
"""

from __future__ import annotations

import ctypes
import sys

import llama_cpp

src, dst, ftype_name, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name}")
params.nthread = threads
sys.exit(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))
