"""A real terminal for tests: a program on the slave side of a pseudo-terminal,
as its session leader with the pty as its controlling terminal, so a Ctrl-C
typed here is a SIGINT to its foreground process group (the program and its
children), as in a real terminal. POSIX only.

``expect`` waits for text (ANSI escapes and carriage returns removed) after
what the last ``expect`` matched; ``when`` arms a reply that the reader
thread sends the moment a pattern appears, without a round trip through the
test (to stop the output with Ctrl-S while a fast model is still writing)."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")
CTRL_C, CTRL_D, CTRL_S, CTRL_Q = "\x03", "\x04", "\x13", "\x11"
# Only guards against a hang: each wait normally ends as soon as its text appears.
HANG_GUARD_S = 120.0


class Terminal:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        cols: int = 100,
        rows: int = 30,
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

        def controlling_terminal() -> None:  # in the child, before exec
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=dict(env),
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        self.master = master
        self._raw = b""
        self._pos = 0
        self._changed = threading.Condition()
        self._armed: list[tuple[re.Pattern[str], str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every slave side is closed (the program ended)
                data = b""
            with self._changed:
                if not data:
                    self._armed.clear()
                    self._raw += b"\0EOF"
                    self._changed.notify_all()
                    return
                self._raw += data
                text = self._text()
                for armed in list(self._armed):
                    if armed[0].search(text, self._pos):
                        self._armed.remove(armed)
                        os.write(self.master, armed[1].encode())
                self._changed.notify_all()

    def _text(self) -> str:
        return ANSI.sub("", self._raw.decode("utf-8", "replace"))

    @property
    def text(self) -> str:
        with self._changed:
            return self._text().replace("\0EOF", "")

    def expect(self, pattern: str, timeout: float = HANG_GUARD_S) -> re.Match[str]:
        """The first match of ``pattern`` after the previous one."""
        regex = re.compile(pattern)
        with self._changed:
            found: list[re.Match[str]] = []

            def seen() -> bool:
                m = regex.search(self._text(), self._pos)
                if m:
                    found.append(m)
                return bool(m) or self._raw.endswith(b"\0EOF")

            self._changed.wait_for(seen, timeout)
            if not found:
                tail = self._text()[self._pos :][-3000:]
                raise AssertionError(f"{pattern!r} did not appear; the terminal shows:\n{tail}")
            self._pos = found[0].end()
            return found[0]

    def when(self, pattern: str, keys: str) -> None:
        """Type ``keys`` the moment ``pattern`` appears after the last match."""
        with self._changed:
            self._armed.append((re.compile(pattern), keys))

    def wchan(self) -> str | None:
        """Where in the kernel the program sleeps ("0" while it runs); None
        where the system does not say (no /proc: not Linux)."""
        try:
            return Path(f"/proc/{self.proc.pid}/wchan").read_text().strip()
        except OSError:
            return None

    def writes_blocked(self) -> bool:
        """Whether the program sleeps in a write to this terminal, its output
        stopped (Ctrl-S): n_tty_write waits in wait_woken until it starts again."""
        return self.wchan() in ("wait_woken", "n_tty_write")

    def waiting_for_input(self) -> bool:
        """Whether the program sleeps in select/poll on its terminal (readline's
        wait for a key)."""
        return (self.wchan() or "").startswith(("poll_schedule_timeout", "do_select", "do_poll"))

    def interrupt(self) -> None:
        """Ctrl-C once the program waits for a key. Python's readline checks for
        signals only when its select() is interrupted: a SIGINT that lands
        between the prompt being drawn and select() being entered is noticed
        only at the next key, which a test would wait for in vain."""
        self.wait_until(self.waiting_for_input, "the program waiting for input")
        self.send(CTRL_C)

    def wait_until(self, done: Callable[[], bool], what: str, *, fail: bool = True) -> bool:
        """Poll ``done`` until it holds (a hang guard bounds the wait); False,
        or AssertionError with ``fail``, if it never does."""
        deadline = time.monotonic() + HANG_GUARD_S
        while not done():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                if not fail:
                    return False
                raise AssertionError(
                    f"{what}: never happened; the terminal shows:\n{self.text[-3000:]}"
                )
            time.sleep(0.01)
        return True

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout: float = HANG_GUARD_S) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
