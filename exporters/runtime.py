"""What the service holds: a loaded model version whose components share one interface.

    model = load_model(Path("repo"), "demo")               # onnxruntime on the CPU, sha256 verified
    model = load_model(Path("repo"), "demo", runtime="torch", precision="bf16")   # the planner's components in bf16
    model.components["idm"].run({"states": states})        # {"latents": [B, T-1, Z]}
    model = load_checkpoint_model(Path("models/demo"))      # torch, straight from a checkpoint
    step = planner_step(model)                              # for training.planning.plan
    step = planner_step(model, context="full")              # keeping each candidate's context (KV cache)
    next_states, latents = controller_step(call, states, actions)   # the step itself, on any `call`

Every component takes and returns float32 numpy arrays, batch first (see `exporters.components`
for names and shapes). `run` is thread-safe on every runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from exporters.components import Profile, TensorSpec, component_specs, default_profiles
from exporters.errors import RepositoryError
from exporters.repository import CHECKPOINT_DIR, read_version_manifest, resolve_version, verify
from training.config import ModelConfig

__all__ = [
    "RUNTIMES",
    "Component",
    "LoadedModel",
    "TensorSpec",
    "action_step",
    "controller_step",
    "load_checkpoint_model",
    "HistoryKvPlannerStep",
    "KvPlannerStep",
    "load_model",
    "planner_step",
]

RUNTIMES = ("torch", "onnxruntime", "tensorrt")


class Component(Protocol):
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch: int  # largest batch the runtime was built/warmed for (the profile's max)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass
class LoadedModel:
    name: str
    version: int
    runtime: str  # "torch" | "onnxruntime" | "tensorrt"
    manifest: dict[str, Any]
    components: dict[str, Component]
    config: ModelConfig
    controller_action_dim: int | None
    profiles: dict[str, Profile] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)  # component -> fp32 | bf16 (| the export's, off torch)
    precision_source: str = "default"  # see exporters.precision_choice: default | setting | recorded ... | export


def _profiles(manifest: dict[str, Any]) -> dict[str, Profile]:
    out = {}
    for name, entry in manifest["components"].items():
        p = entry["profile"]
        out[name] = Profile(tuple(p["batch"]), tuple(p["time"]) if p.get("time") else None)  # type: ignore[arg-type]
    return out


def _specs(manifest: dict[str, Any]) -> dict[str, tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]]:
    return {
        name: (tuple(TensorSpec.from_json(s) for s in e["inputs"]), tuple(TensorSpec.from_json(s) for s in e["outputs"]))
        for name, e in manifest["components"].items()
    }


def describe_components(
    specs: dict[str, tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]], profiles: dict[str, Profile]
) -> dict[str, dict[str, Any]]:
    """The manifest's `components` section: specs and profile of each component."""
    return {
        name: {
            "inputs": [s.to_json() for s in ins],
            "outputs": [s.to_json() for s in outs],
            "profile": {"batch": list(profiles[name].batch), "time": list(profiles[name].time) if profiles[name].time else None},
        }
        for name, (ins, outs) in specs.items()
    }


def load_model(
    repo: Path,
    name: str = "demo",
    version: int | None = None,
    runtime: str = "onnxruntime",
    device: str = "cpu",
    providers: list[str] | None = None,
    precision: dict[str, str] | str | None = None,
    arena: str = "session",
) -> LoadedModel:
    """Open a repository version (the latest when `version` is None) on one runtime.

    Every file's sha256 is verified before anything is loaded; a tampered, missing or damaged
    file raises `RepositoryError` naming it. `providers` picks onnxruntime execution providers
    (e.g. ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]);
    `arena` how onnxruntime's sessions hold CPU memory (`exporters.ort_runtime.ARENAS`).
    `precision` (torch runtime only; None is fp32): "fp32" | "bf16" for the planner's components
    (world_model_step, world_model_prefill, world_model_kv_step, controller), a dict of component ->
    "fp32" | "bf16", or "auto" for the choice `lawm bench precision --record` made for this version
    (fp32 where none was recorded); see `exporters.precision_choice`."""
    from exporters.precision_choice import resolve_precisions

    if runtime not in RUNTIMES:
        raise RepositoryError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    folder = resolve_version(repo, name, version)
    manifest = read_version_manifest(folder)
    verify(folder, manifest)
    config = ModelConfig.model_validate(manifest["model_config"])
    specs, profiles = _specs(manifest), _profiles(manifest)
    precisions, source = resolve_precisions(precision, list(specs), runtime, folder, manifest.get("precision", "fp32"))
    components: dict[str, Any]
    if runtime == "torch":
        from exporters.torch_runtime import build_model, torch_components

        model, _ = build_model(folder / CHECKPOINT_DIR)
        components = torch_components(model, specs, profiles, device, precisions)
    elif runtime == "onnxruntime":
        from exporters.ort_runtime import OrtComponent, check_providers, default_providers

        providers = providers or default_providers(device)
        check_providers(providers)
        components = {
            c: OrtComponent(c, folder / _artifact(manifest, c, "onnx"), ins, outs, profiles[c], providers, arena=arena)
            for c, (ins, outs) in specs.items()
        }
    else:
        from exporters.tensorrt_runtime import load_engines

        components = load_engines(folder, manifest, specs, profiles, device)
    return LoadedModel(
        name=name, version=int(folder.name), runtime=runtime, manifest=manifest, components=components,
        config=config, controller_action_dim=manifest.get("controller_action_dim"), profiles=profiles,
        precision=precisions, precision_source=source,
    )


