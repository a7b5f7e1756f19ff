"""Chat in the plain terminal and the flags llama.cpp users reach for, through
the real ``edgeglm`` command.

The interactive chat runs in a real pseudo-terminal (tests/terminal.py) on a
real tiny GGUF: readline history, multi-line input, /clear, /save, Ctrl-C
during a reply (the chat goes on), Ctrl-C at the prompt, Ctrl-D. The fixture
model writes about 2,000 tokens a second, faster than a test can press Ctrl-C
in the middle of a reply; so the test stops the terminal's output with Ctrl-S
(XOFF) the moment the reply begins, as a user scrolling back would: the
model's next write waits, and the Ctrl-C lands mid-reply every time."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import HF_FIXTURES, edgeglm
from terminal import CTRL_C, CTRL_D, CTRL_Q, CTRL_S, Terminal

from edgeglm.cli.repl import PROMPT
from edgeglm.converters.gguf.convert import convert
from edgeglm.errors import ExitCode

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
LONG_REPLY = "code"  # a prompt the fixture model answers at length (greedy: 245 tokens)


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chat") / "glm4.gguf"
    return convert(HF_FIXTURES / "glm4", out, "Q8_0").output


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeglm.converters.onnx import convert as convert_onnx

    return convert_onnx(HF_FIXTURES / "glm4", tmp_path_factory.mktemp("onnx") / "m", "int4").output


def terminal(*args: str, cwd: Path, env: dict[str, str]) -> Terminal:
    env = {k: v for k, v in env.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    return Terminal([sys.executable, "-m", "edgeglm", *args], cwd=cwd, env=env)


def stop_mid_reply(t: Terminal, message: str) -> None:
    """Send ``message``, stop the terminal's output (Ctrl-S) as readline echoes
    it, wait until the reply's first write waits on the stopped terminal, then
    Ctrl-C, and start the output again (Ctrl-Q)."""
    # at the prompt it sleeps, and a kernel that says where says so in /proc/PID/wchan
    if not t.wait_until(lambda: t.wchan() not in (None, "", "0"), "sleeping", fail=False):
        pytest.skip("this system does not say where a process sleeps (/proc/PID/wchan)")
    t.when(rf"{message}\n", CTRL_S)
    t.send(f"{message}\r")
    t.expect(rf"{message}\n")
    t.wait_until(t.writes_blocked, "the reply's first write")
    t.send(CTRL_C)
    t.send(CTRL_Q)
    t.expect(r"\[stopped\]")


def saved(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    messages: list[dict[str, Any]] = data["messages"]
    return messages


def test_the_terminal_chat(gguf: Path, tmp_path: Path, env: dict[str, str]) -> None:
    t = terminal("run", str(gguf), "--temp", "0", "-t", "1", cwd=tmp_path, env=env)
    try:
        t.expect(r"/help for commands")
        t.expect(">>> ")
        # Ctrl-C during a reply stops it; the chat goes on
        stop_mid_reply(t, LONG_REPLY)
        t.expect(">>> ")
        t.send("/save stopped.json\r")
        t.expect("saved 2 messages")
        t.expect(">>> ")
        t.send("/clear\r")
        t.expect("conversation cleared")
        t.expect(">>> ")
        t.send("/help\r")
        t.expect("/save FILE")
        t.expect(">>> ")
        # a multi-line message between """ marks, and one continued with a backslash
        t.send('"""\r')
        t.expect(r"\.\.\. ")
        t.send("first line\r")
        t.expect(r"\.\.\. ")
        t.send('second line"""\r')
        t.expect(">>> ")
        t.send("one \\\r")
        t.expect(r"\.\.\. ")
        t.send("two\r")
        t.expect(">>> ")
        # the up arrow brings the last line typed back (readline history)
        t.send("\x1b[A")
        t.expect("two")
        t.send("\r")
        t.expect(">>> ")
        t.send("/save chat.json\r")
        t.expect("saved 6 messages")
        t.expect(">>> ")
        # Ctrl-C at the prompt clears what was typed; Ctrl-D quits
        t.send("never sent")
        t.expect("never sent")
        t.interrupt()
        t.expect("Ctrl-C again")
        t.expect(">>> ")
        t.send(CTRL_D)
        assert t.wait() == ExitCode.OK
    finally:
        t.close()
    stopped = saved(tmp_path / "stopped.json")
    assert [m["role"] for m in stopped] == ["user", "assistant"]
    # what the reply had said when it stopped stays in the conversation: its first token
    assert stopped[0]["content"] == LONG_REPLY and stopped[1]["content"]
    whole = edgeglm("run", str(gguf), "-p", LONG_REPLY, "--temp", "0", "-t", "1", cwd=tmp_path)
    assert whole.stdout.startswith(stopped[1]["content"])
    assert len(stopped[1]["content"]) < len(whole.stdout.strip())
    chat = saved(tmp_path / "chat.json")
    assert [m["role"] for m in chat] == ["user", "assistant"] * 3  # /clear forgot the first
    assert chat[0]["content"] == "first line\nsecond line"
    assert chat[2]["content"] == "one \ntwo"
    assert chat[4]["content"] == "two"  # history holds lines, as a shell's does
    assert not list(tmp_path.glob(".*tmp*"))  # /save wrote atomically


