"""Train EdgeGLM's small demo model: a real (trained, not random) GLM-4-0414-shaped model.

The demo model ships inside the package (``edgeglm/demo_model``) so that ``edgeglm demo``
can convert and run a GLM checkpoint with no download. It must therefore be small
(well under 25 MB), use the exact GLM-4 layout (``Glm4ForCausalLM``, GLM tokenizer
and chat template), and actually produce sensible text, which a random model does not.

Data is fully offline: Python's own reference topics (``pydoc_data.topics``) and the
standard library's docstrings, signatures and source, read with ``ast`` (never
imported). Every module/topic yields plain documents and multi-turn chat
conversations rendered with the GLM chat template, so the model learns the chat
format and keeps working past the first turns. About 5% of the data is held out *by
package/topic*, so the held-out perplexity measures generalisation to unseen
modules, not memorised lines. The model is compared with a unigram baseline on the
same held-out tokens; an earlier attempt trained briefly on the topics alone did
worse than unigram, hence the large corpus, the held-out tracking and best-checkpoint
selection here.

Run with ``make demo-model`` (``.venv/bin/python scripts/train_demo_model.py``).

The model card (README.md) is written by ``render_card``, bench section
included: after training, the staged model's perplexity is measured as
``edgeglm bench`` measures it (``measure_bench``). torch is imported where it
is used, so the card can be rendered (and tested) without the reference extra.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import math
import os
import pydoc_data.topics
import random
import shutil
import sys
import sysconfig
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from glm_tokenizer import (
    GLM_STOP_TOKENS,
    render_chat,
    save_tokenizer_files,
    special_token_ids,
    train_glm_tokenizer,
)
from tokenizers import Tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "edgeglm" / "demo_model"

SEQ_LEN = 1024
BATCH_SIZE = 4  # small batches: more optimizer steps in the CPU budget
HELDOUT_FRACTION = 0.05
PEAK_LR = 2e-3
MIN_LR_RATIO = 0.1
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0
WARMUP_FRACTION = 0.05
EVAL_TIMES = 8  # periodic held-out evaluations during training
EVAL_SUBSET_SEQS = 24  # held-out sequences used by the periodic evaluations
PROBE_STEPS = 20  # alternately fp32 and bf16 autocast
MAX_ANSWER_CHARS = 1600

KINDS = ("doc", "chat", "code")
FOLLOW_UPS = ("Go on.", "Tell me more.", "Continue, please.", "What else should I know?")
SYSTEM_PROMPTS = (
    "You are a helpful assistant that explains Python.",
    "You answer questions about the Python standard library.",
)

# Top-level names of the stdlib tree that are not library modules worth learning.
SKIPPED_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idle_test",
    "__pycache__",
    "_bundled",
    "lib2to3",
    "turtledemo",
    # pydoc_data/topics.py *is* the reference topics: as code it would leak the held-out
    # topics into training. encodings/ is mostly generated charmap tables.
    "pydoc_data",
    "encodings",
}
#: Source code is there to make the corpus much larger than the training budget, but
#: capped per file so that it does not drown the docs and conversations.
MAX_CODE_CHARS = 5000
#: Each module's questions are asked twice, grouped and phrased differently.
CHAT_PASSES = 2


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Document:
    """One training/evaluation document.

    ``group`` is the split key (top-level package or reference topic): a group is
    entirely in the training split or entirely held out.
    """

    group: str
    kind: str  # one of KINDS
    text: str


@dataclass(frozen=True)
class ApiEntry:
    """A documented module, class or function found in the stdlib source."""

    qualname: str  # e.g. "json.dumps" or "json.JSONEncoder.default"
    signature: str  # e.g. "json.dumps(obj, *, skipkeys=False, ...)"
    docstring: str
    kind: str  # "module", "class" or "function"
    public: bool


def stdlib_sources() -> Iterator[tuple[str, str, Path]]:
    """Yield ``(module_name, group, path)`` for the stdlib's pure-Python modules, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith(("config-", "."))
        )
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            path = Path(dirpath) / filename
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if not parts or (parts[0].startswith("_") and parts[0] != "__future__"):
                continue
            yield ".".join(parts), parts[0], path


