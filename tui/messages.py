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
from .store_items import StoreItem

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


@dataclass
class StoreListed(Message):
    """The model store's rows (store_items.list_store), listed in a worker."""

    items: list[StoreItem]
    damaged: list[str]  # folders of the store that are not readable entries
    error: str | None = None  # the listing itself failed


@dataclass
class StoreProgress(Message):
    """A pull, import or verify under way: ``file`` (may be empty), its bytes so far."""

    job: str  # "pull", "import", "verify"
    file: str
    done: int
    total: int


@dataclass
class StoreJobEnded(Message):
    job: str
    name: str | None = None  # the store model it was about (None: not known)
    text: str | None = None  # what happened, for the status line
    error: str | None = None  # one line when it failed
    cancelled: bool = False
    # verify: each row's problems (empty: it verifies)
    verified: dict[str, tuple[str, ...]] | None = None