def _artifact(manifest: dict[str, Any], component: str, kind: str) -> str:
    files = manifest["components"][component].get("files", {})
    if kind not in files:
        raise RepositoryError(
            f"{manifest.get('name')}/{manifest.get('version')} has no {kind} file for {component}; "
            f"it was exported as {sorted(files)} — export it with --format {kind} or pick another runtime"
        )
    return files[kind]


def load_checkpoint_model(checkpoint: Path, device: str = "cpu", precision: dict[str, str] | str | None = None) -> LoadedModel:
    """The torch runtime straight from a checkpoint directory (sha256 verified), no export needed.
    `precision` as for `load_model` ("auto": fp32, since a checkpoint holds no recorded choice)."""
    from exporters.components import controller_action_dim
    from exporters.precision_choice import resolve_precisions
    from exporters.torch_runtime import build_model, torch_components

    model, ckpt = build_model(checkpoint)
    action_dim = controller_action_dim(model)
    specs = component_specs(model.cfg, action_dim)
    precisions, source = resolve_precisions(precision, list(specs), "torch")
    profiles = default_profiles(model.cfg)
    manifest = {
        "name": Path(checkpoint).name,
        "version": 0,
        "source": {"checkpoint": str(checkpoint), "step": ckpt.step, "files": ckpt.manifest.get("files", {})},
        "model_config": ckpt.manifest["model_config"],
        "controller_config": ckpt.manifest.get("controller_config"),
        "controller_action_dim": action_dim,
        "components": describe_components(specs, profiles),
    }
    return LoadedModel(
        name=Path(checkpoint).name, version=0, runtime="torch", manifest=manifest,
        components=torch_components(model, specs, profiles, device, precisions), config=model.cfg,
        controller_action_dim=action_dim, profiles={k: profiles[k] for k in specs},
        precision=precisions, precision_source=source,
    )


