"""From a model reference to a running backend, as the planner planned it.

``artifacts.py`` says what a reference names and makes the artifact; this
module plans it for the machine (or a profile of one), turns the plan into
a launch spec with the user's overrides on top, and loads it. A plan that
does not fit is refused (exit 7) unless ``--no-plan`` asks for llama.cpp's
defaults.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeglm.artifacts import (
    DEFAULT_QUANT,
    Artifact,
    ConvertProgress,
    cached_path,
    ensure_gguf,
    ensure_onnx,
    resolve,
    verify_gguf,
)
from edgeglm.backends.base import Backend, Chunk, Completion, SamplingParams
from edgeglm.chat import render
from edgeglm.errors import CheckpointError, HardwareError, UsageError

if TYPE_CHECKING:
    from edgeglm.hardware import HardwareProfile
    from edgeglm.planner.launch import LaunchControls, LaunchSpec
    from edgeglm.planner.onnx_plan import OnnxPlan
    from edgeglm.planner.plan import Plan


def _machine(hardware: HardwareProfile | None) -> HardwareProfile:
    from edgeglm.hardware import probe

    return hardware or probe(bandwidth=False)


def _plan(ref: str, hardware: HardwareProfile | None, quant: str | None = None) -> Plan:
    from edgeglm.planner.planner import make_plan
    from edgeglm.planner.sources import open_model

    source = open_model(ref)
    return make_plan(source, _machine(hardware), quant=quant)


NO_PLAN_HINT = "--no-plan loads it with llama.cpp's defaults anyway"


def does_not_fit(where: object, plan: Plan) -> HardwareError:
    """The refusal when the plan does not fit: one line, the planner's reason,
    and how to go on anyway (exit 7)."""
    why = " ".join((plan.reason("fit") or "nothing fits this machine").split())
    return HardwareError(f"{where}: the plan does not fit this machine: {why}; {NO_PLAN_HINT}")


def _fitting_spec(where: object, plan: Plan) -> LaunchSpec:
    spec = plan.launch_spec()
    if spec is None:
        raise does_not_fit(where, plan)
    return spec


def checkpoint_quant(checkpoint: Path, plan: Plan | None, quant: str | None) -> str:
    """The GGUF quant a checkpoint runs at: the one asked for (``--quant``),
    else the plan's for this machine, else llama.cpp's default (``--no-plan``).

    A planned quant that needs an importance matrix cannot be made without
    calibration text: refused with the commands that make it."""
    from edgeglm.converters.gguf.quant_types import SCHEMES, scheme

    if quant is not None:
        return scheme(quant).name  # an unknown name is a UsageError here
    if plan is None or plan.quant not in SCHEMES:  # no plan, or an ONNX plan's quant
        return DEFAULT_QUANT
    if SCHEMES[plan.quant].needs_imatrix:
        raise UsageError(
            f"{checkpoint}: the plan picked {plan.quant}, which needs an importance matrix: "
            f"edgeglm convert {checkpoint} -q {plan.quant} --calibrate TEXT_FILE -o OUT.gguf, "
            "then run OUT.gguf (or choose another with --quant)"
        )
    return plan.quant


def unplanned_spec(gguf: Path) -> LaunchSpec:
    """llama-cpp-python's own defaults (``--no-plan``)."""
    from edgeglm.planner.launch import LaunchSpec

    return LaunchSpec(artifact=str(gguf), flash_attn=False)


def planned_spec(gguf: Path, hardware: HardwareProfile | None = None) -> LaunchSpec:
    """The launch spec the planner chooses for this GGUF on this machine (or on
    ``hardware``). Where the plan does not fit, HardwareError (exit 7) with the
    planner's reason: nothing is loaded with settings nobody planned."""
    return _fitting_spec(gguf, _plan(str(gguf), hardware))


