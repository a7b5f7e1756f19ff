"""Model references and the artifacts behind them.

``MODEL`` on the command line may be a GGUF file, an ONNX folder, a Hugging
Face folder, a model in EdgeGLM's store (``NAME`` or ``NAME:ARTIFACT``) or a
repo id in the local HF cache, looked up in that order; none means the
bundled demo model. Hugging Face checkpoints are converted once: a store
model's into its entry's ``artifacts/`` (recorded in its manifest, so
``models`` lists them and ``bundle`` carries them), any other into EdgeGLM's
cache, keyed by the checkpoint's files. Every GGUF passes strict header checks
(gguf_file.py), then is loaded once in a child process per content (sha256),
since llama.cpp aborts the whole process on some malformed models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeglm.backends.isolated import run_isolated
from edgeglm.errors import CheckpointError, EdgeGLMError, UsageError
from edgeglm.fileio import atomic_output
from edgeglm.gguf_file import is_gguf, read_gguf
from edgeglm.models import default_model
from edgeglm.paths import cache_dir

Kind = Literal["gguf", "onnx", "hf"]
# A conversion's progress, as the converters report it, the first argument
# replaced by what is being made ("glm4 to Q4_K_M"): (what, tensor i, of n,
# bytes done, of total). The CLI draws it as `edgeglm convert` does.
ConvertProgress = Callable[[str, int, int, int, int], None]
# What a checkpoint is converted to when nothing chose a quant (--no-plan):
# llama.cpp's "balanced" default.
DEFAULT_QUANT = "Q4_K_M"


@dataclass(frozen=True)
class Artifact:
    kind: Kind
    path: Path


def resolve(ref: str | None) -> Artifact:
    """What ``ref`` names. A GGUF (by suffix or by magic) passes every header
    and metadata check before it is returned; a file or folder EdgeGLM cannot read is a
    CheckpointError (exit 4), a path that does not exist ModelNotFoundError (3)."""
    if ref is None:
        return Artifact("hf", default_model())
    p = Path(ref).expanduser()
    if p.is_file():
        if p.suffix.lower() == ".gguf" or is_gguf(p):
            return _checked_gguf(p)
        raise CheckpointError(
            f"{p}: not a GGUF file (expected a .gguf, an ONNX folder or a model folder)"
        )
    if p.is_dir():
        if (p / "genai_config.json").is_file() or any(p.glob("*.onnx")):
            return Artifact("onnx", p)
        if (p / "config.json").is_file():
            return Artifact("hf", p)
        raise CheckpointError(
            f"{p}: no config.json and no .onnx files; neither a Hugging Face model folder "
            "nor an ONNX folder"
        )
    if p.exists():
        raise CheckpointError(f"{p}: not a regular file or folder")
    stored = from_store(ref)
    if stored is not None:
        return stored
    from edgeglm.checkpoint.hf import resolve_checkpoint

    return Artifact("hf", resolve_checkpoint(ref))


def _checked_gguf(p: Path) -> Artifact:
    from edgeglm.planner.sources import open_model

    # The header, and its metadata against its tensors, exactly as `plan`
    # checks them: every command refuses the same files.
    open_model(str(p))
    return Artifact("gguf", p)


def from_store(ref: str) -> Artifact | None:
    """What ``NAME`` or ``NAME:ARTIFACT`` names in the store (None: no such
    entry). A model with a checkpoint is that checkpoint (converted as any
    other, into its entry); one without is its only artifact."""
    from edgeglm.store.layout import find, known_artifacts
    from edgeglm.store.manifest import valid_name

    name, _, wanted = ref.partition(":")
    if not valid_name(name):
        return None
    entry = find(name)
    if entry is None:
        return None
    if wanted == "source" or (not wanted and entry.has_source):
        if not entry.has_source:
            raise UsageError(f"{name}: has no source checkpoint; it has: {known_artifacts(entry)}")
        return Artifact("hf", entry.source_dir)
    arts = entry.artifacts()
    if wanted:
        found = entry.artifact(wanted)
        if found is None:
            raise UsageError(f"{name} has no artifact {wanted!r}; it has: {known_artifacts(entry)}")
    elif len(arts) == 1:
        found = arts[0]
    elif not arts:
        raise CheckpointError(f"{entry.root}: store model {name} holds no files to run")
    else:
        choices = ", ".join(f"{name}:{a.name}" for a in arts)
        raise UsageError(f"{name} has several artifacts and no checkpoint; name one: {choices}")
    if found.kind == "gguf":
        return _checked_gguf(found.path)
    return Artifact("onnx", found.path)


def _fingerprint(folder: Path) -> str:
    """Changes whenever the checkpoint's files do (names, sizes, mtimes)."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _labelled(progress: ConvertProgress | None, what: str) -> ConvertProgress | None:
    """The converter's callback with its tensor name replaced by ``what``."""
    if progress is None:
        return None
    report = progress

    def hook(_name: str, i: int, n: int, done: int, total: int) -> None:
        report(what, i, n, done, total)

    return hook


