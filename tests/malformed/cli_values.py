"""Bad command-line values: each must be refused at once with exit 2 and one line.

Every number and string a user gives ``run``, ``score`` and ``bench`` is
checked once, before any model is loaded (edgeglm.backends.base), the same way
for every backend. The cases are data: the command, the arguments that follow
the model, the exit code and a fragment of the one-line message.

Arguments given as ``bytes`` are not valid UTF-8: on POSIX, ``subprocess``
passes them to the program as they are, and Python hands them to EdgeGLM as
lone surrogates (``os.fsdecode``), as a shell would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgeglm.errors import ExitCode

Arg = str | bytes


@dataclass(frozen=True)
class CliValueCase:
    command: str  # "run", "score" or "bench"
    args: tuple[Arg, ...]  # after the command and the model
    exit_code: int
    message: str  # part of the one line on stderr

    def argv(self, model: str) -> list[Arg]:
        return [self.command, model, *self.args]

    def str_argv(self, model: str) -> list[str]:
        """The arguments as Python sees them (non-UTF-8 bytes as surrogates)."""
        return [a if isinstance(a, str) else os.fsdecode(a) for a in self.argv(model)]


USAGE = int(ExitCode.USAGE)

# `edgeglm run MODEL ...`: sampling, context and prompt values.
_RUN: dict[str, tuple[tuple[Arg, ...], str]] = {
    "max_tokens_negative": (("-n", "-5"), "max_tokens"),
    "max_tokens_zero": (("-n", "0"), "max_tokens"),
    "max_tokens_beyond_int32": (("-n", "99999999999"), "max_tokens"),
    "temperature_negative": (("--temp", "-1"), "temperature"),
    "temperature_nan": (("--temp", "nan"), "temperature"),
    "temperature_inf": (("--temp", "inf"), "temperature"),
    "top_p_zero": (("--top-p", "0"), "top_p"),
    "top_p_above_one": (("--top-p", "1.5"), "top_p"),
    "top_k_negative": (("--top-k", "-1"), "top_k"),
    "min_p_above_one": (("--min-p", "2"), "min_p"),
    "repeat_penalty_zero": (("--repeat-penalty", "0"), "repeat_penalty"),
    "seed_negative": (("--seed", "-1"), "seed"),
    "seed_beyond_uint32": (("--seed", "4294967296"), "seed"),
    "seed_is_llama_cpp_random": (("--seed", "4294967295"), "seed"),
    "ctx_negative": (("--ctx", "-1"), "--ctx"),
    "ctx_zero": (("--ctx", "0"), "--ctx"),
    "ctx_beyond_trained": (("--ctx", "100000000"), "trained context"),
    "raw_empty_prompt": (("--raw",), "--raw needs a non-empty --prompt"),
    "prompt_not_utf8": (("-p", b"caf\xe9 \xff"), "not valid UTF-8"),
    "system_not_utf8": (("--system", b"\xc3\x28"), "not valid UTF-8"),
    "backend_unknown": (("--backend", "tensorrt"), "unknown backend"),
    # Values the command line itself cannot parse: the same one line.
    "temperature_not_a_number": (("--temp", "abc"), "--temp"),
    "max_tokens_not_an_integer": (("-n", "1.5"), "-n"),
    "option_unknown": (("--temperature", "1"), "No such option"),
}


def run_cases() -> dict[str, CliValueCase]:
    """``run`` cases (for any model: GGUF, ONNX folder, HF folder)."""
    out = {}
    for name, (args, message) in _RUN.items():
        # a prompt unless the case is about the prompt; --raw's case has an empty one
        prompt: tuple[Arg, ...] = ()
        if "-p" not in args:
            prompt = ("-p", "") if name == "raw_empty_prompt" else ("-p", "Hello")
        out[f"run_{name}"] = CliValueCase("run", (*prompt, *args), USAGE, message)
    return out


# Paths in the cases below are relative to the folder the builder fills:
# "{dir}/text.txt" is a good text, "latin1.txt" is not UTF-8, "empty.txt" is
# empty, "a-directory" is a directory; nothing else exists.
_SCORE: dict[str, tuple[tuple[str, ...], str]] = {
    "text_not_utf8": (("--text", "{dir}/latin1.txt", "-o", "{dir}/s.npz"), "not UTF-8"),
    "text_empty": (("--text", "{dir}/empty.txt", "-o", "{dir}/s.npz"), "no tokens"),
    "text_missing": (("--text", "{dir}/missing.txt", "-o", "{dir}/s.npz"), "cannot read"),
    "output_is_directory": (("--text", "{dir}/text.txt", "-o", "{dir}/a-directory"), "directory"),
    "output_folder_missing": (("--text", "{dir}/text.txt", "-o", "{dir}/no/s.npz"), "not exist"),
    "output_under_a_file": (("--text", "{dir}/text.txt", "-o", "{dir}/text.txt/s"), "not exist"),
}
_BENCH: dict[str, tuple[tuple[str, ...], str]] = {
    "repeat_zero": (("--repeat", "0"), "repeat"),
    "repeat_negative": (("--repeat", "-3"), "repeat"),
    "repeat_huge": (("--repeat", "1000000"), "repeat"),
    "threads_zero": (("--threads", "0"), "threads"),
    "threads_huge": (("--threads", "100000"), "threads"),
    "backends_empty": (("--backends", ""), "names no backend"),
    "backends_unknown": (("--backends", "tensorrt"), "unknown backend"),
    # a GGUF's backend and quant are its own: never dropped silently
    "backends_without_the_models_own": (("--backends", "onnx"), "a GGUF runs in llama.cpp"),
    "quants_for_a_gguf": (("--quants", "Q4_K_M"), "--quants applies to Hugging Face"),
    "quants_unknown": (("--quants", "Q9_K"), "unknown quant"),
    "text_not_utf8": (("--text", "{dir}/latin1.txt"), "cannot read"),
    "output_is_directory": (("-o", "{dir}/a-directory"), "is a directory"),
    "output_folder_missing": (("-o", "{dir}/no/r.json"), "does not exist"),
}

CASE_NAMES = sorted(
    [f"run_{n}" for n in _RUN] + [f"score_{n}" for n in _SCORE] + [f"bench_{n}" for n in _BENCH]
)


def _files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text.txt").write_text("def add(a, b):\n    return a + b\n", encoding="utf-8")
    (folder / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "a-directory").mkdir(exist_ok=True)


def build_cli_value_cases(folder: Path) -> dict[str, CliValueCase]:
    """Every case, for every command (the files they name are made in ``folder``)."""
    _files(folder)
    cases = run_cases()
    for command, table in (("score", _SCORE), ("bench", _BENCH)):
        for name, (args, message) in table.items():
            filled = tuple(a.format(dir=folder) for a in args)
            cases[f"{command}_{name}"] = CliValueCase(command, filled, USAGE, message)
    return cases
