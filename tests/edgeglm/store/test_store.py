"""The store itself: manifests, entries, verify in place, rm, models, bundle
errors, and conversions of a store model landing in its entry."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from helpers import HF_FIXTURES, edgeglm, record_artifacts
from malformed.bundles import tree

from edgeglm.errors import CheckpointError, UsageError
from edgeglm.store.layout import (
    Entry,
    add_checkpoint,
    check_name,
    entry_dir,
    find,
    staging_dir,
)
from edgeglm.store.manifest import Manifest, Source, hash_file, role_of

NAME = "test/glm4"


def _manifest(**change: object) -> bytes:
    doc: dict[str, object] = {
        "schema": 1,
        "name": "org/model",
        "source": {"repo": "org/model", "revision": None, "endpoint": None},
        "tools": {"edgeglm": "0.1.0"},
        "files": [{"path": "source/config.json", "size": 2, "sha256": "a" * 64, "role": "config"}],
    }
    doc.update(change)
    return json.dumps(doc).encode()


def _files(path: str, sha: str = "a" * 64, size: object = 2) -> list[dict[str, object]]:
    return [{"path": path, "size": size, "sha256": sha, "role": "config"}]


def test_a_valid_manifest_round_trips() -> None:
    m = Manifest.parse(_manifest(), what="x")
    assert m.name == "org/model" and m.files[0].path == "source/config.json"
    assert Manifest.parse(m.to_json(), what="x") == m


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"schema": 2}, "schema 2"),
        ({"schema": True}, "schema True"),
        ({"name": "a--b"}, "name"),
        ({"name": "org/model/x"}, "name"),
        ({"files": _files("source/config.json", sha="A" * 64)}, "64 lowercase hex"),
        ({"files": _files("source/config.json", sha="a" * 63)}, "64 lowercase hex"),
        ({"files": _files("source/config.json", size=-1)}, "size -1"),
        ({"files": _files("source/config.json", size=1.5)}, "size 1.5"),
        ({"files": _files("/etc/passwd")}, "unsafe path"),
        ({"files": _files("source/../x")}, "unsafe path"),
        ({"files": _files("source\\x")}, "unsafe path"),
        ({"files": _files("source/a\0b")}, "unsafe path"),
        ({"files": _files("source//x")}, "unsafe path"),
        ({"files": _files("source/./x")}, "unsafe path"),
        ({"files": _files("C:/x")}, "unsafe path"),
        ({"files": _files("other/x")}, "not under source/ or artifacts/"),
        ({"files": _files("source")}, "not under source/ or artifacts/"),
        ({"files": _files("source/x") + _files("source/x")}, "duplicate path"),
        ({"files": _files("source/X") + _files("source/x")}, "differing only in case"),
        ({"files": _files("source/a") + _files("source/a/b")}, "both a file and the folder"),
        ({"files": [{"path": "source/x", "size": 1, "sha256": "a" * 64, "role": "x"}]}, "role"),
        ({"files": "nope"}, "not a list"),
    ],
)
def test_a_bad_manifest_is_refused(change: dict[str, object], words: str) -> None:
    with pytest.raises(CheckpointError, match=r"bundle\.tar") as e:
        Manifest.parse(_manifest(**change), what="bundle.tar")
    assert words in str(e.value)


def test_manifest_not_json_is_refused() -> None:
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Manifest.parse(b"\xff{", what="b")


def test_roles() -> None:
    assert role_of("source/model-00001-of-00002.safetensors") == "weights"
    assert role_of("source/model.safetensors.index.json") == "weights"
    assert role_of("source/tokenizer.json") == "tokenizer"
    assert role_of("source/tokenizer_config.json") == "tokenizer"
    assert role_of("source/chat_template.jinja") == "tokenizer"
    assert role_of("source/special_tokens_map.json") == "tokenizer"
    assert role_of("source/config.json") == "config"
    assert role_of("source/generation_config.json") == "config"
    assert role_of("artifacts/Q4_K_M.gguf") == "gguf"
    assert role_of("artifacts/onnx-int4/model.onnx.data") == "onnx"
    assert role_of("artifacts/recipe.json") == "recipe"
    assert role_of("source/README.md") == "other"


def test_names() -> None:
    for good in ("glm4", "THUDM/glm-4-9b-0414", "zai-org/GLM-4.5-Air", "a/b_c.d"):
        assert check_name(good) == good
    for bad in ("", "/x", "a/b/c", "../x", "a--b", "a/..b", ".hidden", "a b", "a:b", "-x"):
        with pytest.raises(UsageError):
            check_name(bad)
    assert entry_dir("org/model").name == "org--model"


def test_hash_file_streams(tmp_path: Path) -> None:
    f = tmp_path / "f"
    data = bytes(range(256)) * 40_000  # over two read chunks
    f.write_bytes(data)
    assert hash_file(f) == (len(data), hashlib.sha256(data).hexdigest())


def test_add_checkpoint_copies_and_never_touches_the_input(store: Path) -> None:
    src = HF_FIXTURES / "glm"
    before = tree(src)
    entry = add_checkpoint("glm", src, Source(repo="org/glm"))
    assert tree(src) == before
    assert entry.root == store / "glm"
    recorded = {f.path: f for f in entry.manifest.files}
    digest = hash_file(src / "config.json")[1]
    assert recorded["source/config.json"].sha256 == digest
    assert recorded["source/model.safetensors"].role == "weights"
    # Again with the same files: the entry is left as it is.
    mtime = (entry.root / "manifest.json").stat().st_mtime_ns
    assert add_checkpoint("glm", src, Source(repo="org/glm")) == entry
    assert (entry.root / "manifest.json").stat().st_mtime_ns == mtime
    assert not any((store / ".staging").iterdir())


def test_add_checkpoint_moves_a_staged_folder_and_reuses_digests(store: Path) -> None:
    folder = staging_dir("pull-") / "ckpt"
    shutil.copytree(HF_FIXTURES / "glm", folder)
    # A wrong digest given for config.json is trusted (the caller hashed it):
    # proof that nothing is hashed twice.
    size = (folder / "config.json").stat().st_size
    entry = add_checkpoint(
        "org/glm", folder, Source(repo="org/glm"), {"config.json": (size, "b" * 64)}
    )
    assert not folder.exists()
    assert entry.manifest.file("source/config.json").sha256 == "b" * 64  # type: ignore[union-attr]


def test_replacing_a_checkpoint_drops_its_artifacts(entry: Entry, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(entry.source_dir, other)
    (other / "generation_config.json").write_text("{}")
    new = add_checkpoint(NAME, other, entry.manifest.source)
    assert new.artifacts() == [] and not new.artifacts_dir.exists()
    assert new.manifest.file("source/generation_config.json").size == 2  # type: ignore[union-attr]


def test_a_converted_artifact_lands_in_the_entry_and_is_found_again(store: Path) -> None:
    from edgeglm.artifacts import ensure_gguf, resolve

    entry = add_checkpoint("glm4", HF_FIXTURES / "glm4", Source())
    art = resolve("glm4")
    assert art.kind == "hf" and art.path == entry.source_dir
    gguf = ensure_gguf(art.path, "Q8_0")
    assert gguf == entry.artifacts_dir / "Q8_0.gguf"
    from edgeglm.gguf_file import read_gguf

    meta = read_gguf(gguf)  # named for the model, not for its folder ("source")
    assert meta.get("general.name") != "source"
    found = find("glm4")
    assert found is not None and [a.name for a in found.artifacts()] == ["Q8_0.gguf"]
    digest = hash_file(gguf)[1]
    assert found.manifest.file("artifacts/Q8_0.gguf").sha256 == digest  # type: ignore[union-attr]
    before = tree(entry.root)
    assert ensure_gguf(resolve("glm4").path, "Q8_0") == gguf
    assert tree(entry.root) == before  # found, not made again
    assert resolve("glm4:Q8_0").path == gguf
    with pytest.raises(UsageError, match=r"Q8_0\.gguf"):
        resolve("glm4:Q2_K")


def test_verify_catches_changes_in_place(entry: Entry, tmp_path: Path) -> None:
    r = edgeglm("verify", NAME, cwd=tmp_path)
    assert r.returncode == 0 and "all verified" in r.stdout, r.stderr
    weights = entry.source_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    (entry.source_dir / "tokenizer.json").unlink()
    (entry.artifacts_dir / "extra.gguf").write_bytes(b"GGUF")
    with open(entry.source_dir / "config.json", "a") as f:
        f.write(" ")
    r = edgeglm("verify", NAME, cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4, lines
    text = "\n".join(lines)
    assert "model.safetensors: sha256 differs" in text
    assert "tokenizer.json: missing" in text
    assert "extra.gguf: extra file" in text
    assert "config.json: 709 bytes, the manifest says 708" in text
    assert r.stderr.startswith("error: test/glm4: 4 problem(s)")
    # models shows it without re-hashing what has the right size, and with --verify.
    r = edgeglm("models", "--json", cwd=tmp_path)
    (m,) = json.loads(r.stdout)["models"]
    assert m["checkpoint"]["status"] == "FAILED"
    r = edgeglm("models", "--json", "--verify", cwd=tmp_path)
    (m,) = json.loads(r.stdout)["models"]
    assert any("sha256 differs" in p for p in m["problems"])


def test_models_lists_the_store(entry: Entry, tmp_path: Path) -> None:
    r = edgeglm("models", "--json", "--verify", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (m,) = json.loads(r.stdout)["models"]
    assert m["name"] == NAME and m["where"] == "store" and m["revision"] == "0" * 40
    assert m["checkpoint"]["status"] == "verified"
    (a,) = m["artifacts"]
    assert (a["name"], a["kind"], a["quant"], a["architecture"], a["status"]) == (
        "Q4_K_M.gguf",
        "gguf",
        "Q4_K_M",
        "glm4",
        "verified",
    )
    r = edgeglm("models", cwd=tmp_path)
    assert r.returncode == 0 and "Q4_K_M.gguf" in r.stdout and "not re-hashed" in r.stdout


def test_rm_an_artifact_then_the_model(entry: Entry, store: Path, tmp_path: Path) -> None:
    r = edgeglm("rm", f"{NAME}:Q4_K_M", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "freed" in r.stdout and "MiB" in r.stdout
    found = find(NAME)
    assert found is not None and found.artifacts() == []
    assert not (entry.artifacts_dir / "Q4_K_M.gguf").exists()
    assert edgeglm("verify", NAME, cwd=tmp_path).returncode == 0
    r = edgeglm("rm", f"{NAME}:Q4_K_M", cwd=tmp_path)
    assert r.returncode == 2 and "has: source" in r.stderr
    assert edgeglm("rm", NAME, cwd=tmp_path).returncode == 0
    assert find(NAME) is None
    r = edgeglm("rm", NAME, cwd=tmp_path)
    assert r.returncode == 3 and "not in the model store" in r.stderr
    assert edgeglm("rm", "../x", cwd=tmp_path).returncode == 2


def test_bundle_refuses_a_file_changed_since_it_was_recorded(entry: Entry, tmp_path: Path) -> None:
    gguf = entry.artifacts_dir / "Q4_K_M.gguf"
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 0xFF  # same size: only the digest can tell
    gguf.write_bytes(bytes(data))
    out = tmp_path / "b.tar"
    r = edgeglm("bundle", NAME, "-o", str(out), cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    assert "Q4_K_M.gguf: sha256 differs" in r.stderr
    assert list(tmp_path.glob("*b.tar*")) == []  # nothing at the path, no temporary


def test_bundle_mistakes(entry: Entry, tmp_path: Path) -> None:
    r = edgeglm("bundle", NAME, "Q2_K", "-o", str(tmp_path / "b.tar"), cwd=tmp_path)
    assert r.returncode == 2 and "source, Q4_K_M.gguf" in r.stderr
    r = edgeglm("bundle", "nope/nothing", "-o", str(tmp_path / "b.tar"), cwd=tmp_path)
    assert r.returncode == 3
    r = edgeglm("bundle", NAME, "-o", str(tmp_path / "no" / "b.tar"), cwd=tmp_path)
    assert r.returncode == 2
    r = edgeglm("bundle", NAME, "-o", str(entry.root / "b.tar"), cwd=tmp_path)
    assert r.returncode == 2 and not (entry.root / "b.tar").exists()
    r = edgeglm("import", str(tmp_path / "missing.tar"), cwd=tmp_path)
    assert r.returncode == 3


def test_bundles_are_reproducible_and_plain_tar(entry: Entry, tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert edgeglm("bundle", NAME, "-o", str(a), cwd=tmp_path).returncode == 0
    assert (
        edgeglm("bundle", NAME, "source", "Q4_K_M.gguf", "-o", str(b), cwd=tmp_path).returncode == 0
    )
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        members = tar.getmembers()
        assert members[0].name == "manifest.json"
        for m in members[1:]:
            f = tar.extractfile(m)
            assert f is not None
            rec = entry.manifest.file(m.name)
            assert rec is not None and hashlib.sha256(f.read()).hexdigest() == rec.sha256
        manifest = tar.extractfile(members[0])
        assert manifest is not None
        assert Manifest.parse(manifest.read(), what="a") == entry.manifest


def test_store_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeglm.paths import store_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEGLM_MODELS", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME")
    assert store_dir() == tmp_path / "home" / ".local" / "share" / "edgeglm" / "models"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store_dir() == tmp_path / "xdg" / "edgeglm" / "models"
    monkeypatch.setenv("EDGEGLM_MODELS", str(tmp_path / "explicit"))
    assert store_dir() == tmp_path / "explicit" and store_dir().is_dir()
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("EDGEGLM_MODELS", str(tmp_path / "file" / "models"))
    with pytest.raises(UsageError, match="EDGEGLM_MODELS"):
        store_dir()


def test_stale_staging_of_dead_processes_is_swept(store: Path) -> None:
    import os

    first = staging_dir("pull-")
    day_ago = first.stat().st_mtime - 2 * 24 * 3600
    dead = store / ".staging" / "import-999999999-x"  # past any pid_max: no such process
    alive = store / ".staging" / f"import-{os.getpid()}-x"
    young = store / ".staging" / "import-999999998-y"
    for d in (dead, alive, young):
        d.mkdir()
        (d / "partial").write_bytes(b"x")
    for d in (dead, alive):
        os.utime(d, (day_ago, day_ago))
    staging_dir("import-")
    assert not dead.exists() and alive.exists() and young.exists() and first.exists()


def test_add_checkpoint_from_a_hugging_face_cache_snapshot(store: Path, tmp_path: Path) -> None:
    """Snapshot files are links into the repo's blobs: copied as files. A link
    anywhere else is refused."""
    repo = tmp_path / "hub" / "models--org--glm"
    snap = repo / "snapshots" / ("1" * 40)
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in (HF_FIXTURES / "glm").iterdir():
        if f.name in ("config.json", "model.safetensors", "tokenizer.json"):
            blob = repo / "blobs" / hashlib.sha256(f.name.encode()).hexdigest()
            shutil.copy(f, blob)
            (snap / f.name).symlink_to(Path("..", "..", "blobs", blob.name))
    entry = add_checkpoint("org/glm", snap, Source(repo="org/glm", revision="1" * 40))
    assert not any(p.is_symlink() for p in entry.source_dir.iterdir())
    assert (entry.source_dir / "config.json").read_bytes() == (
        HF_FIXTURES / "glm" / "config.json"
    ).read_bytes()
    (snap / "evil.json").symlink_to("/etc/hostname")
    with pytest.raises(CheckpointError, match=r"evil\.json is a symlink"):
        add_checkpoint("org/glm2", snap, Source())


def test_backend_onnx_converts_a_store_checkpoint_into_its_entry_once(
    entry: Entry, tmp_path: Path
) -> None:
    """`--backend onnx` on a store model: the ONNX export is made into the
    entry (recorded, so verify stays clean), then found again, never re-made."""
    run = ("run", NAME, "--backend", "onnx", "-p", "hi", "-n", "2", "--json")
    r = edgeglm(*run, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["backend"] == "onnxruntime"
    made = entry.artifacts_dir / "onnx-int4"
    assert (made / "genai_config.json").is_file()
    assert edgeglm("verify", NAME, cwd=tmp_path).returncode == 0
    before = tree(entry.root)
    r = edgeglm(*run, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert tree(entry.root) == before


def test_concurrent_writers_lose_no_artifact(entry: Entry, store: Path) -> None:
    # Conversions of one model in several processes at once (serve and run,
    # two terminals): each records its artifact under the entry's lock, so
    # no manifest update overwrites another's.
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    tags = [[f"w{w}-{i}" for i in range(12)] for w in range(4)]
    procs = [ctx.Process(target=record_artifacts, args=(str(store), entry.name, t)) for t in tags]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    recorded = {a.name for a in find(entry.name).artifacts()}  # type: ignore[union-attr]
    assert {f"{t}.gguf" for ts in tags for t in ts} <= recorded
    r = edgeglm("verify", entry.name, cwd=store)
    assert r.returncode == 0, r.stderr
