"""``fetch_checkpoint`` against a real HTTP hub on 127.0.0.1 (tests/hub_server.py).

In-process, so a test can hand it progress and cancel callbacks. The suite
runs with ``HF_HUB_OFFLINE=1``, which huggingface_hub reads once at import:
the ``hub`` fixture turns its offline flag off and sets its endpoint to the
test hub, as ``HF_HUB_OFFLINE=0 HF_ENDPOINT=...`` at import would (so nothing
it does reaches another host).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import HF_FIXTURES
from hub_server import (
    NOT_FETCHED,
    Fault,
    HubServer,
    folder_files,
    glm_repo,
    hub_server,
    online,
    padded_repo,
)

from edgeglm.errors import CheckpointError, ModelNotFoundError, UnsafeFormatError
from edgeglm.store.pull import PARTIAL_DIR, PullCancelled, fetch_checkpoint

REPO = "zai-org/glm-tiny"
GLM = HF_FIXTURES / "glm"
CHECKPOINT = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with hub_server() as server:
        online(monkeypatch, server.url)
        yield server


def test_fetches_the_checkpoint_and_nothing_else(hub: HubServer, tmp_path: Path) -> None:
    sha = hub.add_repo(REPO, glm_repo(GLM))
    seen: dict[str, tuple[int, int]] = {}
    got = fetch_checkpoint(
        REPO, None, tmp_path / "dest", progress=lambda f, d, t: seen.__setitem__(f, (d, t))
    )
    assert got.commit == sha and got.revision == "main" and got.endpoint == hub.url
    assert {p.name for p in (tmp_path / "dest").iterdir()} == CHECKPOINT
    for name in CHECKPOINT:
        data = (GLM / name).read_bytes()
        assert (tmp_path / "dest" / name).read_bytes() == data
        assert got.digests[name] == (len(data), hashlib.sha256(data).hexdigest())
        assert seen[name] == (len(data), len(data))  # every file reported, to its end
    assert set(got.skipped) >= set(NOT_FETCHED)
    for name in [*NOT_FETCHED, "reference.npz", "llamacpp_tensors.json"]:
        assert not hub.got("GET", f"/{name}") and not hub.got("HEAD", f"/{name}")
    # every file at the listed commit, never at a branch that may move meanwhile
    assert all(f"/resolve/{sha}/" in r.path for r in hub.got("GET", "") if "/resolve/" in r.path)


def test_a_revision_is_fetched_at_its_commit(hub: HubServer, tmp_path: Path) -> None:
    old = hub.add_repo(REPO, folder_files(GLM), refs=("main", "v1"))
    changed = folder_files(GLM)
    changed["generation_config.json"] = b'{"max_new_tokens": 3}\n'
    new = hub.add_repo(REPO, changed, refs=("main",))
    for rev, sha in (("v1", old), (old, old), ("main", new)):
        got = fetch_checkpoint(REPO, rev, tmp_path / rev)
        assert got.commit == sha
        want = (
            (GLM / "generation_config.json").read_bytes()
            if sha == old
            else changed["generation_config.json"]
        )
        assert (tmp_path / rev / "generation_config.json").read_bytes() == want
    with pytest.raises(ModelNotFoundError, match="no revision 'v2'"):
        fetch_checkpoint(REPO, "v2", tmp_path / "v2")


def test_a_cancelled_transfer_resumes_with_a_range_request(hub: HubServer, tmp_path: Path) -> None:
    files = padded_repo(GLM, 24 << 20)
    hub.add_repo(REPO, files)
    dest = tmp_path / "dest"

    def late(name: str, done: int, total: int) -> None:
        if name == "padding.safetensors" and done >= 20 << 20:
            state["cancel"] = True

    state = {"cancel": False}
    with pytest.raises(PullCancelled, match="pulling it again resumes"):
        fetch_checkpoint(REPO, None, dest, progress=late, cancelled=lambda: state["cancel"])
    partial = list((dest / PARTIAL_DIR).iterdir())
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < len(files["padding.safetensors"])
    have = partial[0].stat().st_size
    assert not (dest / "padding.safetensors").exists()  # nothing unverified under its name

    got = fetch_checkpoint(REPO, None, dest)
    ranges = [r.headers.get("range") for r in hub.got("GET", "/padding.safetensors")]
    assert ranges == [None, f"bytes={have}-"]
    assert (dest / "padding.safetensors").read_bytes() == files["padding.safetensors"]
    assert got.downloaded == len(files["padding.safetensors"]) - have  # the rest only
    assert not (dest / PARTIAL_DIR).exists()


def test_a_corrupted_partial_file_is_fetched_again_whole(hub: HubServer, tmp_path: Path) -> None:
    files = padded_repo(GLM, 24 << 20)
    hub.add_repo(REPO, files)
    dest = tmp_path / "dest"
    reported: list[int] = []
    with pytest.raises(PullCancelled):
        fetch_checkpoint(
            REPO,
            None,
            dest,
            progress=lambda name, done, total: reported.append(done),
            cancelled=lambda: bool(reported) and reported[-1] >= 20 << 20,
        )
    (partial,) = (dest / PARTIAL_DIR).iterdir()
    data = bytearray(partial.read_bytes())
    data[100] ^= 0xFF  # the disk, or the first server, spoiled the resumed part
    partial.write_bytes(data)
    fetch_checkpoint(REPO, None, dest)
    ranges = [r.headers.get("range") for r in hub.got("GET", "/padding.safetensors")]
    assert ranges == [None, f"bytes={len(data)}-", None]  # resumed, caught, fetched whole
    assert (dest / "padding.safetensors").read_bytes() == files["padding.safetensors"]


def test_a_file_corrupted_once_is_fetched_again(hub: HubServer, tmp_path: Path) -> None:
    hub.add_repo(REPO, folder_files(GLM))
    hub.fault(REPO, "model.safetensors", Fault("corrupt"))
    hub.fault(REPO, "tokenizer.json", Fault("corrupt"))  # a non-LFS file: its git blob id
    fetch_checkpoint(REPO, None, tmp_path / "dest")
    for name in ("model.safetensors", "tokenizer.json"):
        assert len(hub.got("GET", f"/{name}")) == 2
        assert (tmp_path / "dest" / name).read_bytes() == (GLM / name).read_bytes()


def test_a_file_always_corrupt_is_an_error_naming_it(hub: HubServer, tmp_path: Path) -> None:
    hub.add_repo(REPO, folder_files(GLM))
    hub.fault(REPO, "model.safetensors", Fault("corrupt", always=True))
    with pytest.raises(CheckpointError, match=r"model\.safetensors .* after fetching it twice"):
        fetch_checkpoint(REPO, None, tmp_path / "dest")
    assert len(hub.got("GET", "/model.safetensors")) == 2
    assert not (tmp_path / "dest" / "model.safetensors").exists()


def test_a_corrupt_file_left_by_an_earlier_pull_is_replaced(hub: HubServer, tmp_path: Path) -> None:
    hub.add_repo(REPO, folder_files(GLM))
    dest = tmp_path / "dest"
    fetch_checkpoint(REPO, None, dest)
    data = bytearray((dest / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (dest / "model.safetensors").write_bytes(data)
    got = fetch_checkpoint(REPO, None, dest)
    assert (dest / "model.safetensors").read_bytes() == (GLM / "model.safetensors").read_bytes()
    assert got.downloaded == len(data)  # that file again, and only it
    assert len(hub.got("GET", "/config.json")) == 1


def test_a_cut_connection_is_resumed_within_the_pull(hub: HubServer, tmp_path: Path) -> None:
    files = padded_repo(GLM, 24 << 20)
    hub.add_repo(REPO, files)
    hub.fault(REPO, "padding.safetensors", Fault("cut", after=15 << 20))
    fetch_checkpoint(REPO, None, tmp_path / "dest")
    ranges = [r.headers.get("range") for r in hub.got("GET", "/padding.safetensors")]
    assert ranges[0] is None and ranges[1] == f"bytes={10 << 20}-"  # from the last written chunk
    assert (tmp_path / "dest" / "padding.safetensors").read_bytes() == files["padding.safetensors"]


def test_pickle_only_repo_is_refused_before_anything_is_fetched(
    hub: HubServer, tmp_path: Path
) -> None:
    hub.add_repo(
        REPO,
        {"config.json": (GLM / "config.json").read_bytes(), "pytorch_model.bin": b"\x80\x04"},
    )
    with pytest.raises(UnsafeFormatError, match=r"only pickle weights found \(pytorch_model\.bin"):
        fetch_checkpoint(REPO, None, tmp_path / "dest")
    assert not hub.got("GET", "/resolve/") and not (tmp_path / "dest").exists()


def test_an_index_naming_a_path_outside_is_refused(hub: HubServer, tmp_path: Path) -> None:
    files = folder_files(GLM)
    index = {"metadata": {}, "weight_map": {"x": "../../outside.safetensors"}}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    hub.add_repo(REPO, files)
    with pytest.raises(CheckpointError, match="leaves"):
        fetch_checkpoint(REPO, None, tmp_path / "dest")
    assert not hub.got("GET", "/model.safetensors")


def test_a_private_repo_needs_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with hub_server(token="hf_test_secret") as server:
        online(monkeypatch, server.url)
        server.add_repo(REPO, folder_files(GLM))
        with pytest.raises(ModelNotFoundError, match=r"not found on .* set HF_TOKEN"):
            fetch_checkpoint(REPO, None, tmp_path / "a", token=False)
        fetch_checkpoint(REPO, None, tmp_path / "b", token="hf_test_secret")
        gets = server.got("GET", "/model.safetensors")
        assert [r.headers.get("authorization") for r in gets] == ["Bearer hf_test_secret"]


def test_offline_is_refused_without_a_request(tmp_path: Path) -> None:
    # The suite's own HF_HUB_OFFLINE=1, as huggingface_hub read it.
    with pytest.raises(ModelNotFoundError, match=r"not available offline \(HF_HUB_OFFLINE=1\)"):
        fetch_checkpoint(REPO, None, tmp_path / "dest", endpoint="http://127.0.0.1:9")


def test_local_copies_are_linked_only_when_they_verify(hub: HubServer, tmp_path: Path) -> None:
    hub.add_repo(REPO, folder_files(GLM))
    data = (GLM / "model.safetensors").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    good.write_bytes(data)
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # recorded as good, but is not

    fetch_checkpoint(
        REPO, None, tmp_path / "a", have={"model.safetensors": (good, len(data), digest)}
    )
    assert not hub.got("GET", "/model.safetensors")
    assert (tmp_path / "a" / "model.safetensors").stat().st_ino == good.stat().st_ino

    fetch_checkpoint(
        REPO, None, tmp_path / "b", have={"model.safetensors": (bad, len(data), digest)}
    )
    assert len(hub.got("GET", "/model.safetensors")) == 1
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == data
    assert bad.read_bytes() != data  # the local file is left as it was
