"""Build a small GLM-4-style byte-level BPE tokenizer and its Hugging Face files.

Shared by ``scripts/train_demo_model.py`` (which trains it on the demo corpus and
ships it with the demo model) and ``tests/fixtures/make_fixtures.py`` (which copies
the demo model's files, or rebuilds them here when the demo model is absent).

Everything that makes a tokenizer "GLM-4 shaped" lives here, so that converters
see the same structure as in a real GLM-4-0414 / GLM-4.5 checkpoint:

* the exact GLM-4 pre-tokenizer: a ``Split`` on GLM's regex followed by a
  ``ByteLevel`` step that does not split again (``use_regex=False``);
* a BPE model with ``ignore_merges=True``, which llama.cpp's ``glm4``
  pre-tokenizer type assumes (a word found whole in the vocabulary is emitted
  as one token without running the merges);
* all 256 byte symbols in the base alphabet, so any UTF-8 text (Chinese
  included) round-trips;
* the GLM special tokens appended at the end of the vocabulary in GLM's order;
* no normalizer and no post-processor: GLM adds ``[gMASK]<sop>`` through the
  chat template, never through the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

#: Size of the whole vocabulary, special tokens included.
DEFAULT_VOCAB_SIZE = 6144

#: GLM-4's special tokens, in the order GLM-4 appends them after the BPE vocabulary.
GLM_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<think>",
    "</think>",
)

#: Tokens that end an assistant turn (GLM's generation_config ``eos_token_id``).
GLM_STOP_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|user|>", "<|observation|>")

#: The pre-tokenization regex of GLM-4's tokenizer.json, verbatim.
GLM4_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: A faithful simplification of GLM-4-0414's chat template: the tool-calling
#: preamble is left out, everything else (system messages first, roles,
#: assistant ``metadata``, observation turns, the generation prompt) is kept.
GLM4_CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for msg in messages if msg.role == 'system' %}<|system|>\n"
    "{{ msg.content }}"
    "{%- endfor %}"
    "{%- for message in messages if message.role != 'system' %}"
    "{%- set role = message['role'] %}"
    "{%- set content = message['content'] %}"
    "{%- set meta = message.get('metadata', '') %}"
    "{%- if role == 'user' %}<|user|>\n"
    "{{ content }}"
    "{%- elif role == 'assistant' and not meta %}<|assistant|>\n"
    "{{ content }}"
    "{%- elif role == 'assistant' and meta %}<|assistant|>{{ meta }}\n"
    "{{ content }}"
    "{%- elif role == 'observation' %}<|observation|>\n"
    "{{ content }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def glm4_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Return GLM-4's pre-tokenizer: regex split, then byte-level mapping only."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GLM4_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )


def train_glm_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Train a byte-level BPE on ``texts`` and append GLM's special tokens.

    The BPE part gets ``vocab_size - len(GLM_SPECIAL_TOKENS)`` entries so that the
    special tokens, added afterwards, land at the very end of the vocabulary as in
    GLM-4 (``<|endoftext|>`` first).
    """
    tokenizer = Tokenizer(models.BPE(ignore_merges=True))
    tokenizer.pre_tokenizer = glm4_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(GLM_SPECIAL_TOKENS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer = _with_ignore_merges(tokenizer)
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in GLM_SPECIAL_TOKENS]
    )
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(
            f"tokenizer has {tokenizer.get_vocab_size()} entries, expected {vocab_size}: "
            "the corpus is too small to learn enough merges"
        )
    return tokenizer


def _with_ignore_merges(tokenizer: Tokenizer) -> Tokenizer:
    """Make sure the trained BPE model keeps ``ignore_merges=True``.

    The trainer rebuilds the model's vocabulary and merges; going through the JSON
    form pins the flag (and the absence of a normalizer / post-processor) whatever
    the ``tokenizers`` version does with the model's other fields.
    """
    data = json.loads(tokenizer.to_str())
    data["model"]["ignore_merges"] = True
    data["model"]["byte_fallback"] = False
    data["normalizer"] = None
    data["post_processor"] = None
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Map each GLM special token to its id in ``tokenizer``."""
    ids: dict[str, int] = {}
    for token in GLM_SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise KeyError(f"special token {token!r} missing from the tokenizer")
        ids[token] = token_id
    return ids


def tokenizer_config(tokenizer: Tokenizer, model_max_length: int) -> dict[str, Any]:
    """The ``tokenizer_config.json`` content, laid out like GLM-4-0414's."""
    ids = special_token_ids(tokenizer)
    added = {
        str(token_id): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token, token_id in ids.items()
    }
    return {
        "added_tokens_decoder": added,
        "additional_special_tokens": list(GLM_SPECIAL_TOKENS[1:]),
        "chat_template": GLM4_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "do_lower_case": False,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": model_max_length,
        "padding_side": "left",
        "remove_space": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def special_tokens_map() -> dict[str, Any]:
    """The ``special_tokens_map.json`` content."""
    return {
        "additional_special_tokens": list(GLM_SPECIAL_TOKENS[1:]),
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }


def save_tokenizer_files(tokenizer: Tokenizer, out_dir: Path, model_max_length: int) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config(tokenizer, model_max_length))
    _write_json(out_dir / "special_tokens_map.json", special_tokens_map())


TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def render_chat(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False) -> str:
    """Render ``messages`` with the GLM chat template, as ``apply_chat_template`` does.

    The environment mirrors transformers' (sandboxed, ``trim_blocks`` and
    ``lstrip_blocks``), so training text is byte-identical to what
    ``tokenizer.apply_chat_template(..., tokenize=False)`` produces.
    """
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(GLM4_CHAT_TEMPLATE)
    return template.render(messages=list(messages), add_generation_prompt=add_generation_prompt)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
