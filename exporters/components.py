"""The exported components: one small `nn.Module` per graph, its tensor specs and example inputs.

These wrappers fix the service's contract (names, shapes, float32, batch first): every runtime
(torch, onnxruntime, TensorRT) runs exactly these graphs, so a component means the same thing
everywhere. Dynamic axes are named with strings in the specs ("batch", "frames", "steps",
"steps-1", "2*steps"); fixed axes are ints taken from the model config.

| component          | inputs                                   | outputs                          |
| ---                | ---                                      | ---                              |
| encoder            | video [B, T, 3, H, W] in [0, 1], T even  | states [B, T/2, N, D]            |
| idm                | states [B, T, N, D], T >= 2              | latents [B, T-1, Z]              |
| world_model        | states [B, T, N, D], latents [B, T, Z]   | predictions [B, T, N, D]         |
| world_model_step   | states [B, N, D], latents [B, Z]         | next_states [B, N, D]            |
| world_model_prefill| states [B, T, N, D], latents [B, T, Z]   | next_states [B, N, D], present_keys/values [B, L, H, T*N, Dh] |
| world_model_kv_step| states [B, N, D], latents [B, Z], past_keys/values [B, L, H, T*N, Dh] | next_states [B, N, D], present_keys/values [B, L, H, (T+1)*N, Dh] |
| decoder            | states [B, T, N, D]                      | frames [B, 2T, 3, H, W] in [0, 1]|
| controller         | actions [B, A], states [B, N, D]         | latents [B, Z]                   |

The two key/value components are the world model's frame-causal cache (`WorldModel.prefill` and
`WorldModel.step`): L blocks, H heads, Dh = width / H, keys after RoPE. A rollout prefills its
context once, then each step feeds the previous step's present keys/values back as the past ones,
so a step costs one frame however long the context. For `world_model_kv_step` the time axis
("steps") counts the cached frames (1 .. max_steps - 1); its token axis is "N*steps".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.config import ModelConfig
from training.models.lam import LatentActionModel

MODEL_COMPONENTS = ("encoder", "idm", "world_model", "world_model_step", "world_model_prefill", "world_model_kv_step", "decoder")
KV_COMPONENTS = ("world_model_prefill", "world_model_kv_step")
ALL_COMPONENTS = (*MODEL_COMPONENTS, "controller")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "float32"
    shape: tuple[int | str, ...]  # a str is a dynamic axis ("batch", "steps", ...)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TensorSpec:
        return cls(raw["name"], raw["dtype"], tuple(raw["shape"]))


@dataclass(frozen=True)
class Profile:
    """Batch and time ranges a component is built, warmed and checked for (min <= opt <= max).

    TensorRT builds one optimization profile from these; onnxruntime and torch accept any batch but
    are warmed at `batches` and checked at `min` and `max`."""

    batch: tuple[int, int, int]  # (min, opt, max) rows
    time: tuple[int, int, int] | None = None  # (min, opt, max) of the dynamic time axis, if any

    @property
    def max_batch(self) -> int:
        return self.batch[2]


# ----------------------------------------------------------------------------- graphs
class EncoderGraph(nn.Module):
    def __init__(self, model: LatentActionModel) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.encoder(video)  # [B, T, 3, H, W] -> [B, T/2, N, D]


class IdmGraph(nn.Module):
    """Deterministic latents: the regularizer's inference latent of the IDM's raw output."""

    def __init__(self, model: LatentActionModel) -> None:
        super().__init__()
        self.idm, self.regularizer = model.idm, model.regularizer

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.regularizer.latent(self.idm(states))  # [B, T, N, D] -> [B, T-1, Z]


class WorldModelGraph(nn.Module):
    def __init__(self, model: LatentActionModel) -> None:
        super().__init__()
        self.world_model = model.world_model

    def forward(self, states: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return self.world_model(states, latents)  # [B, T, N, D], [B, T, Z] -> [B, T, N, D]


class WorldModelStepGraph(nn.Module):
    """The planner's step: one state and one latent per candidate, no context."""

    def __init__(self, model: LatentActionModel) -> None:
        super().__init__()
        self.world_model = model.world_model

    def forward(self, states: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return self.world_model.next_state(states[:, None], latents[:, None])  # [B, N, D], [B, Z] -> [B, N, D]


class WorldModelPrefillGraph(nn.Module):
    """Start a cached rollout: the context's next state and every block's keys/values."""

    def __init__(self, model: LatentActionModel) -> None:
        super().__init__()
        self.world_model = model.world_model

    def forward(self, states: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nxt, cache = self.world_model.prefill(states, latents)  # [B, T, N, D], [B, T, Z] -> [B, N, D]
        return nxt, cache.keys, cache.values  # + [B, L, H, T*N, Dh] twice


class WorldModelKvStepGraph(nn.Module):
    """One cached step: the newest state and its latent after the past keys/values."""

    def __init__(self, model: LatentActionModel) -> None:
        super().__init__()
        self.world_model = model.world_model

    def forward(
        self, states: torch.Tensor, latents: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from training.models.world_model import KVCache

        # [B, N, D], [B, Z], [B, L, H, T*N, Dh] x2 -> [B, N, D], [B, L, H, (T+1)*N, Dh] x2
        nxt, cache = self.world_model.step(KVCache(past_keys, past_values), states, latents)
        return nxt, cache.keys, cache.values


class DecoderGraph(nn.Module):
    def __init__(self, model: LatentActionModel) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.decoder(states)  # [B, T, N, D] -> [B, 2T, 3, H, W]


class ControllerGraph(nn.Module):
    def __init__(self, model: LatentActionModel) -> None:
        super().__init__()
        assert model.controller is not None, "the model has no controller"
        self.controller = model.controller

    def forward(self, actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.controller(actions[:, None], states[:, None])[:, 0]  # [B, A], [B, N, D] -> [B, Z]


GRAPHS: dict[str, type[nn.Module]] = {
    "encoder": EncoderGraph,
    "idm": IdmGraph,
    "world_model": WorldModelGraph,
    "world_model_step": WorldModelStepGraph,
    "world_model_prefill": WorldModelPrefillGraph,
    "world_model_kv_step": WorldModelKvStepGraph,
    "decoder": DecoderGraph,
    "controller": ControllerGraph,
}


def component_names(model: LatentActionModel) -> tuple[str, ...]:
    return ALL_COMPONENTS if model.controller is not None else MODEL_COMPONENTS


def build_graph(model: LatentActionModel, name: str) -> nn.Module:
    """The eval-mode wrapper module of one component."""
    return GRAPHS[name](model).eval()


def controller_action_dim(model: LatentActionModel) -> int | None:
    return None if model.controller is None else int(model.controller.cfg.action_dim)


# ----------------------------------------------------------------------------- specs
def _f32(name: str, *shape: int | str) -> TensorSpec:
    return TensorSpec(name, "float32", tuple(shape))


def component_specs(
    cfg: ModelConfig, action_dim: int | None = None
) -> dict[str, tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]]:
    """(inputs, outputs) of every component; the controller only when `action_dim` is given."""
    n, d, z = cfg.encoder.tokens, cfg.encoder.dim, cfg.idm.latent_dim
    px, tb = cfg.encoder.image_size, cfg.encoder.tubelet
    frames = f"{tb}*steps" if tb != 1 else "steps"
    wm = cfg.world_model
    layers, heads, dh = wm.depth, wm.heads, wm.dim // wm.heads

    def kv(name: str, tokens: str) -> TensorSpec:
        return _f32(name, "batch", layers, heads, tokens, dh)

    specs = {
        "encoder": ((_f32("video", "batch", frames, 3, px, px),), (_f32("states", "batch", "steps", n, d),)),
        "idm": ((_f32("states", "batch", "steps", n, d),), (_f32("latents", "batch", "steps-1", z),)),
        "world_model": (
            (_f32("states", "batch", "steps", n, d), _f32("latents", "batch", "steps", z)),
            (_f32("predictions", "batch", "steps", n, d),),
        ),
        "world_model_step": (
            (_f32("states", "batch", n, d), _f32("latents", "batch", z)),
            (_f32("next_states", "batch", n, d),),
        ),
        "world_model_prefill": (
            (_f32("states", "batch", "steps", n, d), _f32("latents", "batch", "steps", z)),
            (_f32("next_states", "batch", n, d), kv("present_keys", f"{n}*steps"), kv("present_values", f"{n}*steps")),
        ),
        "world_model_kv_step": (
            (
                _f32("states", "batch", n, d), _f32("latents", "batch", z),
                kv("past_keys", f"{n}*steps"), kv("past_values", f"{n}*steps"),
            ),
            (
                _f32("next_states", "batch", n, d),
                kv("present_keys", f"{n}*steps+{n}"), kv("present_values", f"{n}*steps+{n}"),
            ),
        ),
        "decoder": ((_f32("states", "batch", "steps", n, d),), (_f32("frames", "batch", frames, 3, px, px),)),
    }
    if action_dim is not None:
        specs["controller"] = (
            (_f32("actions", "batch", action_dim), _f32("states", "batch", n, d)),
            (_f32("latents", "batch", z),),
        )
    return specs


# Serving batch sizes: the batcher's sizes for clip-level components, the planner's candidate
# counts (the DROID preset samples 300) for the per-candidate ones.
SERVING_BATCHES = (1, 8, 32)
PLANNER_BATCHES = (1, 300, 512)
# Device memory allowed for one call's key/value tensors (past and present) at the longest context;
# caps the KV components' batch (the paper-sized world model holds ~50 MB per row and frame).
KV_BUDGET_BYTES = 8 << 30


def kv_row_bytes(cfg: ModelConfig, frames: int) -> int:
    """Bytes of one row's keys + values (float32) for `frames` frames."""
    wm = cfg.world_model
    return 2 * wm.depth * wm.dim * frames * cfg.encoder.tokens * 4


def default_profiles(cfg: ModelConfig, serving: tuple[int, ...] = SERVING_BATCHES,
                     planner: tuple[int, ...] = PLANNER_BATCHES) -> dict[str, Profile]:
    """min/opt/max batch (and time) per component from the serving batch sizes."""
    steps = cfg.world_model.max_steps
    clip = (min(serving), sorted(serving)[len(serving) // 2], max(serving))
    plan = (min(planner), sorted(planner)[len(planner) // 2], max(planner))
    # The KV components carry every candidate's cache: past + present at the longest context,
    # capped by the memory budget. Their time axes: frames prefilled (1..S), frames cached (1..S-1).
    kv_max = max(1, min(plan[2], KV_BUDGET_BYTES // (2 * kv_row_bytes(cfg, steps))))
    kv_batch = (1, min(plan[1], kv_max), kv_max)
    return {
        "encoder": Profile(clip, (1, steps, steps)),  # time in steps; frames = tubelet * steps
        "idm": Profile(clip, (2, steps, steps)),
        "world_model": Profile(clip, (1, steps, steps)),
        "world_model_step": Profile(plan),
        "world_model_prefill": Profile(kv_batch, (1, max(1, steps // 2), steps)),
        "world_model_kv_step": Profile(kv_batch, (1, max(1, steps // 2), max(1, steps - 1))),
        "decoder": Profile(clip, (1, steps, steps)),
        "controller": Profile(plan),
    }


def spec_shape(spec: TensorSpec, batch: int, steps: int, cfg: ModelConfig) -> tuple[int, ...]:
    """A concrete shape for `spec` at `batch` rows and `steps` latent steps."""
    tb, n = cfg.encoder.tubelet, cfg.encoder.tokens
    axes = {
        "batch": batch, "steps": steps, "steps-1": steps - 1, f"{tb}*steps": tb * steps,
        f"{n}*steps": n * steps, f"{n}*steps+{n}": n * (steps + 1),  # key/value token axes
    }
    return tuple(axes[a] if isinstance(a, str) else a for a in spec.shape)


def profile_shapes(spec: TensorSpec, profile: Profile, cfg: ModelConfig) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) shapes of an input for an engine's optimization profile: batch and time
    ranges of `profile` taken together (the longest context at the largest batch)."""
    times = profile.time or (1, 1, 1)
    return tuple(spec_shape(spec, b, t, cfg) for b, t in zip(profile.batch, times, strict=True))


def random_inputs(
    specs: tuple[TensorSpec, ...], batch: int, steps: int, cfg: ModelConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Inputs in each tensor's natural range: video in [0, 1], states layer-normed, actions in [-1, 1]."""
    out = {}
    for spec in specs:
        shape = spec_shape(spec, batch, steps, cfg)
        if spec.name == "video":
            out[spec.name] = torch.rand(shape, generator=generator)
        elif spec.name == "actions":
            out[spec.name] = torch.rand(shape, generator=generator) * 2 - 1
        elif spec.name == "states":  # encoder states are layer-normalised without affine
            x = torch.randn(shape, generator=generator)
            out[spec.name] = torch.nn.functional.layer_norm(x, (x.shape[-1],))
        else:
            out[spec.name] = torch.randn(shape, generator=generator)
    return out


# ----------------------------------------------------------------------------- input checks
def _axis_value(axis: str, size: int) -> tuple[str, int] | None:
    """Which named quantity a dynamic axis fixes: "steps-1" of 4 -> ("steps", 5); "2*steps" of 6 -> ("steps", 3)."""
    if axis.endswith("-1"):
        return axis[:-2], size + 1
    if "*" in axis:
        factor, base = axis.split("*", 1)
        if size % int(factor):
            return None
        return base, size // int(factor)
    return axis, size


def check_inputs(
    component: str, specs: tuple[TensorSpec, ...], inputs: dict[str, Any], profile: Profile | None = None,
    limit_batch: bool = False,
) -> dict[str, int]:
    """Validate numpy inputs against a component's specs; returns the bound dynamic axes.

    Raises `InvalidInputs` naming the tensor, what was expected and what came. `limit_batch`
    refuses batches above the profile (TensorRT engines cannot run them)."""
    from exporters.errors import InvalidInputs

    names = [s.name for s in specs]
    if sorted(inputs) != sorted(names):
        raise InvalidInputs(f"{component} takes inputs {names}, got {sorted(inputs)}")
    bound: dict[str, int] = {}
    for spec in specs:
        x = inputs[spec.name]
        dtype = str(getattr(x, "dtype", type(x).__name__))
        if dtype != spec.dtype:
            raise InvalidInputs(f"{component}.{spec.name} must be {spec.dtype}, got {dtype}: cast it (x.astype('float32'))")
        shape = tuple(x.shape)
        want = "[" + ", ".join(map(str, spec.shape)) + "]"
        if len(shape) != len(spec.shape):
            raise InvalidInputs(f"{component}.{spec.name} must have shape {want}, got {list(shape)}")
        for axis, size in zip(spec.shape, shape, strict=True):
            if isinstance(axis, int):
                if size != axis:
                    raise InvalidInputs(f"{component}.{spec.name} must have shape {want}, got {list(shape)}")
                continue
            named = _axis_value(axis, size)
            if named is None:
                raise InvalidInputs(f"{component}.{spec.name}: axis '{axis}' must be a multiple of {axis.split('*')[0]}, got {size}")
            key, value = named
            if bound.setdefault(key, value) != value:
                raise InvalidInputs(f"{component}: inputs disagree on '{key}' ({bound[key]} vs {value} in {spec.name})")
    if bound.get("batch", 1) < 1:
        raise InvalidInputs(f"{component}: batch must be at least 1")
    if profile is not None:
        if profile.time is not None and "steps" in bound:
            lo, _, hi = profile.time
            if not lo <= bound["steps"] <= hi:
                raise InvalidInputs(f"{component}: {bound['steps']} steps is outside the model's range {lo}..{hi}")
        if limit_batch and bound.get("batch", 1) > profile.max_batch:
            raise InvalidInputs(
                f"{component}: batch {bound['batch']} exceeds the engine's profile max {profile.max_batch}: "
                "split the batch or rebuild with larger serving batch sizes"
            )
    return bound
