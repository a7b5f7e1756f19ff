"""What ``edgeglm bench`` measures: artifacts from the models, ``--quants`` and
``--backends``, honoured or refused, never dropped.

- A GGUF runs in llama.cpp and an ONNX folder in ONNX Runtime: with
  ``--backends`` given, it must name the model's backend (else refused).
- ``--quants`` applies to Hugging Face checkpoints, converted to each quant on
  first use; with only GGUF files and ONNX folders it is refused (their quant
  is fixed). GGUF quants (F32 ... Q4_K_M, IQ4_XS ...) are measured in
  llama.cpp, ONNX quants (fp32, fp16, int8, int4) in ONNX Runtime: each quant
  needs its backend among ``--backends``, and each backend asked for a
  checkpoint needs one of its quants.
- Left out, ``--backends`` is each model's own: for a checkpoint, the
  backends its ``--quants`` run in, else llama.cpp; ``--quants`` left out is
  Q8_0,Q4_K_M for llama.cpp and int4 for ONNX Runtime.
- A checkpoint's rows are compared with a full-precision reference: F32 in
  llama.cpp, or fp32 in ONNX Runtime when only ``onnx`` is asked, added when
  no full-precision quant is asked.

Artifacts of one model form a group compared with one reference, the
highest-precision artifact in it, whatever its backend: a checkpoint's own
artifacts, and GGUF files and ONNX folders given together when they have the
same shape (blocks, width, vocabulary) and, for two GGUFs, the same
``general.name``. ``run_bench`` checks that each backend tokenizes the
held-out text as the reference does before it compares them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgeglm.artifacts import Artifact as Ref
from edgeglm.artifacts import ConvertProgress, ensure_gguf, ensure_onnx, resolve
from edgeglm.errors import UsageError

BACKENDS = ("llama.cpp", "onnx")
ONNX_QUANTS = ("fp32", "fp16", "int8", "int4")
GGUF_DEFAULT = ("Q8_0", "Q4_K_M")
ONNX_DEFAULT = ("int4",)
# Precision, best first, for choosing a group's reference; a backend's
# equivalents share a rank, and llama.cpp goes first on a tie.
_RANK = {
    **{"F32": 0, "fp32": 0, "BF16": 1, "F16": 2, "fp16": 2, "Q8_0": 3, "int8": 3},
    **{"Q6_K": 4, "Q5_K_M": 5, "Q5_K_S": 6, "Q4_K_M": 7, "int4": 8},
}
FULL_PRECISION = ("F32", "BF16", "F16", "fp32", "fp16")


@dataclass(frozen=True)
class Artifact:
    """One thing to measure: a GGUF in llama.cpp or an ONNX folder in ONNX Runtime."""

    label: str
    model: str
    quant: str
    backend: str
    path: Path


@dataclass(frozen=True)
class Selection:
    """``--backends`` and ``--quants`` checked: None where not given."""

    backends: tuple[str, ...] | None
    gguf_quants: tuple[str, ...] | None
    onnx_quants: tuple[str, ...] | None

    @property
    def quants_given(self) -> bool:
        return self.gguf_quants is not None

    def checkpoint_backends(self) -> tuple[str, ...]:
        """The backends a checkpoint is measured in: those given, else those
        the quants given run in, else llama.cpp."""
        if self.backends is not None:
            return self.backends
        if self.quants_given:
            return tuple(
                b for b, q in (("llama.cpp", self.gguf_quants), ("onnx", self.onnx_quants)) if q
            )
        return ("llama.cpp",)


def parse(backends: tuple[str, ...] | None, quants: tuple[str, ...] | None) -> Selection:
    """Names checked (unknown ones refused); "auto" alone is each model's own backend."""
    from edgeglm.converters.gguf.quant_types import SCHEMES, scheme

    if backends is not None:
        if not backends:
            raise UsageError("--backends names no backend; choose llama.cpp and/or onnx")
        if tuple(backends) == ("auto",):
            backends = None
        else:
            unknown = [b for b in backends if b not in BACKENDS]
            if unknown:
                raise UsageError(
                    f"unknown backend(s) {', '.join(unknown)} in --backends; choose llama.cpp "
                    "and/or onnx (or auto alone: each model's own)"
                )
            backends = tuple(dict.fromkeys(backends))
    if not quants:  # None or (): not given (the CLI refuses an empty --quants itself)
        return Selection(backends, None, None)
    gguf: list[str] = []
    onnx: list[str] = []
    for q in quants:
        if q.lower() in ONNX_QUANTS:  # before scheme(): it reads FP16 as llama.cpp's F16
            onnx.append(q.lower())
            continue
        try:
            name = scheme(q).name
        except UsageError:
            raise UsageError(
                f"unknown quant {q!r} in --quants; GGUF (llama.cpp): {', '.join(SCHEMES)}; "
                f"ONNX: {', '.join(ONNX_QUANTS)}"
            ) from None
        if SCHEMES[name].needs_imatrix:
            raise UsageError(
                f"--quants {name} needs an importance matrix, which bench does not compute: "
                f"make it with edgeglm convert -q {name} --calibrate TEXT_FILE and bench that GGUF"
            )
        gguf.append(name)
    return Selection(backends, tuple(dict.fromkeys(gguf)), tuple(dict.fromkeys(onnx)))


