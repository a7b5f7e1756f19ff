"""Fetching a GLM checkpoint from a Hugging Face hub (or a mirror of one) into a folder.

Only what EdgeGLM reads is fetched: safetensors shards (those the index names,
when there is one), config, generation config, tokenizer and chat-template
files. Pickle weights and Python files are never downloaded: a repo that has
only pickle weights is refused, with the reason.

Every file is checked against the digest the hub lists for it (the LFS
sha256, or the git blob sha1 of a small file): a server, proxy or disk that
returned other bytes is caught here (``snapshot_download`` has reported
success on corrupt blobs, huggingface_hub issue 3643). A file that does not
match is deleted and fetched once more; a second mismatch is an error naming it.

Resumable across runs: a file is written to ``.partial/<its digest>`` inside
the destination and moved to its name only once verified. huggingface_hub's
own ``hf_hub_download`` cannot resume after the process ends: in 2.4 it
writes to a process-unique ``.incomplete`` file and deletes it on failure
(huggingface_hub PR 4228). So this module uses its lower-level parts
(``model_info``, the HEAD of ``get_hf_file_metadata`` and ``http_get``, which
sends ``Range`` from where the partial file ends, also when a connection
breaks mid-file), and through them ``HF_ENDPOINT``, ``HF_TOKEN`` and
``HF_HUB_OFFLINE`` as huggingface_hub reads them. ``http_get`` writes in
10 MiB chunks, so that is how much an interruption can cost.

``pull`` puts the result in the store (``edgeglm pull``, ``--pull``, the TUI):
the stable download folder is ``.staging/pull-<org--name>@<revision>`` in
the store, moved into the entry by ``add_checkpoint``; then ``ensure_gguf``
converts it into the entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from edgeglm.checkpoint.hf import INDEX_NAME, PICKLE_SUFFIXES
from edgeglm.errors import (
    CheckpointError,
    EdgeGLMError,
    ExitCode,
    InsufficientDiskError,
    ModelNotFoundError,
    UnsafeFormatError,
    UsageError,
)
from edgeglm.fileio import contained, write_error

if TYPE_CHECKING:
    from edgeglm.artifacts import ConvertProgress
    from edgeglm.store.layout import Entry

# The files of a checkpoint besides its weights, by the names Hugging Face gives them.
CHECKPOINT_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        INDEX_NAME,
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
        "chat_template.jinja",
        "chat_template.json",
    }
)
WEIGHTS_SUFFIX = ".safetensors"
# Where unverified bytes wait, inside the destination (removed once all is verified).
PARTIAL_DIR = ".partial"
_CHUNK = 1 << 20

# (file name, bytes done, bytes in the file): called as bytes arrive and once per file
# that was already there.
Progress = Callable[[str, int, int], None]
# Asked between chunks; True stops the pull with PullCancelled (the partial file stays).
Cancelled = Callable[[], bool]


class PullCancelled(EdgeGLMError):
    """The caller's ``cancelled()`` said stop; what was fetched stays for the next pull."""

    exit_code = ExitCode.INTERRUPTED


@dataclass(frozen=True)
class RemoteFile:
    """One file as the hub lists it (``model_info(files_metadata=True)`` siblings)."""

    name: str
    size: int
    blob_id: str  # git object id: sha1 of b"blob <size>\0" + content
    lfs_sha256: str | None  # the content's sha256, for files stored with Git LFS

    @property
    def digest(self) -> str:
        return self.lfs_sha256 or self.blob_id


@dataclass(frozen=True)
class Fetched:
    """A checkpoint fetched and verified into ``folder``."""

    repo_id: str
    revision: str  # as asked ("main" when none was)
    commit: str  # the commit it resolved to: every file was fetched at this one
    endpoint: str
    folder: Path
    digests: dict[str, tuple[int, str]]  # file name -> (size, sha256)
    downloaded: int  # bytes transferred by this call (not those resumed or already there)
    skipped: list[str] = field(default_factory=list)  # listed files not fetched


