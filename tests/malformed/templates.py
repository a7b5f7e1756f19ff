"""Chat-template bombs: GGUFs whose ``tokenizer.chat_template`` must be refused.

Jinja's sandbox stops escapes (no ``__class__``, no file access), not
exhaustion: each template here is harmless to the sandbox and still hangs,
eats memory, crashes or fails to parse. Every case is the fixture's GGUF with
only its chat template replaced (written with the ``gguf`` package, as
``gguf_new_metadata.py`` does), so the model itself loads fine and the
template is the only fault.

``build_template_cases(folder)`` returns ``{case: path}``; every case expects
exit 4 (the model file's template is broken), one line on stderr, within a
bounded time and memory.
"""

from __future__ import annotations

from pathlib import Path

import gguf
from helpers import HF_FIXTURES

TEMPLATE_KEY = "tokenizer.chat_template"

# 5 GiB: the string must be refused by the worker's memory limit, never allocated.
_FIVE_GIB = 5 * 2**30

TEMPLATES: dict[str, str] = {
    # 10**10 iterations: nothing is allocated, it just never ends.
    "nested_loops": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    ),
    # Jinja folds constant expressions while compiling, so this allocates at
    # compile time (llama-cpp-python compiles every GGUF template at load).
    "string_repetition": "{{ 'x' * " + str(_FIVE_GIB) + " }}",
    # the sandbox's safe_range raises OverflowError above 100,000 items
    "huge_range": "{% for i in range(10**9) %}{{ i }}{% endfor %}",
    "syntax_error": "{% for m in messages %}{{ m.content }",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "raise_exception": "{{ raise_exception('this template refuses every conversation') }}",
    # an integer with 10**10 digits, also folded at compile time: minutes of CPU
    # (Jinja's ** is left-associative: without the parentheses it is a small 10**100)
    "integer_power": "{{ 10 ** (10 ** 10) }}",
    # 10 GB of output in 100 KB pieces: no single allocation is large
    "output_flood": "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
}

# What the one-line error says for each (a regular expression).
EXPECTED: dict[str, str] = {
    "nested_loops": "did not finish within",
    "string_repetition": "more memory than",
    "huge_range": "Range too big",
    "syntax_error": "syntax error on line 1",
    "recursion": "recurses without end",
    "raise_exception": "refused the conversation: this template refuses every conversation",
    # the integer grows past the memory limit or the clock runs out first
    "integer_power": "did not finish within|more memory than",
    "output_flood": "output passed the limit",
}


def source_gguf(folder: Path) -> Path:
    """The fixture GGUF every case starts from (GLM-4 tiny, Q8_0), made once per folder."""
    from edgeglm.converters.gguf.convert import convert

    out = folder / "source.gguf"
    if not out.exists():
        convert(HF_FIXTURES / "glm4", out, "Q8_0")
    return out


def with_chat_template(src: Path, dst: Path, template: str | None) -> Path:
    """A copy of ``src`` whose chat template is ``template`` (None: no template)."""
    reader = gguf.GGUFReader(src)
    arch = str(reader.get_field(gguf.Keys.General.ARCHITECTURE).contents())  # type: ignore[union-attr]
    writer = gguf.GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    align = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if align is not None:
        writer.data_alignment = int(align.contents())
    for field in reader.fields.values():
        # the writer adds the architecture itself; GGUF.* are the reader's virtual fields
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name.startswith(TEMPLATE_KEY):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
    if template is not None:
        writer.add_chat_template(template)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    return dst


def build_template_cases(folder: Path) -> dict[str, Path]:
    """One GGUF per template bomb, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    src = source_gguf(folder)
    return {
        name: with_chat_template(src, folder / f"template-{name}.gguf", text)
        for name, text in TEMPLATES.items()
    }


def llama_load(paths: list[str]) -> list[str | None]:
    """In a child process: load each GGUF the way EdgeGLM does; their templates, as read."""
    from edgeglm.backends.llamacpp import LlamaCppModel

    out = []
    for path in paths:
        m = LlamaCppModel(Path(path), n_ctx=64)
        out.append(m.chat_template())
        m.close()
    return out
