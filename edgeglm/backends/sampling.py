"""Next-token sampling in numpy, for backends that hand us raw logits (ONNX Runtime).

The chain and its order follow llama.cpp's default sampler, so one set of
``SamplingParams`` means the same thing on every backend::

    repeat penalty -> (temperature 0: argmax) -> top-k -> top-p -> min-p -> temperature -> draw

top-p and min-p judge probabilities before temperature, as llama.cpp does.
Draws come from a generator seeded by ``SamplingParams.seed``: the same seed,
prompt and model give the same text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edgeglm.backends.base import SamplingParams, sampling_problems
from edgeglm.errors import UsageError

# Tokens the repeat penalty looks back over (llama.cpp's penalty_last_n default).
REPEAT_LAST_N = 64


def check_params(p: SamplingParams) -> None:
    """Refuse settings that have no meaning, instead of sampling something odd.

    ``SamplingParams`` already checks itself when built (base.sampling_problems,
    the one rule set for every backend); this catches one altered since.
    """
    problems = sampling_problems(vars(p))
    if problems:
        raise UsageError("invalid sampling parameters: " + "; ".join(problems))


class Sampler:
    """Picks one token id from a logit vector; holds the seeded random state."""

    def __init__(self, params: SamplingParams) -> None:
        check_params(params)
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: npt.NDArray[np.floating], history: Sequence[int] = ()) -> int:
        p = self.params
        x = np.array(logits, dtype=np.float64).reshape(-1)
        if p.repeat_penalty != 1.0 and history:
            x = repeat_penalty(x, history[-REPEAT_LAST_N:], p.repeat_penalty)
        if p.temperature == 0:
            return int(np.argmax(x))
        ids, vals = top_k(x, p.top_k)
        if p.top_p < 1.0:
            ids, vals = top_p(ids, vals, p.top_p)
        if p.min_p > 0.0:
            ids, vals = min_p(ids, vals, p.min_p)
        probs = softmax(vals / p.temperature)
        return int(ids[self.rng.choice(len(ids), p=probs)])


def softmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(x - x.max())
    out: npt.NDArray[np.float64] = e / e.sum()
    return out


def repeat_penalty(
    x: npt.NDArray[np.float64], recent: Sequence[int], penalty: float
) -> npt.NDArray[np.float64]:
    """llama.cpp/CTRL rule: shrink a recent token's logit toward zero (divide if
    positive, multiply if negative), once per distinct token."""
    ids = np.unique(np.asarray(recent, dtype=np.int64))
    ids = ids[(ids >= 0) & (ids < x.size)]
    v = x[ids]
    x[ids] = np.where(v > 0, v / penalty, v * penalty)
    return x


def top_k(
    x: npt.NDArray[np.float64], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Candidates sorted by logit, best first; k <= 0 keeps them all."""
    ids = np.argpartition(-x, k - 1)[:k] if 0 < k < x.size else np.arange(x.size)
    # stable order: equal logits keep ascending ids, so runs are reproducible
    ids = ids[np.argsort(-x[ids], kind="stable")]
    return ids.astype(np.int64), x[ids]


def top_p(
    ids: npt.NDArray[np.int64], vals: npt.NDArray[np.float64], p: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The shortest best-first prefix whose probability reaches ``p`` (at least one)."""
    cum = np.cumsum(softmax(vals))
    keep = int(np.searchsorted(cum, p)) + 1
    return ids[:keep], vals[:keep]


def min_p(
    ids: npt.NDArray[np.int64], vals: npt.NDArray[np.float64], p: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Tokens at least ``p`` times as likely as the best one (vals sorted best first)."""
    probs = softmax(vals)
    keep = probs >= p * probs[0]
    return ids[keep], vals[keep]
