"""Chat settings the user edits in the settings modal: sampling and the system prompt."""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgeglm.backends.base import SamplingParams, sampling_problems, text_problem
from edgeglm.chat import GLM_STOP_TOKENS


@dataclass(frozen=True)
class ChatSettings:
    system: str = ""
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    max_tokens: int = 512
    seed: int = 0

    def sampling(self) -> SamplingParams:
        # GLM's end-of-turn markers stop the reply even when a GGUF does not
        # flag them as end-of-generation tokens
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop=GLM_STOP_TOKENS,
        )

    def problems(self) -> list[str]:
        """Why these settings cannot be used (empty when they can): the same
        rules the CLI and every backend apply (backends.base)."""
        out = sampling_problems(
            {
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "top_k": self.top_k,
                "seed": self.seed,
            }
        )
        problem = text_problem(self.system, "the system prompt")
        return out + ([problem] if problem else [])

    def with_system(self, system: str) -> ChatSettings:
        return replace(self, system=system)
