"""Run llama.cpp's own convert_hf_to_gguf.py (from the llama-cpp-python sdist).

Synthetic checkpoints carry EdgeGLM's small GLM-4-style tokenizer, whose
vocabulary hash is not in llama.cpp's table of known pre-tokenizers; we tell
it the answer ("glm4", the regex is GLM-4's) instead of letting it refuse.
Nothing else is changed. Usage: _llamacpp_convert.py LLAMA_CPP_DIR ARGS...
"""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

root = Path(sys.argv[1])
sys.path.insert(0, str(root))
sys.path.insert(1, str(root / "gguf-py"))
# from the llama.cpp tree added above (not installed, so looked up at run time)
base = importlib.import_module("conversion.base")
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "glm4"
sys.argv = [str(root / "convert_hf_to_gguf.py"), *sys.argv[2:]]
runpy.run_path(str(root / "convert_hf_to_gguf.py"), run_name="__main__")
