"""A plan's deadline is its only deadline: the best plan so far when at least one iteration finished,
DeadlineExceeded (504) when none did. The world model is a slow fake stage behind a real batcher that
holds its batch until the deadline has passed, so no timing is asserted."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.errors import answer_for
from service.inference.batching import DynamicBatcher
from service.inference.errors import DeadlineExceeded
from service.inference.planner import PlanSlots, planner_config, run_plan

pytestmark = pytest.mark.anyio
TOKENS, DIM, LATENT = 4, 8, 2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SlowWorld:
    """`controller` and `world_model_step` behind batchers; world-model calls after the first
    `fast_calls` block until the test releases them (after the deadline)."""

    def __init__(self, fast_calls: int) -> None:
        self.fast_calls = fast_calls
        self.calls = 0
        self.release = threading.Event()
        self.blocked = threading.Event()

        def controller(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"latents": inputs["actions"][:, :LATENT].astype(np.float32)}

        def world_model_step(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.calls += 1
            if self.calls > self.fast_calls:
                self.blocked.set()
                self.release.wait(30)
            shift = inputs["latents"].mean(axis=1)[:, None, None]
            return {"next_states": (inputs["states"] + shift).astype(np.float32)}

        limits = {"max_batch_size": 64, "max_queue_delay_ms": 0.0, "max_queue_rows": 256}
        self.batchers = {"controller": DynamicBatcher("controller", controller, **limits),
                         "world_model_step": DynamicBatcher("world_model_step", world_model_step, **limits)}

    async def run(self, component: str, inputs: dict[str, np.ndarray], priority: int, deadline: float | None):  # noqa: ANN201
        return await self.batchers[component].submit(inputs, priority=priority, deadline=deadline)

    def require(self, component: str) -> None:
        pass


async def plan_with(world: SlowWorld, deadline: float):  # noqa: ANN201
    for b in world.batchers.values():
        await b.start()
    cfg = planner_config("droid", 4, None, {"samples": 16, "elites": 4, "iterations": 3}, 10**6)

    async def release_after_deadline() -> None:
        while not world.blocked.is_set() or time.monotonic() <= deadline:
            await asyncio.sleep(0.01)
        world.release.set()

    releaser = asyncio.ensure_future(release_after_deadline())
    slots = PlanSlots(2)
    state = np.zeros((TOKENS, DIM), np.float32)
    try:
        return await run_plan(world, slots, cfg, state, state + 1.0, deadline, deadline)  # type: ignore[arg-type]
    finally:
        releaser.cancel()
        world.release.set()
        slots.shutdown()
        for b in world.batchers.values():
            await b.drain(1.0)


async def test_no_finished_iteration_is_a_504() -> None:
    world = SlowWorld(fast_calls=0)
    with pytest.raises(DeadlineExceeded) as info:
        await plan_with(world, time.monotonic() + 0.2)
    assert answer_for(info.value).status == 504
    assert world.calls == 1  # the late batch ended the search: no further step was started


async def test_the_best_plan_so_far_is_returned_at_the_deadline() -> None:
    horizon = planner_config("droid", 4, None, {}, 10**6).horizon
    world = SlowWorld(fast_calls=horizon)  # the first iteration runs; the second one's first step is late
    result, _ = await plan_with(world, time.monotonic() + 2.0)
    assert result.deadline_hit
    assert result.iterations_run == 1
    assert np.isfinite(result.cost)
    assert world.calls <= horizon + 1
