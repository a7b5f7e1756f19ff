"""Progress on stderr for the long silent steps: converting a checkpoint on
first use (``run``, ``chat --cli``, ``score``, ``bench``), drawn as
``edgeglm convert`` draws it, and moving bytes (``pull``, ``bundle``,
``import``).

A Rich bar on a terminal only: on a pipe, or with ``--json``, nothing is
written (stderr stays for one-line messages). The bar is transient, so
what the command prints next starts on a clean line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from edgeglm.artifacts import ConvertProgress
from edgeglm.cli import err

if TYPE_CHECKING:
    from rich.progress import Progress


def conversion_progress(*, disable: bool = False) -> Progress:
    """The bar a conversion draws on stderr: bytes written, tensors done, time
    left (``edgeglm convert`` and the conversions other commands start)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[tensors]}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=disable,
    )


def transfer_progress() -> Progress:
    """The bar for bytes moved (downloads, bundles, imports): size, speed, time left."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


@contextmanager
def conversion_bar(enabled: bool = True) -> Iterator[ConvertProgress | None]:
    """A hook for ``ensure_gguf``/``ensure_onnx``/``open_backend`` that draws
    each conversion's bytes and tensors; None where nothing is drawn."""
    if not enabled or not err.is_terminal:
        yield None
        return
    from rich.progress import TaskID

    with conversion_progress() as bar:
        tasks: dict[str, TaskID] = {}

        def hook(what: str, i: int, n: int, done: int, total: int) -> None:
            if what not in tasks:  # a conversion starts: the bar appears only now
                tasks[what] = bar.add_task(what, total=total or None, tensors="")
            bar.update(tasks[what], completed=done, total=total, tensors=f"{i}/{n} tensors")

        yield hook
