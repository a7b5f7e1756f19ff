"""``edgeglm bundle`` / ``import`` against ``sha256sum`` plus ``tar`` of the same files.

    .venv/bin/python benchmarks/bundle_speed.py [--workdir /tmp/edgeglm-bench] [--repeat 3]

The synthetic GLM-Edge-1.5B-shaped checkpoint (benchmarks/synthetic.py,
~2.6 GB; reused when it is already in the work folder) is added to a store
of its own, then each repeat runs, alternating:

- bundle: ``edgeglm bundle NAME -o ours.tar`` against ``sha256sum`` of the
  entry's files then ``tar cf`` of them (what a careful user does by hand);
- import: ``edgeglm import ours.tar`` into an empty store against ``tar xf``
  then ``sha256sum -c`` of the same files.

Where ``openssl`` is installed, the same two baselines also run with
``openssl dgst -sha256`` as the hasher: coreutils' ``sha256sum`` may not use
the CPU's SHA extensions (coreutils 9.1 does not), while Python's hashlib
(OpenSSL) does, so that baseline is the fair one for the tar and disk part.

Each command runs under GNU time for wall time and peak resident memory
(the largest process of the command). Medians and ratios are printed; the
target is within 1.2x of the baseline and under 200 MB. ``sync`` runs
between steps (not timed), so one step's write-back does not land in the
next one's time. The machine is shared: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from synthetic import make  # noqa: E402

NAME = "bench/glm-edge-synth"

if TYPE_CHECKING:
    from edgeglm.store.manifest import FileRecord


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a command, from GNU time (run outside
    the repo root, where ``python -m edgeglm`` would see the bare source folder)."""
    r = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=cwd, env=env
    )
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return _gnu_time(r.stderr)


def _gnu_time(stderr: str) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) from GNU time -v's report."""
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    assert wall and rss, stderr[-2000:]
    h, m, s = wall.groups()
    return (int(h or 0) * 3600 + int(m) * 60 + float(s)), int(rss.group(1)) * 1024


def _sums_match(out: str, files: tuple[FileRecord, ...]) -> bool:
    """openssl dgst -r prints "<hex> *<path>" per file: all as recorded?"""
    got = {}
    for line in out.splitlines():
        digest, _, name = line.partition(" ")
        got[name.lstrip("*")] = digest
    return all(got.get(f.path) == f.sha256 for f in files)


