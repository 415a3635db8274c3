"""The engine: the loaded model (`exporters.runtime.LoadedModel`) behind one dynamic batcher per component.

Every model call of the service goes through `await engine.run(component, inputs, priority,
deadline)`, so concurrent requests share batches. Clips enter the encoder one tubelet per row
(`[S, 2, 3, H, W]`) and the IDM one state pair per row (`[S-1, 2, N, D]`): the encoder is
frame-causal and the IDM sees one pair at a time, so this gives the same numbers as encoding the
clip whole, while clips of any length batch together.

Lifecycle (driven by the app's lifespan): [exporting, by the app] -> `load()` (repository opened,
every sha256 verified, batchers started) -> `warm()` (every component run at the shapes serving
sends it, `service.inference.warmup`, so the first real request is as fast as the rest) -> ready
-> `drain()` on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporters.runtime import LoadedModel
from service.exporting import ExportProgress
from service.inference.batching import DynamicBatcher, Priority
from service.inference.errors import MissingComponent
from service.inference.stage import DOOR_SHARE
from service.inference.threads import run_nicer
from service.inference.warmup import warm_shapes
from service.metrics import ServiceMetrics
from service.settings import Settings

log = logging.getLogger("lawm.service")

# Components whose rows are planner candidates (hundreds per call) rather than clips or states.
PLANNER_COMPONENTS = ("world_model_step", "controller", "world_model_prefill", "world_model_kv_step")
DEFAULT_FPS = 4.0  # the demo and paper configs' rate, for manifests that do not record one


@dataclass(frozen=True)
class Geometry:
    """What the routes need to know of the model."""

    image_size: int
    fps: float
    tubelet: int  # frames per state
    tokens: int  # N
    dim: int  # D
    latent_dim: int  # Z
    max_steps: int  # longest world-model / decoder context, in states
    action_dim: int | None  # the controller's real action size; None without a controller

    @property
    def state_shape(self) -> tuple[int, int]:
        return (self.tokens, self.dim)

    def usable_frames(self, frames: int) -> int:
        """The frames of a clip the encoder takes: whole tubelets only (the rest is dropped)."""
        return frames // self.tubelet * self.tubelet

    def latent_steps(self, frames: int) -> int:
        """Latent actions a clip of `frames` frames gives: one between each pair of consecutive states."""
        return max(0, frames // self.tubelet - 1)


def model_fps(model: LoadedModel, folder: Path | None = None) -> float:
    """The frame rate the model was trained at: from its manifest, else from the run config of the
    checkpoint it was exported from (the version's `checkpoint/`, or the source path), else 4 fps."""
    manifest = model.manifest
    found = manifest.get("fps") or ((manifest.get("run_config") or {}).get("data") or {}).get("fps")
    if isinstance(found, int | float) and found > 0:
        return float(found)
    from training.checkpoint import read_checkpoint_manifest

    source = (manifest.get("source") or {}).get("checkpoint")
    for checkpoint in [folder / "checkpoint" if folder else None, Path(source) if isinstance(source, str) else None]:
        if checkpoint is None or not (checkpoint / "manifest.json").is_file():
            continue
        try:
            fps = ((read_checkpoint_manifest(checkpoint).get("run_config") or {}).get("data") or {}).get("fps")
        except Exception:  # an unreadable source is no reason to refuse the model: fall back below
            continue
        if isinstance(fps, int | float) and fps > 0:
            return float(fps)
    return DEFAULT_FPS


def geometry_of(model: LoadedModel, fps: float) -> Geometry:
    cfg = model.config
    return Geometry(
        image_size=cfg.encoder.image_size,
        fps=fps,
        tubelet=cfg.encoder.tubelet,
        tokens=cfg.encoder.tokens,
        dim=cfg.encoder.dim,
        latent_dim=cfg.idm.latent_dim,
        max_steps=cfg.world_model.max_steps,
        action_dim=model.controller_action_dim if "controller" in model.components else None,
    )


def load_served_model(settings: Settings) -> tuple[LoadedModel, float]:
    """The model `settings` names (a checkpoint on torch, or a repository version on its runtime)
    and its frame rate."""
    from exporters.repository import resolve_version
    from exporters.runtime import load_checkpoint_model, load_model

    # Unset, LAWM_PRECISION loads fp32 and says "default"; set (even to fp32), the model says "setting".
    precision = settings.precision if "precision" in settings.model_fields_set else None
    if settings.checkpoint is not None:
        model = load_checkpoint_model(settings.checkpoint, device=settings.device, precision=precision)
        return model, settings.fps or model_fps(model, None)
    model = load_model(settings.repo, settings.model, settings.version, settings.runtime, device=settings.device,
                       precision=precision, arena=settings.ort_arena)
    folder = resolve_version(settings.repo, settings.model, model.version)
    return model, settings.fps or model_fps(model, folder)


class Engine:
    def __init__(self, settings: Settings, metrics: ServiceMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model: LoadedModel | None = None
        self.geometry: Geometry | None = None
        self.batchers: dict[str, DynamicBatcher] = {}
        self.warm_sizes: dict[str, list[int]] = {}
        # starting -> [exporting] -> loading -> warming -> ready -> draining -> stopped; or failed
        self.state = "starting"
        self.error: str | None = None
        self.load_seconds: dict[str, float] = {}
        self.export: ExportProgress | None = None  # set by the app while it exports the model
        self.warm_progress = (0, 0)  # shapes warmed, shapes to warm
        self._stopping = False  # tells a warm-up in its thread to stop at the next shape

    def waiting_for(self) -> str | None:
        """What readiness waits for, in words (/readyz); None when ready, stopped or failed."""
        if self.state == "exporting" and self.export is not None:
            return self.export.describe()
        if self.state == "warming":
            done, total = self.warm_progress
            return f"warm-up ({done}/{total} shapes)"
        return self.state if self.state in ("starting", "loading", "draining") else None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # ------------------------------------------------------------------ lifecycle
    def batch_limit(self, component: str) -> int:
        """Rows per batch for `component`: the setting, capped by a TensorRT engine's profile."""
        assert self.model is not None
        wanted = self.settings.plan_max_batch_size if component in PLANNER_COMPONENTS else self.settings.max_batch_size
        if self.model.runtime == "tensorrt":  # engines cannot run batches above their profile
            return min(wanted, self.model.components[component].max_batch)
        return wanted

    async def load(self) -> None:
        """Open and verify the model, then start one batcher per component."""
        self.state = "loading"
        t0 = time.perf_counter()
        # opened in a nicer thread: the runtime's own thread pools inherit its priority
        nice = self.settings.worker_nice
        self.model, fps = await asyncio.to_thread(run_nicer, lambda: load_served_model(self.settings), nice, "load")
        self.geometry = geometry_of(self.model, fps)
        self.load_seconds["load"] = time.perf_counter() - t0
        for name, component in self.model.components.items():
            limit = self.batch_limit(name)
            batcher = DynamicBatcher(
                name,
                component.run,
                max_batch_size=limit,
                max_queue_delay_ms=self.settings.max_queue_delay_ms,
                max_queue_rows=max(self.settings.max_queue_rows, limit),
                max_queue_wait_s=(self.settings.plan_max_queue_wait_s if name in PLANNER_COMPONENTS
                                  else self.settings.max_queue_wait_s),
                metrics=self.metrics.batcher(name) if self.metrics is not None else None,
                nice=nice,
            )
            await batcher.start()
            self.batchers[name] = batcher
        if self.metrics is not None:
            self.metrics.set_model(self.model.name, self.model.version, self.model.runtime)
        lowered = sorted(c for c, p in self.model.precision.items() if p == "bf16")
        log.info("loaded %s v%s on %s in %.2f s; bf16 components: %s (%s)", self.model.name, self.model.version,
                 self.model.runtime, self.load_seconds["load"], ", ".join(lowered) or "none", self.model.precision_source)

    async def warm(self) -> None:
        """Run every component at the shapes serving sends it (`settings.warmup`)."""
        assert self.model is not None
        self.state = "warming"
        t0 = time.perf_counter()
        await asyncio.to_thread(self._warm_all)
        self.load_seconds["warm"] = time.perf_counter() - t0
        if self._stopping:
            return
        self.state = "ready"
        log.info("warm in %.2f s; ready", self.load_seconds["warm"])

    def _warm_all(self) -> None:
        import torch

        from exporters.components import random_inputs

        assert self.model is not None and self.geometry is not None
        gen = torch.Generator().manual_seed(0)
        plan = {
            name: warm_shapes(name, self.batchers[name].max_batch_size, self.model.profiles.get(name),
                              self.settings.warmup, self.settings.warmup_max_batch)
            for name in self.model.components
        }
        total, done = sum(len(shapes) for shapes in plan.values()), 0
        self.warm_progress = (0, total)
        for name, shapes in plan.items():
            component = self.model.components[name]
            for batch, t in shapes:
                if self._stopping:  # shutting down: the thread must not outlive the batchers
                    return
                inputs = random_inputs(component.inputs, batch, t, self.model.config, gen)
                component.run({k: v.numpy() for k, v in inputs.items()})
                done += 1
                self.warm_progress = (done, total)
            self.warm_sizes[name] = sorted({b for b, _ in shapes})

    async def start(self) -> None:
        """`load()` then `warm()`; on failure the engine stays unready with `error` set."""
        try:
            await self.load()
            await self.warm()
        except Exception as e:
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            raise

    def stop_accepting(self) -> None:
        """Not ready from now on, and a warm-up still running stops at its next shape."""
        self.state, self._stopping = "draining", True

    async def drain(self, timeout_s: float) -> None:
        """Not ready; finish queued and in-flight work (up to `timeout_s`), then stop the batchers."""
        self.stop_accepting()
        await asyncio.gather(*(b.drain(timeout_s) for b in self.batchers.values()))
        self.state = "stopped"

    # ------------------------------------------------------------------ calls
    def at_the_door(self, components: tuple[str, ...], priority: Priority) -> None:
        """Before a request is read: refuse it (BacklogTooLong, 429) when a queue it will join is
        already over DOOR_SHARE of its wait budget, rather than after its upload was read and decoded
        in vain (the rest of the budget is headroom for the requests already past the door)."""
        for name in components:
            batcher = self.batchers.get(name)
            if batcher is not None:
                batcher.check_wait(priority, DOOR_SHARE)

    def require(self, component: str) -> None:
        """Refuse early, with how to fix it, when the model lacks a component (e.g. no controller)."""
        if component in self.batchers:
            return
        assert self.model is not None
        raise MissingComponent(self.model.name, self.model.version, component, list(self.batchers))

    async def run(
        self,
        component: str,
        inputs: dict[str, np.ndarray],
        priority: Priority = Priority.INTERACTIVE,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """One component call through its batcher. `deadline` is an absolute `time.monotonic()`."""
        self.require(component)
        return await self.batchers[component].submit(inputs, priority=priority, deadline=deadline)

    async def encode(
        self, frames: np.ndarray, priority: Priority = Priority.INTERACTIVE, deadline: float | None = None
    ) -> np.ndarray:
        """uint8 frames `[T, H, W, 3]` (T a multiple of the tubelet) -> states `[S, N, D]`, S = T / tubelet."""
        geo = self.geo
        t, h, w, _ = frames.shape
        if t == 0 or t % geo.tubelet:
            raise ValueError(f"need a positive multiple of {geo.tubelet} frames, got {t}")
        video = frames.reshape(t // geo.tubelet, geo.tubelet, h, w, 3).transpose(0, 1, 4, 2, 3)  # [S, 2, 3, H, W]
        video = video.astype(np.float32) / np.float32(255.0)
        out = await self.run("encoder", {"video": video}, priority, deadline)
        return out["states"][:, 0]  # [S, 1, N, D] -> [S, N, D]

    async def encode_images(
        self, images: np.ndarray, priority: Priority = Priority.INTERACTIVE, deadline: float | None = None
    ) -> np.ndarray:
        """Single uint8 images `[K, H, W, 3]` -> one state each `[K, N, D]` (each image duplicated into a
        tubelet, as the controller and the planner were trained)."""
        return await self.encode(np.repeat(images, self.geo.tubelet, axis=0), priority, deadline)

    async def latent_actions(
        self, states: np.ndarray, priority: Priority = Priority.INTERACTIVE, deadline: float | None = None
    ) -> np.ndarray:
        """States `[S, N, D]` -> the latent action between each consecutive pair `[S-1, Z]`."""
        if len(states) < 2:
            raise ValueError(f"need at least 2 states, got {len(states)}")
        pairs = np.stack([states[:-1], states[1:]], axis=1)  # [S-1, 2, N, D]
        out = await self.run("idm", {"states": pairs}, priority, deadline)
        return out["latents"][:, 0]  # [S-1, 1, Z] -> [S-1, Z]

    @property
    def geo(self) -> Geometry:
        """The loaded model's geometry (the engine must have loaded)."""
        if self.geometry is None:
            raise RuntimeError("the engine has not loaded a model yet")
        return self.geometry

    def describe(self) -> dict[str, Any]:
        """What GET /v1/models says about the model."""
        assert self.model is not None and self.geometry is not None
        components = {}
        for name, comp in self.model.components.items():
            components[name] = {
                "inputs": [s.to_json() for s in comp.inputs],
                "outputs": [s.to_json() for s in comp.outputs],
                "max_batch_size": self.batchers[name].max_batch_size,
                "warm_batch_sizes": self.warm_sizes.get(name, []),
            }
        return {"components": components}
