"""Oracle planners: the planning protocol's own search, scoring candidates with the true simulator.

An oracle replaces the world model by the environment itself. From the episode's start state it
applies each candidate's actions exactly as the episode was recorded (each action split over
`frames_per_action` equal parts), and scores the true outcome with one of three costs:

- `pose`: distance of the final true pose to the goal pose. Navigation: ‖(Δx, Δy, Δheading)‖₂,
  one metre per radian, so a straight line is pinned down by the goal (three numbers for three);
  manipulation: ‖Δxyz‖₂ of the tool point. The best any planner with this search can do.
- `pixel`: L2 between the frame rendered at the final state and the goal frame (in [0, 1]).
- `state`: L2 between an encoder's states of those two frames. With a perfect world model, this
  is how well the encoder's distances can guide the search: the ceiling of the model's own cost.

`encode` is any callable uint8 frames `[B, H, W, 3]` -> states `[B, ...]`, so candidate encoders
can be compared without training anything on top of them (`oracle_rows`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from training.envs.episodes import Episode
from training.envs.manipulation import ManipulationEnv
from training.envs.navigation import NavigationEnv
from training.planning import PlannerConfig, plan

Encode = Callable[[np.ndarray], torch.Tensor]  # uint8 [B, H, W, 3] -> states [B, ...]
Chooser = Callable[[Episode, int], np.ndarray]
ORACLE_COSTS = ("pose", "pixel", "state")
_ENCODE_CHUNK = 64  # frames per encoder call: bounds memory with 300 candidates


def model_encoder(model: Any) -> Encode:
    """A LatentActionModel's encoder as an `Encode`: each frame duplicated into a tubelet, as the
    planner encodes observations and goals (`encode_observation`). Returns `[B, N, D]`."""

    @torch.no_grad()
    def encode(frames: np.ndarray) -> torch.Tensor:
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [B, 3, H, W]
        tubelet = model.cfg.encoder.tubelet
        video = video[:, None].expand(-1, tubelet, -1, -1, -1)  # [B, tubelet, 3, H, W]
        return model.encode(video)[:, 0]  # [B, N, D]

    return encode


class Simulator(Protocol):
    """True dynamics of one episode's world, batched over candidates (states are float64 rows)."""

    start: torch.Tensor  # [S]

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...  # [B, S], [B, A] -> [B, S]
    def pose(self, states: torch.Tensor) -> torch.Tensor: ...  # [B, S] -> [B, P] what the pose cost compares
    def render(self, states: torch.Tensor) -> np.ndarray: ...  # [B, S] -> uint8 [B, H, W, 3]


class NavigationSimulator:
    """A pose (x, y, heading) is the whole state of the static navigation world."""

    def __init__(self, episode: Episode, image_size: int) -> None:
        self.seed, self.image_size = episode.seed, image_size
        self.substeps = episode.frames_per_action
        self.start = torch.from_numpy(episode.action_poses[0].astype(np.float64))
        self._env: NavigationEnv | None = None  # built on the first render: the pose cost never renders

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x, y, h = states.unbind(-1)  # [B] each
        low, high = (torch.tensor(b, dtype=torch.float64) for b in (NavigationEnv.ACTION_LOW, NavigationEnv.ACTION_HIGH))
        forward, lateral, yaw = (actions.double().clamp(low, high) / self.substeps).unbind(-1)
        for _ in range(self.substeps):  # the rule of NavigationEnv.step, part by part as recorded
            c, s = torch.cos(h), torch.sin(h)
            x, y, h = x + forward * c - lateral * s, y + forward * s + lateral * c, h + yaw
        return torch.stack([x, y, h], dim=-1)

    def pose(self, states: torch.Tensor) -> torch.Tensor:
        return states

    def render(self, states: torch.Tensor) -> np.ndarray:
        if self._env is None:
            self._env = NavigationEnv(self.seed, image_size=self.image_size)
        frames = []
        for row in states.numpy():
            self._env.set_pose(row)
            frames.append(self._env.render())
        return np.stack(frames)


class ManipulationSimulator:
    """The manipulation world's state vector (`ManipulationEnv.get_state`), one env reused per row."""

    def __init__(self, episode: Episode, image_size: int) -> None:
        self.env = ManipulationEnv(episode.seed, image_size=image_size)
        self.env.reset()  # recorded episodes start from the seeded reset state
        self.substeps = episode.frames_per_action
        self.start = torch.from_numpy(self.env.get_state())

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        out = []
        for state, action in zip(states.numpy(), actions.double().numpy(), strict=True):
            self.env.set_state(state)
            part = self.env.clip_action(action) / self.substeps  # as record_episode applies it
            for _ in range(self.substeps):
                self.env.advance(part)
            out.append(self.env.get_state())
        return torch.from_numpy(np.stack(out))

    def pose(self, states: torch.Tensor) -> torch.Tensor:
        return states[:, :3]  # the tool point xyz

    def render(self, states: torch.Tensor) -> np.ndarray:
        frames = []
        for state in states.numpy():
            self.env.set_state(state)
            frames.append(self.env.render())
        return np.stack(frames)


