"""Every malformed input through every command that accepts it, in one process.

Run as ``python tests/malformed/every_command.py CORPUS_DIR RESULTS.json``
(test_every_command.py does): the corpus is built, each case runs through
the real ``edgeglm`` command line in process (typer's runner: the same code
as the console script, minus a Python start per case), and one JSON record
per case and command is written. A process of its own makes its peak
resident memory the corpus's alone, so "bounded memory" can be checked for
every case at once. The rest of the corpus goes where it applies:
chat-template bombs (rendered by ``run``) and bad command-line values
through tests/edgeglm/test_cli_limits.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Commands that take a model, with the output each one may write.
MODEL_COMMANDS = ("plan", "run", "score", "bench", "chat")
CHECKPOINT_COMMANDS = ("convert-gguf", "convert-onnx", *MODEL_COMMANDS)
# A hang guard; every case should end in seconds.
CASE_GUARD_S = 120


@dataclass
class Case:
    kind: str  # gguf, gguf-metadata, llama-abort, checkpoint
    name: str
    command: str
    argv: list[str]
    expect: int
    inputs: list[str]  # files or folders that must come out byte-for-byte unchanged
    out_dir: str  # where the command may write: empty afterwards (no output, no temporaries)
    output: str | None = None


@dataclass
class Outcome:
    case: Case
    exit_code: int
    stderr: str
    seconds: float
    inputs_unchanged: bool
    out_dir_empty: bool
    peak_rss_bytes: int  # this process (VmHWM) after the case
    children_peak_rss_bytes: int  # largest child process so far (verify, template workers)
    notes: list[str] = field(default_factory=list)


def digest_tree(path: Path) -> str:
    """One hash over a file or every file below a folder (names, modes and bytes)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode() + b"\0")
        h.update(f"{f.stat().st_mode:o}".encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def model_argv(command: str, model: Path, out: Path, text: Path) -> tuple[list[str], Path | None]:
    m = str(model)
    if command == "convert-gguf":
        return ["convert", m, "-o", str(out / "out.gguf")], out / "out.gguf"
    if command == "convert-onnx":
        return ["convert", m, "-f", "onnx", "-o", str(out / "onnx")], out / "onnx"
    if command == "plan":
        return ["plan", m], None
    if command == "run":
        return ["run", m, "-p", "Hello", "-n", "2"], None
    if command == "score":
        return ["score", m, "--text", str(text), "-o", str(out / "s.npz")], out / "s.npz"
    if command == "bench":
        return ["bench", m, "--repeat", "1", "-o", str(out / "r.json")], out / "r.json"
    if command == "chat":
        return ["chat", m], None
    raise ValueError(command)


def build_cases(corpus: Path) -> Iterator[Case]:
    from malformed.checkpoints import build_checkpoint_cases
    from malformed.gguf_cases import (
        build_gguf_cases,
        build_gguf_metadata_cases,
        build_llama_abort_case,
    )

    text = corpus / "text.txt"
    text.write_text("GLM models run on the machines people own.\n", encoding="utf-8")
    abort = build_llama_abort_case(corpus / "abort")
    # (models, the commands that accept them, the exit code every one must give)
    kinds = {
        "gguf": (build_gguf_cases(corpus / "gguf"), MODEL_COMMANDS, 4),
        "gguf-metadata": (build_gguf_metadata_cases(corpus / "meta"), MODEL_COMMANDS, 4),
        # Passes every header check, then aborts llama.cpp: the child reports it.
        # (plan reads headers only, so it has nothing to refuse.)
        "llama-abort": ({"abort": abort}, ("run", "score", "bench", "chat"), 6),
        "checkpoint": (build_checkpoint_cases(corpus / "checkpoint"), CHECKPOINT_COMMANDS, 4),
    }
    for kind, (models, commands, expect) in kinds.items():
        for name, model in sorted(models.items()):
            for command in commands:
                out = corpus / "out" / kind / name / command
                out.mkdir(parents=True)
                argv, output = model_argv(command, model, out, text)
                where = str(output) if output is not None else None
                yield Case(kind, name, command, argv, expect, [str(model)], str(out), where)


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_case(case: Case) -> Outcome:
    from typer.testing import CliRunner, Result

    from edgeglm.cli import _register, app

    _register()
    before = {p: digest_tree(Path(p)) for p in case.inputs}
    t0 = time.perf_counter()
    # A thread is the hang guard: a model that got past every check would
    # open the full-screen app (chat) or run on; the record says so.
    done: list[Result] = []
    worker = threading.Thread(target=lambda: done.append(CliRunner().invoke(app, case.argv)))
    worker.daemon = True
    worker.start()
    worker.join(CASE_GUARD_S)
    if done:
        result = done[0]
        code, stderr = result.exit_code, result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(result.exception))
    else:
        code, stderr = -1, f"still running after {CASE_GUARD_S} s"
    seconds = time.perf_counter() - t0
    unchanged = all(digest_tree(Path(p)) == h for p, h in before.items())
    empty = not any(Path(case.out_dir).iterdir())
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return Outcome(case, code, stderr, seconds, unchanged, empty, _peak_rss(), children)


def main(corpus: Path, results: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    outcomes = [asdict(run_case(case)) for case in build_cases(corpus)]
    results.write_text(json.dumps(outcomes, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for malformed.*
    os.environ.setdefault("COLUMNS", "200")  # one message, one line
    main(Path(sys.argv[1]), Path(sys.argv[2]))
    os._exit(0)  # a case stuck past its guard must not keep the process alive
