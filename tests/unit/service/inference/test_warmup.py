"""Warm-up shapes: what serving sends each component, up to the configured batch; or everything."""

from __future__ import annotations

from exporters.components import Profile
from service.inference.warmup import warm_shapes

CLIP_TIME = Profile((1, 8, 32), (1, 4, 4))


def test_serving_warms_the_routes_lengths_up_to_the_cap() -> None:
    assert warm_shapes("encoder", 32, CLIP_TIME, "serving", 8) == [(1, 1), (2, 1), (4, 1), (8, 1)]
    assert warm_shapes("idm", 32, Profile((1, 8, 32), (2, 4, 4)), "serving", 4) == [(1, 2), (2, 2), (4, 2)]
    assert warm_shapes("controller", 512, Profile((1, 300, 512)), "serving", 32) == [
        (1, 1), (2, 1), (4, 1), (8, 1), (16, 1), (32, 1)]
    assert warm_shapes("controller", 3, Profile((1, 300, 512)), "serving", 32) == [(1, 1), (2, 1), (3, 1)]
    # context components: every length a rollout or render can have, at batch 1
    assert warm_shapes("world_model", 32, CLIP_TIME, "serving", 2) == [(1, 1), (2, 1), (1, 2), (1, 3), (1, 4)]


def test_all_warms_every_batch_and_every_length() -> None:
    shapes = warm_shapes("encoder", 32, CLIP_TIME, "all", 4)
    assert [b for b, t in shapes if t == 1] == [1, 2, 4, 8, 16, 32]
    assert [t for b, t in shapes if b == 1] == [1, 2, 3, 4]
    assert max(b for b, _ in warm_shapes("controller", 512, Profile((1, 300, 512)), "all", 4)) == 512
