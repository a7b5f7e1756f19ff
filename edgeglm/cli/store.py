"""``edgeglm models``, ``rm``, ``bundle``, ``import`` and ``verify``: the model store.

Exit codes: 0 done; 2 a bad name or option, an import over a different
entry without ``--force``; 3 no such model or bundle; 4 a bundle or entry
that does not verify (a flipped byte, a missing, extra or renamed file, an
unsafe member, a bad manifest), one line naming the file; 5 not enough disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeglm.cli import _fail, _sigterm_as_interrupt, app, err, out
from edgeglm.errors import CheckpointError, EdgeGLMError
from edgeglm.units import human_bytes

_MIB = 1 << 20


@contextmanager
def _byte_bar(what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A bytes bar on stderr, on a terminal only (None elsewhere)."""
    if not err.is_terminal:
        yield None
        return
    from edgeglm.cli.progress import transfer_progress

    with transfer_progress() as bar:
        task = bar.add_task(what, total=None)

        def hook(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield hook


def _status(problems: list[str], *, rehashed: bool) -> str:
    if problems:
        return "FAILED"
    return "verified" if rehashed else "sizes ok"


def _store_models(rehash: bool) -> tuple[list[dict[str, Any]], list[str]]:
    from edgeglm.store.importer import extra_files, file_problems
    from edgeglm.store.layout import scan

    found, broken = scan()
    models = []
    for e in found:
        src_problems = file_problems(e, e.source_files, digests=rehash)
        checkpoint = None
        if e.has_source:
            checkpoint = {
                "path": str(e.source_dir),
                "size": sum(f.size for f in e.source_files),
                "status": _status(src_problems, rehashed=rehash),
            }
        arts = []
        for a in e.artifacts():
            problems = file_problems(e, a.files, digests=rehash)
            arts.append(
                {
                    "name": a.name,
                    "kind": a.kind,
                    "quant": a.quant,
                    "architecture": a.architecture() if not problems else "",
                    "size": a.size,
                    "path": str(a.path),
                    "status": _status(problems, rehashed=rehash),
                }
            )
            src_problems += problems
        problems = src_problems + extra_files(e)
        models.append(
            {
                "name": e.name,
                "where": "store",
                "path": str(e.root),
                "repo": e.manifest.source.repo,
                "revision": e.manifest.source.revision,
                "checkpoint": checkpoint,
                "artifacts": arts,
                "problems": problems,
            }
        )
    return models, broken


def _cache_models() -> list[dict[str, Any]]:
    """Models in the Hugging Face cache, with what EdgeGLM converted from them
    (nothing here is recorded in a manifest: the hub's cache keeps its own)."""
    from edgeglm.artifacts import cached_path

    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # no cache yet, or one huggingface_hub cannot read
        return []
    models = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            snap = Path(rev.snapshot_path)
            arts = []
            converted = cached_path(snap, "x").parent
            if converted.is_dir():
                for p in sorted(converted.iterdir()):
                    kind = "gguf" if p.suffix == ".gguf" else "onnx" if p.is_dir() else None
                    if kind is None:
                        continue
                    size = (
                        p.stat().st_size
                        if p.is_file()
                        else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                    )
                    quant = p.stem if kind == "gguf" else p.name.removeprefix("onnx-")
                    arts.append(
                        {
                            "name": p.name,
                            "kind": kind,
                            "quant": quant,
                            "architecture": "",
                            "size": size,
                            "path": str(p),
                            "status": "not recorded",
                        }
                    )
            models.append(
                {
                    "name": repo.repo_id,
                    "where": "hf-cache",
                    "path": str(snap),
                    "repo": repo.repo_id,
                    "revision": rev.commit_hash,
                    "checkpoint": {
                        "path": str(snap),
                        "size": rev.size_on_disk,
                        "status": "not recorded",
                    },
                    "artifacts": arts,
                    "problems": [],
                }
            )
    return models


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    rehash: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Re-hash every file of the store against its manifest (without it, "
            "only presence and sizes are checked).",
        ),
    ] = False,
) -> None:
    """List the model store and the Hugging Face cache: checkpoints and converted artifacts."""
    from edgeglm.paths import store_dir

    try:
        store, broken = _store_models(rehash)
    except EdgeGLMError as e:
        _fail(e)
    cached = _cache_models()
    if as_json:
        doc = {"store": str(store_dir()), "models": store + cached, "damaged": broken}
        print(json.dumps(doc, indent=2))
        return
    out.print(f"store: {store_dir()}", highlight=False)
    if not store and not cached:
        out.print("  no models (edgeglm pull REPO, or edgeglm import FILE.tar)", highlight=False)
    for m in store + cached:
        where = "" if m["where"] == "store" else "  (Hugging Face cache)"
        rev = f" @ {m['revision'][:12]}" if m["revision"] else ""
        origin = f"  from {m['repo']}{rev}" if m["repo"] else ""
        out.print(f"{m['name']}{where}{origin}", highlight=False)
        c = m["checkpoint"]
        if c is not None:
            out.print(
                f"  {'source':<16} {'checkpoint':<10} {'':<12} {'':<8} {human_bytes(c['size']):>10}"
                f"  {c['status']}",
                highlight=False,
            )
        for a in m["artifacts"]:
            out.print(
                f"  {a['name']:<16} {a['kind']:<10} {a['architecture'] or '-':<12} "
                f"{a['quant']:<8} {human_bytes(a['size']):>10}  {a['status']}",
                highlight=False,
            )
        for p in m["problems"]:
            out.print(f"  problem: {p}", highlight=False)
    for line in broken:
        out.print(f"damaged entry: {line}", highlight=False)
    if store and not rehash:
        out.print("(sizes checked, not re-hashed: edgeglm models --verify)", highlight=False)


