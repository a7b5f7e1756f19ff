"""config.json lookups shared by every converter family."""

from __future__ import annotations

from typing import Any

from edgeglm.errors import CheckpointError


class Config:
    """config.json with lookups that name the file when a key is missing."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data = data
        self.where = where
        rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
        self.rope: dict[str, Any] = rope if isinstance(rope, dict) else {}

    def get(self, *keys: str, default: Any = None) -> Any:
        for k in keys:
            if self.data.get(k) is not None:
                return self.data[k]
        return default

    def need(self, *keys: str) -> Any:
        value = self.get(*keys)
        if value is None:
            raise CheckpointError(f"{self.where}: missing {' or '.join(keys)}")
        return value

    def rope_get(self, key: str, default: Any = None) -> Any:
        """transformers 5 nests rope settings in rope_parameters; 4.x kept them at the top."""
        if self.rope.get(key) is not None:
            return self.rope[key]
        return self.data.get(key, default)