def staging_name(repo_id: str, revision: str | None) -> str:
    """The stable folder name a pull of ``repo_id`` at ``revision`` resumes in:
    ``org--name@revision`` (``/`` in a branch name becomes ``--`` too)."""
    rev = revision or "main"
    return f"{repo_id.replace('/', '--')}@{rev.replace('/', '--')}"


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def hub_endpoint(endpoint: str | None = None) -> str:
    """The hub this process talks to: ``endpoint``, else ``HF_ENDPOINT``, else huggingface.co."""
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def fetch_checkpoint(
    repo_id: str,
    revision: str | None,
    dest: Path,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
    have: Mapping[str, tuple[Path, int, str]] | None = None,
) -> Fetched:
    """Fetch ``repo_id`` at ``revision`` (default ``main``) into ``dest`` and verify it.

    ``dest`` is created if needed; files already there from an interrupted
    pull are verified and kept, a partial file is resumed. ``have``: files
    this machine holds already (name -> (path, size, sha256)); an LFS file
    with that sha256 is hard-linked from there instead of fetched (verified
    all the same). ``token``: as huggingface_hub takes it (None: ``HF_TOKEN``
    or the saved login).
    Raises ModelNotFoundError (offline, unreachable, no such repo or
    revision), UnsafeFormatError (pickle weights only), CheckpointError (not
    a checkpoint, or a file that arrived corrupt twice), PullCancelled.
    """
    endpoint = hub_endpoint(endpoint)
    rev = revision or "main"
    if offline():
        raise ModelNotFoundError(f"{repo_id}: not available offline (HF_HUB_OFFLINE=1)")
    with _hub_errors(repo_id, rev, endpoint):
        commit, listing = remote_listing(repo_id, rev, endpoint=endpoint, token=token)
    wanted, skipped = select_files(repo_id, listing)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, dest) from e
    session = _Session(repo_id, commit, endpoint, token, dest, progress, cancelled)
    session.have = dict(have or {})
    # The small files first: the index says which shards the checkpoint uses.
    for f in [f for f in wanted if not f.name.endswith(WEIGHTS_SUFFIX)]:
        session.get(f)
    weights = _weights(repo_id, dest, [f for f in wanted if f.name.endswith(WEIGHTS_SUFFIX)])
    skipped += sorted(
        f.name for f in wanted if f.name.endswith(WEIGHTS_SUFFIX) and f not in weights
    )
    session.check_space(weights)
    for f in weights:
        session.get(f)
    shutil.rmtree(dest / PARTIAL_DIR, ignore_errors=True)  # stale partials of other contents
    _drop_strays(dest, session.digests)
    return Fetched(
        repo_id=repo_id,
        revision=rev,
        commit=commit,
        endpoint=endpoint,
        folder=dest,
        digests=session.digests,
        downloaded=session.downloaded,
        skipped=skipped,
    )


def _drop_strays(dest: Path, keep: dict[str, tuple[int, str]]) -> None:
    """Checkpoint files an earlier pull into ``dest`` left that this checkpoint
    does not have (a shard of another commit): removed, so the folder holds
    exactly what was verified. Other files are never touched."""
    for p in dest.iterdir():
        ours = p.name in CHECKPOINT_FILES or p.name.endswith(WEIGHTS_SUFFIX)
        if ours and p.name not in keep and p.is_file() and not p.is_symlink():
            p.unlink()


# -- what the hub lists ----------------------------------------------------


