"""Chat in the plain terminal: ``edgeglm chat --cli`` and ``edgeglm run MODEL``
with no prompt, as ``ollama run`` and ``llama-cli -cnv`` do.

Lines are edited with readline (history for the session: up and down arrows).
A message spans lines between ``\"\"\"`` marks (as in ollama) or after a line
that ends with a backslash. Commands start with ``/``: see ``HELP``.

Ctrl-C while a reply streams stops the reply and the chat goes on; at the
prompt it clears what was typed, and a second one in a row quits. Ctrl-D (end
of input) quits too. Quitting is exit 0.

The model's ``<think>`` reasoning is shown dimmed on a terminal, or left out
with ``--hide-thinking``. When the conversation outgrows the context, the
oldest turns are dropped (and the chat says so; a full context names the -c in use
and the context the model was trained on); only the reply's text goes
back into the conversation, with its reasoning as ``reasoning_content`` (the
field GLM's templates read).

When standard input is not a terminal, each line (or block) it holds is a
message, read without prompts: ``printf 'hi\\n/save chat.json\\n' | edgeglm
chat --cli MODEL``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from edgeglm.errors import EdgeGLMError, ExitCode, UsageError

if TYPE_CHECKING:
    from edgeglm.backends.base import Backend, Completion
    from edgeglm.cli.run import LoadOptions, SamplingFlags
    from edgeglm.generation import Sampling

PROMPT = ">>> "
CONTINUE = "... "
BLOCK = '"""'
HELP = f"""Commands:
  /help          this list
  /show          the model, its settings and where each sampling value came from
  /clear         forget the conversation (the system prompt stays)
  /save FILE     write the conversation to FILE as JSON
  /bye           quit (also /exit, /quit, Ctrl-D, or Ctrl-C twice at the prompt)

A message over several lines: start and end it with {BLOCK}, or end a line with \\.
Ctrl-C stops a reply."""

_DIM, _RESET = "\x1b[2m", "\x1b[0m"
_CLEAR_LINE = "\r\x1b[K"
# A model's text reaches a terminal without the control characters that
# would drive it (escape sequences, carriage returns, bells): tabs and
# newlines stay, "\r" goes, the rest show as U+FFFD.
_CONTROLS = {c: "\ufffd" for c in (*range(32), 127) if c not in (9, 10, 13)} | {13: None}