def _format_docstring(docstring: str, indent: str) -> str:
    body = docstring.replace('"""', r"\"\"\"")
    lines = body.splitlines()
    if len(lines) == 1:
        return f'{indent}"""{body}"""'
    inner = "\n".join((indent + line) if line.strip() else "" for line in lines)
    return f'{indent}"""{inner.lstrip()}\n{indent}"""'


def extract_api(module: str, tree: ast.Module) -> tuple[list[ApiEntry], str]:
    """Collect documented definitions and render them as a docstring stub file.

    The stub (signatures plus docstrings, bodies dropped) is the "plain docs" form of
    a module; the entries feed the chat conversations.
    """
    entries: list[ApiEntry] = []
    stub: list[str] = [f"# Module {module}"]
    module_doc = ast.get_docstring(tree)
    if module_doc:
        entries.append(ApiEntry(module, module, module_doc, "module", True))
        stub.append(_format_docstring(module_doc, ""))

    def visit(body: Sequence[ast.stmt], prefix: str, indent: str, public: bool) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = ast.unparse(node.args)
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                qual = f"{prefix}.{node.name}"
                is_public = public and (not node.name.startswith("_") or node.name == "__init__")
                entries.append(ApiEntry(qual, f"{qual}({args})", doc, "function", is_public))
                keyword = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
                stub.append(f"\n{indent}{keyword} {node.name}({args}):")
                stub.append(_format_docstring(doc, indent + "    "))
            elif isinstance(node, ast.ClassDef):
                bases = ", ".join(ast.unparse(b) for b in node.bases)
                doc = ast.get_docstring(node)
                qual = f"{prefix}.{node.name}"
                is_public = public and not node.name.startswith("_")
                header = (
                    f"\n{indent}class {node.name}({bases}):"
                    if bases
                    else (f"\n{indent}class {node.name}:")
                )
                stub.append(header)
                if doc:
                    signature = f"class {qual}({bases})"
                    entries.append(ApiEntry(qual, signature, doc, "class", is_public))
                    stub.append(_format_docstring(doc, indent + "    "))
                else:
                    stub.append(f"{indent}    ...")
                visit(node.body, qual, indent + "    ", is_public)

    visit(tree.body, module, "", True)
    return entries, "\n".join(stub) + "\n"


