"""A Hugging Face hub on 127.0.0.1, for tests: real HTTP that huggingface_hub
talks to through ``HF_ENDPOINT``, with faults a test can inject.

It serves what ``model_info`` and a file download read, with the headers the
real hub sends (huggingface_hub 2.x: ``X-Repo-Commit``, ``ETag`` /
``X-Linked-Etag``, ``X-Linked-Size``, ``X-Error-Code``; no Xet headers, so
clients use plain HTTP):

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``:
  the repo's commit and files (with ``?blobs=true``: each file's size, git
  blob id and, for LFS files, sha256);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: the file, ``Range: bytes=N-``
  answered with 206;
- with a token set, requests without ``Authorization: Bearer TOKEN`` get the
  hub's 401.

Faults, per (repo, file): ``cut`` (close the connection after N bytes of the
body, once), ``stall`` (send N bytes, then wait until released or stopped),
``corrupt`` (flip one byte, ``once`` or ``always``). Every request is logged
(method, path, headers) for tests to inspect.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import pytest

# Stored with Git LFS on the hub (a repo's .gitattributes): listed with an lfs sha256.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".model", ".npz")


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's content (what the hub lists as ``blobId``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names


@dataclass
class Fault:
    kind: Literal["cut", "stall", "corrupt"]
    after: int = 0  # bytes of the body sent before the cut or stall
    always: bool = False  # else once
    fired: int = 0


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> name -> bytes
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> sha

    def resolve(self, rev: str) -> str | None:
        if rev in self.commits:
            return rev
        return self.refs.get(rev)


def folder_files(folder: Path, *, only: set[str] | None = None) -> dict[str, bytes]:
    """A folder's top-level files (``only``: just these names)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and (only is None or p.name in only)
    }