def remote_listing(
    repo_id: str, revision: str, *, endpoint: str, token: str | bool | None
) -> tuple[str, list[RemoteFile]]:
    """The commit ``revision`` resolves to, and every file of the repo there."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint, token=token).model_info(
        repo_id, revision=revision, files_metadata=True
    )
    if not info.sha:
        raise ModelNotFoundError(f"{repo_id}: {endpoint} gave no commit for revision {revision!r}")
    files = []
    for s in info.siblings or []:
        if s.size is None or s.blob_id is None:
            raise ModelNotFoundError(
                f"{repo_id}: {endpoint} lists {s.rfilename!r} without its size and digest; "
                "EdgeGLM verifies every file it fetches, so it cannot pull from there"
            )
        files.append(
            RemoteFile(s.rfilename, s.size, s.blob_id, s.lfs.sha256 if s.lfs is not None else None)
        )
    return info.sha, files


def select_files(repo_id: str, listing: Iterable[RemoteFile]) -> tuple[list[RemoteFile], list[str]]:
    """(the files a checkpoint needs, the names left out). Only top-level files:
    a name with a folder in it is never a file EdgeGLM reads."""
    wanted, skipped = [], []
    for f in listing:
        top = "/" not in f.name and "\\" not in f.name and f.name not in ("", ".", "..")
        if top and (f.name in CHECKPOINT_FILES or f.name.endswith(WEIGHTS_SUFFIX)):
            wanted.append(f)
        else:
            skipped.append(f.name)
    names = {f.name for f in wanted}
    if not any(n.endswith(WEIGHTS_SUFFIX) for n in names):
        pickles = sorted(n for n in skipped if PurePosixPath(n).suffix in PICKLE_SUFFIXES)
        if pickles:
            raise UnsafeFormatError(
                f"{repo_id}: only pickle weights found ({', '.join(pickles)}). Pickle files "
                "can run arbitrary code when loaded, so EdgeGLM refuses them and fetched "
                "nothing; convert them to safetensors on a trusted machine first (transformers: "
                "model.save_pretrained(dir, safe_serialization=True))."
            )
        raise CheckpointError(f"{repo_id}: no .safetensors weights in the repo; nothing fetched")
    if "config.json" not in names:
        raise CheckpointError(
            f"{repo_id}: no config.json in the repo; not a Hugging Face model, nothing fetched"
        )
    return sorted(wanted, key=lambda f: f.name), sorted(skipped)


def _weights(repo_id: str, dest: Path, shards: list[RemoteFile]) -> list[RemoteFile]:
    """The shards the index names (all of them when there is no index)."""
    index = dest / INDEX_NAME
    if not index.is_file():
        return shards
    from edgeglm.checkpoint.hf import read_json

    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{repo_id}: {INDEX_NAME} has no weight_map")
    by_name = {f.name: f for f in shards}
    used = []
    for name in sorted({str(v) for v in weight_map.values()}):
        contained(dest, name, what=f"{repo_id}: {INDEX_NAME}")
        if name not in by_name:
            raise CheckpointError(
                f"{repo_id}: {INDEX_NAME} names shard {name!r}, which the repo does not have"
            )
        used.append(by_name[name])
    return used


# -- fetching and verifying ------------------------------------------------


class _Session:
    """One pull: the hub's coordinates, the destination and what was fetched so far."""

    def __init__(
        self,
        repo_id: str,
        commit: str,
        endpoint: str,
        token: str | bool | None,
        dest: Path,
        progress: Progress | None,
        cancelled: Cancelled | None,
    ) -> None:
        self.repo_id, self.commit, self.endpoint, self.token = repo_id, commit, endpoint, token
        self.dest = dest
        self.progress = progress
        self.cancelled = cancelled
        self.digests: dict[str, tuple[int, str]] = {}
        self.downloaded = 0
        self.have: dict[str, tuple[Path, int, str]] = {}

    def _check_cancel(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise PullCancelled(f"{self.repo_id}: pull cancelled; pulling it again resumes")

    def check_space(self, files: list[RemoteFile]) -> None:
        need = 0
        for f in files:
            final, partial = self._paths(f)
            if not final.is_file():
                need += f.size - (partial.stat().st_size if partial.is_file() else 0)
        free = shutil.disk_usage(self.dest).free
        if need > free:
            raise InsufficientDiskError(
                f"{self.dest}: {self.repo_id} needs {need / 2**30:.2f} GiB more, "
                f"only {free / 2**30:.2f} GiB free"
            )

    def _paths(self, f: RemoteFile) -> tuple[Path, Path]:
        final = contained(self.dest, f.name, what=f"{self.repo_id} on {self.endpoint}")
        # Keyed by content: a partial is only ever resumed with the same bytes.
        return final, self.dest / PARTIAL_DIR / f.digest

    def get(self, f: RemoteFile) -> None:
        """``f`` fetched (or found already there) and verified at its name in ``dest``."""
        final, partial = self._paths(f)
        if final.is_file():
            sha256 = self._verified(final, f)
            if sha256 is not None:
                self.digests[f.name] = (f.size, sha256)
                self._report(f.name, f.size, f.size)
                return
            final.unlink()  # a wrong file under the right name: fetched again below
        if self._link_local(f, partial):
            sha256 = self._verified(partial, f)
            if sha256 is not None:
                os.replace(partial, final)
                self.digests[f.name] = (f.size, sha256)
                self._report(f.name, f.size, f.size)
                return
            partial.unlink()  # the local copy is not what it was recorded as: fetch it
        for attempt in (1, 2):
            self._download(f, partial)
            sha256 = self._verified(partial, f)
            if sha256 is not None:
                os.replace(partial, final)
                self.digests[f.name] = (f.size, sha256)
                return
            partial.unlink()  # corrupt, whether it was resumed or whole: start over once
            if attempt == 2:
                raise CheckpointError(
                    f"{self.repo_id}: {f.name} from {self.endpoint} does not match its listed "
                    f"digest ({f.digest}) after fetching it twice; the server or a proxy "
                    "is serving other bytes. Nothing was added to the store."
                )

    def _link_local(self, f: RemoteFile, partial: Path) -> bool:
        """``partial`` made a hard link to a local file recorded with ``f``'s
        LFS sha256 (a store entry's, when only other files of a repo changed)."""
        local = self.have.get(f.name)
        if local is None or f.lfs_sha256 is None:
            return False
        path, size, sha256 = local
        if size != f.size or sha256 != f.lfs_sha256.lower():
            return False
        try:
            partial.parent.mkdir(exist_ok=True)
            partial.unlink(missing_ok=True)
            os.link(path, partial)
        except OSError:  # another filesystem, or no hard links: fetched instead
            return False
        return True

    def _report(self, name: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(name, done, total)

    def _verified(self, path: Path, f: RemoteFile) -> str | None:
        """The file's sha256 when its size and digest are the listed ones, else None."""
        size = path.stat().st_size
        if size != f.size:
            return None
        sha256, blob = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                self._check_cancel()
                sha256.update(chunk)
                blob.update(chunk)
        if f.lfs_sha256 is not None:
            ok = sha256.hexdigest() == f.lfs_sha256.lower()
        else:
            ok = blob.hexdigest() == f.blob_id.lower()
        return sha256.hexdigest() if ok else None

    def _download(self, f: RemoteFile, partial: Path) -> None:
        """The rest of ``f`` appended to ``partial`` (all of it, when there is none)."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        self._check_cancel()
        try:
            partial.parent.mkdir(exist_ok=True)
            have = partial.stat().st_size if partial.is_file() else 0
            if have > f.size:  # cannot be a prefix of this file
                partial.unlink()
                have = 0
        except OSError as e:
            raise write_error(e, partial) from e
        url = hf_hub_url(self.repo_id, f.name, revision=self.commit, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token)
        headers["Accept-Encoding"] = "identity"  # byte ranges of the file itself, never gzip
        with _hub_errors(self.repo_id, self.commit, self.endpoint, f.name):
            meta = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint)
            if meta.commit_hash and meta.commit_hash != self.commit:
                raise ModelNotFoundError(
                    f"{self.repo_id}: {f.name} resolved to commit {meta.commit_hash}, "
                    f"not {self.commit} as listed"
                )
            location = meta.location or url
            if _host(location) != _host(url):  # a CDN: signed URL, no token for it
                headers.pop("authorization", None)
            transfer = _Transfer(f.name, f.size, self._report, self._check_cancel)
            try:
                with open(partial, "r+b" if have else "wb") as out:
                    out.seek(have)
                    http_get(
                        location,
                        out,
                        resume_size=have,
                        headers=headers,
                        expected_size=f.size,
                        displayed_filename=f.name,
                        tqdm_class=cast(Any, transfer.bar),
                    )
            except OSError as e:
                if _is_transfer_error(e):
                    raise
                raise write_error(e, partial) from e
            finally:
                self.downloaded += transfer.transferred
        self._report(f.name, f.size, f.size)


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc


def _is_transfer_error(e: OSError) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    # http_get's size check ("Consistency check failed") is an OSError with no errno.
    return isinstance(e, HfHubHTTPError) or e.errno is None


class _Transfer:
    """One file's transfer: what ``http_get``'s progress bar reports goes to
    ``Progress``, and a cancel request is noticed while bytes stream in."""

    def __init__(self, name: str, size: int, report: Progress, check: Callable[[], None]) -> None:
        self.name, self.size, self.report, self.check = name, size, report, check
        self.transferred = 0

    def bar(self, *, initial: int = 0, **_: object) -> _Bar:
        """Passed to ``http_get`` as its ``tqdm_class``: called with tqdm's keywords."""
        return _Bar(self, initial)


class _Bar:
    """The part of a tqdm bar ``http_get`` uses."""

    def __init__(self, transfer: _Transfer, initial: int) -> None:
        self.t, self.n = transfer, initial
        transfer.report(transfer.name, initial, transfer.size)

    def update(self, n: float | None = 1) -> None:
        step = int(n or 0)
        self.n += step
        self.t.transferred += step
        self.t.check()
        self.t.report(self.t.name, self.n, self.t.size)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class _hub_errors:  # a context manager, named like one
    """huggingface_hub's and the network's exceptions as one-line EdgeGLM errors."""

    def __init__(self, repo_id: str, revision: str, endpoint: str, file: str | None = None):
        self.repo_id, self.revision, self.endpoint, self.file = repo_id, revision, endpoint, file

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, EdgeGLMError):
            return
        mapped = _map_hub_error(exc, self.repo_id, self.revision, self.endpoint, self.file)
        if mapped is not None:
            raise mapped from exc


def _map_hub_error(
    e: Exception, repo_id: str, revision: str, endpoint: str, file: str | None
) -> EdgeGLMError | None:
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"{repo_id}: {file}" if file else repo_id
    if isinstance(e, OfflineModeIsEnabled):
        return ModelNotFoundError(f"{repo_id}: not available offline (HF_HUB_OFFLINE=1)")
    if isinstance(e, GatedRepoError):
        return ModelNotFoundError(
            f"{repo_id}: gated on {endpoint}; accept its terms there and set HF_TOKEN"
        )
    if isinstance(e, RepositoryNotFoundError):
        return ModelNotFoundError(
            f"{repo_id}: not found on {endpoint} (or private: set HF_TOKEN to a token "
            "that can read it)"
        )
    if isinstance(e, RevisionNotFoundError):
        return ModelNotFoundError(f"{repo_id}: no revision {revision!r} on {endpoint}")
    if isinstance(e, RemoteEntryNotFoundError):
        return ModelNotFoundError(f"{what}: listed but not found on {endpoint}")
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else "?"
        return ModelNotFoundError(f"{what}: {endpoint} answered HTTP {status}; try again later")
    if isinstance(e, httpx2.TransportError):
        reason = str(e) or type(e).__name__
        return ModelNotFoundError(f"{what}: cannot reach {endpoint} ({reason})")
    if isinstance(e, OSError) and e.errno is None:  # http_get's size check
        return ModelNotFoundError(f"{what}: the transfer from {endpoint} broke off ({e})")
    if isinstance(e, (json.JSONDecodeError, KeyError, TypeError)):
        return ModelNotFoundError(f"{repo_id}: {endpoint} did not answer like a Hugging Face hub")
    return None


# -- into the store ---------------------------------------------------------


@dataclass(frozen=True)
class Pulled:
    """What ``pull`` did: the store entry, and what it fetched and converted."""

    entry: Entry
    fetched: Fetched | None  # None: the store had it already (nothing was fetched)
    gguf: Path | None  # the converted artifact (None with convert=False)


def pull_staging(repo_id: str, revision: str | None) -> Path:
    """The stable folder a pull of ``repo_id`` at ``revision`` downloads into:
    inside the store's staging area (same filesystem, so ``add_checkpoint``
    moves it), and the same on every run, so an interrupted pull resumes."""
    from edgeglm.paths import store_dir
    from edgeglm.store.layout import STAGING

    return store_dir() / STAGING / f"pull-{staging_name(repo_id, revision)}"


def in_store(repo_id: str, revision: str | None) -> Entry | None:
    """The store's entry of ``repo_id`` when it was pulled from that repo at
    ``revision`` (None: any; a commit sha or its prefix: that commit) and all
    its source files are there; else None. Never touches the network: a
    branch name is matched by the caller against the commit it resolves to."""
    from edgeglm.store.layout import check_name, find

    check_name(repo_id)
    entry = find(repo_id)
    if entry is None or not entry.has_source or entry.manifest.source.repo != repo_id:
        return None
    commit = entry.manifest.source.revision or ""
    if revision is not None and not (_is_sha(revision) and commit.startswith(revision.lower())):
        return None
    for f in entry.source_files:
        try:
            if (entry.root / f.path).stat().st_size != f.size:
                return None
        except OSError:
            return None
    return entry


def _is_sha(rev: str) -> bool:
    return 7 <= len(rev) <= 40 and all(c in "0123456789abcdef" for c in rev.lower())


def pull(
    repo_id: str,
    revision: str | None = None,
    *,
    quant: str | None = None,
    convert: bool = True,
    progress: Progress | None = None,
    convert_progress: ConvertProgress | None = None,
    cancelled: Cancelled | None = None,
) -> Pulled:
    """``repo_id`` at ``revision`` in the store, fetched and verified unless
    the store has it there already, then converted to ``quant`` (None: the
    planner's quant for this machine) unless ``convert`` is False. What
    ``edgeglm pull`` and ``--pull`` run; the TUI passes ``cancelled``."""
    from edgeglm.store.layout import add_checkpoint, check_name, write_manifest
    from edgeglm.store.manifest import Source

    check_name(repo_id)
    if quant is not None:
        from edgeglm.converters.gguf.quant_types import scheme

        quant = scheme(quant).name  # an unknown quant is refused before any download
    entry = _already(repo_id, revision)
    fetched = None
    if entry is None:
        dest = pull_staging(repo_id, revision)
        with _pull_lock(dest):
            fetched = fetch_checkpoint(
                repo_id,
                revision,
                dest,
                progress=progress,
                cancelled=cancelled,
                have=_local_files(repo_id),
            )
            where = None if fetched.endpoint == _HF_ENDPOINT else fetched.endpoint
            source = Source(repo=repo_id, revision=fetched.commit, endpoint=where)
            entry = add_checkpoint(repo_id, dest, source, fetched.digests)
            if entry.manifest.source != source:
                # The same files at a newer commit: the entry (and its artifacts)
                # stay; the commit they were verified at is recorded.
                manifest = replace(entry.manifest, source=source)
                write_manifest(entry.root, manifest)
                entry = replace(entry, manifest=manifest)
    gguf = convert_entry(entry, quant, convert_progress) if convert else None
    if gguf is not None:
        from edgeglm.store.layout import find

        entry = find(repo_id) or entry
    return Pulled(entry, fetched, gguf)


_HF_ENDPOINT = "https://huggingface.co"


def _local_files(repo_id: str) -> dict[str, tuple[Path, int, str]]:
    """The store's source files of ``repo_id`` (whatever commit they came
    from): reused for an LFS file whose content has not changed."""
    from edgeglm.store.layout import find

    entry = find(repo_id)
    if entry is None:
        return {}
    prefix = "source/"
    return {
        f.path[len(prefix) :]: (entry.root / f.path, f.size, f.sha256) for f in entry.source_files
    }


def _already(repo_id: str, revision: str | None) -> Entry | None:
    """The store's complete entry of ``repo_id`` at ``revision``, if it has one.
    A commit sha is compared as it is; a branch or tag (default ``main``) is
    resolved on the hub first, so a moved branch is fetched again. Offline,
    the store's copy is taken as it is (it cannot be compared)."""
    rev = revision or "main"
    entry = in_store(repo_id, rev if _is_sha(rev) else None)
    if entry is None or _is_sha(rev) or offline():
        return entry
    endpoint = hub_endpoint()
    with _hub_errors(repo_id, rev, endpoint):
        commit, _ = remote_listing(repo_id, rev, endpoint=endpoint, token=None)
    return in_store(repo_id, commit)


def convert_entry(entry: Entry, quant: str | None, progress: ConvertProgress | None = None) -> Path:
    """The entry's GGUF at ``quant`` (None: the planner's for this machine):
    ``ensure_gguf`` converts a store checkpoint into its entry's ``artifacts/``
    and records it, unless it is there already."""
    from edgeglm.artifacts import ensure_gguf

    return ensure_gguf(entry.source_dir, quant or planned_quant(entry.source_dir), progress)


def planned_quant(checkpoint: Path) -> str:
    """The GGUF quant ``run`` would convert ``checkpoint`` to on this machine."""
    from edgeglm.hardware import probe
    from edgeglm.planner.planner import make_plan
    from edgeglm.planner.sources import open_model
    from edgeglm.runtime import checkpoint_quant

    plan = make_plan(open_model(str(checkpoint)), probe(bandwidth=False))
    return checkpoint_quant(checkpoint, plan, None)


@contextmanager
def _pull_lock(dest: Path) -> Iterator[None]:
    """One pull per staging folder at a time: two would write the same partial files."""
    lock = dest.parent / f"{dest.name}.lock"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise write_error(e, lock) from e
    try:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; one pull at a time is on the user
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(
                f"{dest.name}: another edgeglm pull is fetching it; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            # Nothing left to resume (finished, or failed before a byte came):
            # the lock goes too; a partial download keeps it beside its folder.
            if not dest.exists():
                lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
