"""Every bad bundle through the real ``edgeglm import``: one line naming the
file, the documented exit code, nothing in the store, no staging left, and
the input unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import edgeglm
from malformed.bundles import BundleCase, build_bundle_cases, digest, store_leftovers

from edgeglm.store.bundle import write_bundle
from edgeglm.store.layout import load_entry

CASE_NAMES = [
    "flipped_byte",
    "missing_file",
    "extra_file",
    "renamed_file",
    "size_differs",
    "duplicate_member",
    "dotdot_member",
    "absolute_member",
    "symlink_member",
    "hardlink_member",
    "device_member",
    "fifo_member",
    "symlink_as_listed_file",
    "extra_folder",
    "manifest_not_first",
    "second_manifest",
    "digest_not_hex",
    "digest_too_short",
    "manifest_dotdot_path",
    "manifest_absolute_path",
    "manifest_outside_folders",
    "manifest_duplicate_path",
    "unknown_schema",
    "negative_size",
    "bad_name",
    "larger_than_disk",
    "truncated",
    "not_a_tar",
    "folder_symlink",
    "folder_extra_file",
    "folder_fifo",
    "folder_flipped_byte",
    "folder_missing_file",
]


@pytest.fixture(scope="session")
def cases(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, BundleCase]:
    folder = tmp_path_factory.mktemp("bad-bundles")
    good = folder / "good.tar"
    write_bundle(load_entry(template), good, ["source"])
    return build_bundle_cases(folder / "cases", good)


def test_the_corpus_is_complete(cases: dict[str, BundleCase]) -> None:
    assert sorted(cases) == sorted(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_bad_bundle_is_refused_and_leaves_nothing(
    name: str, cases: dict[str, BundleCase], store: Path, tmp_path: Path
) -> None:
    case = cases[name]
    before = digest(case.path)
    r = edgeglm("import", str(case.path), cwd=tmp_path)
    assert r.returncode == case.expect, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for word in case.words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in r.stderr
    assert store_leftovers(store) == []
    assert digest(case.path) == before
    assert not Path("/tmp/edgeglm-escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
