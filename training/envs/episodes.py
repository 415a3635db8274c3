"""Recorded episodes for offline evaluation (the DROID and RECON protocols score recordings).

An episode is one run of an environment under a scripted policy: ``T`` actions, each rendered
over ``frames_per_action`` (k) frames by applying 1/k of it per frame, so the episode has
``T * k + 1`` frames and a pose per frame. Frame ``k * i`` is the observation before action
``i``. With k = 2 and the world model's 2-frame tubelets, a clip starting at an even frame has
tubelet ``j`` = frames (2j, 2j + 1), and the first frames of tubelets j and j + 1 are exactly
action ``i + j`` apart (16 frames, 8 tubelets, 8 actions: the paper's frame-duplication trick,
with real in-between frames instead of copies).

On disk (:func:`write_episodes`): ``episode_00000.mp4`` (the frames), ``episode_00000.npz``
(exact ``actions`` float32 [T, A], ``poses`` float64 [T*k+1, P] and, for manipulation, ``blocks``
float64 [T*k+1, n, 3]; plain arrays, no pickle) and ``episodes.jsonl``, one JSON object per
episode with the same actions and poses, its fps and the file names.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from training.data.generator import clip_seed
from training.data.video import write_mp4
from training.envs.manipulation import ManipulationEnv
from training.envs.navigation import NavigationEnv

__all__ = [
    "ENVS",
    "MANIFEST_NAME",
    "Episode",
    "load_episodes",
    "make_env",
    "make_policy",
    "record_episode",
    "write_episodes",
]

MANIFEST_NAME = "episodes.jsonl"
ENVS: dict[str, type[NavigationEnv] | type[ManipulationEnv]] = {
    "navigation": NavigationEnv,
    "manipulation": ManipulationEnv,
}
Env = NavigationEnv | ManipulationEnv
Policy = Callable[[Env], np.ndarray]  # current env → action (any shape-[A] array)


def make_env(name: str, seed: int, image_size: int = 128) -> Env:
    """An environment by name: 'navigation' or 'manipulation'."""
    if name not in ENVS:
        raise ValueError(f"unknown environment {name!r}; choose one of {sorted(ENVS)}")
    return ENVS[name](seed, image_size=image_size)


@dataclass
class Episode:
    """One recorded run; see the module docstring for how frames line up with actions."""

    env: str
    seed: int
    frames: np.ndarray  # uint8 [T*k+1, H, W, 3]
    actions: np.ndarray  # float32 [T, A], already clipped to the env's bounds
    poses: np.ndarray  # float64 [T*k+1, P]: navigation (x, y, heading); manipulation (x, y, z, gripper)
    frames_per_action: int = 1
    fps: float = 8.0  # frames per second of the frames (actions run at fps / frames_per_action)
    blocks: np.ndarray | None = None  # manipulation only: float64 [T*k+1, n, 3] block positions

    @property
    def num_actions(self) -> int:
        return len(self.actions)

    @property
    def action_poses(self) -> np.ndarray:
        """[T + 1, P]: the pose before each action and after the last one."""
        return self.poses[:: self.frames_per_action]

    @property
    def action_frames(self) -> np.ndarray:
        """uint8 [T + 1, H, W, 3]: the frame before each action and after the last one."""
        return self.frames[:: self.frames_per_action]


# --------------------------------------------------------------------------- policies


class _SmoothNoise:
    """AR(1) noise per dimension, unit stationary variance: u_t = ρ u_{t-1} + sqrt(1-ρ²) ε_t."""

    def __init__(self, rng: np.random.Generator, dim: int, rho: float) -> None:
        self.rng, self.rho = rng, rho
        self.u = rng.standard_normal(dim)

    def __call__(self) -> np.ndarray:
        self.u = self.rho * self.u + math.sqrt(1 - self.rho**2) * self.rng.standard_normal(self.u.shape)
        return self.u


def _navigation_policy(rng: np.random.Generator) -> Policy:
    noise = _SmoothNoise(rng, 3, rho=0.85)

    def act(env: Env) -> np.ndarray:
        u = noise()
        # Mostly forward with gentle sideways drift and smooth turns, like a person walking.
        return np.array([0.25 + 0.2 * math.tanh(u[0]), 0.08 * math.tanh(u[1]), 0.25 * math.tanh(u[2])])

    return act


def _manipulation_policy(rng: np.random.Generator) -> Policy:
    noise = _SmoothNoise(rng, 3, rho=0.8)
    state: dict[str, Any] = {"target": None, "left": 0}

    def act(env: Env) -> np.ndarray:
        if not isinstance(env, ManipulationEnv):
            raise TypeError("the manipulation policy drives a ManipulationEnv")
        ee, blocks, sizes = env.ee_position, env.blocks, env.block_sizes
        if state["left"] <= 0:
            # A new waypoint: usually just beside a block and low (so the motion pushes it),
            # otherwise anywhere, at any height.
            if len(blocks) and rng.random() < 0.6:
                i = int(rng.integers(len(blocks)))
                angle = rng.uniform(0, 2 * math.pi)
                reach = sizes[i, 0] / 2 + rng.uniform(-0.02, 0.08)
                xy = blocks[i, :2] + reach * np.array([math.cos(angle), math.sin(angle)])
                z = rng.uniform(0.0, 0.04)
            else:
                xy, z = rng.uniform(0.1, 0.9, size=2), rng.uniform(0.02, 0.3)
            state["target"] = np.array([*np.clip(xy, 0.05, 0.95), z])
            state["left"] = int(rng.integers(6, 14))
        state["left"] -= 1
        move = 0.35 * (state["target"] - ee) + 0.03 * noise()
        low, high = env.workspace()
        move = np.clip(move, -0.1, 0.1)
        move = np.clip(move, low - ee, high - ee)  # commanded motion stays in the workspace
        grip = 0.0
        if rng.random() < 0.12:  # now and then open or close the gripper
            grip = float(rng.uniform(0.3, 0.75) * (1 if env.gripper < 0.5 else -1))
        return np.array([*move, grip])

    return act


_POLICIES: dict[tuple[str, str], Callable[[np.random.Generator], Policy]] = {
    ("navigation", "random_smooth"): _navigation_policy,
    ("manipulation", "random_smooth"): _manipulation_policy,
}


def make_policy(env_name: str, name: str, rng: np.random.Generator) -> Policy:
    """A scripted policy by name (only 'random_smooth': correlated noise, natural-looking)."""
    if (env_name, name) not in _POLICIES:
        names = sorted({p for e, p in _POLICIES if e == env_name})
        raise ValueError(f"unknown policy {name!r} for {env_name!r}; choose one of {names}")
    return _POLICIES[(env_name, name)](rng)


# --------------------------------------------------------------------------- recording


def record_episode(
    env_name: str,
    seed: int,
    steps: int,
    policy: str | Policy = "random_smooth",
    *,
    frames_per_action: int = 2,
    image_size: int = 128,
    fps: float = 8.0,
) -> Episode:
    """Run ``steps`` actions of a policy in a fresh env seeded with ``seed``; deterministic.

    ``policy`` is a name (see :func:`make_policy`) or a callable env → action. Actions are
    clipped to the env's bounds and rounded to float32 before they are applied, so the recorded
    actions reproduce the recorded poses exactly.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if frames_per_action < 1:
        raise ValueError(f"frames_per_action must be >= 1, got {frames_per_action}")
    env = make_env(env_name, seed, image_size)
    # The policy draws from its own stream, so it never disturbs the env's seeded world.
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x504F4C]))
    act = make_policy(env_name, policy, rng) if isinstance(policy, str) else policy
    k = frames_per_action
    n_frames = steps * k + 1
    frames = np.empty((n_frames, image_size, image_size, 3), dtype=np.uint8)
    poses = np.empty((n_frames, len(env.POSE_NAMES)))
    is_manip = isinstance(env, ManipulationEnv)
    blocks = np.empty((n_frames, len(env.blocks), 3)) if is_manip else None
    actions = np.empty((steps, env.ACTION_DIM), dtype=np.float32)

    def record(i: int, frame: np.ndarray) -> None:
        frames[i], poses[i] = frame, env.pose
        if blocks is not None:
            blocks[i] = env.blocks

    record(0, env.reset())
    for t in range(steps):
        a = env.clip_action(act(env)).astype(np.float32)
        actions[t] = a
        part = a.astype(np.float64) / k
        for j in range(k):
            record(t * k + j + 1, env.step(part))
    return Episode(env_name, int(seed), frames, actions, poses, k, float(fps), blocks)


