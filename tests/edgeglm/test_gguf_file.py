"""The strict GGUF reader against gguf-py's reader and against llama.cpp itself.

Every malformed case (tests/malformed/gguf_cases.py) must be refused by the
reader for the reason it was built for, and refused by llama.cpp too (loaded
in a child process): the reader is as strict as llama.cpp, never stricter
on these, and the base file passes both.
"""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from malformed.gguf_cases import (
    GGUF_CASE_REASONS,
    MOE_FIXTURE,
    build_gguf_base,
    build_gguf_cases,
    build_llama_abort_case,
    llama_loads,
)

from edgeglm.backends.isolated import run_isolated
from edgeglm.errors import BackendError, CheckpointError, ModelNotFoundError
from edgeglm.gguf_file import Deferred, read_gguf


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("gguf-cases")
    return folder, build_gguf_cases(folder)


def test_reads_what_gguf_py_reads(corpus: tuple[Path, dict[str, Path]]) -> None:
    from gguf import GGUFReader

    folder, _ = corpus
    for path in (build_gguf_base(folder), build_gguf_base(folder, MOE_FIXTURE)):
        ours, theirs = read_gguf(path), GGUFReader(path)
        assert [(t.name, t.shape, t.type_name, t.n_bytes) for t in ours.tensors] == [
            (t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.n_bytes))
            for t in theirs.tensors
        ]
        assert [ours.data_offset + t.offset for t in ours.tensors] == [
            int(t.data_offset) for t in theirs.tensors
        ]
        for key, field in theirs.fields.items():
            if key.startswith("GGUF."):
                continue
            want = field.contents()
            got = ours.load(key)
            if isinstance(want, list):
                assert len(got) == len(want) and all(
                    g == pytest.approx(w) if isinstance(w, float) else g == w
                    for g, w in zip(got, want, strict=True)
                ), key
            else:
                assert got == (pytest.approx(want) if isinstance(want, float) else want), key


def test_every_malformed_case_is_refused_for_its_reason(
    corpus: tuple[Path, dict[str, Path]],
) -> None:
    _, cases = corpus
    wrong = {}
    for name, path in cases.items():
        with pytest.raises(CheckpointError) as e:
            read_gguf(path)
        message = str(e.value)
        assert message.startswith(f"{path}: not a") and "\n" not in message
        if not re.search(GGUF_CASE_REASONS[name], message.lower()):
            wrong[name] = message
    assert not wrong


def test_llama_cpp_refuses_every_case_the_reader_refuses(
    corpus: tuple[Path, dict[str, Path]],
) -> None:
    folder, cases = corpus
    assert run_isolated(llama_loads, [str(build_gguf_base(folder))]) == {
        str(build_gguf_base(folder)): True
    }
    paths = [str(p) for p in cases.values()]
    try:  # one child for all; llama.cpp refuses these cleanly rather than aborting
        loaded = run_isolated(llama_loads, paths)
    except BackendError:  # one of them crashed it: still a refusal, so try one by one
        loaded = {}
        for p in paths:
            try:
                loaded.update(run_isolated(llama_loads, [p]))
            except BackendError:
                loaded[p] = False
    assert [p for p, ok in loaded.items() if ok] == []


def test_a_file_llama_cpp_aborts_on_passes_the_header_checks(
    corpus: tuple[Path, dict[str, Path]],
) -> None:
    """The other side: header and metadata checks cannot catch everything, so
    every GGUF is first loaded and run in a child (artifacts' probe)."""
    from edgeglm.artifacts import _probe
    from edgeglm.planner.sources import open_model

    folder, _ = corpus
    bad = build_llama_abort_case(folder)
    assert bad.stat().st_size == build_gguf_base(folder).stat().st_size
    read_gguf(bad)
    open_model(str(bad))  # the metadata agrees with the tensors
    with pytest.raises(BackendError, match=r"SIGABRT\): GGML_ASSERT\(.*\) failed at ops.cpp:\d+"):
        run_isolated(_probe, str(bad))


def test_absurd_counts_cost_neither_memory_nor_loops(
    corpus: tuple[Path, dict[str, Path]],
) -> None:
    _, cases = corpus
    for name in (
        "n_kv_huge",
        "n_tensors_huge",
        "array_length_huge",
        "string_array_length_past_end",
    ):
        tracemalloc.start()
        with pytest.raises(CheckpointError):
            read_gguf(cases[name])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 * 2**20, (name, peak)  # the read window, nothing per claimed element


def test_large_arrays_are_checked_but_deferred(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    path = tmp_path / "vocab.gguf"
    w = GGUFWriter(path, "glm4")
    tokens = [f"tok{i}" for i in range(5000)]
    w.add_token_list(tokens)
    w.add_token_types([1] * 5000)
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    g = read_gguf(path)
    deferred = g.metadata["tokenizer.ggml.tokens"]
    assert isinstance(deferred, Deferred) and len(deferred) == 5000
    assert g.load("tokenizer.ggml.tokens") == tuple(tokens)
    assert g.load("tokenizer.ggml.token_type") == (1,) * 5000
    t = g.tensor("token_embd.weight")
    assert t is not None and t.shape == (32, 4) and t.n_bytes == 512
    assert g.tensor_bytes(t) == bytes(512)


def test_missing_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        read_gguf(tmp_path / "nope.gguf")
    with pytest.raises(CheckpointError, match="is a folder"):
        read_gguf(tmp_path)