# ----------------------------------------------------------------------------- real actions
# `call(component, inputs) -> outputs`: a component run directly, or through the service's batchers.
Call = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]
StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def controller_step(call: Call, states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step under real actions, the only place the two components are composed: the controller
    maps (action, current state) to a latent action, then the world model predicts the next state
    from the current state alone. states `[B, N, D]`, actions `[B, A]` -> (next states `[B, N, D]`,
    latents `[B, Z]`). The planner on every runtime and the service's plans and rollouts go through it,
    so a rollout predicts exactly what a plan scores for the same actions."""
    latents = call("controller", {"actions": actions, "states": states})["latents"]  # [B, Z]
    nxt = call("world_model_step", {"states": states, "latents": latents})["next_states"]  # [B, N, D]
    return nxt, latents


def action_step(call: Call) -> StepFn:
    """`step(states [B, N, D], actions [B, A]) -> next states [B, N, D]` for `training.planning.plan`:
    `controller_step` behind a torch <-> numpy round trip."""

    def step(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        s = states.detach().to("cpu", torch.float32).contiguous().numpy()  # [B, N, D]
        a = actions.detach().to("cpu", torch.float32).contiguous().numpy()  # [B, A]
        nxt, _ = controller_step(call, s, a)
        return torch.from_numpy(nxt).to(states.device)

    return step


def planner_step(model: LoadedModel, context: str = "one-frame") -> Any:
    """The planner's step for `training.planning.plan` through the model's components (numpy round
    trip), so the planner behaves the same on every runtime.

    `context="one-frame"`: `step(states [B, N, D], actions [B, A]) -> next states [B, N, D]` through
    `controller_step`. `context="full"`: a `ContextStep` through `controller`,
    `world_model_prefill` and `world_model_kv_step`, each candidate keeping its whole rollout as
    context (the present keys/values of one call are the past ones of the next)."""
    if "controller" not in model.components:
        raise RepositoryError(
            f"{model.name} v{model.version} has no controller: train one (lawm train controller --checkpoint CKPT "
            "--env manipulation|navigation) and export that checkpoint"
        )
    if context == "full":
        return KvPlannerStep(model)
    if context != "one-frame":
        raise RepositoryError(f"context must be 'full' or 'one-frame', got {context!r}")
    return action_step(lambda name, inputs: model.components[name].run(inputs))


class KvPlannerStep:
    """A `training.planning.ContextStep` over a loaded model's key/value components.

    The carry is (past keys, past values `[B, L, H, T*N, Dh]` or None before the first step, the
    cached states and latents for sliding the window, the current states `[B, N, D]`). Once the
    window holds `max_steps` frames it slides by prefilling the last `max_steps` frames again, as
    `training.models.world_model.advance` does, so the plan equals the torch one."""

    def __init__(self, model: LoadedModel) -> None:
        missing = [c for c in ("world_model_prefill", "world_model_kv_step") if c not in model.components]
        if missing:
            raise RepositoryError(
                f"{model.name} v{model.version} has no {missing} components (exported before the key/value cache): "
                "re-export it (lawm export ... --force), or plan with context='one-frame'"
            )
        self.controller = model.components["controller"]
        self.prefill, self.kv_step = model.components["world_model_prefill"], model.components["world_model_kv_step"]
        self.max_steps = model.config.world_model.max_steps

    def begin(self, state: torch.Tensor, batch: int) -> tuple[Any, ...]:
        s = state.detach().to("cpu", torch.float32).contiguous().numpy()  # [N, D]
        return None, None, (), (), np.ascontiguousarray(np.broadcast_to(s, (batch, *s.shape)))

    def advance(self, carry: tuple[Any, ...], actions: torch.Tensor) -> tuple[tuple[Any, ...], torch.Tensor]:
        keys, values, states, latents, current = carry
        a = actions.detach().to("cpu", torch.float32).contiguous().numpy()  # [B, A]
        z = self.controller.run({"actions": a, "states": current})["latents"]  # [B, Z]
        states, latents = (*states, current), (*latents, z)
        if keys is None or len(states) > self.max_steps:
            states, latents = states[-self.max_steps :], latents[-self.max_steps :]
            out = self.prefill.run({"states": np.stack(states, axis=1), "latents": np.stack(latents, axis=1)})
        else:
            out = self.kv_step.run({"states": current, "latents": z, "past_keys": keys, "past_values": values})
        nxt = out["next_states"]  # [B, N, D]
        return (out["present_keys"], out["present_values"], states, latents, nxt), torch.from_numpy(nxt)


class HistoryKvPlannerStep(KvPlannerStep):
    """`KvPlannerStep` whose rollouts start after observed history: states `[K, N, D]` seen before the
    current one and the latents `[K, Z]` applied to each (state i -> state i+1, the last one leading to
    the current state), so every candidate's first prediction sees the real recent past, as the world
    model was trained (block-causal over observed frames). A plan session keeps that history."""

    def __init__(self, model: LoadedModel, states: np.ndarray, latents: np.ndarray) -> None:
        super().__init__(model)
        if states.ndim != 3 or latents.ndim != 2 or len(states) != len(latents):
            raise RepositoryError(
                f"history needs states [K, N, D] and latents [K, Z] of the same K, got {states.shape} and {latents.shape}"
            )
        keep = self.max_steps - 1  # room for the current state in the first prefill
        self.history = (states[-keep:], latents[-keep:]) if keep > 0 else (states[:0], latents[:0])

    def begin(self, state: torch.Tensor, batch: int) -> tuple[Any, ...]:
        keys, values, _, _, current = super().begin(state, batch)
        states, latents = self.history
        past = tuple(np.ascontiguousarray(np.broadcast_to(s, (batch, *s.shape))) for s in states)
        zs = tuple(np.ascontiguousarray(np.broadcast_to(z, (batch, *z.shape))) for z in latents)
        return keys, values, past, zs, current
