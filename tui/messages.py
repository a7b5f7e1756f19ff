"""Messages worker threads post to the UI.

Workers never touch widgets (Textual is not thread-safe); they post one of
these, and a handler on the screen updates the display on the event loop.
Each chat message carries the generation id it belongs to, so tokens from a
cancelled generation that arrive late are recognised and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from edgeglm.backends.base import Completion
from edgeglm.generation import Sampling

from .artifacts import ArtifactInfo
from .session import ModelChoice

if TYPE_CHECKING:
    from edgeglm.bench.report import BenchReport
    from edgeglm.hardware import HardwareProfile
    from edgeglm.planner.plan import Plan


@dataclass
class ModelLoaded(Message):
    choice: ModelChoice
    name: str  # backend name, e.g. "llama.cpp"
    device: str
    n_ctx: int
    sampling: Sampling  # the model's own sampling defaults (edgeglm.generation)


@dataclass
class ModelFailed(Message):
    choice: ModelChoice
    error: str


@dataclass
class GenerationStarted(Message):
    """The prompt fits the context and generation begins (text then streams
    through the screen's ReplyBuffer, not through messages)."""

    gen_id: int
    prompt_tokens: int
    dropped: int  # oldest messages left out so that the prompt fits the context


@dataclass
class GenerationEnded(Message):
    gen_id: int
    completion: Completion | None  # None when stopped or failed
    error: str | None = None
    # (tokens, n_ctx) when the latest message alone fills the context
    overflow: tuple[int, int] | None = None


@dataclass
class ConvertProgress(Message):
    tensor: str
    index: int
    count: int
    done_bytes: int
    total_bytes: int


@dataclass
class ConvertEnded(Message):
    output: str | None
    error: str | None = None
    existed: bool = False  # converted before (by the app or by `edgeglm run`): nothing to do


@dataclass
class ArtifactsFound(Message):
    """Every local artifact, with what is known of it so far (see artifacts.scan)."""

    found: list[ArtifactInfo]
    error: str | None = None  # the listing itself failed


@dataclass
class ArtifactRead(Message):
    """One artifact's metadata, read in the worker."""

    info: ArtifactInfo


@dataclass
class BenchProgress(Message):
    text: str
    fraction: float


@dataclass
class BenchEnded(Message):
    report: BenchReport | None
    error: str | None = None
    stopped: bool = False


@dataclass
class HardwareReady(Message):
    profile: HardwareProfile | None
    plan: Plan | None
    error: str | None = None
    plan_error: str | None = None