def _answer(text: str) -> str:
    """Trim an answer to a paragraph boundary so conversations fit several turns."""
    text = text.strip()
    if len(text) <= MAX_ANSWER_CHARS:
        return text
    cut = text.rfind("\n\n", 0, MAX_ANSWER_CHARS)
    if cut < MAX_ANSWER_CHARS // 3:
        cut = text.rfind("\n", 0, MAX_ANSWER_CHARS)
    return text[: max(cut, MAX_ANSWER_CHARS // 3)].rstrip()


def answer_parts(text: str, max_parts: int) -> list[str]:
    """Split a long text at paragraph boundaries into up to ``max_parts`` answers."""
    parts: list[str] = []
    rest = text.strip()
    while rest and len(parts) < max_parts:
        part = _answer(rest)
        parts.append(part)
        rest = rest[len(part) :].strip()
    return parts


def api_question(entry: ApiEntry, rng: random.Random, follow_up: bool) -> str:
    """A user question about an API entry, phrased in a few different ways."""
    name = entry.qualname
    if entry.kind == "module":
        return rng.choice(
            [
                f"What is the `{name}` module for?",
                f"Give me an overview of the `{name}` module.",
                f"What does the Python module `{name}` provide?",
            ]
        )
    if follow_up and rng.random() < 0.4:
        return rng.choice([f"And `{name}`?", f"What about `{name}`?"])
    if entry.kind == "class":
        return rng.choice(
            [f"What is `{name}`?", f"Explain the class `{name}`.", f"What is `{name}` used for?"]
        )
    return rng.choice(
        [
            f"What does `{name}` do?",
            f"Explain `{name}`.",
            f"How do I use `{name}`?",
            f"What is the signature of `{name}`?",
        ]
    )


def api_answer(entry: ApiEntry) -> str:
    if entry.kind == "module":
        return _answer(entry.docstring)
    return f"`{entry.signature}`\n\n{_answer(entry.docstring)}"


def topic_title(key: str, text: str) -> str:
    """The first line of a reference topic, e.g. ``The "for" statement``."""
    first = text.strip().splitlines()[0].strip() if text.strip() else key
    return first.replace('"', "`")


def topic_question(key: str, text: str, rng: random.Random) -> str:
    title = topic_title(key, text)
    lowered = title[0].lower() + title[1:] if title else key
    return rng.choice(
        [
            f"Explain {lowered}.",
            f"Tell me about {lowered}.",
            f"What does the Python language reference say about {lowered}?",
            f"Can you describe {lowered} in Python?",
        ]
    )


def conversations(
    group: str, turns: Sequence[tuple[str, str]], rng: random.Random, whole: bool = False
) -> Iterator[Document]:
    """Cut (question, answer) pairs into multi-turn GLM chat documents of 2-6 turns.

    With ``whole`` all turns form one conversation (follow-ups need their context).
    """
    index = 0
    while index < len(turns):
        size = len(turns) if whole else rng.randint(2, 6)
        chunk = turns[index : index + size]
        index += size
        messages: list[dict[str, str]] = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        for question, answer in chunk:
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": answer})
        # The template already starts with [gMASK]<sop>; <|endoftext|> closes the
        # final assistant turn (a stop token, like <|user|> after earlier turns).
        yield Document(group, "chat", render_chat(messages) + "<|endoftext|>")


def build_corpus(seed: int) -> list[Document]:
    """All documents, in a deterministic order (shuffling happens later)."""
    rng = random.Random(seed)
    docs: list[Document] = []

    for key in sorted(pydoc_data.topics.topics):
        text = pydoc_data.topics.topics[key].strip()
        group = f"topic:{key}"
        docs.append(Document(group, "doc", f"[gMASK]<sop>{text}\n<|endoftext|>"))
        # Topics are long: the first answer gives the start of the topic and each
        # "go on" turn the next part, which teaches the model to continue a
        # conversation across several turns.
        parts = answer_parts(text, max_parts=6)
        turns = [(topic_question(key, text, rng), parts[0])]
        turns += [(rng.choice(FOLLOW_UPS), part) for part in parts[1:]]
        docs.extend(conversations(group, turns, rng, whole=True))

    for module, group, path in stdlib_sources():
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        entries, stub = extract_api(module, tree)
        if entries:
            docs.append(Document(group, "doc", f"[gMASK]<sop>{stub}<|endoftext|>"))
        public = [e for e in entries if e.public]
        for _ in range(CHAT_PASSES):
            rng.shuffle(public)
            turns = [
                (api_question(e, rng, follow_up=i % 6 != 0), api_answer(e))
                for i, e in enumerate(public)
            ]
            docs.extend(conversations(group, turns, rng))
        if source.strip():
            header = f"# Lib/{path.relative_to(sysconfig.get_paths()['stdlib'])}\n"
            code = source_head(source, MAX_CODE_CHARS)
            docs.append(Document(group, "code", f"[gMASK]<sop>{header}{code}<|endoftext|>"))
    return docs


def source_head(source: str, limit: int) -> str:
    """The start of a source file, cut at a line boundary."""
    if len(source) <= limit:
        return source
    return source[: source.rfind("\n", 0, limit) + 1]


def split_heldout(docs: Sequence[Document]) -> tuple[list[Document], list[Document]]:
    """Hold out ~5% of the characters, whole groups at a time.

    Groups are ordered by a fixed hash (independent of ``--seed``), so the held-out
    set is the same for every run and never shares a package or topic with training.
    """
    sizes: dict[str, int] = {}
    for doc in docs:
        sizes[doc.group] = sizes.get(doc.group, 0) + len(doc.text)
    total = sum(sizes.values())
    order = sorted(sizes, key=lambda g: (zlib.crc32(f"edgeglm-heldout:{g}".encode()), g))
    heldout: set[str] = set()
    taken = 0
    for group in order:
        if taken >= HELDOUT_FRACTION * total:
            break
        if sizes[group] > 0.02 * total:  # one huge package would dominate the evaluation
            continue
        heldout.add(group)
        taken += sizes[group]
    train = [d for d in docs if d.group not in heldout]
    held = [d for d in docs if d.group in heldout]
    return train, held


# --------------------------------------------------------------------------- packing


@dataclass
class Packed:
    """Token sequences of SEQ_LEN plus, for each token, the kind of its document."""

    ids: np.ndarray  # [N, SEQ_LEN] int64
    kinds: np.ndarray  # [N, SEQ_LEN] uint8 (index into KINDS)
    total_tokens: int  # before cutting the remainder


def pack(tokenizer: Tokenizer, docs: Sequence[Document], rng: random.Random) -> Packed:
    """Shuffle documents, concatenate their tokens and cut into SEQ_LEN sequences."""
    order = list(docs)
    rng.shuffle(order)
    encodings = tokenizer.encode_batch([d.text for d in order], add_special_tokens=False)
    ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])
    kinds = np.concatenate(
        [
            np.full(len(e.ids), KINDS.index(d.kind), dtype=np.uint8)
            for d, e in zip(order, encodings, strict=True)
        ]
    )
    n = len(ids) // SEQ_LEN
    return Packed(
        ids[: n * SEQ_LEN].reshape(n, SEQ_LEN),
        kinds[: n * SEQ_LEN].reshape(n, SEQ_LEN),
        len(ids),
    )


