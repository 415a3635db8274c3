"""Which shapes the engine runs each component at before it says it is ready.

Warm-up exists so the first real request is as fast as the rest: sessions initialise lazily and
the runtime's memory pools grow on first use. Warming shapes no request will send costs start-up
time and memory (an onnxruntime arena grown for a batch of 512 keeps that memory), so by default
("serving") a component is warmed only at the shapes the routes send it:

- batch sizes 1, 2, 4, ... up to `warmup_max_batch` (capped by the batcher's own limit); larger
  batches, which only heavy load forms, pay their first-use cost then;
- the time axis the routes use: one tubelet per encoder row, one state pair per IDM row; the
  context components (world model, decoder, key/value cache) at batch 1 and every context length
  a rollout or render can have (1 .. max_steps: a handful, and cheap at batch 1).

"all" warms every batch size each batcher can form, at every length, as before.
"""

from __future__ import annotations

from exporters.components import Profile

# The one length each route sends per row (see service.inference.engine: encode, latent_actions).
FIXED_STEPS = {"encoder": 1, "idm": 2}


def warm_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to and including `max_batch_size`: the sizes batches take under load."""
    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    return [*sizes, max_batch_size]


def warm_shapes(
    component: str, batcher_max: int, profile: Profile | None, mode: str = "serving", max_batch: int = 32
) -> list[tuple[int, int]]:
    """(batch, steps) pairs to run `component` at, in order; `steps` is the time axis
    (`exporters.components.spec_shape`), 1 for components without one."""
    sizes = warm_batch_sizes(batcher_max if mode == "all" else min(batcher_max, max_batch))
    steps = FIXED_STEPS.get(component, 1)
    shapes = [(b, steps) for b in sizes]
    if profile is None or profile.time is None:
        return shapes
    lo, _, hi = profile.time
    if mode == "serving" and component in FIXED_STEPS:
        return shapes  # the routes never send these components another length
    return shapes + [(1, t) for t in range(max(lo, 1), hi + 1) if (1, t) not in shapes]