def sync() -> None:
    subprocess.run(["sync"], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "edgeglm-bench")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--layers", type=int, default=24)
    args = ap.parse_args()

    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    src = make(work / f"glm-edge-synth-{args.layers}l", args.layers)
    store = work / "bundle-store"
    env = {**os.environ, "EDGEGLM_MODELS": str(store)}
    os.environ["EDGEGLM_MODELS"] = str(store)
    from edgeglm.store.layout import add_checkpoint, find
    from edgeglm.store.manifest import Source

    entry = find(NAME) or add_checkpoint(NAME, src, Source(repo=NAME))
    paths = [f.path for f in entry.manifest.files]
    total = entry.manifest.total_size
    sums = work / "SHA256SUMS"
    sums.write_text("".join(f"{f.sha256}  {f.path}\n" for f in entry.manifest.files))
    py = sys.executable
    openssl = shutil.which("openssl") is not None
    ours_tar, theirs_tar = work / "ours.tar", work / "theirs.tar"
    import_store, unpacked = work / "import-store", work / "unpacked"
    rows = []
    for i in range(args.repeat):
        for p in (ours_tar, theirs_tar):
            p.unlink(missing_ok=True)
        sync()
        bundle = timed([py, "-m", "edgeglm", "bundle", NAME, "-o", str(ours_tar)], work, env)
        sync()
        # By hand: hash every file, then tar them (two reads of each file).
        script = 'sha256sum "$@" > /dev/null && tar cf "$OUT" "$@"'
        base_bundle = timed(
            ["sh", "-c", script, "sh", *paths],
            entry.root,
            {**env, "OUT": str(theirs_tar)},
        )
        sync()
        ossl_bundle = ossl_import = (float("nan"), 0)
        if openssl:
            theirs_tar.unlink()
            script = 'openssl dgst -sha256 "$@" > /dev/null && tar cf "$OUT" "$@"'
            ossl_bundle = timed(
                ["sh", "-c", script, "sh", *paths], entry.root, {**env, "OUT": str(theirs_tar)}
            )
            sync()
        shutil.rmtree(import_store, ignore_errors=True)
        imp = timed(
            [py, "-m", "edgeglm", "import", str(ours_tar)],
            work,
            {**env, "EDGEGLM_MODELS": str(import_store)},
        )
        sync()
        shutil.rmtree(unpacked, ignore_errors=True)
        unpacked.mkdir()
        script = f'tar xf "$1" && sha256sum --quiet -c "{sums}"'
        base_import = timed(["sh", "-c", script, "sh", str(theirs_tar)], unpacked)
        sync()
        if openssl:
            shutil.rmtree(unpacked)
            unpacked.mkdir()
            # openssl has no -c: hash what was unpacked and compare with the sums here.
            script = 'tar xf "$1" && openssl dgst -sha256 -r "${@:2}"'
            r = subprocess.run(
                ["/usr/bin/time", "-v", "bash", "-c", script, "sh", str(theirs_tar), *paths],
                capture_output=True, text=True, cwd=unpacked,
            )  # fmt: skip
            if r.returncode != 0 or not _sums_match(r.stdout, entry.manifest.files):
                sys.exit(f"openssl baseline failed: {r.stderr[-2000:]}")
            ossl_import = _gnu_time(r.stderr)
            sync()
        shutil.rmtree(import_store, ignore_errors=True)
        shutil.rmtree(unpacked, ignore_errors=True)
        row = {
            "run": i,
            "bundle_s": round(bundle[0], 2),
            "sha256sum_tar_cf_s": round(base_bundle[0], 2),
            "import_s": round(imp[0], 2),
            "tar_xf_sha256sum_c_s": round(base_import[0], 2),
            "bundle_peak_rss_mib": round(bundle[1] / 2**20, 1),
            "import_peak_rss_mib": round(imp[1] / 2**20, 1),
            "baseline_peak_rss_mib": round(max(base_bundle[1], base_import[1]) / 2**20, 1),
            "openssl_tar_cf_s": round(ossl_bundle[0], 2),
            "tar_xf_openssl_s": round(ossl_import[0], 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    summary = {
        "bytes": total,
        "files": len(paths),
        "repeats": args.repeat,
        "median_bundle_s": med("bundle_s"),
        "median_sha256sum_tar_cf_s": med("sha256sum_tar_cf_s"),
        "bundle_ratio": round(med("bundle_s") / med("sha256sum_tar_cf_s"), 3),
        "median_import_s": med("import_s"),
        "median_tar_xf_sha256sum_c_s": med("tar_xf_sha256sum_c_s"),
        "import_ratio": round(med("import_s") / med("tar_xf_sha256sum_c_s"), 3),
        "median_openssl_tar_cf_s": med("openssl_tar_cf_s"),
        "bundle_ratio_openssl": round(med("bundle_s") / med("openssl_tar_cf_s"), 3),
        "median_tar_xf_openssl_s": med("tar_xf_openssl_s"),
        "import_ratio_openssl": round(med("import_s") / med("tar_xf_openssl_s"), 3),
        "max_bundle_peak_rss_mib": max(float(r["bundle_peak_rss_mib"]) for r in rows),
        "max_import_peak_rss_mib": max(float(r["import_peak_rss_mib"]) for r in rows),
        "target": "ratios <= 1.2, peak RSS < 200 MiB",
    }
    for p in (ours_tar, theirs_tar):
        p.unlink(missing_ok=True)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