# --------------------------------------------------------------------------- model


def model_config(tokenizer: Tokenizer) -> Any:
    """GLM-4-0414 layout at demo scale (sizes are multiples of 256 for K-quants)."""
    from transformers import Glm4Config

    ids = special_token_ids(tokenizer)
    return Glm4Config(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=4,
        head_dim=64,
        num_key_value_heads=2,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.5,
        },
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        attention_bias=True,
        initializer_range=0.02,
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids[t] for t in GLM_STOP_TOKENS],
        bos_token_id=None,
        use_cache=True,
    )


def lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to MIN_LR_RATIO of the peak."""
    if step < warmup:
        return PEAK_LR * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return PEAK_LR * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW with no weight decay on norms and biases."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0}],
        lr=PEAK_LR,
        betas=(0.9, 0.95),
        eps=1e-8,
    )


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    lr: float,
    bf16: bool,
) -> float:
    import torch

    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item())


def token_nll(model: torch.nn.Module, seqs: np.ndarray, bf16: bool, batch: int = 4) -> np.ndarray:
    """Negative log-likelihood of every next-token target, shape [N, SEQ_LEN - 1]."""
    import torch

    model.eval()
    out = []
    for start in range(0, len(seqs), batch):
        x = torch.from_numpy(seqs[start : start + batch])
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=x).logits
            logp = torch.log_softmax(logits.float()[:, :-1], dim=-1)
            out.append(-logp.gather(-1, x[:, 1:, None]).squeeze(-1).numpy())
    model.train()
    return np.concatenate(out)


def probe_speed(config: Any, seqs: np.ndarray, seed: int) -> tuple[bool, float]:
    """Time PROBE_STEPS steps on a throwaway model, alternating fp32 and bf16 autocast.

    Returns whether bf16 autocast is faster on this CPU and its seconds per step.
    Alternating the two modes step by step keeps the comparison fair when another
    process competes for the cores; the first two steps of each mode are warm-up.
    """
    import torch
    from transformers import Glm4ForCausalLM

    torch.manual_seed(seed)
    model = Glm4ForCausalLM(config)
    optimizer = make_optimizer(model)
    timings: dict[bool, list[float]] = {False: [], True: []}
    for step in range(PROBE_STEPS):
        bf16 = step % 2 == 1
        batch = torch.from_numpy(seqs[(step * BATCH_SIZE) % len(seqs) :][:BATCH_SIZE])
        start = time.perf_counter()
        train_step(model, optimizer, batch, 1e-4, bf16)
        if step >= 4:
            timings[bf16].append(time.perf_counter() - start)
    fp32 = float(np.median(timings[False]))
    bf16_time = float(np.median(timings[True]))
    print(f"probe: fp32 {fp32:.2f} s/step, bf16 autocast {bf16_time:.2f} s/step", flush=True)
    use_bf16 = bf16_time < fp32
    return use_bf16, min(fp32, bf16_time)


# --------------------------------------------------------------------------- evaluation


def unigram_nll(train: Packed, heldout: np.ndarray, vocab_size: int) -> np.ndarray:
    """Per-target NLL of an add-one-smoothed unigram model fitted on the training split."""
    counts = np.bincount(train.ids.reshape(-1), minlength=vocab_size).astype(np.float64)
    logp = np.log(counts + 1.0) - math.log(counts.sum() + vocab_size)
    nll: np.ndarray = -logp[heldout[:, 1:]]
    return nll


def perplexity(nll: np.ndarray) -> float:
    return float(math.exp(float(nll.mean())))


def chat_sample(model_dir: Path, questions: Sequence[str]) -> list[tuple[str, str]]:
    """Reload the saved model with transformers and answer a few chat questions."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    samples = []
    for question in questions:
        prompt_ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        with torch.no_grad():
            out = model.generate(
                prompt_ids,
                max_new_tokens=96,
                do_sample=False,
                repetition_penalty=1.1,
            )
        answer = tokenizer.decode(out[0, prompt_ids.shape[1] :], skip_special_tokens=True)
        samples.append((question, answer.strip()))
    return samples