def use_color(stream: IO[str]) -> bool:
    """ANSI styles on a terminal, unless NO_COLOR (no-color.org) or TERM=dumb."""
    tty = getattr(stream, "isatty", lambda: False)()
    return bool(tty) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _partial_tag(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could begin ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ReplyWriter:
    """Streams a reply to a terminal or a pipe, with GLM's ``<think>`` block
    dimmed (on a terminal) or left out (``hide_thinking``). Tags split across
    chunks are held back until they are whole.

    Without colour and without hiding, the text passes through unchanged."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(
        self, out: IO[str], *, hide_thinking: bool = False, color: bool | None = None
    ) -> None:
        self.out = out
        self.hide = hide_thinking
        self.color = use_color(out) if color is None else color
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.thinking = False
        self.pending = ""
        self.after_thinking = False  # strip the blank lines a hidden block leaves
        self.last = "\n"  # the last character written
        self.indicator = False  # "thinking…" is on screen

    def write(self, text: str) -> None:
        if self.tty or self.color:
            text = text.translate(_CONTROLS)
        if not self.hide and not self.color:
            self._put(text)
            self.out.flush()
            return
        buf, self.pending = self.pending + text, ""
        while buf:
            tag = self.CLOSE if self.thinking else self.OPEN
            i = buf.find(tag)
            if i < 0:
                keep = _partial_tag(buf, tag)
                self._emit(buf[: len(buf) - keep])
                self.pending = buf[len(buf) - keep :]
                break
            self._emit(buf[:i])
            buf = buf[i + len(tag) :]
            self._tag(tag)
        self.out.flush()

    def _tag(self, tag: str) -> None:
        opening = tag == self.OPEN
        if not self.hide:
            self._put(f"{_DIM}{tag}{_RESET}" if self.color else tag)
        elif opening and self.color:
            self.out.write(f"{_DIM}thinking…{_RESET}")
            self.indicator = True
        elif not opening:
            self._clear_indicator()
            self.after_thinking = True
        self.thinking = opening

    def _clear_indicator(self) -> None:
        if self.indicator:
            self.out.write(_CLEAR_LINE)
            self.indicator = False

    def _emit(self, text: str) -> None:
        if not text:
            return
        if self.thinking:
            if not self.hide:
                self._put(f"{_DIM}{text}{_RESET}" if self.color else text)
            return
        if self.after_thinking:
            text = text.lstrip("\n")
            if not text:
                return
            self.after_thinking = False
        self._put(text)

    def _put(self, text: str) -> None:
        if text:
            self.out.write(text)
            plain = text.replace(_DIM, "").replace(_RESET, "")
            self.last = plain[-1] if plain else self.last

    def finish(self, note: str | None = None) -> None:
        """End the reply: what is held back, then a newline; ``note`` (dimmed)
        on a line of its own."""
        if self.pending:
            held, self.pending = self.pending, ""
            self._emit(held)
        self._clear_indicator()
        if self.last != "\n":
            self._put("\n")
        if note:
            self.out.write(f"{_DIM}{note}{_RESET}\n" if self.color else f"{note}\n")
        self.out.flush()


# -- input ------------------------------------------------------------------------------


class LineSource:
    """Lines typed at a terminal (readline editing and session history) or
    read from a pipe (no prompts shown). ``read`` raises EOFError at the end."""

    def __init__(self, stream: IO[str], out: IO[str]) -> None:
        self.stream = stream
        self.out = out
        self.interactive = bool(stream.isatty())
        if self.interactive:
            with contextlib.suppress(ImportError):  # Windows has no readline: plain input()
                import readline  # noqa: F401  (input() edits lines and keeps history with it)

    def read(self, prompt: str) -> str:
        if self.interactive:
            return input(prompt)
        line = self.stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")


def read_message(source: LineSource) -> str | None:
    """The next message: one line, a ``\"\"\"`` block, or lines joined by a
    trailing backslash. None at the end of input."""
    try:
        first = source.read(PROMPT)
    except EOFError:
        return None
    stripped = first.strip()
    if stripped.startswith(BLOCK):
        body = stripped[len(BLOCK) :]
        if body.endswith(BLOCK):  # """one line"""
            return body[: -len(BLOCK)]
        lines = [body] if body else []
        while True:
            try:
                line = source.read(CONTINUE)
            except EOFError:
                break  # the end of input closes the block
            if line.rstrip().endswith(BLOCK):
                last = line.rstrip()[: -len(BLOCK)]
                if last:
                    lines.append(last)
                break
            lines.append(line)
        return "\n".join(lines)
    lines = []
    line = first
    while line.endswith("\\"):
        lines.append(line[:-1])
        try:
            line = source.read(CONTINUE)
        except EOFError:
            line = ""
            break
    lines.append(line)
    return "\n".join(lines)


# -- the conversation -----------------------------------------------------------------


class Chat:
    """One conversation with a loaded model, in a terminal or over a pipe."""

    def __init__(
        self,
        model: Backend,
        sampling: Sampling,
        *,
        name: str,
        system: str | None = None,
        hide_thinking: bool = False,
        trained_context: Callable[[], int | None] | None = None,
        source: LineSource | None = None,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self.model = model
        # asked only when the context fills: reading it may mean reading a large GGUF header
        self._trained_context = trained_context
        self._trained: int | None = None
        self._trained_known = False
        self.sampling = sampling
        self.name = name
        self.system = system
        self.hide_thinking = hide_thinking
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.source = source or LineSource(sys.stdin, self.out)
        self.turns: list[dict[str, Any]] = []
        self.color = use_color(self.out)

    # -- output ----------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A remark of the chat's own (dimmed on a terminal), on stdout with the chat."""
        self.out.write(f"{_DIM}{text}{_RESET}\n" if self.color else f"{text}\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(f"error: {text}\n")
        self.err.flush()

    # -- the loop --------------------------------------------------------------------

    def loop(self) -> int:
        """Talk until /bye, Ctrl-D or Ctrl-C twice at the prompt; the exit code."""
        interrupted = False
        while True:
            try:
                message = read_message(self.source)
            except KeyboardInterrupt:
                if interrupted:
                    self.out.write("\n")
                    return int(ExitCode.OK)
                interrupted = True
                self.out.write("\n")
                self.note("(Ctrl-C again, Ctrl-D or /bye to quit)")
                continue
            interrupted = False
            if message is None:
                if self.source.interactive:
                    self.out.write("\n")
                return int(ExitCode.OK)
            if not message.strip():
                continue
            if message.startswith("/") and not message.startswith("//"):
                if self.command(message.strip()):
                    return int(ExitCode.OK)
                continue
            try:
                self.turn(message)
            except UsageError as e:  # this message, not the chat: say so and go on
                self.error(str(e))
            except KeyboardInterrupt:  # before the reply began (rendering the prompt)
                self.out.write("\n")
                self.note("[stopped]")

    def command(self, line: str) -> bool:
        """Run a /command; True to quit."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/bye", "/exit", "/quit"):
            return True
        if name in ("/help", "/?"):
            self.out.write(HELP + "\n")
        elif name == "/clear":
            self.turns.clear()
            self.note("(conversation cleared)")
        elif name == "/save":
            if not arg:
                self.error("/save needs a file name: /save FILE")
            else:
                try:
                    self.save(Path(arg).expanduser())
                except EdgeGLMError as e:  # a bad path or a full disk: the chat goes on
                    self.error(str(e))
        elif name == "/show":
            settings = getattr(self.model, "settings", None) or {}
            shown = ", ".join(f"{k}={v}" for k, v in settings.items())
            self.out.write(
                f"model: {self.name} ({self.model.name}, {self.model.capabilities.device})\n"
            )
            if shown:
                self.out.write(f"settings: {shown}\n")
            self.out.write(f"sampling: {self.sampling.describe()}\n")
            if self.system:
                self.out.write(f"system: {self.system}\n")
        else:
            self.error(f"unknown command {name}; /help lists them")
        self.out.flush()
        return False

    def trained(self) -> int | None:
        """The context the model was trained for (None: unknown), read once."""
        if not self._trained_known and self._trained_context is not None:
            with contextlib.suppress(EdgeGLMError):  # a hint's detail: never a failure
                self._trained = self._trained_context()
        self._trained_known = True
        return self._trained

    def messages(self) -> list[dict[str, Any]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.turns

    def save(self, path: Path) -> None:
        """The conversation as JSON (OpenAI's message shape), written atomically."""
        from edgeglm.cli.run import check_output
        from edgeglm.fileio import atomic_output

        check_output(path)
        data = {
            "model": self.name,
            "sampling": self.sampling.to_dict(),
            "messages": self.messages(),
        }
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        self.note(f"(saved {len(self.messages())} messages to {path})")

    # -- one turn --------------------------------------------------------------------

    def fit(self) -> list[int]:
        """The prompt's tokens, dropping the oldest turns while the conversation
        leaves too little room for a reply (a quarter of the context, or the
        reply's length limit). UsageError when the newest message alone does
        not fit."""
        from edgeglm.chat import render
        from edgeglm.errors import CheckpointError

        n_ctx = _context_size(self.model)
        limit = self.sampling.max_tokens
        room = n_ctx // 4 if n_ctx else 0
        if limit > 0:
            room = min(room, limit)
        dropped = 0
        template = self.model.chat_template()
        while True:
            try:
                text = render(self.messages(), template)
            except CheckpointError as e:
                raise CheckpointError(f"{self.name}: {e}") from e.__cause__
            tokens = self.model.tokenize(text, special=True)
            if not n_ctx or len(tokens) + room <= n_ctx or len(self.turns) <= 1:
                break
            # the oldest exchange goes: a user message and the replies up to the next one
            del self.turns[0]
            dropped += 1
            while self.turns and self.turns[0]["role"] != "user":
                del self.turns[0]
                dropped += 1
        if n_ctx and len(tokens) >= n_ctx:
            trained = self.trained()
            if trained is not None and len(tokens) >= trained:
                fix = f"the model was trained on {trained}: shorten it"
            elif trained is not None and trained > n_ctx:
                fix = f"the model was trained on {trained}: try -c {trained}"
            else:
                fix = "-c to enlarge it"
            raise UsageError(
                f"the message is {len(tokens)} tokens with the chat template; "
                f"it does not fit the {n_ctx}-token context ({fix})"
            )
        if dropped:
            trained = self.trained()
            more = (
                f"; the model was trained on {trained}: -c {trained} keeps more"
                if trained is not None and trained > n_ctx
                else ""
            )
            self.note(
                f"(the oldest {dropped} messages were dropped to fit the {n_ctx}-token context"
                f"{more})"
            )
        return tokens

    def turn(self, text: str) -> None:
        from edgeglm.backends.base import check_text
        from edgeglm.chat import GLM_STOP_TOKENS, split_thinking

        check_text(text, "the message")
        self.turns.append({"role": "user", "content": text})
        try:
            tokens = self.fit()
        except BaseException:
            self.turns.pop()
            raise
        writer = ReplyWriter(self.out, hide_thinking=self.hide_thinking, color=self.color)
        parts: list[str] = []
        result: Completion | None = None
        try:
            stream = self.model.generate(tokens, self.sampling.params(stop=GLM_STOP_TOKENS))
            while True:
                try:
                    piece = next(stream)
                except StopIteration as stop:
                    result = stop.value
                    break
                parts.append(piece.text)
                writer.write(piece.text)
        except KeyboardInterrupt:
            writer.finish("[stopped]")
        else:
            writer.finish(self._finish_note(result))
        reply = split_thinking(result.text if result is not None else "".join(parts))
        if not reply.content and result is None:
            self.turns.pop()  # stopped before it said anything: the message goes too
            return
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        self.turns.append(message)

    def _finish_note(self, result: Completion | None) -> str | None:
        if result is None or result.finish_reason != "length":
            return None
        max_tokens = self.sampling.max_tokens
        if max_tokens > 0 and result.timings.completion_tokens >= max_tokens:
            return f"[the reply reached -n {max_tokens} tokens]"
        return f"[the reply was cut off: {context_full(_context_size(self.model), self.trained())}]"


def context_full(n_ctx: int, trained: int | None) -> str:
    """What to do when the context is full: the -c in use, and the trained
    context where a larger -c would help."""
    if not n_ctx:
        return "context full (/clear starts over)"
    if trained is not None and trained > n_ctx:
        return (
            f"context full ({n_ctx} tokens; the model was trained on {trained}: "
            f"try -c {trained} or /clear)"
        )
    if trained is not None:  # a larger -c would go past what the model was trained on
        return f"context full ({n_ctx} tokens; the model was trained on {trained}: /clear)"
    return f"context full ({n_ctx} tokens: /clear starts over, or a larger -c)"


def _context_size(model: Backend) -> int:
    """Prompt plus reply tokens the loaded model holds (0: unknown)."""
    for name in ("n_ctx", "context_length"):
        value = getattr(model, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def chat_in_terminal(
    ref: str | None,
    load: LoadOptions,
    flags: SamplingFlags,
    *,
    system: str | None = None,
    hide_thinking: bool = False,
) -> int:
    """Load the model and talk; the exit code. EdgeGLMError for a model that
    cannot be loaded (before the chat starts) or a failure mid-chat."""
    from edgeglm.cli.run import load_model, sampling_for, show_sampling
    from edgeglm.runtime import trained_context

    art, model = load_model(ref, load)
    try:
        sampling = sampling_for(art, flags)
        chat = Chat(
            model,
            sampling,
            name=ref or "demo",
            system=system,
            hide_thinking=hide_thinking,
            trained_context=lambda: trained_context(art),
        )
        settings = getattr(model, "settings", None)
        if settings:
            from rich.markup import escape

            from edgeglm.cli import err

            shown = ", ".join(f"{k}={v}" for k, v in settings.items())
            err.print(f"[dim]{model.name}: {escape(shown)}[/]", highlight=False)
        show_sampling(sampling)
        if chat.source.interactive:
            chat.note(f"Chatting with {chat.name}. /help for commands, /bye or Ctrl-D to quit.")
        return chat.loop()
    finally:
        model.close()
