"""Action validation shared by the environments."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def clip_to_bounds(action: np.ndarray | Sequence[float], low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """float64 action clipped to [low, high]; raises on a wrong shape or a non-finite value."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (len(low),):
        raise ValueError(f"expected an action of shape ({len(low)},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action must be finite, got {a}")
    return np.clip(a, low, high)
