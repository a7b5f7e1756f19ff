"""Malformed GGUF files, in the manner of llama.cpp's tests/test-gguf.cpp.

``build_gguf_cases(folder)`` converts a committed fixture (tests/fixtures/hf)
into a small valid GGUF once, then writes one broken copy per case: the file
truncated at every section, bad magic and versions, absurd counts, string
and array lengths, bad key and value types, duplicate keys and tensor
names, names too long, too many or negative dimensions, element-count and
byte-size overflows, invalid and removed ggml types, rows that are not whole
blocks, bad ``general.alignment`` values, and tensor offsets that are
misaligned, overlapping, out of order or past the end, data truncated.

Every case is a file llama.cpp refuses to load and EdgeGLM must refuse with
exit 4 (CheckpointError) before anything is loaded. ``GGUF_CASE_REASONS``
gives, per case, words the refusal's message contains.

``build_llama_abort_case`` is the other kind: a GGUF every header and
metadata check accepts, but which makes llama.cpp abort the process on its
first decode (GGML_ASSERT in rope), with the same size as the base file, so
it can overwrite a verified one in place. Commands must report it as a
backend failure (exit 6), never die with it.

The base file is parsed here with gguf-py's reader, not EdgeGLM's, so the
corpus does not depend on the reader it tests.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass, replace
from pathlib import Path

FIXTURE = "glm4"  # tests/fixtures/hf/<FIXTURE>, converted to BASE_QUANT
BASE_QUANT = "Q4_K_M"

EXIT_CHECKPOINT = 4  # what every case in build_gguf_cases must give
EXIT_BACKEND = 6  # what build_llama_abort_case must give once loaded

_U8, _U32, _I32, _U64, _I64 = (struct.Struct(f) for f in ("<B", "<I", "<i", "<Q", "<q"))
_T_U32, _T_I32, _T_STRING, _T_ARRAY = 4, 5, 8, 9
_MAX = 2**64 - 1


def _string(raw: bytes) -> bytes:
    return _U64.pack(len(raw)) + raw


@dataclass(frozen=True)
class _Tensor:
    name: bytes
    ne: tuple[int, ...]
    type: int
    offset: int

    def encode(self, *, n_dims: int | None = None, name_len: int | None = None) -> bytes:
        n = len(self.ne) if n_dims is None else n_dims
        head = _U64.pack(len(self.name) if name_len is None else name_len) + self.name
        dims = b"".join(_I64.pack(d) for d in self.ne)
        return head + _U32.pack(n) + dims + _I32.pack(self.type) + _U64.pack(self.offset)


@dataclass(frozen=True)
class _Layout:
    """A GGUF as sections of raw bytes: easy to break one piece at a time."""

    version: int
    kvs: tuple[bytes, ...]  # each: key length, key, type, value
    tensors: tuple[_Tensor, ...]
    alignment: int
    data: bytes  # the data section (from the aligned data offset to the end)

    def encode(
        self,
        *,
        magic: bytes = b"GGUF",
        n_tensors: int | None = None,
        n_kv: int | None = None,
        tensor_infos: bytes | None = None,
        sections: dict[str, int] | None = None,
    ) -> bytes:
        """The file; ``sections`` (if given) receives each section's start offset."""
        out = bytearray(magic)
        marks = {"version": len(out)}
        out += _U32.pack(self.version)
        marks["n_tensors"] = len(out)
        out += _I64.pack(len(self.tensors) if n_tensors is None else n_tensors)
        marks["n_kv"] = len(out)
        out += _I64.pack(len(self.kvs) if n_kv is None else n_kv)
        marks["kv"] = len(out)
        out += b"".join(self.kvs)
        marks["tensor_infos"] = len(out)
        out += b"".join(t.encode() for t in self.tensors) if tensor_infos is None else tensor_infos
        marks["padding"] = len(out)
        out += b"\0" * (-len(out) % self.alignment)
        marks["data"] = len(out)
        out += self.data
        if sections is not None:
            sections.update(marks)
        return bytes(out)

    def with_tensor(self, i: int, **changes: object) -> _Layout:
        ts = list(self.tensors)
        ts[i] = replace(ts[i], **changes)  # type: ignore[arg-type]
        return replace(self, tensors=tuple(ts))

    def kv_index(self, key: bytes) -> int:
        for i, raw in enumerate(self.kvs):
            n = _U64.unpack_from(raw)[0]
            if raw[8 : 8 + n] == key:
                return i
        raise KeyError(key)

    def with_kv(self, i: int, raw: bytes) -> _Layout:
        kvs = list(self.kvs)
        kvs[i] = raw
        return replace(self, kvs=tuple(kvs))


