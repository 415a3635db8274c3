"""Do the latents carry the motion? A linear probe no constant can pass.

A ridge probe maps one latent step's features to the true motion of that step, is fitted on some
clips (or episodes) and scored by R² on others: every step of a clip falls on one side of the
split, so a probe cannot memorise a clip's scene. R² is computed on the held-out steps against
their own mean, so any constant prediction scores R² ≤ 0.

Data (all unseen by the model's training):
- generated: held-out procedural clips (`heldout_generated`); targets the camera's image motion
  per step (dx, dy in the model's pixels, change of log-zoom); steps across a scene cut dropped;
- navigation: recorded episodes, targets the actions (forward, lateral, yaw);
- manipulation: recorded episodes, targets the tool point's true displacement and the gripper's
  change of closure per action (the commanded action can be clipped by the workspace and blocks).

Episodes render each action over 2 frames (`frames_per_action=2`), so with 2-frame tubelets the
first frames of states j and j + 1 are exactly action j apart: latent j is labelled with action j.
The planner instead sees each observation duplicated into a tubelet; that view is its own row.

Feature rows: the IDM's latents; the pooled state change (mean over tokens of s_{t+1} − s_t: what
the encoder carries, linearly); a constant. And a shortcut detector: R² of the pooled state change
predicted *from* the latent — a latent that is mostly the frame-average change (global appearance,
new content) scores high there and low on the motion.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.controller_training import duplicate_frames
from training.envs.episodes import Episode, record_episode
from training.evaluation.common import MOTION_NAMES, heldout_generated
from training.models.lam import LatentActionModel

ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 17))  # ridge strengths on standardised features
PROBE_EPISODE_SEED = 200_000  # disjoint from the planning suite (0.., 100_000..) and the env video (7_000_000..)
ENV_TARGETS = {"navigation": ("forward", "lateral", "yaw"), "manipulation": ("dx", "dy", "dz", "gripper")}


# ----------------------------------------------------------------------------- ridge
def grouped_folds(groups: np.ndarray, folds: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Test masks of a grouped K-fold over the rows: every group (clip, episode) is in exactly one
    fold, so no clip is ever on both sides of a split."""
    unique = np.random.default_rng(seed).permutation(np.unique(groups))
    if len(unique) < 2:
        raise ValueError("a grouped split needs at least two groups")
    k = min(folds, len(unique))
    return [np.isin(groups, part) for part in np.array_split(unique, k)]


@dataclass
class Standardiser:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardiser:
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 1e-12, std, 1.0))  # a constant feature becomes 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def _ridge_paths(x: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> tuple[Standardiser, np.ndarray, np.ndarray]:
    """Closed-form ridge for every alpha at once (SVD of the standardised features).

    x `[M, F]`, y `[M, K]` -> (standardiser, weights `[len(alphas), F, K]`, intercept `[K]`)."""
    scale = Standardiser.fit(x)
    xs = scale(x)
    y_mean = y.mean(axis=0)
    u, s, vt = np.linalg.svd(xs, full_matrices=False)  # xs = u diag(s) vt
    uty = u.T @ (y - y_mean)  # [r, K]
    shrink = s[None, :] / (s[None, :] ** 2 + np.asarray(alphas)[:, None])  # [len(alphas), r]
    weights = np.einsum("fr,ar,rk->afk", vt.T, shrink, uty)
    return scale, weights, y_mean


def r2_scores(y: np.ndarray, pred: np.ndarray) -> list[float | None]:
    """R² per column against the column's own mean; None where the truth is constant."""
    sse = ((y - pred) ** 2).sum(axis=0)
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return [float(1 - e / t) if t > 1e-12 else None for e, t in zip(sse, sst, strict=True)]


@dataclass
class RidgeProbe:
    """A fitted probe: standardise, then one ridge strength per target chosen by grouped CV."""

    scale: Standardiser
    weights: np.ndarray  # [F, K]
    intercept: np.ndarray  # [K]
    alphas: list[float]  # chosen per target

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.scale(x) @ self.weights + self.intercept