def finish_spec(
    spec: LaunchSpec,
    *,
    n_ctx: int | None = None,
    controls: LaunchControls | None = None,
    **fields: Any,
) -> LaunchSpec:
    """A planned spec with the caller's choices on top: explicit fields, a
    context, then llama.cpp's own flags (-ot, --cpu-moe, --n-cpu-moe, -ngl)."""
    if n_ctx is not None:
        fields["n_ctx"] = n_ctx
    spec = spec.with_(**fields) if fields else spec
    return controls.apply(spec) if controls is not None else spec


def dry_run_spec(
    ref: str | None,
    *,
    n_ctx: int | None = None,
    quant: str | None = None,
    use_plan: bool = True,
    controls: LaunchControls | None = None,
    hardware: HardwareProfile | None = None,
) -> LaunchSpec:
    """What ``open_backend`` would load, without converting or loading anything.

    A GGUF is planned as ``run`` plans it. A Hugging Face checkpoint is planned
    at the quant ``run`` converts it to (its artifact is the cached GGUF, or
    None until it is made). A bare config.json cannot run: its spec is the
    plan's, as ``edgeglm plan`` prints it."""
    from edgeglm.planner.launch import LaunchSpec

    p = None if ref is None else Path(ref).expanduser()
    if p is not None and p.is_file() and p.suffix.lower() == ".json":
        config_only = _plan(str(p), hardware, quant=quant).launch_spec()
        if config_only is None:
            raise UsageError(f"{p}: the plan does not fit; see edgeglm plan {p}")
        return finish_spec(config_only, n_ctx=n_ctx, controls=controls)
    art = resolve(ref)
    if art.kind == "onnx":
        raise UsageError(f"{art.path}: --dry-run prints llama.cpp launch specs; this is ONNX")
    if quant is not None and art.kind == "gguf":
        raise UsageError(f"{art.path}: --quant applies to checkpoints; this gguf has its own")
    if n_ctx is not None:
        check_context(n_ctx, art)
    if art.kind == "gguf":
        spec = planned_spec(art.path, hardware) if use_plan else unplanned_spec(art.path)
    elif use_plan:
        hardware = _machine(hardware)
        plan = _plan(str(art.path), hardware, quant=quant)
        if plan.backend == "onnxruntime":
            return _onnx_dry_run(art.path, hardware, n_ctx, controls)
        spec = _fitting_spec(art.path, plan)
        spec = _with_artifact(spec, art.path, checkpoint_quant(art.path, plan, quant))
    else:
        q = checkpoint_quant(art.path, None, quant)
        spec = _with_artifact(LaunchSpec(quant=q, flash_attn=False), art.path, q)
    return finish_spec(spec, n_ctx=n_ctx, controls=controls)


def _with_artifact(spec: LaunchSpec, checkpoint: Path, quant: str) -> LaunchSpec:
    """The spec pointed at the checkpoint's cached GGUF, None until it is made."""
    cached = cached_path(checkpoint, f"{quant}.gguf")
    return spec.with_(artifact=str(cached) if cached.exists() else None)


def _onnx_dry_run(
    checkpoint: Path,
    hardware: HardwareProfile,
    n_ctx: int | None,
    controls: LaunchControls | None,
) -> LaunchSpec:
    """The spec of a plan that runs the ONNX export beside ``checkpoint``: its
    folder, threads and context (the provider is in ``edgeglm plan``'s output)."""
    from edgeglm.planner.backend import find_onnx_artifact
    from edgeglm.planner.launch import LaunchSpec

    folder = find_onnx_artifact(checkpoint)
    if folder is None:
        raise HardwareError(f"{checkpoint}: the plan picked ONNX Runtime but no export is there")
    if controls is not None and controls.given():
        raise UsageError(
            f"{controls.given()[0]} applies to llama.cpp; the plan for {checkpoint} runs ONNX "
            "Runtime (--backend llama.cpp to use llama.cpp)"
        )
    hint = "--no-plan runs the checkpoint in llama.cpp with its defaults instead"
    planned = _fitting_onnx_plan(folder, hardware, n_ctx, hint)
    return LaunchSpec(
        backend="onnx",
        artifact=str(folder),
        n_threads=planned.threads,
        n_ctx=planned.n_ctx,
        flash_attn=False,
    )


