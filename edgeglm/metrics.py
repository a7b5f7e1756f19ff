"""Quality metrics on next-token distributions, computed in float64."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def log_softmax(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    out: npt.NDArray[np.float64] = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return out


def kl_divergence(ref_logits: npt.ArrayLike, logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """KL(P_ref || P) per position, in nats."""
    p = log_softmax(ref_logits)
    q = log_softmax(logits)
    return np.asarray((np.exp(p) * (p - q)).sum(axis=-1), dtype=np.float64)