def check(refs: list[tuple[str | None, Ref]], sel: Selection) -> None:
    """Every refusal, before anything is converted or measured."""
    has_checkpoint = any(r.kind == "hf" for _, r in refs)
    for _, r in refs:
        own = "llama.cpp" if r.kind == "gguf" else "onnx" if r.kind == "onnx" else None
        if own is not None and sel.backends is not None and own not in sel.backends:
            what = (
                "a GGUF runs in llama.cpp"
                if own == "llama.cpp"
                else ("an ONNX folder runs in ONNX Runtime (onnx)")
            )
            raise UsageError(
                f"{r.path}: {what}, which --backends {','.join(sel.backends)} leaves out; "
                f"add {own} to --backends or leave the model out"
            )
    if sel.quants_given and not has_checkpoint:
        raise UsageError(
            "--quants applies to Hugging Face checkpoints (converted to each quant); "
            "a GGUF or an ONNX folder has its own quant: leave --quants out"
        )
    if not has_checkpoint or not sel.quants_given:
        return
    backends = sel.checkpoint_backends()
    for backend, quants, kind in (
        ("llama.cpp", sel.gguf_quants, "GGUF"),
        ("onnx", sel.onnx_quants, "ONNX"),
    ):
        if quants and backend not in backends:
            raise UsageError(
                f"--quants {','.join(quants)}: {kind} quants are measured in {backend}, which "
                f"--backends leaves out; add {backend} to --backends or drop them"
            )
        if backend in backends and not quants:
            names = ", ".join(ONNX_QUANTS) if backend == "onnx" else "Q8_0, Q4_K_M, ..."
            raise UsageError(
                f"--backends {backend}: --quants names none of its quants ({names}); "
                "add one, or leave --quants out for the defaults"
            )


def artifacts_for(
    models: list[str | None],
    sel: Selection,
    progress: ConvertProgress | None = None,
) -> list[list[Artifact]]:
    """Groups of artifacts of one model each, the reference (highest precision)
    first. Checkpoints are converted here, on first use (``progress`` hears of it)."""
    refs = [(m, resolve(m)) for m in models]
    check(refs, sel)
    groups: list[tuple[Identity, list[Artifact]]] = []
    for ref, r in refs:
        items = (
            _checkpoint_artifacts(ref, r.path, sel, progress)
            if r.kind == "hf"
            else [_given(ref, r)]
        )
        key = next((k for k in map(identity, items) if k.shape is not None), Identity(None, None))
        group = next((g for k, g in groups if k.same_model(key)), None)
        if group is None:
            groups.append((key, group := []))
        group += [a for a in items if all(a.path != b.path for b in group)]
    return [sorted(g, key=_precision) for _, g in groups]


def _precision(a: Artifact) -> tuple[int, int]:
    return _RANK.get(a.quant, len(_RANK)), BACKENDS.index(a.backend)


def _given(ref: str | None, r: Ref) -> Artifact:
    """A GGUF file or an ONNX folder named on the command line."""
    if r.kind == "gguf":
        return Artifact(r.path.stem, str(ref), gguf_quant(r.path), "llama.cpp", r.path)
    return Artifact(r.path.name, str(ref), onnx_quant(r.path), "onnx", r.path)


def _checkpoint_artifacts(
    ref: str | None, folder: Path, sel: Selection, progress: ConvertProgress | None
) -> list[Artifact]:
    backends = sel.checkpoint_backends()
    gguf = list(sel.gguf_quants or GGUF_DEFAULT) if "llama.cpp" in backends else []
    onnx = list(sel.onnx_quants or ONNX_DEFAULT) if "onnx" in backends else []
    if not any(q in FULL_PRECISION for q in gguf + onnx):  # the quality reference
        if gguf:
            gguf.insert(0, "F32")
        else:
            onnx.insert(0, "fp32")
    name, label = folder.name, str(ref or "demo")
    out = [
        Artifact(f"{name} {q}", label, q, "llama.cpp", ensure_gguf(folder, q, progress))
        for q in gguf
    ]
    out += [
        Artifact(f"{name} onnx {q}", label, q, "onnx", ensure_onnx(folder, q, progress))
        for q in onnx
    ]
    return out


def gguf_quant(path: Path) -> str:
    from edgeglm.converters.gguf.quant_types import quant_name
    from edgeglm.gguf_file import read_gguf

    file_type = read_gguf(path).get("general.file_type")
    name = quant_name(file_type) if isinstance(file_type, int) else None
    return name or "unknown"


def onnx_quant(folder: Path) -> str:
    """The precision EdgeGLM's converter wrote (model metadata), else "onnx"."""
    from edgeglm.bench.onnx_weights import onnx_metadata

    quant = onnx_metadata(folder).get("edgeglm.quant", "")
    return quant.lower() if quant.lower() in ONNX_QUANTS else "onnx"


@dataclass(frozen=True)
class Identity:
    """What says two artifacts are the same model: (blocks, width, vocabulary)
    and, where the file has one, its name."""

    shape: tuple[int, int, int] | None
    name: str | None

    def same_model(self, other: Identity) -> bool:
        if self.shape is None or self.shape != other.shape:
            return False
        return self.name is None or other.name is None or self.name == other.name


def identity(art: Artifact) -> Identity:
    if art.backend == "llama.cpp":
        from edgeglm.gguf_file import read_gguf

        g = read_gguf(art.path)
        arch = g.architecture
        embd = g.tensor("token_embd.weight")
        n_layer, n_embd = g.get(f"{arch}.block_count"), g.get(f"{arch}.embedding_length")
        name = g.get("general.name")
        if embd is None or not isinstance(n_layer, int) or not isinstance(n_embd, int):
            return Identity(None, None)
        return Identity((n_layer, n_embd, embd.shape[-1]), name if isinstance(name, str) else None)
    try:
        cfg = json.loads((art.path / "genai_config.json").read_text(encoding="utf-8"))
        model = cfg["model"]
        dec = model["decoder"]
        shape = (int(dec["num_hidden_layers"]), int(dec["hidden_size"]), int(model["vocab_size"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Identity(None, None)
    return Identity(shape, None)
