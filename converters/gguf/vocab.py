"""GLM's byte-level BPE tokenizer, from tokenizer.json to GGUF metadata.

llama.cpp re-implements tokenization, so the GGUF must name a pre-tokenizer
whose regex is exactly the one in tokenizer.json. Instead of llama.cpp's
approach (hash the output of the tokenizer on a probe text and look the hash
up in a table), we read the regex itself: a GLM-family fine-tune with a new
vocabulary converts, and a tokenizer with a different regex is refused
instead of silently mis-tokenizing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGUFWriter

from edgeglm.checkpoint.hf import model_file, read_json
from edgeglm.errors import CheckpointError

# GLM-4's split regex, as written in its tokenizer.json; llama.cpp implements
# it as LLAMA_VOCAB_PRE_TYPE_CHATGLM4 (pre names "chatglm-bpe", "glm4").
GLM4_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# gguf TokenType values
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int] = field(default_factory=dict)
    chat_template: str | None = None

    def write(self, w: GGUFWriter) -> None:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        w.add_token_types(self.types)
        w.add_token_merges(self.merges)
        setters = {
            "bos": w.add_bos_token_id,
            "eos": w.add_eos_token_id,
            "eot": w.add_eot_token_id,
            "eom": w.add_eom_token_id,
            "unk": w.add_unk_token_id,
            "pad": w.add_pad_token_id,
        }
        for role, tid in self.special_ids.items():
            setters[role](tid)
        # The chat template itself starts with [gMASK]<sop>; a BOS would double it.
        w.add_add_bos_token(False)
        w.add_add_eos_token(False)
        if self.chat_template:
            w.add_chat_template(self.chat_template)


def _split_regexes(node: Any) -> list[str]:
    """Every Split regex in a (possibly nested) pre_tokenizer definition."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "Split" and isinstance(node.get("pattern"), dict):
            regex = node["pattern"].get("Regex")
            if isinstance(regex, str):
                found.append(regex)
        for v in node.values():
            found.extend(_split_regexes(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(_split_regexes(v))
    return found


def load_vocab(root: Path, vocab_size: int, specials: dict[str, str]) -> Vocab:
    path = model_file(root, "tokenizer.json")
    if not path.is_file():
        raise CheckpointError(
            f"{root}: no tokenizer.json. GLM checkpoints that ship only a Python tokenizer "
            "(tokenization_chatglm.py) need remote code to read it, which EdgeGLM never runs."
        )
    tj = read_json(path)
    try:
        return _vocab(root, path, tj, vocab_size, specials)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        # A tokenizer.json of the wrong shape (a list where a map belongs, an id
        # that is not a number): its own fault, said without echoing it.
        raise CheckpointError(
            f"{path}: not a tokenizer.json EdgeGLM can read ({type(e).__name__})"
        ) from e


def _vocab(
    root: Path, path: Path, tj: dict[str, Any], vocab_size: int, specials: dict[str, str]
) -> Vocab:
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise CheckpointError(f"{path}: tokenizer model is {model.get('type')!r}, expected BPE")
    regexes = _split_regexes(tj.get("pre_tokenizer"))
    if regexes != [GLM4_REGEX]:
        raise CheckpointError(
            f"{path}: pre-tokenizer regex is not GLM-4's, so llama.cpp would tokenize "
            f"differently from transformers (found {regexes!r})"
        )
    pre = "glm4" if model.get("ignore_merges") else "chatglm-bpe"

    by_id: dict[int, tuple[str, int]] = {}
    for tok, tid in model.get("vocab", {}).items():
        by_id[int(tid)] = (tok, NORMAL)
    for added in tj.get("added_tokens", []):
        tid, text = int(added["id"]), str(added["content"])
        by_id[tid] = (text, CONTROL if added.get("special") else USER_DEFINED)
    if by_id and max(by_id) >= vocab_size:
        raise CheckpointError(
            f"{path}: token id {max(by_id)} is outside config vocab_size={vocab_size}"
        )
    tokens, types = [], []
    for i in range(vocab_size):
        tok, typ = by_id.get(i, (f"[PAD{i}]", UNUSED))
        tokens.append(tok)
        types.append(typ)

    merges = []
    for m in model.get("merges", []):
        merges.append(" ".join(m) if isinstance(m, list) else str(m))

    ids = {text: i for i, (text, _) in by_id.items()}
    special_ids = {}
    for role, text in specials.items():
        if text in ids:
            special_ids[role] = ids[text]
    if "eos" not in special_ids:
        raise CheckpointError(f"{path}: no {specials.get('eos')!r} token; not a GLM vocabulary")
    return Vocab(tokens, types, merges, pre, special_ids, _chat_template(root))


def _chat_template(root: Path) -> str | None:
    cfg_path = model_file(root, "tokenizer_config.json")
    if cfg_path.is_file():
        cfg = read_json(cfg_path)
        tmpl = cfg.get("chat_template")
        if isinstance(tmpl, str):
            return tmpl
        if isinstance(tmpl, list):  # [{"name": "default", "template": ...}, ...]
            for t in tmpl:
                if isinstance(t, dict) and t.get("name") == "default":
                    return str(t.get("template"))
    jinja = model_file(root, "chat_template.jinja")
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{jinja}: not readable UTF-8 text") from e
    return None