def check_context(n_ctx: int, art: Artifact, n_seq: int = 1) -> int:
    """``n_ctx`` if each of its ``n_seq`` sequences (serve's slots, which split
    it as llama-server's -np splits -c) stays within the model's trained
    context (UsageError otherwise), checked before anything is converted or loaded."""
    from edgeglm.backends.base import check_n_ctx
    from edgeglm.planner.advice import past_trained_context

    check_n_ctx(n_ctx, what="-c/--ctx-size")
    train = trained_context(art)
    per_seq = n_ctx // n_seq
    if train is not None and 0 < train < per_seq:
        if n_seq == 1:
            raise UsageError(past_trained_context(n_ctx, train))
        raise UsageError(
            f"-c/--ctx-size {n_ctx} over {n_seq} slots gives each {per_seq} tokens, past "
            f"the model's trained context of {train}: use -c {train * n_seq} or less"
        )
    return n_ctx


def trained_context(art: Artifact) -> int | None:
    """The context length the model was trained for, read without loading it."""
    if art.kind == "onnx":
        for name, keys in (
            ("genai_config.json", ("model", "context_length")),
            ("config.json", ("max_position_embeddings",)),
        ):
            try:
                value: Any = json.loads((art.path / name).read_text(encoding="utf-8"))
                for key in keys:
                    value = value[key]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None  # the backend reports the broken folder when it loads
    from edgeglm.planner.sources import open_model

    return open_model(str(art.path)).facts().n_ctx_train


def open_backend(
    ref: str | None,
    *,
    backend: str = "auto",
    n_ctx: int | None = None,
    logits: bool = False,
    quant: str | None = None,
    use_plan: bool = True,
    controls: LaunchControls | None = None,
    verbose: bool = False,
    hardware: HardwareProfile | None = None,
    convert_progress: ConvertProgress | None = None,
    n_seq_max: int = 1,
    **kwargs: Any,
) -> Backend:
    """Load ``ref`` from the planner's launch spec for this machine (or for
    ``hardware``, a profile of it); explicit keyword arguments (LaunchSpec
    fields), ``n_ctx`` and ``controls`` (llama.cpp's -ot, --cpu-moe,
    --n-cpu-moe, -ngl) override the plan. ``verbose``: llama.cpp's own load
    log on stderr (llama.cpp backend).

    ``backend="auto"`` runs what the plan chose: for a Hugging Face checkpoint
    whose plan picks ONNX Runtime, the ONNX export beside it, with the ONNX
    plan's provider, threads and context; otherwise llama.cpp. A plan that
    does not fit is refused (HardwareError, exit 7) unless ``use_plan`` is
    False (``--no-plan``: llama-cpp-python's defaults).

    A Hugging Face checkpoint is converted (once) at ``quant``, else at the
    plan's quant for this machine (see ``checkpoint_quant``); that conversion
    reports to ``convert_progress``.

    A given ``n_ctx`` must be at least 1 and at most the model's trained
    context: it is refused before anything is converted or allocated.

    ``n_seq_max``: sequences llama.cpp decodes together in one context, each
    with ``n_ctx / n_seq_max`` of it (``edgeglm serve --parallel``; llama.cpp).
    """
    from edgeglm.backends.base import check_n_ctx, check_threads

    if backend not in ("auto", "llama.cpp", "onnx"):
        raise UsageError(f"unknown backend {backend!r}; choose auto, llama.cpp or onnx")
    if n_ctx is not None:
        check_n_ctx(n_ctx)
    check_threads(kwargs.get("n_threads"))
    art = _for_backend(resolve(ref), backend, convert_progress)
    if quant is not None and art.kind != "hf":
        raise UsageError(f"{art.path}: --quant applies to checkpoints; this {art.kind} has its own")
    if art.kind == "onnx":
        from edgeglm.backends.onnx import OnnxModel

        if controls is not None and controls.given():
            raise UsageError(
                f"{controls.given()[0]} applies to llama.cpp; the ONNX backend does not take it"
            )
        if n_ctx is not None:
            check_context(n_ctx, art)
        if use_plan:
            hint = "--no-plan opens it anyway with ONNX Runtime's defaults"
            return _open_onnx(art.path, _machine(hardware), n_ctx, kwargs, hint)
        model: Backend = OnnxModel(art.path, n_ctx=n_ctx, **kwargs)
        return model
    if n_ctx is not None:
        check_context(n_ctx, art, n_seq_max)  # before converting or loading anything
    path = art.path
    if art.kind == "hf":
        plan = None
        if use_plan:
            hardware = _machine(hardware)  # probed once, for both plans
            plan = _plan(str(art.path), hardware, quant=quant)
            if plan.backend != "onnxruntime":
                _fitting_spec(art.path, plan)  # refused before converting
            elif backend == "auto":
                return _open_planned_onnx(art.path, hardware, n_ctx, controls, kwargs)
        q = checkpoint_quant(art.path, plan, quant)
        path = ensure_gguf(art.path, q, progress=convert_progress)
    verify_gguf(path)
    from edgeglm.backends.llamacpp import LlamaCppModel

    spec = planned_spec(path, hardware) if use_plan else unplanned_spec(path)
    spec = finish_spec(spec, n_ctx=n_ctx, controls=controls, **kwargs)
    if spec.rpc:  # in a child process: ggml-rpc aborts when a worker is lost
        from edgeglm.rpc.client import open_rpc

        return open_rpc(spec, logits_all=logits, verbose=verbose, n_seq_max=n_seq_max)
    return LlamaCppModel.from_spec(spec, logits_all=logits, verbose=verbose, n_seq_max=n_seq_max)


