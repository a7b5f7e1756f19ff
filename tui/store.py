"""Conversations on disk: one JSON file each, written atomically.

A chat is saved after every completed turn, so a crash or a killed terminal
loses at most the reply being generated. Files live under
``cache_dir()/conversations`` (``EDGEGLM_CACHE_DIR`` moves them, which is how
tests keep user state out of the way).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeglm.paths import cache_dir

TITLE_CHARS = 48


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    content: str
    reasoning: str | None = None  # GLM <think> text; never sent back to the model
    stopped: bool = False  # the user pressed Esc before the reply ended


@dataclass
class Conversation:
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    title: str = "New chat"
    model: str | None = None
    system: str = ""
    turns: list[Turn] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def messages(self) -> list[dict[str, str]]:
        """The OpenAI-shaped history the chat template renders."""
        out = [{"role": "system", "content": self.system}] if self.system.strip() else []
        out += [{"role": t.role, "content": t.content} for t in self.turns]
        return out

    def retitle(self) -> None:
        first = next((t.content for t in self.turns if t.role == "user"), "")
        line = " ".join(first.split())
        if line:
            self.title = line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conversation:
        turns = [Turn(**t) for t in data.get("turns", [])]
        return cls(**{**data, "turns": turns})


class ConversationStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / "conversations"

    def _path(self, conv_id: str) -> Path:
        return self.root / f"{conv_id}.json"

    def save(self, conv: Conversation) -> None:
        conv.updated = time.time()
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(conv.id)
        # write-then-rename: a reader never sees half a file, a crash leaves the old one
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(conv), indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def load(self, conv_id: str) -> Conversation:
        return Conversation.from_dict(json.loads(self._path(conv_id).read_text(encoding="utf-8")))

    def delete(self, conv_id: str) -> None:
        self._path(conv_id).unlink(missing_ok=True)

    def list(self) -> list[Conversation]:
        """Newest first; unreadable files are skipped rather than failing the list."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.glob("*.json"):
            try:
                found.append(Conversation.from_dict(json.loads(p.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(found, key=lambda c: c.updated, reverse=True)
