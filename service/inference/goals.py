"""Goal ids for POST /v1/goals and /v1/plan; the goal states themselves sit in the goals `ArrayCache`.

A goal id is a hash of the model identity and the goal image's pixels, so posting the same image
again gives the same id (a robot can re-register after an eviction or a restart and keep its id),
and an id from one model version never matches another's states.
"""

from __future__ import annotations

import hashlib

import numpy as np


def goal_id(model_key: str, image: np.ndarray) -> str:
    """`goal-` and 32 hex digits of the sha256 of the model identity and the image's shape and pixels."""
    digest = hashlib.sha256()
    digest.update(model_key.encode())
    digest.update(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return "goal-" + digest.hexdigest()[:32]