def _label(hf_folder: Path) -> str:
    """How a conversion names its checkpoint: the store name, else the folder's."""
    from edgeglm.store.layout import store_entry_of

    entry = store_entry_of(hf_folder)
    return entry.name if entry is not None else hf_folder.name


def ensure_gguf(
    hf_folder: Path, quant: str = DEFAULT_QUANT, progress: ConvertProgress | None = None
) -> Path:
    """The GGUF of a Hugging Face checkpoint, converting it on first use
    (``progress`` hears of the conversion, if there is one)."""
    from edgeglm.converters.gguf.convert import convert

    hook = _labelled(progress, f"converting {_label(hf_folder)} to {quant.upper()}")
    return _cached_artifact(
        hf_folder,
        f"{quant.upper()}.gguf",
        lambda out: convert(hf_folder, out, quant, progress=hook),
    )


def ensure_onnx(
    hf_folder: Path, quant: str = "int4", progress: ConvertProgress | None = None
) -> Path:
    """The ONNX folder of a Hugging Face checkpoint, converting it on first use."""
    from edgeglm.converters.onnx import convert

    hook = _labelled(progress, f"converting {_label(hf_folder)} to ONNX {quant.lower()}")
    return _cached_artifact(
        hf_folder,
        f"onnx-{quant.lower()}",
        lambda out: convert(hf_folder, out, quant, progress=hook),
    )


def cached_path(hf_folder: Path, name: str) -> Path:
    """Where the artifact ``name`` of a checkpoint is (or will be): a store
    model's ``artifacts/`` folder, else the cache's
    ``artifacts/<model>-<fingerprint>/``."""
    from edgeglm.store.layout import store_entry_of

    entry = store_entry_of(hf_folder)
    if entry is not None:
        return entry.artifacts_dir / name
    return cache_dir() / "artifacts" / f"{hf_folder.name}-{_fingerprint(hf_folder)}" / name


def _cached_artifact(hf_folder: Path, name: str, make: Callable[[Path], object]) -> Path:
    """The artifact ``name`` of ``hf_folder`` (see ``cached_path``), made by
    ``make`` if missing; a failed conversion leaves no empty folder behind.
    In the store, what is made is recorded in the entry's manifest."""
    from edgeglm.store.layout import add_artifact, store_entry_of

    entry = store_entry_of(hf_folder)
    out = cached_path(hf_folder, name)
    out_dir = out.parent
    if out.exists():
        if entry is not None and entry.artifact(name) is None:
            add_artifact(entry, out)  # made, but the recording was interrupted
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = make(out)
    except BaseException:
        with contextlib.suppress(OSError):  # only if empty: other artifacts stay
            out_dir.rmdir()
        raise
    if entry is not None:
        add_artifact(entry, out, _known_digests(result, out))
    return out