def test_ctrl_c_twice_at_the_prompt_quits(gguf: Path, tmp_path: Path, env: dict[str, str]) -> None:
    t = terminal("chat", "--cli", str(gguf), cwd=tmp_path, env=env)
    try:
        t.expect(">>> ")
        t.interrupt()
        t.expect("Ctrl-C again")
        t.expect(">>> ")
        t.interrupt()
        assert t.wait() == ExitCode.OK
    finally:
        t.close()


# llama.cpp pads a context to a multiple of 256 tokens: the smallest is 256
GREEDY_256 = ["--temp", "0", "-t", "1", "-c", "256"]
# the fixture was trained on 2,048 tokens (config.json's max_position_embeddings)
CONTEXT_FULL = "context full (256 tokens; the model was trained on 2048: try -c 2048 or /clear)"


@pytest.fixture(scope="module")
def fills_256(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A long message whose greedy reply runs into the end of a 256-token
    context (found with run, which samples exactly as the chat does)."""
    cwd = tmp_path_factory.mktemp("fill")
    env = {**os.environ, "EDGEGLM_CACHE_DIR": str(cwd / "cache")}  # as the env fixture's
    for words in ("word", "code", "x y z", "list", "more"):
        long = " ".join([words] * 60)
        r = edgeglm("run", str(gguf), "-p", long, *GREEDY_256, "--json", cwd=cwd, env=env)
        assert r.returncode == 0, r.stderr
        if json.loads(r.stdout)["finish_reason"] == "length":
            return long
    pytest.fail("no candidate message fills the context")


def test_a_piped_chat_takes_each_line_as_a_message(
    gguf: Path, fills_256: str, tmp_path: Path, env: dict[str, str]
) -> None:
    script = f"{fills_256}\nhello\n/save no/such/folder.json\n/save chat.json\n/nope\n"
    r = edgeglm("chat", "--cli", str(gguf), *GREEDY_256, cwd=tmp_path, env=env, input=script)
    assert r.returncode == 0, r.stderr
    assert f"[the reply was cut off: {CONTEXT_FULL}]" in r.stdout
    # the next message does not fit beside the first exchange: that goes, and the chat says so
    assert (
        "(the oldest 2 messages were dropped to fit the 256-token context; "
        "the model was trained on 2048: -c 2048 keeps more)"
    ) in r.stdout
    # no prompts on a pipe (the random model's replies may well contain ">>>" themselves)
    assert not any(line.startswith(PROMPT) for line in r.stdout.splitlines())
    assert "error: unknown command /nope" in r.stderr
    assert "error: no/such: output folder does not exist" in r.stderr  # and the chat goes on
    messages = saved(tmp_path / "chat.json")
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "hello"


def test_a_full_context_names_the_c_in_use_and_the_trained_context(
    gguf: Path, fills_256: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """In the terminal, the hint when a reply fills the context says what -c
    holds and what the model was trained on; a message that fits no context
    says so too, and the chat goes on."""
    t = terminal("chat", "--cli", str(gguf), *GREEDY_256, cwd=tmp_path, env=env)
    try:
        t.expect(">>> ")
        t.send(f"{fills_256}\r")
        t.expect(re.escape(f"[the reply was cut off: {CONTEXT_FULL}]"))
        t.expect(">>> ")
        t.send(" ".join(["word"] * 300) + "\r")
        t.expect(
            r"error: the message is \d+ tokens with the chat template; it does not fit the "
            r"256-token context \(the model was trained on 2048: try -c 2048\)"
        )
        t.expect(">>> ")
        t.send(CTRL_D)
        assert t.wait() == ExitCode.OK
    finally:
        t.close()


def test_prompts_from_stdin_and_from_a_file(
    gguf: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    def tokens(*args: str, input: str | None = None) -> int:
        r = edgeglm("run", str(gguf), "-n", "1", "--json", *args, cwd=tmp_path, input=input)
        assert r.returncode == 0, r.stderr
        n: int = json.loads(r.stdout)["timings"]["prompt_tokens"]
        return n

    (tmp_path / "prompt.txt").write_text("Tell me\nabout GLM\n", encoding="utf-8")
    given = tokens("-p", "Tell me\nabout GLM")
    assert tokens(input="Tell me\nabout GLM\n") == given  # echo's newline is not the prompt
    assert tokens("-f", str(tmp_path / "prompt.txt")) == given
    assert tokens("-s", "Be brief.", "-p", "Tell me\nabout GLM") > given
    r = edgeglm("run", str(gguf), "-n", "2", cwd=tmp_path, input="hello")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr

    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("\n")
    for args, input, message in (
        (["-f", str(tmp_path / "prompt.txt"), "-p", "hi"], None, "not both"),
        (["-f", str(tmp_path / "missing.txt")], None, "cannot read"),
        (["-f", str(tmp_path / "latin1.txt")], None, "not UTF-8"),
        (["-f", str(tmp_path / "empty.txt")], None, "no prompt in it"),
        ([], "", "standard input: no prompt in it"),
        (["--json"], None, "no prompt in it"),  # stdin is empty (not a terminal)
    ):
        r = edgeglm("run", str(gguf), *args, cwd=tmp_path, input=input)
        assert r.returncode == ExitCode.USAGE, (args, r.stderr)
        assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert r.stdout == ""


def test_llama_cpp_flags_parse_as_llama_cpp_parses_them(
    gguf: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    from edgeglm.backends.llamacpp import gpu_count

    def dry(*args: str) -> dict[str, Any]:
        r = edgeglm("run", str(gguf), "--dry-run", "--json", *args, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        data: dict[str, Any] = json.loads(r.stdout)
        return data

    assert dry("-ngl", "99")["n_gpu_layers"] == 99  # not "-n gl"
    assert dry("--n-gpu-layers", "7", "-t", "3", "-c", "512") == dry(
        "-ngl", "7", "--threads", "3", "--ctx-size", "512"
    )
    spec = dry("-ngl", "7", "-t", "3", "--ctx", "512")
    assert (spec["n_gpu_layers"], spec["n_threads"], spec["n_ctx"]) == (7, 3, 512)
    # -ngl reaches the engine in every command that loads a model
    for command in (["chat", "--cli"], ["run", "-p", "hi", "-n", "1"]):
        r = edgeglm(*command[:1], str(gguf), *command[1:], "-ngl", "99", cwd=tmp_path, env=env)
        if gpu_count():
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode == ExitCode.USAGE
            assert "-ngl 99: llama.cpp has no GPU device here" in r.stderr
    r = edgeglm("run", str(gguf), "-p", "hi", "-n", "1", "-t", "0", cwd=tmp_path)
    assert r.returncode == ExitCode.USAGE and "--threads" in r.stderr


def test_version(tmp_path: Path) -> None:
    from edgeglm import __version__

    r = edgeglm("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"edgeglm {__version__}"


def test_backend_is_honoured_or_refused(
    gguf: Path, onnx_folder: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    def json_run(model: Path, backend: str) -> str:
        r = edgeglm(
            "run", str(model), "-p", "hi", "-n", "1", "--json", "--backend", backend, cwd=tmp_path
        )
        assert r.returncode == 0, r.stderr
        name: str = json.loads(r.stdout)["backend"]
        return name

    assert json_run(onnx_folder, "onnx") == json_run(onnx_folder, "auto") == "onnxruntime"
    assert json_run(gguf, "llama.cpp") == json_run(gguf, "auto") == "llama.cpp"
    text = tmp_path / "t.txt"
    text.write_text("hello world")
    for model, backend, says in (
        (onnx_folder, "llama.cpp", "an ONNX folder runs in ONNX Runtime, not llama.cpp"),
        (gguf, "onnx", "a GGUF runs in llama.cpp, not ONNX Runtime"),
    ):
        for command in (
            ["run", str(model), "-p", "hi", "--backend", backend],
            ["chat", "--cli", str(model), "--backend", backend],
            ["score", str(model), "--text", str(text), "-o", "s.npz", "--backend", backend],
        ):
            r = edgeglm(*command, cwd=tmp_path, env=env)
            assert r.returncode == ExitCode.USAGE, (command, r.stderr)
            assert says in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "s.npz").exists()


def test_the_app_refuses_what_only_the_terminal_chat_takes(
    gguf: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    for flag in (["--temp", "0.5"], ["-n", "10"], ["-s", "hi"], ["-ngl", "1"], ["-c", "512"]):
        r = edgeglm("chat", str(gguf), *flag, cwd=tmp_path, env=env)
        assert r.returncode == ExitCode.USAGE, r.stderr
        assert "applies to chat --cli" in r.stderr


def test_run_without_a_prompt_on_a_terminal_chats(
    gguf: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    t = terminal("run", str(gguf), "--hide-thinking", cwd=tmp_path, env=env)
    try:
        t.expect(">>> ")
        t.send("/show\r")
        t.expect(r"sampling: temperature=0\.8 .*\(llama\.cpp default\)")
        t.expect(">>> ")
        t.send("/bye\r")
        assert t.wait() == ExitCode.OK
    finally:
        t.close()
    for flag in ("--json", "--raw"):
        t = terminal("run", str(gguf), flag, cwd=tmp_path, env=env)
        try:
            t.expect(f"error: {flag} needs a prompt")
            assert t.wait() == ExitCode.USAGE
        finally:
            t.close()


def test_no_terminal_escapes_on_a_pipe(gguf: Path, tmp_path: Path, env: dict[str, str]) -> None:
    r = edgeglm("chat", "--cli", str(gguf), "-n", "4", cwd=tmp_path, env=env, input="hi\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "\x1b[" not in r.stdout


def test_the_context_full_hint_without_a_larger_c_to_offer() -> None:
    from edgeglm.cli.repl import context_full

    assert context_full(2048, 2048) == (
        "context full (2048 tokens; the model was trained on 2048: /clear)"
    )
    assert (
        context_full(4096, None) == "context full (4096 tokens: /clear starts over, or a larger -c)"
    )
    assert context_full(4096, 8192).endswith("try -c 8192 or /clear)")
