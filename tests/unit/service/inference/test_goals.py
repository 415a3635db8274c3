"""The goal cache: content ids, least-recently-used eviction."""

from __future__ import annotations

import numpy as np

from service.inference.goals import GoalStore, goal_id


def test_same_image_same_id_and_models_do_not_share_ids() -> None:
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert goal_id("demo/1/onnxruntime", image) == goal_id("demo/1/onnxruntime", image.copy())
    assert goal_id("demo/1/onnxruntime", image) != goal_id("demo/2/onnxruntime", image)
    assert goal_id("demo/1/onnxruntime", image) != goal_id("demo/1/onnxruntime", image[::-1].copy())


def test_least_recently_used_goal_is_dropped_first() -> None:
    store = GoalStore(capacity=2)
    store.put("a", np.zeros(1))
    store.put("b", np.ones(1))
    assert store.get("a") is not None  # "a" is now the most recent
    store.put("c", np.full(1, 2.0))
    assert "b" not in store and "a" in store and "c" in store and len(store) == 2
    assert store.delete("a") and not store.delete("a")