def _known_digests(result: object, out: Path) -> dict[str, tuple[int, str]]:
    """The digests a conversion computed as it wrote (ConvertResult), so the
    store does not read the artifact again to record it."""
    from edgeglm.converters.output import ConvertResult

    if not isinstance(result, ConvertResult):
        return {}
    if result.format == "gguf":
        return {out.name: (result.bytes, result.sha256)}
    known = {"model.onnx": (result.files.get("model.onnx", -1), result.sha256)}
    if result.data_sha256 is not None:
        known["model.onnx.data"] = (result.files.get("model.onnx.data", -1), result.data_sha256)
    return known


def _probe(path: str) -> str:
    from edgeglm.backends.llamacpp import LlamaCppModel

    m = LlamaCppModel(Path(path), n_ctx=64)
    try:  # a load and a short decode exercise the graph llama.cpp builds
        m.llm.eval(m.tokenize("Hello, GLM.")[:8] or [0])
    finally:
        m.close()
    return "ok"


# Verdicts are keyed on the file's content (sha256). Hashing a large GGUF
# takes seconds, so digests are memoized on the file's identity: device,
# inode, size, mtime and ctime. ctime cannot be set from user space (utime
# sets only atime/mtime), so a file rewritten in place with its mtime
# restored has a new ctime and is hashed again. Timestamps have a coarse
# granularity, so a file changed within a second of being hashed could keep
# its identity: such "racily clean" digests (as git calls them) are not
# memoized.
RACY_NS = 1_000_000_000
_VERDICTS = "verified-gguf.json"
_DIGESTS = "gguf-digests.json"
_CACHE_VERSION = 2
_CACHE_ENTRIES = 512


def memoizable(before: os.stat_result, after: os.stat_result) -> bool:
    """Whether what was read between two stats of a file may be remembered by
    its identity: unchanged while read, and not "racily clean" (see above)."""
    settled = time.time_ns() - max(after.st_mtime_ns, after.st_ctime_ns) > RACY_NS
    return settled and file_identity(after) == file_identity(before)


def file_identity(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def load_memo(name: str) -> dict[str, str]:
    try:
        data = json.loads((cache_dir() / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION:
        return {}  # an older layout (path/size/mtime keys) or damage: start afresh
    entries = data.get("entries")
    if not isinstance(entries, dict):
        return {}
    return {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, str)}


def save_memo(name: str, entries: dict[str, str]) -> None:
    """Best effort: a cache that cannot be written is only not remembered."""
    kept = dict(list(entries.items())[-_CACHE_ENTRIES:])
    try:
        with atomic_output(cache_dir() / name) as tmp:
            tmp.write_text(json.dumps({"version": _CACHE_VERSION, "entries": kept}))
    except EdgeGLMError:
        pass


def _sha256(path: Path) -> str:
    """The file's sha256, memoized on its identity (see above)."""
    memo = load_memo(_DIGESTS)
    try:
        with open(path, "rb") as f:
            before = os.fstat(f.fileno())
            known = memo.get(file_identity(before))
            if known is not None:
                return known
            h = hashlib.sha256()
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
            after = os.fstat(f.fileno())
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e
    digest = h.hexdigest()
    if memoizable(before, after):
        memo.pop(file_identity(before), None)
        memo[file_identity(before)] = digest
        save_memo(_DIGESTS, memo)
    return digest


def verify_gguf(path: Path) -> None:
    """Check the header, then load the GGUF in a child once per content.

    A file that fails the header checks is a CheckpointError (exit 4); one
    llama.cpp cannot load, or crashes on, a BackendError (exit 6). Files
    that loaded are remembered by their sha256, so a changed file is always
    loaded in a child again, whatever its timestamps say.
    """
    read_gguf(path)
    digest = _sha256(path)
    verdicts = load_memo(_VERDICTS)
    if verdicts.get(digest) == "ok":
        return
    run_isolated(_probe, str(path), what=f"llama.cpp loading {path.name}")
    verdicts.pop(digest, None)
    verdicts[digest] = "ok"
    save_memo(_VERDICTS, verdicts)
