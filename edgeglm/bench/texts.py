"""The held-out texts quality is measured on, when ``--text`` is not given.

- heldout.txt: English prose about running and quantizing language models,
  for models trained on general text.
- demo_heldout.txt: for the bundled demo model, which was trained on Python's
  documentation and standard library only (English prose is as foreign to it
  as a language it never saw: its perplexity there is in the thousands). It
  is four documents from packages and topics that scripts/train_demo_model.py
  holds out of training (``split_heldout``): the "Identifiers (Names)"
  reference topic and the module stubs of colorsys, stat and gettext, without
  the chat markers; 1,102 tokens, of which bench scores the first 1,024.

A benchmark of only the demo model (its checkpoint, GGUFs converted from it,
ONNX exports carrying its tokenizer) uses demo_heldout.txt; anything else
heldout.txt. The report's settings name the text used.
"""

from __future__ import annotations

from pathlib import Path

from edgeglm.artifacts import Artifact

HELDOUT = Path(__file__).with_name("heldout.txt")
DEMO_HELDOUT = Path(__file__).with_name("demo_heldout.txt")


def is_demo(art: Artifact) -> bool:
    """Whether ``art`` is the bundled demo model, or was converted from it."""
    from edgeglm.models import default_model

    demo = default_model().resolve()
    if art.kind == "hf":
        return art.path.resolve() == demo
    if art.kind == "gguf":
        from edgeglm.gguf_file import read_gguf

        return bool(read_gguf(art.path).get("general.source.url") == demo.as_uri())
    try:  # an ONNX export carries its checkpoint's tokenizer, byte for byte
        return (art.path / "tokenizer.json").read_bytes() == (demo / "tokenizer.json").read_bytes()
    except OSError:
        return False


def default_text(refs: list[Artifact]) -> Path:
    return DEMO_HELDOUT if refs and all(is_demo(a) for a in refs) else HELDOUT