def write_episodes(
    out_dir: str | os.PathLike[str],
    env_name: str,
    n: int,
    steps: int,
    seed: int = 0,
    *,
    frames_per_action: int = 2,
    image_size: int = 128,
    fps: float = 8.0,
    policy: str = "random_smooth",
) -> list[Path]:
    """Record n episodes (seeds derived from ``seed``) and write them; returns the MP4 paths.

    The manifest is written last and atomically, so it never lists a missing episode.
    """
    if image_size % 2:
        raise ValueError("image_size must be even for H.264 (yuv420p)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, lines = [], []
    for i in range(n):
        ep = record_episode(
            env_name,
            clip_seed(seed, i),
            steps,
            policy,
            frames_per_action=frames_per_action,
            image_size=image_size,
            fps=fps,
        )
        stem = f"episode_{i:05d}"
        paths.append(write_mp4(ep.frames, out / f"{stem}.mp4", fps))
        arrays = {"actions": ep.actions, "poses": ep.poses}
        if ep.blocks is not None:
            arrays["blocks"] = ep.blocks
        np.savez(out / f"{stem}.npz", **arrays)
        record = {
            "path": f"{stem}.mp4",
            "arrays": f"{stem}.npz",
            "env": env_name,
            "seed": ep.seed,
            "policy": policy,
            "fps": ep.fps,
            "frames_per_action": ep.frames_per_action,
            "num_frames": len(ep.frames),
            "image_size": image_size,
            "action_names": list(ENVS[env_name].ACTION_NAMES),
            "pose_names": list(ENVS[env_name].POSE_NAMES),
            "actions": ep.actions.tolist(),
            "poses": ep.poses.tolist(),
        }
        lines.append(json.dumps(record, separators=(",", ":")))
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(out / MANIFEST_NAME)
    return paths


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path} has no decodable video frames")
    return np.stack(frames)