def _for_backend(
    art: Artifact, backend: str, convert_progress: ConvertProgress | None = None
) -> Artifact:
    """The artifact ``backend`` runs: the ONNX export beside a checkpoint for
    ``onnx`` (a store model's checkpoint is converted into its entry on first
    use, as its GGUFs are); a backend that cannot run what was named is
    refused (UsageError), never swapped for another."""
    from edgeglm.planner.backend import find_onnx_artifact
    from edgeglm.store.layout import store_entry_of

    if backend == "onnx" and art.kind == "hf":
        folder = find_onnx_artifact(art.path)
        if folder is None and store_entry_of(art.path) is not None:
            folder = ensure_onnx(art.path, progress=convert_progress)
        if folder is None:
            raise UsageError(
                f"{art.path}: --backend onnx needs an ONNX export beside the checkpoint "
                f"(edgeglm convert {art.path} -o {art.path / 'onnx'} --format onnx)"
            )
        return Artifact("onnx", folder)
    if backend == "onnx" and art.kind == "gguf":
        raise UsageError(f"{art.path}: a GGUF runs in llama.cpp, not with --backend onnx")
    if backend == "llama.cpp" and art.kind == "onnx":
        raise UsageError(
            f"{art.path}: an ONNX folder runs in ONNX Runtime, not with --backend llama.cpp"
        )
    return art


def _open_planned_onnx(
    checkpoint: Path,
    hardware: HardwareProfile,
    n_ctx: int | None,
    controls: LaunchControls | None,
    kwargs: dict[str, Any],
) -> Backend:
    """The ONNX export the plan chose for ``checkpoint``, opened as planned."""
    from edgeglm.planner.backend import find_onnx_artifact

    folder = find_onnx_artifact(checkpoint)
    if folder is None:  # the planner only picks ONNX Runtime when there is one
        raise HardwareError(f"{checkpoint}: the plan picked ONNX Runtime but no export is there")
    if controls is not None and controls.given():
        raise UsageError(
            f"{controls.given()[0]} applies to llama.cpp; the plan for {checkpoint} runs ONNX "
            "Runtime (--backend llama.cpp to use llama.cpp)"
        )
    hint = "--no-plan runs the checkpoint in llama.cpp with its defaults instead"
    return _open_onnx(folder, hardware, n_ctx, kwargs, hint)