def fit_probe(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas: Sequence[float] = ALPHAS, folds: int = 5, seed: int = 0
) -> RidgeProbe:
    """Ridge from x `[M, F]` to y `[M, K]`; each target's strength minimises the grouped K-fold
    squared error over `groups` (a fold holds whole clips or episodes, as the test split does)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    sse = np.zeros((len(alphas), y.shape[1]))
    for held in grouped_folds(groups, folds, seed) if len(np.unique(groups)) > 1 else []:
        if held.all():
            continue
        scale, weights, intercept = _ridge_paths(x[~held], y[~held], alphas)
        pred = np.einsum("mf,afk->amk", scale(x[held]), weights) + intercept  # [A, M, K]
        sse += ((pred - y[held][None]) ** 2).sum(axis=1)
    best = sse.argmin(axis=0)  # [K]
    scale, weights, intercept = _ridge_paths(x, y, alphas)
    chosen = weights[best, :, np.arange(y.shape[1])].T  # [F, K]
    return RidgeProbe(scale, chosen, intercept, [float(alphas[i]) for i in best])


def cross_fitted(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[np.ndarray, list[list[float]]]:
    """Out-of-fold predictions `[M, K]`: each fold of whole groups is predicted by a probe fitted
    (strength chosen by an inner grouped CV) on the other folds only. Also each fold's strengths."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    pred = np.empty_like(y)
    alphas = []
    for test in grouped_folds(groups, folds, seed):
        probe = fit_probe(x[~test], y[~test], groups[~test], folds=folds, seed=seed)
        pred[test] = probe.predict(x[test])
        alphas.append(probe.alphas)
    return pred, alphas


