"""Encoded goal states for POST /v1/plan, cached in this process (least recently used dropped first).

A goal id is a hash of the model identity and the goal image's pixels, so posting the same image
again gives the same id (a robot can re-register after an eviction or a restart and keep its id),
and an id from one model version never matches another's states.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


def goal_id(model_key: str, image: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(model_key.encode())
    digest.update(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return "goal-" + digest.hexdigest()[:32]


class GoalStore:
    """goal id -> state `[N, D]`; touched only from the event loop, so it needs no lock."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._states: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: str) -> bool:
        return key in self._states

    def put(self, key: str, state: np.ndarray) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def get(self, key: str) -> np.ndarray | None:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
        return state

    def delete(self, key: str) -> bool:
        return self._states.pop(key, None) is not None