def make_simulator(episode: Episode, image_size: int) -> Simulator:
    if episode.env == "navigation":
        return NavigationSimulator(episode, image_size)
    if episode.env == "manipulation":
        return ManipulationSimulator(episode, image_size)
    raise ValueError(f"no simulator for environment {episode.env!r}")


def goal_pose(episode: Episode, horizon: int) -> torch.Tensor:
    """What the pose cost compares with: navigation (x, y, heading), manipulation tool xyz. [P]"""
    pose = episode.action_poses[horizon]
    return torch.from_numpy((pose if episode.env == "navigation" else pose[:3]).astype(np.float64))


def _encode_chunked(encode: Encode, frames: np.ndarray) -> torch.Tensor:
    parts = [encode(frames[i : i + _ENCODE_CHUNK]) for i in range(0, len(frames), _ENCODE_CHUNK)]
    return torch.cat(parts).float().flatten(1)  # [B, -1]


def oracle_cost(
    sim: Simulator, episode: Episode, horizon: int, cost: str, encode: Encode | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """cost(final sim states [B, S], _) -> [B]. The goal (pose, frame or its states) is closed over:
    the planner's goal argument only has to share the state's shape."""
    if cost == "pose":
        target = goal_pose(episode, horizon)
        return lambda states, _goal: torch.linalg.vector_norm(sim.pose(states) - target, dim=-1).float()
    goal_frame = episode.action_frames[horizon][None]  # uint8 [1, H, W, 3]
    if cost == "pixel":
        goal = torch.from_numpy(goal_frame).float().flatten(1) / 255  # [1, H*W*3]
        return lambda states, _goal: torch.linalg.vector_norm(
            torch.from_numpy(sim.render(states)).float().flatten(1) / 255 - goal, dim=-1
        )
    if cost == "state":
        if encode is None:
            raise ValueError("the state cost needs an encode callable (frames [B, H, W, 3] -> states [B, ...])")
        goal_states = _encode_chunked(encode, goal_frame)  # [1, -1]
        return lambda states, _goal: torch.linalg.vector_norm(_encode_chunked(encode, sim.render(states)) - goal_states, dim=-1)
    raise ValueError(f"oracle cost must be one of {ORACLE_COSTS}, got {cost!r}")


def oracle_chooser(
    env_name: str, cfg: PlannerConfig, cost: str = "state", encode: Encode | None = None, image_size: int = 128
) -> Chooser:
    """The planning search of `cfg` (the same seeds as `world_model_chooser`) over the true simulator
    of `env_name`, scored by `cost` in `ORACLE_COSTS`; `encode` is needed for the state cost.
    Returns choose(episode, index) -> planned actions `[H, A]`."""
    if cost not in ORACLE_COSTS:
        raise ValueError(f"oracle cost must be one of {ORACLE_COSTS}, got {cost!r}")
    if cost == "state" and encode is None:
        raise ValueError("the state cost needs an encode callable (frames [B, H, W, 3] -> states [B, ...])")

    def choose(episode: Episode, index: int) -> np.ndarray:
        if episode.env != env_name:
            raise ValueError(f"an oracle for {env_name!r} got a {episode.env!r} episode")
        sim = make_simulator(episode, image_size)
        cost_fn = oracle_cost(sim, episode, cfg.horizon, cost, encode)
        seeded = dataclasses.replace(cfg, seed=cfg.seed + index)
        return plan(sim.step, cost_fn, sim.start, sim.start, seeded).actions.numpy()

    return choose


# ----------------------------------------------------------------------------- uninformed planners
def prior_mean_chooser(cfg: PlannerConfig) -> Chooser:
    """The search's initial mean held constant: what a search that learns nothing returns."""
    action = np.clip(np.asarray(cfg.mean0(), dtype=np.float32), cfg.action_low, cfg.action_high)

    def choose(episode: Episode, index: int) -> np.ndarray:
        return np.tile(action, (cfg.horizon, 1)).astype(np.float32)

    return choose


def random_line_chooser(cfg: PlannerConfig, seed: int = 0) -> Chooser:
    """One action drawn from the search's initial Gaussian (clipped), repeated over the horizon."""

    def choose(episode: Episode, index: int) -> np.ndarray:
        rng = np.random.default_rng([seed, index, 1])
        action = rng.normal(cfg.mean0(), cfg.init_std)
        return np.tile(np.clip(action, cfg.action_low, cfg.action_high), (cfg.horizon, 1)).astype(np.float32)

    return choose


def normalised_scores(rows: list[dict[str, Any]], metrics: list[str], random: str, oracle: str) -> None:
    """Add `METRIC_norm` = (random − X) / (random − oracle) to every row, in place: 0 is the random
    planner, 1 the oracle, below 0 worse than random. Skipped when either reference row is missing."""
    by_name = {r["planner"]: r for r in rows}
    if random not in by_name or oracle not in by_name:
        return
    for metric in metrics:
        lo, hi = by_name[random].get(metric), by_name[oracle].get(metric)
        if lo is None or hi is None:
            continue
        gap = lo - hi
        for row in rows:
            if metric in row:
                row[f"{metric}_norm"] = (lo - row[metric]) / gap if gap != 0 else None
