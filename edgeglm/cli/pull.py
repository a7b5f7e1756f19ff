"""``edgeglm pull``: a GLM checkpoint from a Hugging Face hub into the store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from edgeglm.cli import _fail, _sigterm_as_interrupt, app, err, out
from edgeglm.errors import EdgeGLMError, UsageError
from edgeglm.store.pull import Progress


@app.command()
def pull(
    repo_id: Annotated[
        str, typer.Argument(help="Hub repo id (ORG/NAME); also its name in the store.")
    ],
    revision: Annotated[
        str | None,
        typer.Option("--revision", "-r", help="Branch, tag or commit (default: main)."),
    ] = None,
    quant: Annotated[
        str | None,
        typer.Option(
            "--quant",
            "-q",
            help="GGUF quant to convert it to afterwards (default: the plan's for this machine).",
        ),
    ] = None,
    no_convert: Annotated[
        bool, typer.Option("--no-convert", help="Only fetch and verify; convert on first use.")
    ] = False,
) -> None:
    """Fetch a checkpoint from a hub into the store, verified, and convert it.

    Safetensors, config, tokenizer and chat template only: never pickle files
    or code. From HF_ENDPOINT (default huggingface.co), with HF_TOKEN; every
    file is checked against the hub's digests; an interrupted pull resumes."""
    from edgeglm.cli.progress import conversion_bar
    from edgeglm.store.pull import pull as pull_checkpoint

    _sigterm_as_interrupt()
    _quiet_hub_log()
    try:
        if no_convert and quant is not None:
            raise UsageError("--quant converts after the pull; --no-convert says not to: give one")
        with download_bar() as progress, conversion_bar() as converting:
            done = pull_checkpoint(
                repo_id,
                revision,
                quant=quant,
                convert=not no_convert,
                progress=progress,
                convert_progress=converting,
            )
    except EdgeGLMError as e:
        _fail(e)
    source = done.entry.manifest.source
    commit = (source.revision or "")[:12]
    if done.fetched is None:
        out.print(
            f"{repo_id}: already in the store at {commit or 'a local copy'}; nothing to fetch",
            highlight=False,
        )
    else:
        f = done.fetched
        size = sum(s for s, _ in f.digests.values())
        out.print(
            f"pulled {repo_id} at {commit} from {f.endpoint}: {len(f.digests)} files, "
            f"{size / 2**20:.1f} MiB, every file verified",
            highlight=False,
        )
        if f.skipped:
            out.print(f"  not fetched: {', '.join(f.skipped)}", highlight=False)
    out.print(f"  store: {done.entry.root}", highlight=False)
    if done.gguf is not None:
        out.print(f"  gguf: {done.gguf}", highlight=False)


def _quiet_hub_log() -> None:
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
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as Bar

    with Bar(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
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
