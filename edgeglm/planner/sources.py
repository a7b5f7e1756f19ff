"""Turn the MODEL argument of ``edgeglm plan`` into model facts.

MODEL may be a GGUF file (its quant is fixed), a Hugging Face folder or cache
entry (the planner picks the quant to convert to), or a bare config.json /
folder holding only a config (a "virtual" model: sizes computed from shapes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeglm.converters.gguf.quant_types import quant_name
from edgeglm.errors import CheckpointError, EdgeGLMError, UsageError
from edgeglm.gguf_file import GGUFFile, is_gguf, read_gguf
from edgeglm.planner.model import ModelFacts, check_gguf_metadata, facts_from_metadata

if TYPE_CHECKING:  # the converter is imported only when a checkpoint is planned
    from edgeglm.checkpoint.hf import HFCheckpoint
    from edgeglm.converters.gguf.base import Family, OutTensor

_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


@dataclass
class ModelSource:
    """A model the planner can ask for facts at a given quant.

    GGUF sources have one quant (``fixed_quant``); checkpoint sources are
    sized per candidate quant through the converter, and cached.
    """

    label: str
    kind: str  # "gguf", "hf", "config"
    path: Path
    fixed_quant: str | None
    config: dict[str, Any] | None = None
    _gguf: ModelFacts | None = None
    _family: Family | None = None
    _tensors: list[OutTensor] = field(default_factory=list)
    _cache: dict[str, ModelFacts] = field(default_factory=dict)

    def facts(self, quant: str | None = None) -> ModelFacts:
        """Facts at ``quant`` (ignored for a GGUF: its tensors are what they are)."""
        if self._gguf is not None:
            return self._gguf
        from edgeglm.converters.gguf.quant_types import scheme

        q = scheme(quant or "Q4_K_M").name
        if q not in self._cache:
            self._cache[q] = self._size(q)
        return self._cache[q]

    def _size(self, quant: str) -> ModelFacts:
        """The GGUF ``edgeglm convert -q quant`` would write, without writing it.

        Mirrors convert.plan_conversion (choose_types, then F32 where forced)
        minus its refusal to go on without an imatrix: sizing an IQ quant
        needs none, converting to it does (the plan says so). Hyperparameters
        come from the family's own write_hparams into an in-memory writer, so
        they are the GGUF keys a converted file would carry.
        """
        from gguf import GGML_QUANT_SIZES, GGUFWriter
        from gguf import GGMLQuantizationType as T

        from edgeglm.converters.gguf.policy import PlannedTensor, choose_types
        from edgeglm.converters.gguf.quant_types import scheme

        fam = self._family
        assert fam is not None  # a checkpoint source always has its family
        sch = scheme(quant)
        tensors = self._tensors
        planned = [
            PlannedTensor(
                t.name, tuple(reversed(t.shape)), T.BF16 if t.source_dtype == "BF16" else T.F16
            )
            for t in tensors
        ]
        types = choose_types(planned, sch, fam.model_shape(), has_imatrix=sch.needs_imatrix)
        rows = []
        for t in tensors:
            qtype = T.F32 if t.force_f32 else types[t.name]
            block, size = GGML_QUANT_SIZES[qtype]
            n = 1
            for d in t.shape:
                n *= int(d)
            rows.append((t.name, n, n // block * size, qtype.name))
        w = GGUFWriter(None, fam.gguf_arch)
        fam.write_hparams(w)
        kv = {k: v.value for k, v in w.kv_data[0].items()}
        cfg = self.config or {}
        return facts_from_metadata(
            kv,
            rows,
            name=self.label,
            source=self.kind,
            path=str(self.path),
            quant=quant,
            hf_architecture=fam.ckpt.architecture,
            repo=_repo_of(cfg),
        )


def _repo_of(cfg: dict[str, Any]) -> str | None:
    for key in ("_source", "_name_or_path"):
        v = cfg.get(key)
        if isinstance(v, str) and v.count("/") == 1 and not v.startswith((".", "/")):
            return v
    return None


def open_model(spec: str) -> ModelSource:
    """Resolve MODEL: a .gguf, a config .json, or an HF folder / cache entry.

    A path that does not exist is ModelNotFoundError (exit 3); one that
    exists but is none of these is CheckpointError (exit 4).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".gguf" or is_gguf(path):
            return _gguf_source(path)
        if path.suffix == ".json":
            return _config_source(path, path.parent / path.stem)
        raise CheckpointError(f"{path}: not a GGUF file, a config .json or a model folder")
    if path.is_dir() and (path / "config.json").is_file():
        has_weights = any(path.glob("*.safetensors"))
        if not has_weights and not (path / "model.safetensors.index.json").is_file():
            return _config_source(path / "config.json", path)
        return _checkpoint_source(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: no config.json and not a GGUF; nothing to plan")
    if path.exists():
        raise CheckpointError(f"{path}: not a regular file or folder")
    from edgeglm.artifacts import from_store

    stored = from_store(spec)  # a store name, before the Hugging Face cache, as run resolves
    if stored is not None:
        if stored.kind == "onnx":
            raise UsageError(f"{spec}: an ONNX folder; plan it as {stored.path}")
        return open_model(str(stored.path))
    from edgeglm.checkpoint.hf import resolve_checkpoint

    return _checkpoint_source(resolve_checkpoint(spec))


def _gguf_source(path: Path) -> ModelSource:
    """Facts from the header alone (strictly checked, gguf_file.py); the
    metadata must agree with the tensors before anything is sized from it."""
    g = read_gguf(path)
    kv = dict(g.metadata)
    parts = [g, *_split_siblings(path, kv)]
    tensors = [t for part in parts for t in part.tensors]
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise CheckpointError(f"{path}: tensor {t.name} appears in two parts of the split GGUF")
        seen.add(t.name)
    check_gguf_metadata(kv, {t.name: t.shape for t in tensors}, str(path))
    rows = [(t.name, t.n_elements, t.n_bytes, t.type_name) for t in tensors]
    repo = kv.get("general.source.huggingface.repository")
    name = kv.get("general.name")
    file_type = kv.get("general.file_type")
    facts = facts_from_metadata(
        kv,
        rows,
        name=name if isinstance(name, str) and name else path.stem,
        source="gguf",
        path=str(path),
        quant=quant_name(file_type) if isinstance(file_type, int) else None,
        repo=repo if isinstance(repo, str) and repo else None,
    )
    return ModelSource(facts.name, "gguf", path, facts.quant, _gguf=facts)


def _split_siblings(path: Path, kv: dict[str, Any]) -> list[GGUFFile]:
    """Other files of a split GGUF (name-00001-of-00003.gguf): their tensors count too."""
    count = kv.get("split.count") or 1
    if not isinstance(count, int) or not 1 <= count <= 99999:
        raise CheckpointError(
            f"{path}: split.count must be a number from 1 to 99999, not {count!r}"
        )
    m = _SPLIT.search(path.name)
    if count <= 1 or m is None:
        return []
    out = []
    for i in range(1, count + 1):
        sib = path.with_name(_SPLIT.sub(f"-{i:05d}-of-{count:05d}.gguf", path.name))
        if sib == path:
            continue
        if not sib.is_file():
            raise CheckpointError(f"{path}: split GGUF part {sib.name} is missing")
        out.append(read_gguf(sib))
    return out


def _family_source(ckpt: HFCheckpoint, kind: str, label: str, path: Path) -> ModelSource:
    from edgeglm.converters.gguf.registry import family_for

    fam = family_for(ckpt.architecture)(ckpt)
    tensors = list(fam.tensors())
    if kind == "hf":
        fam.check(tensors)  # a real checkpoint may disagree with its config: say so now
    return ModelSource(label, kind, path, None, config=ckpt.config, _family=fam, _tensors=tensors)


def _checkpoint_source(root: Path) -> ModelSource:
    from edgeglm.checkpoint.hf import HFCheckpoint

    ckpt = HFCheckpoint(root)
    return _family_source(ckpt, "hf", root.name, root)


def _config_source(config_path: Path, root: Path) -> ModelSource:
    from edgeglm.planner.virtual import VirtualCheckpoint

    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    label = str(
        cfg.get("_name") or (root.name if config_path.name == "config.json" else config_path.stem)
    )
    try:
        return _family_source(VirtualCheckpoint(cfg, root), "config", label, config_path)
    except EdgeGLMError as e:
        raise type(e)(f"{config_path}: {e}") from e