# --------------------------------------------------------------------------- outputs


def write_generation_config(out: Path, tokenizer: Tokenizer) -> None:
    ids = special_token_ids(tokenizer)
    config = {
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "eos_token_id": [ids[t] for t in GLM_STOP_TOKENS],
        "pad_token_id": ids["<|endoftext|>"],
    }
    (out / "generation_config.json").write_text(json.dumps(config, indent=2) + "\n")


@dataclass(frozen=True)
class BenchFigures:
    """The demo's perplexity as ``edgeglm bench`` measures it: the F32 GGUF in
    llama.cpp, on the first ``EVAL_TOKENS`` tokens of one text."""

    demo_text: float  # edgeglm/bench/demo_heldout.txt, the demo's own held-out text
    general_text: float  # edgeglm/bench/heldout.txt, English prose (bench --text)


def measure_bench(model_dir: Path) -> BenchFigures:
    """Both figures for the model in ``model_dir``, measured by bench itself
    (its GGUF is converted into a scratch cache, not the user's)."""
    from edgeglm.bench.run import BenchRequest, run_bench
    from edgeglm.bench.texts import DEMO_HELDOUT, HELDOUT

    def ppl(text: Path) -> float:
        request = BenchRequest(models=(str(model_dir),), quants=("F32",), text=text, repeat=1)
        (row,) = run_bench(request).rows
        if row.ppl is None:
            raise RuntimeError(f"bench gave no perplexity for {model_dir} on {text.name}")
        return row.ppl

    saved = os.environ.get("EDGEGLM_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="edgeglm-demo-bench-") as cache:
        os.environ["EDGEGLM_CACHE_DIR"] = cache
        try:
            return BenchFigures(ppl(DEMO_HELDOUT), ppl(HELDOUT))
        finally:
            if saved is None:
                del os.environ["EDGEGLM_CACHE_DIR"]
            else:
                os.environ["EDGEGLM_CACHE_DIR"] = saved


def bench_section(results: Mapping[str, Any], bench: BenchFigures) -> str:
    """Why ``edgeglm bench`` (and ``edgeglm demo``) show another perplexity than
    the held-out set's, with both of bench's figures."""
    from edgeglm.bench.run import EVAL_TOKENS

    kinds = [v["model_ppl"] for v in results["by_kind"].values()]
    general = bench.general_text
    foreign = "in the thousands" if general >= 1000 else f"of {general:,.0f}"
    return f"""### Perplexity in `edgeglm bench`

`edgeglm bench` (and the last stage of `edgeglm demo`) gives another figure,
because it measures something else: one text, not the held-out set. On the
demo model it scores the first {EVAL_TOKENS:,} tokens of
`edgeglm/bench/demo_heldout.txt`, four documents of the held-out split above
(the "Identifiers (Names)" reference topic and the module stubs of `colorsys`,
`stat` and `gettext`, never seen in training), as one sequence without the
chat markers, in llama.cpp:

| text | what | perplexity |
| --- | --- | --- |
| held-out set, {results["heldout_tokens"]:,} targets (above) | bf16 weights in float32, \
transformers | {results["model_ppl"]:.2f} |
| `demo_heldout.txt`, first {EVAL_TOKENS:,} tokens | F32 GGUF, llama.cpp (`edgeglm bench`) | \
{bench.demo_text:.1f} |
| `heldout.txt`, English prose about quantization | F32 GGUF, llama.cpp \
(`edgeglm bench --text`) | {general:,.0f} |

The sample is four documents, so its perplexity is not the set's (by kind, the
set's documents range from {min(kinds):.1f} to {max(kinds):.1f}).
`heldout.txt` is bench's text for general models: English prose, which this
model never saw, hence a perplexity {foreign}; bench uses it for any
model that is not the demo. KL divergence between quants is measured on the
same text as perplexity, and the report's settings name that text.
"""


def render_card(
    results: Mapping[str, Any],
    config: Mapping[str, Any],
    samples: Sequence[tuple[str, str]],
    command: str,
    bench: BenchFigures,
    python: str = sys.version.split()[0],
) -> str:
    """README.md: what the model is, how it was trained and how well it does.
    ``results`` is eval.json's content, ``config`` config.json's."""
    by_kind = results["by_kind"]
    kind_rows = "\n".join(
        f"| {k} | {v['tokens']:,} | {v['model_ppl']:.1f} | {v['unigram_ppl']:.1f} |"
        for k, v in by_kind.items()
    )
    sample_text = "\n\n".join(
        f"**User:** {q}\n\n**Assistant:**\n\n```text\n{a}\n```" for q, a in samples
    )
    params = results["parameters"]
    epochs = results["train_tokens_seen"] / results["train_tokens_available"]
    heads = (
        f"{config['num_attention_heads']} / {config['num_key_value_heads']} / {config['head_dim']}"
    )
    rope, eps, vocab = config["rope_parameters"], config["rms_norm_eps"], config["vocab_size"]
    return f"""---
license: psf-2.0
language: [en]
tags: [glm4, edgeglm, demo]
---

# EdgeGLM demo model

A tiny GLM-4-0414-architecture chat model (`Glm4ForCausalLM`, {params / 1e6:.1f}M parameters,
bf16) trained from scratch on CPU in {results["seconds"] / 60:.0f} minutes, shipped with EdgeGLM so
that `edgeglm demo` can convert and run a real, trained GLM checkpoint offline. It knows a
little about Python and its standard library and speaks GLM's chat format; it is a test
and demo artefact, not a useful assistant.

## Architecture

| field | value |
| --- | --- |
| layers | {config["num_hidden_layers"]} |
| hidden / intermediate | {config["hidden_size"]} / {config["intermediate_size"]} |
| attention heads / KV heads / head_dim | {heads} |
| rotary | partial, factor {rope["partial_rotary_factor"]}, theta {rope["rope_theta"]:g} |
| q/k/v bias | {config["attention_bias"]} |
| norms | RMSNorm, eps {eps:g}, with GLM-4-0414's post-attention / post-MLP norms |
| vocabulary | {vocab} (byte-level BPE, GLM-4 pre-tokenizer, GLM special tokens last) |
| context | {config["max_position_embeddings"]} |
| tied embeddings | {config["tie_word_embeddings"]} |

## Data

Offline only: the Python reference topics (`pydoc_data.topics`) and the standard
library's docstrings, signatures and source (Python {python}, parsed with
`ast`; `pydoc_data` and the generated `encodings` tables left out). Each module/topic
gives plain documents (a stub of signatures + docstrings, the first {MAX_CODE_CHARS}
characters of the source file, the topic text) and multi-turn chat conversations in the
GLM chat format ("What does `json.dumps` do?" answered with the signature and docstring;
long topics continued over "Tell me more." turns). Sequences of {SEQ_LEN} tokens.
About 5% of the data is held out by package/topic: none of the held-out packages or
topics was seen in training.

## Training

AdamW (betas 0.9/0.95, weight decay {WEIGHT_DECAY}), peak LR {PEAK_LR:g} with
{WARMUP_FRACTION:.0%} warmup and cosine decay, gradient clipping {GRAD_CLIP}, batch
{BATCH_SIZE} x {SEQ_LEN} tokens, {results["steps"]} steps, bf16 autocast:
{results["bf16_autocast"]} (chosen by a {PROBE_STEPS}-step speed probe), 2 CPU threads,
seed {results["seed"]}. Training tokens seen: {results["train_tokens_seen"]:,}, that is
{epochs:.1f} passes over the {results["train_tokens_available"]:,} training tokens; the
held-out loss was evaluated {EVAL_TIMES} times and the best checkpoint kept (step
{results["best_step"]} of {results["steps"]}). Training took {results["seconds"] / 60:.1f}
minutes of wall time (the cores were shared with other jobs part of the time).

## Evaluation

Held-out perplexity on {results["heldout_tokens"]:,} next-token targets (the saved bf16
weights, computed in float32), against an add-one-smoothed unigram model fitted on the
training split with the same tokenizer:

| | perplexity |
| --- | --- |
| **this model** | **{results["model_ppl"]:.2f}** |
| unigram baseline | {results["unigram_ppl"]:.2f} |

By kind of held-out document:

| kind | targets | model | unigram |
| --- | --- | --- | --- |
{kind_rows}

Reproduce (about {results["minutes_budget"]:g} minutes of training on 2 cores, plus data
preparation and evaluation):

```sh
{command}
```

The step count comes from a timing probe, so another machine trains a different number of
steps; pass `--steps {results["steps"]}` to repeat this run exactly.

{bench_section(results, bench)}
## Samples

Greedy decoding, repetition penalty 1.1, from the saved weights with transformers:

{sample_text}

## License

The training data is CPython's documentation and source, under the PSF License
Agreement; this derived model is distributed under the same terms.
"""


def write_model_card(
    out: Path, results: Mapping[str, Any], samples: Sequence[tuple[str, str]], command: str
) -> None:
    """README.md for the model staged in ``out`` (its config.json written), bench's
    figures measured on it."""
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    card = render_card(results, config, samples, command, measure_bench(out))
    (out / "README.md").write_text(card, encoding="utf-8")


def install(staging: Path, out: Path) -> None:
    """Copy the staged model into ``out``, replacing each file atomically."""
    out.mkdir(parents=True, exist_ok=True)
    names = {f.name for f in staging.iterdir() if f.is_file()}
    for stale in out.iterdir():
        if stale.is_file() and stale.name not in names:
            stale.unlink()
    for name in sorted(names):
        partial = out / f".{name}.partial"
        shutil.copyfile(staging / name, partial)
        partial.replace(out / name)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output model folder")
    parser.add_argument("--minutes", type=float, default=15.0, help="training time budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps", type=int, default=None, help="fix the step count (skips the timing probe)"
    )
    parser.add_argument(
        "--bf16", choices=("auto", "on", "off"), default="auto", help="bf16 autocast"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join([".venv/bin/python", "scripts/train_demo_model.py", *sys.argv[1:]])
    import torch

    torch.set_num_threads(2)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    from transformers import Glm4ForCausalLM

    start = time.time()
    docs = build_corpus(args.seed)
    train_docs, held_docs = split_heldout(docs)
    print(
        f"corpus: {len(docs)} documents, {sum(len(d.text) for d in docs) / 1e6:.1f} M chars; "
        f"held out {len(held_docs)} documents in "
        f"{len({d.group for d in held_docs})} packages/topics",
        flush=True,
    )

    tokenizer = train_glm_tokenizer(d.text for d in train_docs)
    # Everything is written to a staging folder and moved into place at the end, so the
    # shipped model is never a mix of two runs (e.g. a new tokenizer with old weights).
    out = Path(tempfile.mkdtemp(prefix="edgeglm-demo-model-"))
    save_tokenizer_files(tokenizer, out, model_max_length=2048)
    config = model_config(tokenizer)

    rng = random.Random(args.seed)
    train = pack(tokenizer, train_docs, rng)
    heldout = pack(tokenizer, held_docs, random.Random(1234))
    print(
        f"tokens: train {train.total_tokens:,} ({len(train.ids)} sequences), "
        f"held out {heldout.total_tokens:,} ({len(heldout.ids)} sequences); "
        f"prepared in {time.time() - start:.0f} s",
        flush=True,
    )

    budget_s = args.minutes * 60
    if args.steps is None:
        use_bf16, step_s = probe_speed(config, train.ids, args.seed)
        if args.bf16 != "auto":
            use_bf16 = args.bf16 == "on"
        # The periodic evaluations cost about a forward pass per held-out token.
        eval_s = EVAL_TIMES * EVAL_SUBSET_SEQS / BATCH_SIZE * step_s / 3
        steps = max(20, int((budget_s - eval_s) / step_s))
    else:
        steps = args.steps
        use_bf16 = args.bf16 != "off"
    warmup = max(1, int(WARMUP_FRACTION * steps))
    print(f"training {steps} steps, bf16 autocast: {use_bf16}", flush=True)

    torch.manual_seed(args.seed)
    model = Glm4ForCausalLM(config)
    model.train()
    optimizer = make_optimizer(model)
    subset = heldout.ids[np.linspace(0, len(heldout.ids) - 1, EVAL_SUBSET_SEQS).astype(int)]
    eval_every = max(1, steps // EVAL_TIMES)
    order = np.random.default_rng(args.seed).permutation(len(train.ids))
    best_loss, best_step, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    train_start = time.time()
    losses: list[float] = []
    for step in range(steps):
        rows = [order[(step * BATCH_SIZE + i) % len(order)] for i in range(BATCH_SIZE)]
        batch = torch.from_numpy(train.ids[rows])
        losses.append(train_step(model, optimizer, batch, lr_at(step, steps, warmup), use_bf16))
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            held_loss = float(token_nll(model, subset, use_bf16).mean())
            elapsed = time.time() - train_start
            print(
                f"step {step + 1}/{steps}  train loss {np.mean(losses[-eval_every:]):.3f}  "
                f"held-out loss {held_loss:.3f}  {elapsed:.0f} s",
                flush=True,
            )
            if held_loss < best_loss:
                best_loss, best_step = held_loss, step + 1
                best_state = copy.deepcopy(model.state_dict())
    train_seconds = time.time() - train_start

    model.load_state_dict(best_state)
    model = model.bfloat16()
    model.config.use_cache = True
    model.save_pretrained(out)
    write_generation_config(out, tokenizer)

    # Evaluate exactly what ships: the bf16 weights, reloaded, computed in float32.
    saved = Glm4ForCausalLM.from_pretrained(out, dtype=torch.float32)
    model_nll = token_nll(saved, heldout.ids, bf16=False)
    uni_nll = unigram_nll(train, heldout.ids, tokenizer.get_vocab_size())
    target_kinds = heldout.kinds[:, 1:]
    by_kind = {
        kind: {
            "tokens": int((target_kinds == i).sum()),
            "model_ppl": perplexity(model_nll[target_kinds == i]),
            "unigram_ppl": perplexity(uni_nll[target_kinds == i]),
        }
        for i, kind in enumerate(KINDS)
        if (target_kinds == i).any()
    }
    results: dict[str, Any] = {
        "heldout_tokens": int(model_nll.size),
        "model_ppl": perplexity(model_nll),
        "unigram_ppl": perplexity(uni_nll),
        "train_tokens_seen": steps * BATCH_SIZE * SEQ_LEN,
        "seconds": round(train_seconds, 1),
        "train_tokens_available": int(train.ids.size),
        "steps": steps,
        "best_step": best_step,
        "bf16_autocast": use_bf16,
        "seed": args.seed,
        "minutes_budget": args.minutes,
        "parameters": sum(p.numel() for p in saved.parameters()),
        "by_kind": by_kind,
        "command": command,
    }
    print(
        f"held-out perplexity: model {results['model_ppl']:.2f}, "
        f"unigram {results['unigram_ppl']:.2f} on {results['heldout_tokens']:,} tokens",
        flush=True,
    )
    (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")

    questions = [
        "What does `json.dumps` do?",
        "Explain the `for` statement.",
        "What is the `os.path` module for?",
    ]
    samples = chat_sample(out, questions)
    for question, answer in samples:
        print(f"\n>>> {question}\n{answer}", flush=True)
    write_model_card(out, results, samples, command)
    install(out, args.out)
    shutil.rmtree(out)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"\nwrote {args.out} ({size / 1e6:.1f} MB) in {(time.time() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