def _decode(path: Path) -> _Layout:
    from gguf import GGUFReader

    r = GGUFReader(path)
    kvs = tuple(
        b"".join(bytes(p) for p in f.parts)
        for k, f in r.fields.items()
        if not k.startswith("GGUF.")
    )
    tensors = tuple(
        _Tensor(
            t.name.encode(),
            tuple(int(d) for d in t.field.parts[3]),
            int(t.tensor_type),
            int(t.field.parts[-1][0]),
        )
        for t in r.tensors
    )
    align = r.fields.get("general.alignment")
    alignment = int(align.contents()) if align is not None else 32
    return _Layout(int(r.fields["GGUF.version"].contents()), kvs, tensors, alignment,
                   path.read_bytes()[r.data_offset :])  # fmt: skip


MOE_FIXTURE = "glm4_moe"
_BASE_MEMO: dict[str, Path] = {}


def build_gguf_base(folder: Path, fixture: str = FIXTURE) -> Path:
    """A small valid GGUF of ``fixture`` (converted once per process, then copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / ("base.gguf" if fixture == FIXTURE else f"base-{fixture}.gguf")
    if out.is_file():
        return out
    done = _BASE_MEMO.get(fixture)
    if done is not None and done.is_file():
        shutil.copyfile(done, out)
        return out
    from helpers import HF_FIXTURES

    from edgeglm.converters.gguf.convert import convert

    convert(HF_FIXTURES / fixture, out, BASE_QUANT)
    _BASE_MEMO[fixture] = out
    return out


_TRUNCATED = "truncated"

# case name -> what its refusal says (a regular expression, searched in the
# lowercased message)
GGUF_CASE_REASONS: dict[str, str] = {
    "empty": "not a gguf file",
    "truncated_magic": "not a gguf file",
    "bad_magic": "not a gguf file",
    "truncated_version": _TRUNCATED,
    "version_0": "version",
    "version_1": "ggufv1",
    "version_future": "version 4,",
    "version_big_endian": "big-endian",
    "truncated_n_tensors": _TRUNCATED,
    "truncated_n_kv": _TRUNCATED,
    "n_tensors_huge": "cannot fit",
    "n_tensors_negative": "number of tensors",
    "n_kv_huge": "cannot fit",
    "n_kv_negative": "number of key-value pairs",
    "truncated_kv": _TRUNCATED,
    "key_length_huge": "exceeds the maximum",
    "key_length_past_end": "bytes left .truncated",
    "key_empty": "is empty",
    "value_type_invalid": "invalid gguf type",
    "value_type_negative": "invalid gguf type",
    "array_of_arrays": "invalid gguf type",
    "string_length_huge": "exceeds the maximum",
    "string_length_past_end": "bytes left .truncated",
    "array_length_huge": "exceeds the maximum",
    "array_length_past_end": "needs 1073741824 bytes",
    "string_array_length_past_end": "needs at least 2147483648 bytes",
    "duplicate_key": "duplicate key",
    "alignment_zero": "not a power of 2",
    "alignment_not_power_of_two": "not a power of 2",
    "alignment_wrong_type": "must be of type u32",
    "alignment_array": "must be of type u32",
    "truncated_tensor_infos": _TRUNCATED,
    "tensor_name_too_long": "too long",
    "tensor_name_length_huge": "exceeds the maximum",
    "duplicate_tensor_name": "duplicate tensor name",
    "too_many_dims": "number of dimensions",
    "negative_dim": "-1 < 0",
    "element_count_overflow": "overflows int64",
    "nbytes_too_big": "size in bytes over",
    "nbytes_pad_wrap": "after padding",
    "ggml_type_invalid": "invalid ggml type",
    "ggml_type_negative": "invalid ggml type",
    "ggml_type_removed": "block size",
    "row_not_whole_blocks": "block size",
    "offset_misaligned": "has offset .*, expected",
    "offset_overlapping": "has offset 0, expected",
    "offsets_out_of_order": "has offset .*, expected",
    "offset_past_end": "has offset 9223372036854775808, expected",
    "truncated_padding": "past the end",
    "data_size_overflow": "past the end",
    "truncated_data": "past the end",
    "data_missing": "past the end",
}


def _kv(key: bytes, type_: int, payload: bytes) -> bytes:
    return _string(key) + _I32.pack(type_) + payload


def _cases(b: _Layout) -> dict[str, bytes]:
    marks: dict[str, int] = {}
    good = b.encode(sections=marks)
    kv0 = b.kvs[0]  # general.architecture, a string
    key0_len = _U64.unpack_from(kv0)[0]
    key0 = kv0[8 : 8 + key0_len]
    arch_at = b.kv_index(b"general.architecture")
    name_at = b.kv_index(b"general.name")
    f32_at = next(i for i, t in enumerate(b.tensors) if t.type == 0)
    kquant_at = next(i for i, t in enumerate(b.tensors) if t.type in (12, 14))
    last = len(b.tensors) - 1

    def alignment(raw: bytes) -> bytes:
        return replace(b, kvs=(*b.kvs, raw)).encode()

    def infos(first: bytes) -> bytes:
        """The tensor infos with the first one replaced by raw bytes."""
        return b.encode(tensor_infos=first + b"".join(t.encode() for t in b.tensors[1:]))

    def shaped(i: int, ne: tuple[int, ...], type_: int | None = None) -> bytes:
        t = replace(b.tensors[i], ne=ne, type=b.tensors[i].type if type_ is None else type_)
        return b.with_tensor(i, ne=t.ne, type=t.type).encode()

    t0 = b.tensors[0]
    return {
        "empty": b"",
        "truncated_magic": good[:2],
        "bad_magic": b"FUGG" + good[4:],
        "truncated_version": good[: marks["version"] + 2],
        "version_0": replace(b, version=0).encode(),
        "version_1": replace(b, version=1).encode(),
        "version_future": replace(b, version=4).encode(),
        "version_big_endian": replace(b, version=3 << 24).encode(),
        "truncated_n_tensors": good[: marks["n_tensors"] + 5],
        "truncated_n_kv": good[: marks["n_kv"] + 3],
        "n_tensors_huge": b.encode(n_tensors=2**63 - 1),
        "n_tensors_negative": b.encode(n_tensors=-1),
        "n_kv_huge": b.encode(n_kv=2**62),
        "n_kv_negative": b.encode(n_kv=-1),
        "truncated_kv": good[: (marks["kv"] + marks["tensor_infos"]) // 2],
        "key_length_huge": b.with_kv(0, _U64.pack(_MAX) + kv0[8:]).encode(),
        "key_length_past_end": b.with_kv(0, _U64.pack(2**29) + kv0[8:]).encode(),
        "key_empty": b.with_kv(0, _string(b"") + kv0[8 + key0_len :]).encode(),
        "value_type_invalid": b.with_kv(arch_at, _kv(key0, 13, _string(b"glm4"))).encode(),
        "value_type_negative": b.with_kv(arch_at, _kv(key0, -1, _string(b"glm4"))).encode(),
        "array_of_arrays": b.with_kv(
            name_at, _kv(b"general.name", _T_ARRAY, _I32.pack(_T_ARRAY) + _U64.pack(0))
        ).encode(),
        "string_length_huge": b.with_kv(
            name_at, _kv(b"general.name", _T_STRING, _U64.pack(2**40) + b"x")
        ).encode(),
        "string_length_past_end": b.with_kv(
            name_at, _kv(b"general.name", _T_STRING, _U64.pack(2**29) + b"x")
        ).encode(),
        "array_length_huge": b.with_kv(
            name_at, _kv(b"general.name", _T_ARRAY, _I32.pack(_T_U32) + _U64.pack(2**62))
        ).encode(),
        "array_length_past_end": b.with_kv(
            name_at, _kv(b"general.name", _T_ARRAY, _I32.pack(_T_U32) + _U64.pack(2**28))
        ).encode(),
        "string_array_length_past_end": b.with_kv(
            name_at, _kv(b"general.name", _T_ARRAY, _I32.pack(_T_STRING) + _U64.pack(2**28))
        ).encode(),
        "duplicate_key": replace(b, kvs=(*b.kvs, b.kvs[name_at])).encode(),
        "alignment_zero": alignment(_kv(b"general.alignment", _T_U32, _U32.pack(0))),
        "alignment_not_power_of_two": alignment(_kv(b"general.alignment", _T_U32, _U32.pack(13))),
        "alignment_wrong_type": alignment(_kv(b"general.alignment", _T_I32, _I32.pack(32))),
        "alignment_array": alignment(
            _kv(
                b"general.alignment", _T_ARRAY, _I32.pack(_T_U32) + _U64.pack(2) + _U32.pack(32) * 2
            )
        ),
        "truncated_tensor_infos": good[: (marks["tensor_infos"] + marks["padding"]) // 2],
        "tensor_name_too_long": b.with_tensor(0, name=b"x" * 64).encode(),
        "tensor_name_length_huge": infos(t0.encode(name_len=_MAX)),
        "duplicate_tensor_name": b.with_tensor(1, name=t0.name).encode(),
        "too_many_dims": infos(t0.encode(n_dims=5)),
        "negative_dim": shaped(0, (t0.ne[0], -1)),
        "element_count_overflow": shaped(f32_at, (256, 2**40, 2**40)),
        "nbytes_too_big": shaped(f32_at, (2**62,), type_=27),  # I64: 2**65 bytes
        "nbytes_pad_wrap": shaped(f32_at, (4, 2**30 - 1, 2**30 + 1), type_=0),
        "ggml_type_invalid": b.with_tensor(f32_at, type=43).encode(),
        "ggml_type_negative": b.with_tensor(f32_at, type=-1).encode(),
        "ggml_type_removed": b.with_tensor(f32_at, type=4).encode(),  # Q4_2, block size 0
        "row_not_whole_blocks": shaped(kquant_at, (b.tensors[kquant_at].ne[0] - 1,)),
        "offset_misaligned": b.with_tensor(1, offset=b.tensors[1].offset + 1).encode(),
        "offset_overlapping": b.with_tensor(1, offset=0).encode(),
        "offsets_out_of_order": b.with_tensor(1, offset=b.tensors[2].offset)
        .with_tensor(2, offset=b.tensors[1].offset)
        .encode(),
        "offset_past_end": b.with_tensor(last, offset=2**63).encode(),
        "truncated_padding": good[: marks["padding"]]
        if marks["padding"] % b.alignment
        else good[: marks["padding"]] + b"\0",
        "data_size_overflow": b.with_tensor(0, ne=(2**63 - 64,), type=24)
        .with_tensor(1, ne=(2**63 - 64,), type=24, offset=2**63 - 64)
        .encode(),
        "truncated_data": good[:-1],
        "data_missing": good[: marks["data"]],
    }


def build_gguf_cases(folder: Path) -> dict[str, Path]:
    """Write every malformed case under ``folder``; {case name: path}.

    Each must be refused with exit 4 (see GGUF_CASE_REASONS for why)."""
    base = _decode(build_gguf_base(folder))
    cases = _cases(base)
    assert set(cases) == set(GGUF_CASE_REASONS), set(cases) ^ set(GGUF_CASE_REASONS)
    out: dict[str, Path] = {}
    for name, data in cases.items():
        p = folder / f"{name}.gguf"
        p.write_bytes(data)
        out[name] = p
    return out


# -- metadata that disagrees with the tensors --------------------------------
#
# Valid GGUF files (every header check passes) whose hyperparameters do not
# describe their own tensors: plan must refuse each with exit 4, naming the
# key, instead of sizing memory from it.

# case name -> (fixture, key, GGUF type, value); the key's value is replaced
_METADATA_EDITS: dict[str, tuple[str, str, int, bytes]] = {
    "block_count_huge": (FIXTURE, "glm4.block_count", _T_U32, _U32.pack(1_000_000)),
    "block_count_too_small": (FIXTURE, "glm4.block_count", _T_U32, _U32.pack(1)),
    "block_count_zero": (FIXTURE, "glm4.block_count", _T_U32, _U32.pack(0)),
    "block_count_string": (FIXTURE, "glm4.block_count", _T_STRING, _string(b"2")),
    "embedding_length_wrong": (FIXTURE, "glm4.embedding_length", _T_U32, _U32.pack(4096)),
    "context_length_zero": (FIXTURE, "glm4.context_length", _T_U32, _U32.pack(0)),
    "head_count_wrong": (FIXTURE, "glm4.attention.head_count", _T_U32, _U32.pack(64)),
    "head_count_kv_wrong": (FIXTURE, "glm4.attention.head_count_kv", _T_U32, _U32.pack(8)),
    "head_count_kv_per_layer_short": (
        FIXTURE,
        "glm4.attention.head_count_kv",
        _T_ARRAY,
        _I32.pack(_T_U32) + _U64.pack(1) + _U32.pack(2),
    ),
    "feed_forward_length_wrong": (FIXTURE, "glm4.feed_forward_length", _T_U32, _U32.pack(10**6)),
    "vocab_size_wrong": (FIXTURE, "glm4.vocab_size", _T_U32, _U32.pack(10**9)),
    "expert_count_wrong": (MOE_FIXTURE, "glm4moe.expert_count", _T_U32, _U32.pack(1000)),
    "expert_used_over_count": (MOE_FIXTURE, "glm4moe.expert_used_count", _T_U32, _U32.pack(9)),
    "expert_feed_forward_length_wrong": (
        MOE_FIXTURE,
        "glm4moe.expert_feed_forward_length",
        _T_U32,
        _U32.pack(10**6),
    ),
    "nextn_predict_layers_all": (MOE_FIXTURE, "glm4moe.nextn_predict_layers", _T_U32, _U32.pack(3)),
}
# case name -> the key plan's refusal names
GGUF_METADATA_CASE_KEYS: dict[str, str] = {
    name: key for name, (_, key, _, _) in _METADATA_EDITS.items()
}


def build_gguf_metadata_cases(folder: Path) -> dict[str, Path]:
    """Write every metadata-against-tensors case under ``folder``; {case name: path}.

    Each must make ``plan`` exit 4 naming GGUF_METADATA_CASE_KEYS[case]."""
    bases = {f: _decode(build_gguf_base(folder, f)) for f in (FIXTURE, MOE_FIXTURE)}
    out: dict[str, Path] = {}
    for name, (fixture, key, type_, payload) in _METADATA_EDITS.items():
        b = bases[fixture]
        p = folder / f"meta_{name}.gguf"
        p.write_bytes(
            b.with_kv(b.kv_index(key.encode()), _kv(key.encode(), type_, payload)).encode()
        )
        out[name] = p
    return out


def llama_abort_bytes(base: bytes) -> bytes:
    """``base`` (a glm4 GGUF) with an odd rope.dimension_count, same size: every
    header and metadata check passes and llama.cpp loads it, then its first
    decode asserts (GGML_ASSERT(n_dims % 2 == 0) in ggml's rope: SIGABRT).
    Only loading it in a child can tell."""
    key = _string(b"glm4.rope.dimension_count") + _I32.pack(4)  # GGUF type UINT32
    at = base.index(key) + len(key)
    assert base.count(key) == 1 and _U32.unpack_from(base, at)[0] % 2 == 0
    return base[:at] + _U32.pack(3) + base[at + 4 :]


def build_llama_abort_case(folder: Path) -> Path:
    """A GGUF that passes every header and metadata check and makes llama.cpp abort; same
    size as ``build_gguf_base``'s file."""
    base = build_gguf_base(folder)
    out = folder / "llama_abort.gguf"
    out.write_bytes(llama_abort_bytes(base.read_bytes()))
    return out


def llama_loads(paths: list[str]) -> dict[str, bool]:
    """Which files llama.cpp loads (a refusal is a BackendError). Run it in a
    child (edgeglm.backends.isolated.run_isolated): some files abort it."""
    from edgeglm.backends.llamacpp import LlamaCppModel
    from edgeglm.errors import BackendError

    out = {}
    for p in paths:
        try:
            LlamaCppModel(Path(p), n_ctx=64).close()
            out[p] = True
        except BackendError:
            out[p] = False
    return out