@app.command()
def rm(
    model: Annotated[
        str, typer.Argument(help="A store model, or MODEL:ARTIFACT (Q4_K_M, onnx-int4) alone.")
    ],
) -> None:
    """Remove a model from the store, or one of its converted artifacts. Asks nothing."""
    from edgeglm.store.layout import remove

    name, _, artifact = model.partition(":")
    try:
        freed = remove(name, artifact or None)
    except EdgeGLMError as e:
        _fail(e)
    out.print(f"removed {model} (freed {freed / _MIB:.1f} MiB)", highlight=False)


@app.command()
def bundle(
    model: Annotated[str, typer.Argument(help="A model in the store.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="The bundle to write (a .tar file).")
    ],
    artifacts: Annotated[
        list[str] | None,
        typer.Argument(
            help="What to carry: 'source' (the checkpoint) and/or artifacts (Q4_K_M, "
            "onnx-int4); default everything."
        ),
    ] = None,
) -> None:
    """Write a store model as one tar file, manifest first, for another machine."""
    from edgeglm.store.bundle import write_bundle
    from edgeglm.store.layout import open_entry

    _sigterm_as_interrupt()
    try:
        entry = open_entry(model)
        with _byte_bar(f"bundling {model}") as hook:
            result = write_bundle(entry, output, artifacts, progress=hook)
    except EdgeGLMError as e:
        _fail(e)
    n = len(result.manifest.files)
    files = f"{n} file{'' if n == 1 else 's'}"
    out.print(
        f"wrote {result.output} ({files}, {result.bytes / _MIB:.1f} MiB); on the other "
        f"machine: edgeglm import {result.output.name}",
        highlight=False,
    )


@app.command("import")
def import_(
    src: Annotated[Path, typer.Argument(help="A bundle (.tar) or the folder it was unpacked to.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a store model of this name that has other files."),
    ] = False,
) -> None:
    """Verify a bundle against its manifest and add it to the store."""
    from edgeglm.store.importer import import_bundle

    _sigterm_as_interrupt()
    try:
        with _byte_bar(f"importing {src.name}") as hook:
            result = import_bundle(src, force=force, progress=hook)
    except EdgeGLMError as e:
        _fail(e)
    entry = result.entry
    if result.imported:
        out.print(
            f"imported {entry.name} ({result.bytes / _MIB:.1f} MiB, every file verified) into "
            f"{entry.root}",
            highlight=False,
        )
    elif result.repaired:
        out.print(
            f"{entry.name}: already in the store; put back {len(result.repaired)} damaged "
            f"file(s) from the verified bundle: {', '.join(result.repaired)}",
            highlight=False,
        )
    else:
        out.print(
            f"{entry.name}: already in the store with these files "
            "(bundle verified; nothing changed)",
            highlight=False,
        )


@app.command()
def verify(model: Annotated[str, typer.Argument(help="A model in the store.")]) -> None:
    """Re-hash a store model's files against its manifest: exit 0 when all match, else 4."""
    from edgeglm.store.importer import verify as verify_entry
    from edgeglm.store.layout import open_entry

    try:
        entry = open_entry(model)
        problems = verify_entry(entry)
        if problems:
            for p in problems:
                out.print(p, highlight=False)
            raise CheckpointError(f"{model}: {len(problems)} problem(s); it does not verify")
    except EdgeGLMError as e:
        _fail(e)
    m = entry.manifest
    out.print(
        f"{model}: {len(m.files)} files, {m.total_size / _MIB:.1f} MiB, all verified",
        highlight=False,
    )
