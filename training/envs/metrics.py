"""Trajectory metrics of the offline planning protocols.

* RECON / NWM (navigation): ``ate`` is the RMSE of the absolute translation error without any
  alignment (evo's APE, translation part); ``rpe`` is the RMSE of the relative translation error
  between poses ``delta`` steps apart (evo's RPE, translation part, delta in frames);
  ``rpe_rotation`` is its rotation part.
* DROID (manipulation): ``delta_xyz`` is the L1 distance between the cumulative xyz displacement
  of the planned and of the recorded actions (translations compose additively).

``poses_from_actions`` integrates camera-relative navigation actions with exactly the rule of
:class:`training.envs.navigation.NavigationEnv`, so planned actions can be turned into a
trajectory and scored against the recorded one.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ate", "delta_xyz", "poses_from_actions", "rpe", "rpe_rotation"]


def _as_trajectories(pred: np.ndarray, gt: np.ndarray, min_dim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if p.ndim != 2 or p.shape != g.shape or p.shape[1] < min_dim:
        raise ValueError(
            f"expected two [T, >= {min_dim}] trajectories of one shape, got {p.shape} and {g.shape}"
        )
    if len(p) == 0:
        raise ValueError("trajectories are empty")
    return p, g


def ate(pred_xy: np.ndarray, gt_xy: np.ndarray) -> float:
    """Absolute trajectory error: sqrt(mean_t ||pred_t - gt_t||^2) over the first two columns.

    pred_xy, gt_xy: [T, 2] (extra columns such as a heading are ignored). No alignment.
    """
    p, g = _as_trajectories(pred_xy, gt_xy)
    err = p[:, :2] - g[:, :2]
    return float(math.sqrt(np.mean((err**2).sum(axis=1))))


def _relative_translation(traj: np.ndarray, delta: int) -> np.ndarray:
    """[T - delta, 2]: displacement from pose i to pose i + delta, in the frame of pose i.

    With [T, 2] positions there is no heading, and the world frame is used.
    """
    d = traj[delta:, :2] - traj[:-delta, :2]
    if traj.shape[1] < 3:
        return d
    h = traj[:-delta, 2]
    c, s = np.cos(h), np.sin(h)
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)


def _check_delta(n: int, delta: int) -> None:
    if delta < 1 or delta >= n:
        raise ValueError(f"delta must be in [1, T - 1] = [1, {n - 1}], got {delta}")


def rpe(pred: np.ndarray, gt: np.ndarray, delta: int = 1) -> float:
    """Relative pose error, translation part: RMSE over i of ||rel_pred_i - rel_gt_i||.

    pred, gt: [T, 2] positions or [T, 3] poses (x, y, heading). With headings, each relative
    motion is expressed in the frame of its first pose, as in evo (SE(2) relative error: its
    translation norm is ||rel_pred - rel_gt||); without, in the world frame.
    """
    p, g = _as_trajectories(pred, gt)
    _check_delta(len(p), delta)
    err = _relative_translation(p, delta) - _relative_translation(g, delta)
    return float(math.sqrt(np.mean((err**2).sum(axis=1))))


def rpe_rotation(pred: np.ndarray, gt: np.ndarray, delta: int = 1, degrees: bool = False) -> float:
    """Relative pose error, rotation part: RMSE of the wrapped heading-change difference.

    pred, gt: [T, 3] poses (x, y, heading in radians). Returns radians (degrees if asked).
    """
    p, g = _as_trajectories(pred, gt, min_dim=3)
    _check_delta(len(p), delta)
    diff = (p[delta:, 2] - p[:-delta, 2]) - (g[delta:, 2] - g[:-delta, 2])
    diff = (diff + math.pi) % (2 * math.pi) - math.pi  # wrap to [-pi, pi)
    out = float(math.sqrt(np.mean(diff**2)))
    return math.degrees(out) if degrees else out


def delta_xyz(planned_actions: np.ndarray, gt_actions: np.ndarray) -> float:
    """DROID's Δxyz: || Σ_t planned[t, :3] - Σ_t gt[t, :3] ||_1, metres.

    planned_actions, gt_actions: [H, A] with A >= 3 (extra dims such as the gripper ignored).
    """
    p, g = np.asarray(planned_actions, dtype=np.float64), np.asarray(gt_actions, dtype=np.float64)
    if p.ndim != 2 or g.ndim != 2 or p.shape[1] < 3 or g.shape[1] < 3:
        raise ValueError(f"expected [H, A >= 3] action arrays, got {p.shape} and {g.shape}")
    if len(p) != len(g):
        raise ValueError(f"planned and recorded horizons differ: {len(p)} vs {len(g)}")
    return float(np.abs(p[:, :3].sum(axis=0) - g[:, :3].sum(axis=0)).sum())


def poses_from_actions(
    start_pose: np.ndarray | tuple[float, float, float], actions: np.ndarray, substeps: int = 1
) -> np.ndarray:
    """Integrate camera-relative (forward, lateral, yaw) actions from (x, y, heading).

    Each action translates by ``forward`` along the heading and ``lateral`` to its left, then
    turns by ``yaw``. With ``substeps`` k, each action is applied as k equal parts (as
    :mod:`training.envs.episodes` renders it over k frames); the returned poses are those after
    whole actions. Actions are not clipped. Returns float64 [T + 1, 3], row 0 the start pose.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"expected [T, 3] actions, got {a.shape}")
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    x, y, h = (float(v) for v in np.asarray(start_pose, dtype=np.float64).reshape(3))
    out = np.empty((len(a) + 1, 3))
    out[0] = (x, y, h)
    for t, step in enumerate(a):
        forward, lateral, yaw = step / substeps if substeps > 1 else step
        for _ in range(substeps):
            c, s = math.cos(h), math.sin(h)
            x, y, h = x + forward * c - lateral * s, y + forward * s + lateral * c, h + yaw
        out[t + 1] = (x, y, h)
    return out