class HubServer:
    """The server; ``hub_server()`` starts and always stops one."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.faults: dict[tuple[str, str], Fault] = {}
        self.requests: list[Request] = []
        self.stalled = threading.Event()  # a stall fault is holding a transfer
        self.release = threading.Event()  # lets stalled transfers end (closed)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_repo(
        self, repo_id: str, files: Mapping[str, bytes], *, refs: tuple[str, ...] = ("main",)
    ) -> str:
        """A commit of ``files`` in ``repo_id``, which ``refs`` then point at; its sha."""
        h = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            h.update(name.encode() + b"\0" + git_blob_id(files[name]).encode())
        sha = h.hexdigest()
        repo = self.repos.setdefault(repo_id, Repo())
        repo.commits[sha] = dict(files)
        for ref in refs:
            repo.refs[ref] = sha
        return sha

    def fault(self, repo_id: str, name: str, fault: Fault) -> None:
        self.faults[(repo_id, name)] = fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def calls(self) -> list[Request]:
        """The logged requests for repos: model info and files."""
        with self._lock:
            return [r for r in self.requests if _API.match(r.path) or _RESOLVE.match(r.path)]

    def got(self, method: str, suffix: str) -> list[Request]:
        """The logged requests of ``method`` whose path ends with ``suffix``."""
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    # -- called by the handler ---------------------------------------------

    def log(self, r: Request) -> None:
        with self._lock:
            self.requests.append(r)

    def take_fault(self, repo_id: str, name: str) -> Fault | None:
        with self._lock:
            f = self.faults.get((repo_id, name))
            if f is None or (f.fired and not f.always):
                return None
            f.fired += 1
            return f


@contextmanager
def hub_server(token: str | None = None) -> Iterator[HubServer]:
    server = HubServer(token)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def unused_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (a hub that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return None  # the test log, not stderr

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _serve(self, *, body: bool) -> None:
            url = urlsplit(self.path)
            hub.log(
                Request(self.command, url.path, {k.lower(): v for k, v in self.headers.items()})
            )
            if hub.token is not None and self.headers.get("Authorization") != (
                f"Bearer {hub.token}"
            ):
                # What the hub answers for a private repo without access.
                return self._error(401, "RepoNotFound", "Invalid username or password.")
            if url.path == "/api/agent-harnesses":  # huggingface_hub asks once a day
                registry: dict[str, object] = {"standardEnvVars": [], "harnesses": {}}
                return self._send(200, json.dumps(registry).encode(), {})
            if m := _API.match(url.path):
                return self._model_info(
                    unquote(m.group(1)), unquote(m.group(2) or "main"), "blobs=true" in url.query
                )
            if m := _RESOLVE.match(url.path):
                return self._resolve(
                    unquote(m.group(1)), unquote(m.group(2)), unquote(m.group(3)), body=body
                )
            self._error(404, None, "Not Found")

        def _commit(self, repo_id: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            sha = repo.resolve(rev)
            if sha is None:
                self._error(404, "RevisionNotFound", "Invalid rev id: " + rev)
                return None
            return sha, repo.commits[sha]

        def _model_info(self, repo_id: str, rev: str, blobs: bool) -> None:
            found = self._commit(repo_id, rev)
            if found is None:
                return
            sha, files = found
            siblings: list[dict[str, object]] = []
            for name, data in sorted(files.items()):
                s: dict[str, object] = {"rfilename": name}
                if blobs:
                    s["size"] = len(data)
                    s["blobId"] = git_blob_id(data)
                    if name.endswith(LFS_SUFFIXES):
                        s["lfs"] = {
                            "sha256": hashlib.sha256(data).hexdigest(),
                            "size": len(data),
                            "pointerSize": 134,
                        }
                siblings.append(s)
            info = {
                "_id": sha[:24],
                "id": repo_id,
                "modelId": repo_id,
                "sha": sha,
                "private": hub.token is not None,
                "gated": False,
                "disabled": False,
                "tags": [],
                "siblings": siblings,
            }
            self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

        def _resolve(self, repo_id: str, rev: str, name: str, *, body: bool) -> None:
            found = self._commit(repo_id, rev)
            if found is None:
                return
            sha, files = found
            if name not in files:
                return self._error(404, "EntryNotFound", "Entry not found", commit=sha)
            data = files[name]
            headers = {
                "X-Repo-Commit": sha,
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            if name.endswith(LFS_SUFFIXES):
                digest = hashlib.sha256(data).hexdigest()
                headers["ETag"] = f'"{digest}"'
                headers["X-Linked-Etag"] = f'"{digest}"'
                headers["X-Linked-Size"] = str(len(data))
            else:
                headers["ETag"] = f'"{git_blob_id(data)}"'
            if not body:
                return self._send(200, b"", {**headers, "Content-Length": str(len(data))})
            fault = hub.take_fault(repo_id, name)
            if fault is not None and fault.kind == "corrupt":
                i = len(data) // 2
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
            start = 0
            if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
                start = int(m.group(1))
            if start:
                if start >= len(data):
                    return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206 if start else 200, data[start:], headers, fault)

        def _error(
            self, status: int, code: str | None, message: str, *, commit: str | None = None
        ) -> None:
            headers = {"X-Error-Message": message, "Content-Type": "application/json"}
            if code is not None:
                headers["X-Error-Code"] = code
            if commit is not None:
                headers["X-Repo-Commit"] = commit
            self._send(status, json.dumps({"error": message}).encode(), headers)

        def _send(
            self,
            status: int,
            payload: bytes,
            headers: Mapping[str, str],
            fault: Fault | None = None,
        ) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault is None or fault.kind == "corrupt":
                self.wfile.write(payload)
                return
            # cut or stall: part of the body, then the connection ends mid-transfer
            self.wfile.write(payload[: fault.after])
            self.wfile.flush()
            if fault.kind == "stall":
                hub.stalled.set()
                hub.release.wait(timeout=60)
            self.close_connection = True
            with suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


# -- fixture repos -------------------------------------------------------------

# What a GLM repo on the hub holds besides its checkpoint: none of it is fetched.
NOT_FETCHED = {
    "pytorch_model.bin": b"\x80\x04pickle: never downloaded",
    "modeling_glm.py": b"raise SystemExit('remote code: never downloaded')\n",
    "README.md": b"# a model card\n",
}


def glm_repo(fixture: Path) -> dict[str, bytes]:
    """A hub repo made of a committed HF fixture folder, with a pickle file,
    remote code and a README beside it (its reference.npz and
    llamacpp_tensors.json ride along: neither is a checkpoint file)."""
    return {**folder_files(fixture), **NOT_FETCHED}


def padded_repo(fixture: Path, pad_bytes: int) -> dict[str, bytes]:
    """``glm_repo`` plus ``padding.safetensors``, one tensor of ``pad_bytes``:
    a file larger than huggingface_hub's 10 MiB write chunk, so an interrupted
    transfer leaves bytes on disk to resume from."""
    import tempfile

    import numpy as np
    from helpers import write_safetensors

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "padding.safetensors"
        rng = np.random.default_rng(0)
        write_safetensors(path, {"padding": rng.standard_normal(pad_bytes // 4, np.float32)})
        return {**glm_repo(fixture), "padding.safetensors": path.read_bytes()}


def online(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """huggingface_hub in this process as it reads ``HF_HUB_OFFLINE=0
    HF_ENDPOINT=url`` at import (the suite runs offline; a subprocess gets
    those variables in its environment instead)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.delenv("HF_TOKEN", raising=False)
