"""Offline planning evaluation on recorded episodes (PAPER-NOTES §3.5 DROID, §3.6 RECON/NWM).

Each episode gives a start observation, a goal observation H actions later and the true
actions in between. A planner searches real actions, rolled through `step` (the controller
mapping a real action to a latent, then one world-model step), for the final state closest to
the goal's encoding. The step keeps each candidate's context (`context="full"`, a KV cache over
every earlier predicted state) or sees the current state alone (`"one-frame"`). Metrics compare
the planned actions with the true ones: Δxyz for the manipulation world (DROID), ATE/RPE and the
final heading error of the integrated trajectory for navigation (RECON), each with its standard
error over episodes.

References (PAPER-NOTES §3.5/3.6 give none, and without them a planner's figure means little):
- oracles (`oracle.py`): the same search and seeds over the true simulator, scored by pose, by
  pixels and by the model's encoder states; "oracle: pose cost" is the best this search can do;
- a random planner (uniform per step; it averages to the box's centre, so it is not uninformed),
  the search's prior mean held constant, a random straight line from the search's initial
  Gaussian, and the zero action.
Every metric also gets a normalised score, (random − X) / (random − oracle pose): 0 is random,
1 the pose oracle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.controller_training import duplicate_frames
from training.envs.episodes import Episode, record_episode
from training.envs.metrics import ate, delta_xyz, poses_from_actions, rpe
from training.evaluation.oracle import (
    ORACLE_COSTS,
    Encode,
    model_encoder,
    normalised_scores,
    oracle_chooser,
    prior_mean_chooser,
    random_line_chooser,
)
from training.models.lam import LatentActionModel
from training.models.world_model import autoregressive_rollout
from training.planning import PRESET_FOR_ENV, ContextStep, PlannerConfig, get_cost, plan
from training.precision import at_precision
from training.world_model_steps import Step, ToLatent, world_model_step

RANDOM_NAME = "random actions (uniform per step)"
ORACLE_NAMES = {"pose": "oracle: pose cost", "pixel": "oracle: pixel L2", "state": "oracle: encoder-state L2"}


def controller_latents(controller: torch.nn.Module) -> ToLatent:
    """(actions [B, A], states [B, N, D]) -> latents [B, Z] through the controller, checking the action size."""
    action_dim = getattr(getattr(controller, "cfg", None), "action_dim", None)

    @torch.no_grad()
    def to_latent(actions: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        if action_dim is not None and actions.shape[-1] != action_dim:
            raise ValueError(
                f"actions have {actions.shape[-1]} dims but the controller takes action_dim={action_dim}: "
                f"give action_low/action_high {action_dim} entries each"
            )
        return controller(actions[:, None], states[:, None])[:, 0]  # [B, Z]

    return to_latent


def latent_step(
    model: LatentActionModel, controller: torch.nn.Module, context: str = "one-frame",
    precisions: dict[str, str] | None = None,
) -> Step | ContextStep:
    """The planner's step through controller + world model: `step(states [B, N, D], actions [B, A])
    -> next states [B, N, D]` for `context="one-frame"`, a `KeptContextStep` for `"full"`.
    `precisions` maps "world_model" / "controller" to "fp32" (default) or "bf16"."""
    precisions = precisions or {}
    to_latent = at_precision(controller_latents(controller), precisions.get("controller", "fp32"))
    return world_model_step(model.world_model, to_latent, context, precisions.get("world_model", "fp32"))


def check_frame(frame: np.ndarray, size: int) -> None:
    """An observation or goal image must be uint8 `[size, size, 3]`, as the encoder was trained."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"an image must be [H, W, 3] RGB, got shape {frame.shape}")
    if frame.shape[:2] != (size, size):
        raise ValueError(
            f"image is {frame.shape[1]}x{frame.shape[0]} but the model takes {size}x{size}: "
            "resize and centre-crop it first"
        )
    if frame.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB, got dtype {frame.dtype}")


@torch.no_grad()
def encode_observation(model: LatentActionModel, frame: np.ndarray) -> torch.Tensor:
    """One uint8 frame `[H, W, 3]` -> its state `[N, D]` (the frame duplicated into a tubelet)."""
    check_frame(frame, model.cfg.encoder.image_size)
    return model.encode(duplicate_frames(frame[None])[None])[0, 0]


def metric_names(env: str) -> list[str]:
    """The metrics `trajectory_metrics` reports for an environment, in table order."""
    return ["delta_xyz"] if env == "manipulation" else ["ate", "rpe", "heading"]


def trajectory_metrics(env: str, episode: Episode, planned: np.ndarray, horizon: int) -> dict[str, float]:
    """Navigation: ATE, RPE (translation, 1 step) and the final heading error in radians (RPE ignores
    heading: a line can match the first step and end facing elsewhere); manipulation: Δxyz."""
    truth = episode.actions[:horizon]
    if env == "manipulation":
        return {"delta_xyz": delta_xyz(planned, truth)}
    start = episode.action_poses[0]
    predicted_poses = poses_from_actions(start, planned)
    true_poses = poses_from_actions(start, truth)
    turn = predicted_poses[-1, 2] - true_poses[-1, 2]
    heading = float(abs((turn + math.pi) % (2 * math.pi) - math.pi))
    return {"ate": ate(predicted_poses, true_poses), "rpe": rpe(predicted_poses, true_poses), "heading": heading}


def evaluate_planner(
    name: str,
    episodes: list[Episode],
    choose: Callable[[Episode, int], np.ndarray],
    horizon: int,
    context: str | None = None,
) -> dict[str, Any]:
    """Run `choose(episode, index) -> planned actions [H, A]` on every episode; each metric's mean
    over episodes and its standard error (`METRIC_se`, sample std / sqrt(episodes)). `context`
    labels the world-model step used."""
    per_episode = []
    for i, episode in enumerate(episodes):
        planned = choose(episode, i)
        per_episode.append(trajectory_metrics(episode.env, episode, planned, horizon))
    row: dict[str, Any] = {"planner": name}
    if context is not None:
        row["context"] = context
    row["episodes"] = len(episodes)
    for key in per_episode[0]:
        values = np.array([m[key] for m in per_episode])
        row[key] = float(values.mean())
        row[f"{key}_se"] = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
    return row


def finish_rows(rows: list[dict[str, Any]], env: str) -> list[dict[str, Any]]:
    """Add the normalised scores and order each row's columns metric by metric (value, se, norm)."""
    metrics = metric_names(env)
    normalised_scores(rows, metrics, RANDOM_NAME, ORACLE_NAMES["pose"])
    ordered = []
    for row in rows:
        head = ["planner", "context", "episodes"]
        keys = [k for k in head if k in row] + [k for m in metrics for k in (m, f"{m}_se", f"{m}_norm") if k in row]
        ordered.append({k: row[k] for k in keys} | {k: v for k, v in row.items() if k not in keys})
    return ordered


def world_model_chooser(
    model: LatentActionModel, step: Step | ContextStep, cfg: PlannerConfig
) -> Callable[[Episode, int], np.ndarray]:
    cost = get_cost(cfg.cost)

    def choose(episode: Episode, index: int) -> np.ndarray:
        start = encode_observation(model, episode.action_frames[0])
        goal = encode_observation(model, episode.action_frames[cfg.horizon])
        seeded = dataclasses.replace(cfg, seed=cfg.seed + index)
        return plan(step, cost, start, goal, seeded).actions.numpy()

    return choose


def random_chooser(cfg: PlannerConfig, seed: int = 0) -> Callable[[Episode, int], np.ndarray]:
    def choose(episode: Episode, index: int) -> np.ndarray:
        rng = np.random.default_rng([seed, index])
        low, high = np.asarray(cfg.action_low), np.asarray(cfg.action_high)
        return rng.uniform(low, high, size=(cfg.horizon, len(low))).astype(np.float32)

    return choose


def zero_chooser(cfg: PlannerConfig) -> Callable[[Episode, int], np.ndarray]:
    def choose(episode: Episode, index: int) -> np.ndarray:
        return np.zeros((cfg.horizon, len(cfg.action_low)), dtype=np.float32)

    return choose


@torch.no_grad()
def controller_rollouts(
    model: LatentActionModel, controller: torch.nn.Module, data: Any, context: str = "full"
) -> dict[str, float]:
    """Open-loop rollouts from the first state of each held-out episode (paper Tables S1/S2, left):
    with the IDM's latents (which see the future) vs with the controller's latents from the real
    actions (computed on the predicted states, with the world-model step planning uses).
    Representation L1 to the truth."""
    states, actions, latents = data.states, data.actions, data.latents  # [E, T+1, N, D], [E, T, A], [E, T, Z]
    idm = autoregressive_rollout(model.world_model, states[:, :1], latents[:, :0], latents)
    step = latent_step(model, controller, context)
    predicted = []
    if isinstance(step, ContextStep):
        carry = (None, states[:, 0])
        for t in range(actions.shape[1]):
            carry, current = step.advance(carry, actions[:, t])
            predicted.append(current)
    else:
        current = states[:, 0]
        for t in range(actions.shape[1]):
            current = step(current, actions[:, t])
            predicted.append(current)
    ctrl = torch.stack(predicted, dim=1)
    truth = states[:, 1:]
    idm_l1, ctrl_l1 = (idm - truth).abs().mean().item(), (ctrl - truth).abs().mean().item()
    return {"idm_rollout_l1": idm_l1, "controller_rollout_l1": ctrl_l1, "ratio": ctrl_l1 / idm_l1}


@dataclass(frozen=True)
class PlanningSuite:
    """Sizes of one planning evaluation (demo-sized defaults for a CPU)."""

    train_episodes: int = 48  # labelled episodes for the controller and the action-labelled baseline
    eval_episodes: int = 16  # `lawm eval planning` asks for 32 (navigation) / 16 (manipulation)
    episode_steps: int = 8  # actions per recorded episode
    controller_steps: int = 600
    baseline_steps: int = 400
    seed: int = 0


DEFAULT_EPISODES = {"navigation": 32, "manipulation": 16}  # fewer is noise: see the standard errors


def run_planning_suite(
    model: LatentActionModel,
    env: str,
    suite: PlanningSuite = PlanningSuite(),
    *,
    baselines: bool = True,
    contexts: tuple[str, ...] | None = None,
    oracles: bool = True,
    **planner_overrides: Any,
) -> dict[str, Any]:
    """Train a controller and the action-labelled baseline on one set of episodes, then plan on
    another: latent-action WM + controller, action-labelled WM, the oracles (with `oracles`), the
    prior mean, a random straight line, the random planner and the zero action.
    `baselines=False` plans with the latent-action WM only (the sweep shares one baseline run).
    `contexts` plans with each world-model step in turn ("full", "one-frame"; default: the preset's
    `context`), on the same trained controller and baseline, so the rows compare like for like."""
    from training.action_world_model import ActionWorldModelTraining, action_step, train_action_world_model
    from training.controller_training import ControllerTraining, labelled_set, train_controller
    from training.models.controller import ControllerConfig
    from training.planning import preset

    cfg = preset(PRESET_FOR_ENV[env], seed=suite.seed, **planner_overrides)  # validated before any training
    size = model.cfg.encoder.image_size
    record = lambda seed: record_episode(env, seed, steps=suite.episode_steps, image_size=size)  # noqa: E731
    train = [record(suite.seed + i) for i in range(suite.train_episodes)]
    held_out = [record(suite.seed + 100_000 + i) for i in range(suite.eval_episodes)]  # disjoint seeds
    data = labelled_set(model, train)
    action_dim = data.actions.shape[-1]
    controller, controller_metrics = train_controller(
        model, data, ControllerConfig(action_dim=action_dim), ControllerTraining(steps=suite.controller_steps, seed=suite.seed)
    )
    contexts = contexts or (cfg.context,)
    for context in contexts:
        dataclasses.replace(cfg, context=context)  # validates the name before any planning
    rollouts = controller_rollouts(model, controller, labelled_set(model, held_out), contexts[0])
    rows = [
        evaluate_planner(
            "latent-action WM + controller", held_out,
            world_model_chooser(model, latent_step(model, controller, context), cfg), cfg.horizon, context,
        )
        for context in contexts
    ]
    baseline_metrics: dict[str, Any] = {}
    if baselines:
        baseline, baseline_metrics = train_action_world_model(
            model, data, ActionWorldModelTraining(steps=suite.baseline_steps, seed=suite.seed)
        )
        rows += [
            evaluate_planner(
                "action-labelled WM", held_out, world_model_chooser(model, action_step(baseline, context), cfg),
                cfg.horizon, context,
            )
            for context in contexts
        ]
        if oracles:
            encode = model_encoder(model)
            rows += [
                evaluate_planner(ORACLE_NAMES[c], held_out, oracle_chooser(env, cfg, c, encode, size), cfg.horizon, "-")
                for c in ORACLE_COSTS
            ]
        rows += [
            evaluate_planner("prior mean held constant", held_out, prior_mean_chooser(cfg), cfg.horizon, "-"),
            evaluate_planner("random straight line (initial Gaussian)", held_out, random_line_chooser(cfg, suite.seed), cfg.horizon, "-"),
            evaluate_planner(RANDOM_NAME, held_out, random_chooser(cfg, suite.seed), cfg.horizon, "-"),
            evaluate_planner("zero action", held_out, zero_chooser(cfg), cfg.horizon, "-"),
        ]
    rows = finish_rows(rows, env)
    return {
        "title": f"Planning on the {env} world ({PRESET_FOR_ENV[env]} protocol)",
        "protocol": f"offline, {suite.eval_episodes} held-out episodes; planner {cfg.method} H={cfg.horizon} "
        f"N={cfg.samples} K={cfg.elites} I={cfg.iterations}, cost {cfg.cost} on the final predicted state; "
        f"world-model context: {', '.join(contexts)} (full = every earlier predicted state, through the KV "
        "cache; one-frame = the current state alone); oracles: the same search and seeds over the true simulator; "
        "_se: standard error over episodes; _norm: (random - X) / (random - oracle pose), with random = uniform "
        "per-step actions",
        "checkpoint": getattr(model, "source", None),
        "verdict": planning_verdict(rows, env),
        "rows": rows,
        "controller": controller_metrics,
        "rollouts": rollouts,
        "action_labelled_baseline": baseline_metrics,
        "suite": dataclasses.asdict(suite),
    }


def planning_verdict(rows: list[dict[str, Any]], env: str) -> str:
    """The issue's bars, read off the rows: navigation RPE and ATE of the latent-action WM >= 30%
    below random's and <= 1.25x the action-labelled WM's, the labelled WM >= 40% below random;
    manipulation Δxyz <= 1.25x labelled and below random and zero action."""
    by: dict[str, dict[str, Any]] = {}
    for r in rows:  # the first row of each planner: the default context when several were planned
        by.setdefault(r["planner"], r)
    lam, labelled, random = by.get("latent-action WM + controller"), by.get("action-labelled WM"), by.get(RANDOM_NAME)
    if lam is None or labelled is None or random is None:
        return ""
    parts = []
    if env == "navigation":
        for m in ("rpe", "ate"):
            below = 1 - lam[m] / random[m]
            ratio = lam[m] / labelled[m]
            ok = below >= 0.3 and ratio <= 1.25
            parts.append(f"{m.upper()} {lam[m]:.3f}: {below:.0%} below random (bar 30%), x{ratio:.2f} labelled (bar x1.25): "
                         f"{'pass' if ok else 'FAIL'}")
        labelled_below = 1 - labelled["rpe"] / random["rpe"]
        parts.append(f"labelled WM RPE {labelled_below:.0%} below random (bar 40%): {'pass' if labelled_below >= 0.4 else 'FAIL'}")
    else:
        zero = by.get("zero action", random)
        ratio = lam["delta_xyz"] / labelled["delta_xyz"]
        ok = ratio <= 1.25 and lam["delta_xyz"] < random["delta_xyz"] and lam["delta_xyz"] < zero["delta_xyz"]
        parts.append(f"Δxyz {lam['delta_xyz']:.3f}: x{ratio:.2f} labelled (bar x1.25), random {random['delta_xyz']:.3f}, "
                     f"zero {zero['delta_xyz']:.3f}: {'pass' if ok else 'FAIL'}")
    for name in (ORACLE_NAMES["state"], "latent-action WM + controller"):
        closed = [f"{m} {by[name][f'{m}_norm']:.0%}" for m in metric_names(env) if by.get(name, {}).get(f"{m}_norm") is not None]
        if closed:
            bar = " (bar for the encoder: 70%)" if name == ORACLE_NAMES["state"] else ""
            parts.append(f"{name} closes {', '.join(closed)} of the random -> oracle-pose gap{bar}")
    return "; ".join(parts)


def oracle_rows(
    env: str,
    encode: Encode,
    episodes: int = 32,
    *,
    seed: int = 0,
    episode_steps: int = 8,
    image_size: int = 128,
    costs: tuple[str, ...] = ORACLE_COSTS,
    **planner_overrides: Any,
) -> dict[str, Any]:
    """Just the oracle rows for one encoder, on the planning suite's held-out episodes (same seeds):
    oracle with each cost, the random planner, and the normalised score of each. Quick to rerun for
    a candidate encoder: nothing is trained."""
    from training.planning import preset

    cfg = preset(PRESET_FOR_ENV[env], seed=seed, **planner_overrides)
    held_out = [record_episode(env, seed + 100_000 + i, steps=episode_steps, image_size=image_size) for i in range(episodes)]
    rows = [evaluate_planner(ORACLE_NAMES[c], held_out, oracle_chooser(env, cfg, c, encode, image_size), cfg.horizon) for c in costs]
    rows.append(evaluate_planner(RANDOM_NAME, held_out, random_chooser(cfg, seed), cfg.horizon))
    normalised_scores(rows, metric_names(env), RANDOM_NAME, ORACLE_NAMES["pose"])
    return {
        "title": f"Oracle planners on the {env} world ({PRESET_FOR_ENV[env]} protocol)",
        "protocol": f"{episodes} held-out episodes; the true simulator under CEM H={cfg.horizon} N={cfg.samples} "
        f"K={cfg.elites} I={cfg.iterations}; normalised = (random - X) / (random - oracle pose)",
        "rows": rows,
    }
