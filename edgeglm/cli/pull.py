"""``edgeglm pull``: a GLM checkpoint from a Hugging Face hub into the store."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeglm.cli import _fail, _sigterm_as_interrupt, app, out
from edgeglm.cli.hub import download_bar, quiet_hub_log
from edgeglm.errors import EdgeGLMError, UsageError


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
    quiet_hub_log()
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
