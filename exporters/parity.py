"""Parity: every exported component against the torch model, on random and real inputs.

Each component runs at batch 1 and at its profile's largest batch, on
- random inputs in each tensor's natural range (video in [0, 1], layer-normed states, ...), and
- real inputs: real clips (`exporters.real_inputs`) through the torch encoder, their states, the
  IDM's latents between them, real states with random actions for the controller.

The reference is the torch model run in float64, i.e. the exact function up to rounding that
does not matter here. A float32 reference would not do: the demo encoder's residual stream
reaches |x| ~ 44 before its final norms, so two correct float32 evaluations in different op
orders (torch eager vs onnxruntime) disagree by ~1e-3 on real clips, and torch's own float32 is
the farther of the two from the exact value. Each case also records torch float32's own error
(`torch_fp32_err`), the yardstick for what float32 can reach.

The bound is on the largest absolute error relative to the output's scale:
    max |candidate - reference| <= tol * scale,   scale = max(1, max |reference|)
with tol = 1e-4 for float32 graphs. Reduced precision is looser, by measurement on the demo model
(worst component, random inputs): fp16 loses up to ~0.7% of the scale (the encoder), bf16 (8
mantissa bits, 8x coarser than fp16) up to ~5%; the bounds below leave about 3x / 2x headroom.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from exporters.components import KV_COMPONENTS, Profile, build_graph, random_inputs
from exporters.runtime import Component
from training.models.lam import LatentActionModel

TOLERANCES = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 1e-1}
SCALE = "max(1, max|reference|)"


@dataclass
class ParityCase:
    component: str
    inputs: str  # "random" | "real"
    batch: int
    steps: int | None
    max_abs_err: float  # candidate vs the float64 reference
    scale: float
    bound: float
    passed: bool
    torch_fp32_err: float | None = None  # torch float32 vs the same reference, for comparison
    output: str | None = None  # which output, for components with several (the key/value ones)


def output_scale(reference: np.ndarray) -> float:
    return max(1.0, float(np.abs(reference).max()))


def compare(component: str, kind: str, batch: int, steps: int | None, reference: np.ndarray, got: np.ndarray,
            tol: float) -> ParityCase:
    if got.shape != reference.shape:
        return ParityCase(component, kind, batch, steps, float("inf"), output_scale(reference), tol, False)
    err = float(np.abs(got.astype(np.float64) - reference).max())  # nan stays nan and fails below
    scale = output_scale(reference)
    bound = tol * scale
    return ParityCase(component, kind, batch, steps, err, scale, bound, bool(err <= bound))


class RealInputs:
    """Real inputs for every component, derived once from real clips through the torch model."""

    def __init__(self, model: LatentActionModel, video: np.ndarray, source: str, seed: int = 0) -> None:
        self.source = source
        with torch.inference_mode():
            self.video = torch.from_numpy(video)  # [C, T, 3, H, W]
            self.states = build_graph(model, "encoder")(self.video)  # [C, S, N, D]
            self.latents = build_graph(model, "idm")(self.states)  # [C, S-1, Z]
        self.action_dim = None if model.controller is None else int(model.controller.cfg.action_dim)
        self.gen = torch.Generator().manual_seed(seed)
        self.world_model = model.world_model
        self._caches: dict[int, Any] = {}

    @property
    def steps(self) -> int:
        return int(self.states.shape[1])

    def for_component(self, name: str, batch: int, steps: int | None = None) -> dict[str, torch.Tensor]:
        """Inputs of `name` at `batch` rows; `steps` shortens the key/value components' context
        (frames prefilled, frames cached) from what the clips hold."""
        tile = lambda x: x[torch.arange(batch) % x.shape[0]]  # noqa: E731  # rows cycle over the real ones
        n, d = self.states.shape[-2:]
        pairs_s = self.states[:, :-1].reshape(-1, n, d)  # every (state, latent) pair of every clip
        pairs_z = self.latents.reshape(-1, self.latents.shape[-1])
        if name == "encoder":
            return {"video": tile(self.video)}
        if name in ("idm", "decoder"):
            return {"states": tile(self.states)}
        if name == "world_model":
            return {"states": tile(self.states[:, :-1]), "latents": tile(self.latents)}
        if name == "world_model_step":
            return {"states": tile(pairs_s), "latents": tile(pairs_z)}
        if name == "controller":
            assert self.action_dim is not None
            actions = torch.rand(batch, self.action_dim, generator=self.gen) * 2 - 1
            return {"actions": actions, "states": tile(pairs_s)}
        if name == "world_model_prefill":
            frames = steps or self.steps - 1
            return {"states": tile(self.states[:, :frames]), "latents": tile(self.latents[:, :frames])}
        if name == "world_model_kv_step":
            # the real cache of the first `past` states, then the next real state and its latent
            past = steps or self.steps - 2
            cache = self.cache(past)
            return {
                "states": tile(self.states[:, past]), "latents": tile(self.latents[:, past]),
                "past_keys": tile(cache.keys), "past_values": tile(cache.values),
            }
        raise KeyError(name)

    def cache(self, frames: int) -> Any:
        """The torch model's key/value cache of every clip's first `frames` states (float32)."""
        if frames not in self._caches:
            with torch.inference_mode():
                _, self._caches[frames] = self.world_model.prefill(self.states[:, :frames], self.latents[:, :frames])
        return self._caches[frames]

    def steps_of(self, name: str) -> int | None:
        return {
            "encoder": self.steps, "idm": self.steps, "decoder": self.steps, "world_model": self.steps - 1,
            "world_model_prefill": self.steps - 1, "world_model_kv_step": self.steps - 2,
        }.get(name)


def check_components(
    model: LatentActionModel,
    candidates: dict[str, Component],
    profiles: dict[str, Profile],
    precision: str = "fp32",
    real: RealInputs | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[ParityCase], None] | None = None,
) -> dict[str, Any]:
    """Run every candidate against the torch graph in float64 on `device`; the report for the manifest."""
    tol = TOLERANCES[precision]
    gen = torch.Generator().manual_seed(seed)
    exact = copy.deepcopy(model).to(device=device, dtype=torch.float64).eval()
    single = model if device == "cpu" else copy.deepcopy(model).to(device)  # never move the caller's model
    cases: list[ParityCase] = []
    t0 = time.perf_counter()
    for name, candidate in candidates.items():
        profile = profiles[name]
        reference, fp32 = build_graph(exact, name), build_graph(single, name)
        batches = sorted({profile.batch[0], profile.max_batch})
        steps = profile.time[2] if profile.time else None
        plans = [("random", b, steps) for b in batches]
        if real is not None:
            plans += [("real", b, real.steps_of(name)) for b in batches]
        if name in KV_COMPONENTS and profile.time is not None:
            # The caches at the largest batch and the longest context take gigabytes (in float64 for
            # the reference): check the profile's two corners instead, the longest context at the
            # smallest batch and the largest batch at the shortest context.
            shortest = profile.time[0]
            plans = [(kind, b, t if b == min(batches) else shortest) for kind, b, t in plans]
        for kind, batch, t in plans:
            if kind == "random":
                inputs = random_inputs(candidate.inputs, batch, t or 1, model.cfg, gen)
            else:
                assert real is not None
                inputs = real.for_component(name, batch, t if name in KV_COMPONENTS else None)
            ordered = [inputs[s.name].to(device) for s in candidate.inputs]
            with torch.inference_mode():
                expected = _outputs(reference(*(x.double() for x in ordered)))
                torch_fp32 = _outputs(fp32(*ordered))
            got = candidate.run({k: v.numpy() for k, v in inputs.items()})
            # every output: the key/value components' caches must match as well as their predictions
            for i, spec in enumerate(candidate.outputs):
                case = compare(name, kind, batch, t, expected[i], got[spec.name], tol)
                case.output = spec.name if len(candidate.outputs) > 1 else None
                case.torch_fp32_err = float(np.abs(torch_fp32[i] - expected[i]).max())
                cases.append(case)
                if progress is not None:
                    progress(case)
    return {
        "precision": precision,
        "tolerance": tol,
        "scale": SCALE,
        "bound": "max|candidate - reference| <= tolerance * scale",
        "reference": f"torch {torch.__version__} eager in float64 on {device}",
        "real_inputs": real.source if real is not None else None,
        "seconds": round(time.perf_counter() - t0, 2),
        "passed": all(c.passed for c in cases),
        "cases": [asdict(c) for c in cases],
    }


def _outputs(out: torch.Tensor | tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """A graph's output(s) as float64 numpy arrays, in the outputs' order."""
    return [o.double().cpu().numpy() for o in (out if isinstance(out, tuple) else (out,))]


def failures(report: dict[str, Any]) -> list[str]:
    return [
        f"{c['component']}{'.' + c['output'] if c.get('output') else ''} ({c['inputs']}, batch {c['batch']}): "
        f"max|err| {c['max_abs_err']:.3g} > {c['bound']:.3g}"
        for c in report["cases"]
        if not c["passed"]
    ]
