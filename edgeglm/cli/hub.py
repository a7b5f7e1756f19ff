"""The hub, for every command: ``--pull`` and the download bar ``edgeglm pull``
draws. No commands here (importing it registers nothing)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from edgeglm.cli import err
from edgeglm.errors import ModelNotFoundError

if TYPE_CHECKING:
    from edgeglm.store.pull import Progress

# For the commands that take MODEL (run, chat, bench, plan): the hub is asked
# only with this flag, and only for a model found nowhere on this machine.
PullOpt = Annotated[
    bool,
    typer.Option(
        "--pull",
        help="Fetch MODEL (a repo id) from the hub into the store first when neither the "
        "store nor the Hugging Face cache has it (HF_ENDPOINT, HF_TOKEN; as edgeglm pull).",
    ),
]


def pull_if_missing(refs: Sequence[str | None], wanted: bool) -> None:
    """With ``--pull``: each of ``refs`` that no path, store entry or
    Hugging Face cache entry names is pulled (not converted: the command
    converts at its own quant). Without it, nothing is asked of the network."""
    if not wanted:
        return
    from edgeglm.artifacts import resolve
    from edgeglm.store.pull import pull as pull_checkpoint

    quiet_hub_log()
    for ref in refs:
        if ref is None:
            continue
        try:
            resolve(ref)
            continue
        except ModelNotFoundError:
            pass
        with download_bar() as progress:
            pull_checkpoint(ref, convert=False, progress=progress)
        err.print(f"pulled {ref} into the store", highlight=False)


def quiet_hub_log() -> None:
    """huggingface_hub logs a multi-line warning with the URL each time it
    retries a broken transfer; the bar shows progress, errors come as one line."""
    import logging

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


@contextmanager
def download_bar(enabled: bool = True) -> Iterator[Progress | None]:
    """A ``Progress`` hook drawing one bar per file on stderr (a terminal only;
    None elsewhere), as ``conversion_bar`` draws a conversion."""
    if not enabled or not err.is_terminal:
        yield None
        return
    from rich.progress import TaskID

    from edgeglm.cli.progress import transfer_progress

    with transfer_progress() as bar:
        tasks: dict[str, TaskID] = {}

        finished: set[str] = set()

        def hook(name: str, done: int, total: int) -> None:
            if name in finished:
                return
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total or None)
            bar.update(tasks[name], completed=done, total=total or None)
            if total and done >= total:  # a finished file makes room (a model has many shards)
                bar.remove_task(tasks[name])
                finished.add(name)

        yield hook