def _fitting_onnx_plan(
    folder: Path, hardware: HardwareProfile, n_ctx: int | None, no_plan_hint: str
) -> OnnxPlan:
    """``edgeglm plan FOLDER``'s plan; HardwareError (exit 7) where it does not fit."""
    from edgeglm.planner.onnx_plan import plan_onnx

    planned = plan_onnx(folder, hardware, n_ctx)
    if not planned.fits:
        need, have = planned.memory.total / 2**30, planned.ram_usable / 2**30
        raise HardwareError(
            f"{folder}: the plan does not fit this machine: ONNX Runtime needs {need:.1f} GiB "
            f"and {have:.1f} GiB is usable; {no_plan_hint}"
        )
    return planned


def _open_onnx(
    folder: Path,
    hardware: HardwareProfile,
    n_ctx: int | None,
    kwargs: dict[str, Any],
    no_plan_hint: str,
) -> Backend:
    """An ONNX folder with its plan's provider, threads and context (``plan_onnx``,
    what ``edgeglm plan FOLDER`` prints); refused (exit 7) where that plan does
    not fit or the planned provider does not initialize here. ``n_threads`` and
    ``providers`` in ``kwargs`` override the plan."""
    from edgeglm.backends.onnx import OnnxModel, load_model_folder, usable_providers

    foreign = sorted(set(kwargs) - {"n_threads", "providers"})
    if foreign:
        raise UsageError(f"{foreign[0]} is a llama.cpp setting; {folder} runs in ONNX Runtime")
    load_model_folder(folder)  # the backend's own checks (and exit codes) come first
    planned = _fitting_onnx_plan(folder, hardware, n_ctx, no_plan_hint)
    providers = kwargs.get("providers") or [planned.provider]
    if providers[0] not in usable_providers():  # asked before ONNX Runtime logs a failure
        raise HardwareError(
            f"{folder}: the plan runs ONNX Runtime on {providers[0]}, which does not "
            f"initialize here; {no_plan_hint}"
        )
    model = OnnxModel(
        folder,
        providers=providers,
        n_threads=kwargs.get("n_threads") or planned.threads,
        n_ctx=planned.n_ctx,
    )
    if model.capabilities.device != providers[0]:
        got = model.capabilities.device
        model.close()
        raise HardwareError(
            f"{folder}: the plan runs ONNX Runtime on {providers[0]}, which does not "
            f"initialize here ({got} does); {no_plan_hint}"
        )
    return model


def _origin(model: Backend) -> str:
    """The model's file or folder, for messages."""
    where = getattr(model, "path", None) or getattr(model, "folder", None)
    return f"{where}: " if where else ""


def chat(
    model: Backend, messages: Sequence[Mapping[str, Any]], params: SamplingParams
) -> Generator[Chunk, None, Completion]:
    """Stream the assistant's reply to ``messages`` using the model's own template.

    The request is checked and the template rendered now, not on the first
    ``next()``: a bad message (UsageError) or a template that fails in its
    bounded worker (CheckpointError, naming the model) is raised here.
    """
    try:
        text = render(messages, model.chat_template())
    except CheckpointError as e:
        raise CheckpointError(f"{_origin(model)}{e}") from e.__cause__
    return model.generate(model.tokenize(text, special=True), params)


def generate_text(
    model: Backend, text: str, params: SamplingParams
) -> Generator[Chunk, None, Completion]:
    """Plain continuation of ``text`` (no chat template): valid UTF-8, not empty.
    Checked now, like ``chat``."""
    from edgeglm.backends.base import check_text

    tokens = model.tokenize(check_text(text, "the text to continue", empty_ok=False))
    if not tokens:
        raise UsageError("the text to continue has no tokens")
    return model.generate(tokens, params)
