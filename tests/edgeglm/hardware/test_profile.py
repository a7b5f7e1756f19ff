"""The probe on this real machine, and hardware profiles (the same schema) from files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FIXTURES

from edgeglm.errors import UsageError
from edgeglm.hardware import (
    SCHEMA_VERSION,
    HardwareProfile,
    isa_families,
    load_profile,
    probe,
    probe_cpu,
)

PROFILES = sorted((FIXTURES / "hardware").glob("*.json"))


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardwareProfile]:
    """One full probe (bandwidth measured into a private cache) for the module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEGLM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    try:
        yield probe()
    finally:
        mp.undo()


def test_probe_reports_this_machine(machine: HardwareProfile) -> None:
    cpu = machine.cpu
    assert cpu.model and cpu.arch
    assert cpu.logical_cores and cpu.logical_cores >= 1
    if Path("/proc/cpuinfo").exists():
        text = Path("/proc/cpuinfo").read_text()
        for flag in cpu.flags:  # every reported flag is really in the kernel's list
            assert f" {flag}" in text
        if " avx2" in text:
            assert "AVX2" in cpu.isa
    assert machine.memory.total_bytes >= machine.memory.available_bytes > 0
    assert machine.memory.bandwidth_gbps is not None and machine.memory.bandwidth_gbps > 0
    assert machine.memory.bandwidth_source == "measured"
    assert machine.llama_cpp is not None and machine.llama_cpp.version
    assert any(d.type == "cpu" for d in machine.llama_cpp.devices)
    assert machine.onnxruntime is not None
    assert "CPUExecutionProvider" in machine.onnxruntime.working_providers


def test_bandwidth_is_cached_per_machine(machine: HardwareProfile) -> None:
    from edgeglm.hardware.bandwidth import memory_bandwidth

    # The module fixture's env is gone; point at a fresh cache and seed it.
    gbps, source = memory_bandwidth(machine.cpu, machine.memory)
    assert gbps is not None and gbps > 0 and source in ("measured", "cached")
    again = memory_bandwidth(machine.cpu, machine.memory)
    assert again == (gbps, "cached")


def test_doctor_json_is_a_profile(machine: HardwareProfile, tmp_path: Path) -> None:
    d = machine.to_dict()
    assert next(iter(d)) == "schema_version" and d["schema_version"] == SCHEMA_VERSION
    f = tmp_path / "me.json"
    f.write_text(json.dumps(d))
    again = load_profile(f)
    assert again.cpu == machine.cpu and again.gpus == machine.gpus
    assert again.is_simulated and again.source == str(f)


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_committed_profiles_load(path: Path) -> None:
    hw = load_profile(path)
    assert hw.name == path.stem
    assert hw.memory.bandwidth_gbps and hw.memory.bandwidth_source
    assert hw.memory.available_bytes <= hw.memory.total_bytes
    for g in hw.gpus:
        assert g.memory_total_bytes and g.bandwidth_gbps


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"schema_version": 99}, "schema_version 99 is not supported"),
        (
            {"cpu": {"model": "x", "arch": "x86_64", "physical_cores": "8", "logical_cores": 8}},
            'cpu.physical_cores: expected an integer, got "8"',
        ),
        ({"memory": {"total_bytes": 1}}, "memory.available_bytes: missing"),
        (
            {"gpus": [{"vendor": "nvidia", "name": "x", "memory_total_bytes": True}]},
            "gpus[0].memory_total_bytes",
        ),
        ({"gpus": [{"vendor": "3dfx", "name": "Voodoo"}]}, "gpus[0].vendor: '3dfx' is not one"),
        ({"ram": 5}, "unknown key 'ram'"),
    ],
)
def test_bad_profiles_name_the_field(
    tmp_path: Path, patch: dict[str, object], message: str
) -> None:
    data = json.loads(PROFILES[0].read_text())
    data.update(patch)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(data))
    with pytest.raises(UsageError) as e:
        load_profile(f)
    assert message in str(e.value) and "bad.json" in str(e.value)


def test_missing_or_malformed_profile(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_profile(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_profile(tmp_path / "x.json")


def test_isa_names() -> None:
    assert isa_families(["avx2", "avx512f", "amx_tile", "fma"]) == ["AVX2", "FMA", "AVX512", "AMX"]
    assert isa_families(["asimd", "sve"]) == ["NEON", "SVE"]
    assert probe_cpu().isa == isa_families(probe_cpu().flags)