def probe_r2(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Held-out R² per target of the probe x -> y, cross-fitted over grouped folds: every step is
    scored once by a probe that never saw its clip. A constant feature scores R² <= 0 (the training
    folds' mean is never closer to a held-out fold than the pooled mean)."""
    pred, alphas = cross_fitted(x, y, groups, folds, seed)
    return {"r2": r2_scores(y, pred), "alpha": np.median(np.array(alphas), axis=0).tolist(),
            "steps": len(y), "groups": len(np.unique(groups))}


def variance_weighted_r2(y: np.ndarray, pred: np.ndarray) -> float:
    """1 − total SSE / total SST over all columns: a vector target's R² (big columns count more)."""
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum())


# ----------------------------------------------------------------------------- features
@dataclass
class StepFeatures:
    """One row per latent step: features, true motion, and the clip/episode each step came from."""

    latents: np.ndarray  # [M, Z]
    state_change: np.ndarray  # [M, D]: mean over tokens of s_{t+1} - s_t
    targets: np.ndarray  # [M, K]
    groups: np.ndarray  # [M]
    target_names: tuple[str, ...]


@torch.no_grad()
def _step_rows(model: LatentActionModel, video: torch.Tensor, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Clips `[C, T, 3, H, W]` -> (latents `[C, S-1, Z]`, pooled state change `[C, S-1, D]`)."""
    latents, changes = [], []
    for i in range(0, len(video), batch):
        states = model.encode(video[i : i + batch])  # [b, S, N, D]
        latents.append(model.latent_actions(states))
        changes.append((states[:, 1:] - states[:, :-1]).mean(dim=2))
    return torch.cat(latents).float().numpy(), torch.cat(changes).float().numpy()


def generated_features(model: LatentActionModel, clips: int = 96, latents: np.ndarray | None = None) -> StepFeatures:
    """Steps of the held-out generated clips (scene-cut steps dropped). `latents` `[C, S-1, Z]`
    replaces the model's own (e.g. fetched from a running service for the same clips)."""
    data = heldout_generated(model.cfg.encoder.image_size, clips=clips, tubelet=model.cfg.encoder.tubelet)
    z, change = _step_rows(model, data.video)
    if latents is not None:
        if latents.shape[:2] != z.shape[:2]:
            raise ValueError(f"latents {latents.shape} do not match the clips' steps {z.shape[:2]}")
        z = latents
    groups = np.repeat(np.arange(len(data)), z.shape[1]).reshape(z.shape[:2])
    keep = data.valid
    return StepFeatures(z[keep], change[keep], data.motion[keep], groups[keep], MOTION_NAMES)


def probe_episodes(env: str, episodes: int, steps: int = 16, image_size: int = 128) -> list[Episode]:
    return [record_episode(env, PROBE_EPISODE_SEED + i, steps=steps, image_size=image_size) for i in range(episodes)]


def episode_targets(episode: Episode) -> np.ndarray:
    """[T, K]: navigation actions; manipulation true tool displacement and change of closure."""
    if episode.env == "navigation":
        return episode.actions.astype(np.float64)
    return np.diff(episode.action_poses, axis=0)


def episode_features(model: LatentActionModel, episodes: list[Episode], duplicated: bool = False) -> StepFeatures:
    """Latent steps of recorded episodes labelled with their actions (see the module docstring).

    `duplicated`: each observation (the frame before each action) repeated into a tubelet, as the
    planner and the controller see them, instead of the episode's own consecutive frames."""
    tubelet = model.cfg.encoder.tubelet
    videos, targets = [], []
    for ep in episodes:
        if ep.frames_per_action != tubelet and not duplicated:
            raise ValueError(f"episode frames_per_action={ep.frames_per_action} must equal the tubelet ({tubelet}) "
                             "for latent j to span exactly action j")
        if duplicated:
            video = duplicate_frames(ep.action_frames)  # [2(T+1), 3, H, W]: state j = observation j
        else:
            usable = len(ep.frames) // tubelet * tubelet  # state j = frames (2j, 2j+1), begins at observation j
            video = torch.from_numpy(ep.frames[:usable]).permute(0, 3, 1, 2)
        videos.append(video)
        targets.append(episode_targets(ep))
    z, change = _step_rows(model, torch.stack(videos))
    steps = z.shape[1]
    y = np.stack([t[:steps] for t in targets])  # latent j <-> action j
    groups = np.repeat(np.arange(len(episodes)), steps).reshape(len(episodes), steps)
    flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    return StepFeatures(flat(z), flat(change), flat(y), groups.reshape(-1), ENV_TARGETS[episodes[0].env])


# ----------------------------------------------------------------------------- table
def _row(data: str, features: str, names: Sequence[str], result: dict[str, Any]) -> dict[str, Any]:
    r2 = result["r2"]
    defined = [v for v in r2 if v is not None]
    return {
        "data": data,
        "features": features,
        "r2_mean": float(np.mean(defined)) if defined else None,
        **{f"r2_{n}": v for n, v in zip(names, r2, strict=True)},
        "steps": result["steps"],
        "groups": result["groups"],
    }


def feature_rows(name: str, f: StepFeatures, seed: int = 0, latent_label: str = "IDM latent") -> list[dict[str, Any]]:
    """The probe on every feature row of one data set, plus the shortcut detector."""
    constant = np.ones((len(f.targets), 1))
    rows = [
        _row(name, latent_label, f.target_names, probe_r2(f.latents, f.targets, f.groups, seed=seed)),
        _row(name, "pooled state change (encoder)", f.target_names, probe_r2(f.state_change, f.targets, f.groups, seed=seed)),
        _row(name, "constant", f.target_names, probe_r2(constant, f.targets, f.groups, seed=seed)),
    ]
    pred, _ = cross_fitted(f.latents, f.state_change, f.groups, seed=seed)
    rows.append({"data": name, "features": "shortcut: latent -> pooled state change",
                 "r2_mean": variance_weighted_r2(f.state_change, pred), "steps": len(pred), "groups": len(np.unique(f.groups))})
    return rows


def probe_table(
    model: LatentActionModel,
    clips: int = 96,
    episodes: int = 48,
    seed: int = 0,
    served: Callable[[torch.Tensor], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Every probe row for the generated clips and both environments (see the module docstring).

    `served`: fetches latents `[C, S-1, Z]` for clips `[C, T, 3, H, W]` from elsewhere (a running
    service, `service_latents`): adds a row with the same probe on those latents and the largest
    difference from the offline latents."""
    size = model.cfg.encoder.image_size
    rows: list[dict[str, Any]] = []
    generated = generated_features(model, clips)
    rows += feature_rows("generated camera motion", generated, seed)
    extra: dict[str, Any] = {}
    if served is not None:
        data = heldout_generated(size, clips=clips, tubelet=model.cfg.encoder.tubelet)
        fetched = served(data.video)
        online = generated_features(model, clips, latents=fetched)
        offline_z, _ = _step_rows(model, data.video)
        rows.insert(1, _row("generated camera motion", "IDM latent, served", MOTION_NAMES,
                            probe_r2(online.latents, online.targets, online.groups, seed=seed)))
        extra["served_max_abs_diff"] = float(np.abs(fetched - offline_z).max())
        served_r2 = rows[1]["r2_mean"]
        extra["served_note"] = (f"the running service's latents: R² {served_r2:.4f} vs {rows[0]['r2_mean']:.4f} offline, "
                                f"largest latent difference {extra['served_max_abs_diff']:.2g}")
    for env in ("navigation", "manipulation"):
        eps = probe_episodes(env, episodes, image_size=size)
        rows += feature_rows(env, episode_features(model, eps), seed)
        dup = episode_features(model, eps, duplicated=True)
        rows.insert(len(rows) - 3, _row(env, "IDM latent, observations duplicated (planner's view)", dup.target_names,
                                        probe_r2(dup.latents, dup.targets, dup.groups, seed=seed)))
    tables = []
    for data in dict.fromkeys(r["data"] for r in rows):
        tables.append({"title": f"R² per target: {data}", "rows": [r for r in rows if r["data"] == data]})
    summary = [{k: r[k] for k in ("data", "features", "r2_mean", "steps", "groups")} for r in rows]
    return {
        "title": "Do the latents carry the motion? Held-out ridge probe R²",
        "protocol": f"closed-form ridge on standardised features, strength per target by grouped 5-fold CV on the "
        f"training folds; cross-fitted over 5 folds of whole clips/episodes (every step scored once by a probe that never "
        f"saw its clip); R² of the pooled held-out predictions (a constant scores <= 0). Data: {clips} held-out generated clips (scene-cut steps "
        f"dropped), {episodes} navigation and {episodes} manipulation episodes of 16 actions (seeds "
        f"{PROBE_EPISODE_SEED}+); shortcut row: variance-weighted R² of the pooled state change predicted from the latent",
        "checkpoint": getattr(model, "source", None),
        "verdict": probe_verdict(rows) + (f"; {extra['served_note']}" if "served_note" in extra else ""),
        "rows": summary,
        "tables": tables,
        **extra,
    }


BARS = {"generated camera motion": 0.9, "navigation": 0.8, "manipulation": 0.6}


def probe_verdict(rows: list[dict[str, Any]]) -> str:
    """The issue's bars: R² >= 0.9 generated camera motion, >= 0.8 navigation, >= 0.6 manipulation xyz."""
    parts = []
    for data, bar in BARS.items():
        row = next((r for r in rows if r["data"] == data and r["features"] == "IDM latent"), None)
        if row is None:
            continue
        if data == "manipulation":
            value = float(np.mean([row[f"r2_{n}"] or 0.0 for n in ("dx", "dy", "dz")]))
            label = "manipulation xyz"
        else:
            value, label = row["r2_mean"], data
        parts.append(f"{label} {value:.2f} (bar {bar}): {'pass' if value >= bar else 'FAIL'}")
    return "IDM latent R²: " + "; ".join(parts)


# ----------------------------------------------------------------------------- the running service
def _png_base64(frame: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def service_latents(
    url: str, fps: float = 4.0, timeout_s: float = 120.0, *, api_key: str | None = None, transport: Any = None
) -> Callable[[torch.Tensor], np.ndarray]:
    """Latents of clips `[C, T, 3, H, W]` from a running service's `POST /v1/latent-actions`
    (JSON frames as PNG, lossless): `[C, S-1, Z]`. `transport`: an httpx transport (tests)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def fetch(video: torch.Tensor) -> np.ndarray:
        out = []
        with httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, headers=headers, transport=transport) as client:
            for clip in video.permute(0, 1, 3, 4, 2).numpy():  # [T, H, W, 3]
                response = client.post("/v1/latent-actions", json={"frames": [_png_base64(f) for f in clip], "fps": fps})
                response.raise_for_status()
                out.append(np.asarray(response.json()["latents"], dtype=np.float32))
        return np.stack(out)

    return fetch
