"""Goal ids: one per model identity and image content (the cache itself: test_cache.py)."""

from __future__ import annotations

import numpy as np

from service.inference.goals import goal_id


def test_same_image_same_id_and_models_do_not_share_ids() -> None:
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert goal_id("demo/1/onnxruntime", image) == goal_id("demo/1/onnxruntime", image.copy())
    assert goal_id("demo/1/onnxruntime", image) != goal_id("demo/2/onnxruntime", image)
    assert goal_id("demo/1/onnxruntime", image) != goal_id("demo/1/onnxruntime", image[::-1].copy())