def load_episodes(out_dir: str | os.PathLike[str], frames: bool = True) -> list[Episode]:
    """Episodes written by :func:`write_episodes`, in order.

    Actions, poses and block positions come exactly from the .npz files; frames are decoded from
    the MP4s (lossy) unless ``frames`` is False, when ``Episode.frames`` is an empty
    [0, H, W, 3] array.
    """
    root = Path(out_dir)
    episodes = []
    for line in (root / MANIFEST_NAME).read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        with np.load(root / rec["arrays"], allow_pickle=False) as data:
            actions, poses = data["actions"], data["poses"]
            blocks = data["blocks"] if "blocks" in data.files else None
        size = int(rec["image_size"])
        video = _decode(root / rec["path"]) if frames else np.empty((0, size, size, 3), dtype=np.uint8)
        if frames and len(video) != rec["num_frames"]:
            raise ValueError(f"{rec['path']}: decoded {len(video)} frames, manifest says {rec['num_frames']}")
        episodes.append(
            Episode(
                rec["env"],
                int(rec["seed"]),
                video,
                actions,
                poses,
                int(rec["frames_per_action"]),
                float(rec["fps"]),
                blocks,
            )
        )
    return episodes


def write_unlabelled_videos(
    out_dir: str | os.PathLike[str],
    env_name: str,
    n: int,
    steps: int,
    seed: int,
    *,
    image_size: int = 128,
    fps: float = 4.0,
    policy: str = "random_smooth",
) -> list[Path]:
    """Episodes as plain videos for LAM training, no labels (the paper mixes environment video
    into the LAM's data, App. D).

    Each action frame is written twice, so at the training fps one 2-frame tubelet holds one
    observation and consecutive states are one action apart — as the planner sees them
    (`duplicate_frames`); clips that start on an odd frame pair neighbouring observations instead.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        ep = record_episode(env_name, clip_seed(seed, i), steps, policy, frames_per_action=1, image_size=image_size)
        paths.append(write_mp4(np.repeat(ep.frames, 2, axis=0), out / f"{env_name}_{i:05d}.mp4", fps))
    return paths
