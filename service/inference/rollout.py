"""POST /v1/rollouts' computation: world-model rollouts through the engine, and decoding to frames.

- Latent actions: the autoregressive rollout of `training.models.world_model.autoregressive_rollout`: the
  observed context states and the IDM's latents between them, then one given latent per step,
  the context window sliding at `max_steps`. When the model has the key/value components
  (`world_model_prefill`, `world_model_kv_step`) the context is prefilled once and each step feeds
  one frame with the previous call's keys/values, instead of re-running the whole window per step;
  a model exported before them falls back to the `world_model` component (same numbers).
- Real actions: `exporters.runtime.controller_step`, the planner's own step (the controller maps
  (action, current state) to a latent, then one world-model step from the current state alone), run
  in a worker thread over an `EngineBridge`, so a rollout predicts exactly what POST /v1/plan scores
  for the same actions.
"""

from __future__ import annotations

import asyncio

import numpy as np

from exporters.runtime import controller_step
from service.inference.bridge import EngineBridge
from service.inference.engine import Engine
from service.inference.queue import Priority

KV_COMPONENTS = ("world_model_prefill", "world_model_kv_step")


def has_kv_cache(engine: Engine) -> bool:
    """Whether the served model was exported with the world model's key/value components."""
    return all(c in engine.batchers for c in KV_COMPONENTS)


async def rollout_latents(
    engine: Engine,
    context: np.ndarray,
    latents: np.ndarray,
    priority: Priority,
    deadline: float | None,
    use_cache: bool | None = None,
) -> np.ndarray:
    """context `[C, N, D]`, latents `[H, Z]` -> predicted states `[H, N, D]`.

    `use_cache=None` takes the key/value path whenever the model has it; False forces the uncached one."""
    if len(context) > 1:
        context_latents = await engine.latent_actions(context, priority, deadline)  # [C-1, Z]
    else:
        context_latents = np.zeros((0, latents.shape[-1]), np.float32)
    if use_cache if use_cache is not None else has_kv_cache(engine):
        return await _rollout_cached(engine, context, context_latents, latents, priority, deadline)
    return await _rollout_uncached(engine, context, context_latents, latents, priority, deadline)


async def _rollout_uncached(
    engine: Engine, context: np.ndarray, context_latents: np.ndarray, latents: np.ndarray, priority: Priority,
    deadline: float | None,
) -> np.ndarray:
    """The whole window through `world_model` at every step: O(window) frames per step."""
    max_steps = engine.geo.max_steps
    states = context[-max_steps:][None]  # [1, T, N, D]
    window = context_latents[None]  # [1, T-1, Z]
    outputs = []
    for h in range(len(latents)):
        window = np.concatenate([window, latents[None, h : h + 1]], axis=1)  # [1, T, Z]
        states, window = states[:, -max_steps:], window[:, -max_steps:]
        out = await engine.run("world_model", {"states": states, "latents": window}, priority, deadline)
        nxt = out["predictions"][:, -1]  # [1, N, D]: ŝ_{t+1}
        outputs.append(nxt[0])
        states = np.concatenate([states, nxt[:, None]], axis=1)
    return np.stack(outputs)


async def _rollout_cached(
    engine: Engine, context: np.ndarray, context_latents: np.ndarray, latents: np.ndarray, priority: Priority,
    deadline: float | None,
) -> np.ndarray:
    """The same rollout through the key/value components: the context is prefilled once, then one
    frame per step. A frame enters the cache only with the latent applied to it, so the first call
    prefills the context with the first given latent as its last one. Once the window holds
    `max_steps` frames it slides by prefilling the newest `max_steps` again (every remaining frame's
    keys depend on the one that left), exactly as the uncached window does."""
    max_steps = engine.geo.max_steps
    states = list(context[-max_steps:])  # [N, D] each: the frames in the window
    window = list(context_latents[-(len(states) - 1):]) if len(states) > 1 else []  # [Z] each
    keys = values = None
    outputs = []
    for h in range(len(latents)):
        window.append(latents[h])
        if keys is None or len(states) > max_steps:
            states, window = states[-max_steps:], window[-max_steps:]
            inputs = {"states": np.stack(states)[None], "latents": np.stack(window)[None]}
            out = await engine.run("world_model_prefill", inputs, priority, deadline)
        else:
            inputs = {"states": states[-1][None], "latents": latents[h][None], "past_keys": keys, "past_values": values}
            out = await engine.run("world_model_kv_step", inputs, priority, deadline)
        keys, values = out["present_keys"], out["present_values"]
        nxt = out["next_states"][0]  # [N, D]: ŝ_{t+1}
        outputs.append(nxt)
        states.append(nxt)
    return np.stack(outputs)


async def rollout_actions(
    engine: Engine, state: np.ndarray, actions: np.ndarray, priority: Priority, deadline: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """state `[N, D]`, actions `[H, A]` -> (predicted states `[H, N, D]`, the controller's latents `[H, Z]`)."""
    bridge = EngineBridge(engine, asyncio.get_running_loop(), priority, deadline)

    def unroll() -> tuple[np.ndarray, np.ndarray]:
        current = state[None]  # [1, N, D]
        states, latents = [], []
        for h in range(len(actions)):
            current, z = controller_step(bridge.call, current, actions[h : h + 1])  # [1, N, D], [1, Z]
            states.append(current[0])
            latents.append(z[0])
        return np.stack(states), np.stack(latents)

    return await bridge.run(unroll)


async def decode_states(
    engine: Engine, states: np.ndarray, priority: Priority, deadline: float | None
) -> np.ndarray:
    """States `[S, N, D]` -> uint8 frames `[S * tubelet, H, W, 3]`, decoded in windows of `max_steps`."""
    max_steps = engine.geo.max_steps
    chunks = []
    for start in range(0, len(states), max_steps):
        window = states[start : start + max_steps][None]  # [1, S', N, D]
        frames = (await engine.run("decoder", {"states": window}, priority, deadline))["frames"][0]  # [2S', 3, H, W]
        chunks.append(frames)
    video = np.concatenate(chunks)  # [T, 3, H, W] in [0, 1]
    return (np.clip(video, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
