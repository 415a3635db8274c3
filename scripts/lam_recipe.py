"""LAM recipe experiments on cached encoder states (issue 12, "latents that carry the motion").

The encoder is frozen in the LAM stage, so its states are computed once per clip and the IDM,
regularizer and world model train on them: many more steps per CPU minute than the video loop.
Each run trains a fresh IDM + world model + regularizer on the states of a checkpoint's encoder
and scores the result with `lawm eval probe`'s held-out probe and a quick IDM-vs-another-clip
check, so recipes can be compared side by side.

The lever this script was written for is the world model's *context* while the LAM trains:
  full   teacher forcing over the whole clip (the paper's block-causal recipe);
  pairs  every target predicted from the one state before it, so the motion cannot be read from
         the clip's history and only the latent can carry it;
  mixed  a coin per step between the two.

  PYTHONPATH=. python scripts/lam_recipe.py --context pairs --steps 2000 --out runs/recipe/pairs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.config import DataConfig, OptimConfig, load_config
from training.data.corpus import sample_refs
from training.data.dataset import fixed_clips
from training.envs.episodes import record_episode
from training.evaluation.common import heldout_generated, load_lam
from training.evaluation.probe import probe_table
from training.loop import regularizer_ramp
from training.models.encoder import FrameCausalEncoder
from training.models.lam import LatentActionModel, one_step_pairs
from training.models.world_model import warp_frames, warp_tokens
from training.motion import state_shifts
from training.optim import build_optimizers, lr_factor, set_lr

PREVIOUS_ENCODER = "models/demo before the 2026-12-02 rebuild"  # the encoder every earlier run's cache came from
ENV_VIDEO_SEEDS = {"navigation": 7_000_000, "manipulation": 7_100_000}  # the env video's seeds, not the probe's


class PixelTubelets(FrameCausalEncoder):
    """A reference "encoder" for the ceiling: each token is its tubelet's raw (normalised) patch of
    pixels, `[M, 2, 3, H, W]` -> `[M, N, 2*3*p*p]`. What a network reads from these is what the
    frames carry at this token grid, so an encoder's ceiling below it is information the encoder lost."""

    def __init__(self, tubelet: int, patch: int, image_size: int) -> None:
        super().__init__()
        self.tubelet, self.patch, self.grid = tubelet, patch, image_size // patch
        self.dim = tubelet * 3 * patch * patch

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.float32

    def encode_tubelets(self, tubelets: torch.Tensor) -> torch.Tensor:
        m, t, c, h, w = tubelets.shape
        g, p = self.grid, self.patch
        x = tubelets.reshape(m, t, c, g, p, g, p).permute(0, 3, 5, 1, 2, 4, 6)  # [M, g, g, t, c, p, p]
        return x.reshape(m, g * g, t * c * p * p)


@torch.no_grad()
def encode_all(model: LatentActionModel, video: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """uint8 `[C, T, 3, H, W]` -> states `[C, T/2, N, D]`."""
    return torch.cat([model.encode(video[i : i + batch]) for i in range(0, len(video), batch)])


def first_frames(video: torch.Tensor, tubelet: int, size: int) -> torch.Tensor:
    """uint8 `[C, T, 3, H, W]` -> the first frame of every state, area-downsampled: uint8 `[C, T/tubelet, 3, size, size]`."""
    frames = video[:, ::tubelet]
    c, s = frames.shape[:2]
    small = F.interpolate(frames.flatten(0, 1).float(), size=(size, size), mode="area")
    return small.round().to(torch.uint8).reshape(c, s, 3, size, size)


def training_states(model: LatentActionModel, generated: int, episodes: int, real: int,
                    frame_size: int = 0) -> dict[str, torch.Tensor]:
    """Cached states of the training data: generated clips (the corpus's own seeds), unlabelled
    episode video of both worlds, and clips of the real training videos; with `frame_size`, also
    each state's first frame at that size (key "<pool>:frames") for the pixel warp term."""
    size = model.cfg.encoder.image_size
    pools: dict[str, torch.Tensor] = {}

    def add(name: str, video: torch.Tensor) -> None:
        pools[name] = encode_all(model, video)
        if frame_size:
            pools[f"{name}:frames"] = first_frames(video, model.cfg.encoder.tubelet, frame_size)

    gen = heldout_generated(size, clips=generated, seed=0)  # seed 0: the training corpus's clips
    add("generated", gen.video)
    for env, base in ENV_VIDEO_SEEDS.items():
        videos = []
        for i in range(episodes):
            ep = record_episode(env, base + i, steps=16, image_size=size)
            usable = len(ep.frames) // 2 * 2
            videos.append(torch.from_numpy(ep.frames[:usable]).permute(0, 3, 1, 2))
        add(env, torch.stack(videos))
    if real:
        cfg = DataConfig(size=size)
        clips = fixed_clips(sample_refs(cfg, "train"), frames=16, fps=cfg.fps, size=size,
                            clips_per_file=real, time_range=cfg.train_range)
        add("real", torch.stack([c["video"] for c in clips]))
    return pools


def batch_of(pools: dict[str, torch.Tensor], weights: dict[str, float], batch: int, steps: int,
             rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`batch` windows of `steps` states, each from a pool drawn by weight: `[B, steps, N, D]`, and
    the same windows of what the pools hold beside the states: first frames `[B, steps, 3, h, w]`
    (uint8, key "frames") and measured shifts `[B, steps-1, 2]` (key "shift")."""
    names = [n for n in pools if ":" not in n]
    p = np.array([weights.get(n, 0.0) for n in names])
    out: list[torch.Tensor] = []
    extras: dict[str, list[torch.Tensor]] = {}
    for name in rng.choice(names, size=batch, p=p / p.sum()):
        pool = pools[name]
        index = rng.integers(len(pool))
        start = rng.integers(pool.shape[1] - steps + 1)
        out.append(pool[index, start : start + steps])
        for kind, length in (("frames", steps), ("shift", steps - 1)):
            if f"{name}:{kind}" in pools:
                extras.setdefault(kind, []).append(pools[f"{name}:{kind}"][index, start : start + length])
    return torch.stack(out), {k: torch.stack(v) for k, v in extras.items()}


def as_pairs(states: torch.Tensor, keep: int, rng: np.random.Generator,
             extras: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`[B, T, ...]` -> `keep` random consecutive pairs `[keep, 2, ...]` (one-state context), with the
    same pairs of the frames `[B, T, 3, h, w]` and the same steps of the shifts `[B, T-1, 2]`."""
    count = states.shape[0] * (states.shape[1] - 1)
    index = torch.from_numpy(rng.choice(count, size=min(keep, count), replace=False))
    paired = {k: (one_step_pairs(v)[index] if k == "frames" else v.reshape(count, 1, -1)[index]) for k, v in extras.items()}
    return one_step_pairs(states)[index], paired


@torch.no_grad()
def idm_vs_another(model: LatentActionModel, states: torch.Tensor) -> dict[str, float]:
    """One-step error with the clip's own latents vs another clip's (rolled by one), both contexts."""
    z = model.latent_actions(states)  # [B, T-1, Z]
    other = z.roll(1, dims=0)
    b, t, n, d = states.shape
    pairs = torch.stack([states[:, :-1], states[:, 1:]], dim=2).reshape(b * (t - 1), 2, n, d)
    contexts = {  # name -> (context states, target states, latents reshaped to fit)
        "full": (states[:, :-1], states[:, 1:], lambda lat: lat),
        "pairs": (pairs[:, :1], pairs[:, 1:], lambda lat: lat.reshape(-1, 1, lat.shape[-1])),
    }
    out = {}
    for name, (context, target, fit) in contexts.items():
        own = (model.world_model(context, fit(z)) - target).abs().mean()
        alt = (model.world_model(context, fit(other)) - target).abs().mean()
        out[f"{name}_reduction_vs_another"] = float(1 - own / alt)
    return out


@torch.no_grad()
def warp_check(model: LatentActionModel, states: torch.Tensor, motion: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Does the world model's warp (world_model.warp) follow the camera? On held-out generated clips
    (states `[C, S, N, D]`, true motion `[C, S-1, 3]`, steps without a cut): the one-step L1 of copying
    the state, of the warp the true motion asks for, of the latent's warp alone and of the whole model, and the R² of a least-squares map from the warp's six
    parameters to the true dx, dy, log-zoom (a warp that follows the camera scores near 1)."""
    from training.evaluation.probe import r2_scores

    z = model.latent_actions(states)  # [C, S-1, Z]
    context, target = states[:, :-1], states[:, 1:]
    flat = context.reshape(-1, 1, *context.shape[2:])
    whole = model.world_model(flat, z.reshape(-1, 1, z.shape[-1])).reshape(target.shape)
    affine = model.world_model.warp_modulation(z)[torch.from_numpy(valid)].numpy()  # [M, 6]
    x = np.concatenate([affine, np.ones((len(affine), 1))], axis=1)
    y = motion[valid]
    fit = x @ np.linalg.lstsq(x, y, rcond=None)[0]
    # The warp the true motion asks for: content moves by (dx, dy) model pixels and scales by the zoom
    true = torch.from_numpy(motion).float()  # [C, S-1, 3]
    patch = model.cfg.encoder.patch
    scale = torch.exp(-true[..., 2]) - 1
    zero = torch.zeros_like(scale)
    oracle = torch.stack([scale, zero, zero, scale, -true[..., 0] / patch, -true[..., 1] / patch], dim=-1)
    valid_t = torch.from_numpy(valid)
    # How far the warp shifts against how far the camera moved (1: all the way; an L1 fit under
    # uncertain motion shrinks it, and a warp that shifts a quarter of the way renders nearly still)
    asked = oracle[..., 4:][valid_t].numpy()  # [M, 2] token shifts the true motion asks for
    slopes = [float(np.polyfit(asked[:, i], affine[:, 4 + i], 1)[0]) for i in range(2)]
    # The reverse regression: the asked shift on the warp's. Near 1 when the warp is the conditional
    # mean of the motion given the latent (calibrated): its shrinkage is then the reading's noise
    # (slope of warp on motion = the share of the motion's variance the latent explains), not the loss.
    calibration = [float(np.polyfit(affine[:, 4 + i], asked[:, i], 1)[0]) for i in range(2)]
    explained = [float(np.corrcoef(asked[:, i], affine[:, 4 + i])[0, 1] ** 2) for i in range(2)]
    return {"l1_copy": float((target - context).abs().mean(-1)[valid_t].mean()),
            "l1_true_motion_warp": float((target - warp_tokens(context, oracle, model.encoder.grid)).abs().mean(-1)[valid_t].mean()),
            "l1_warp_only": float((target - model.world_model.base(context, z)).abs().mean(-1)[valid_t].mean()),
            "l1_model": float((target - whole).abs().mean(-1)[valid_t].mean()),
            "warp_r2_dx_dy_zoom": [None if v is None else float(v) for v in r2_scores(y, fit)],
            "warp_shift_std_tokens": float(affine[:, 4:].std(0).mean()),
            "warp_shift_slope_dx_dy": slopes,
            "asked_on_warp_slope_dx_dy": calibration,
            "warp_shift_r2_dx_dy": explained}


def motion_ceiling(model: LatentActionModel, steps: int, probe_clips: int, probe_episodes: int,
                   rng: np.random.Generator, train_clips: int = 192, train_episodes: int = 96,
                   only: list[str] | None = None) -> list[dict]:
    """What the states carry, nonlinearly: an IDM-shaped network trained *with* the true motion
    (MSE on standardised targets) on training clips/episodes, scored by R² on the probe's held-out
    ones. No latent action model can carry more of the motion than this network reads from the same
    states, so it is the ceiling of the probe for this encoder."""
    from training.evaluation.probe import ENV_TARGETS, episode_targets, r2_scores
    from training.evaluation.probe import probe_episodes as held_out_episodes
    from training.models.idm import InverseDynamicsModel

    size = model.cfg.encoder.image_size

    def generated(seed: int, clips: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        g = heldout_generated(size, clips=clips, seed=seed)
        return encode_all(model, g.video), g.motion, g.valid

    def episodes(eps: list) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        video = torch.stack([torch.from_numpy(e.frames[: len(e.frames) // 2 * 2]).permute(0, 3, 1, 2) for e in eps])
        states = encode_all(model, video)
        y = np.stack([episode_targets(e)[: states.shape[1] - 1] for e in eps])
        return states, y, np.ones(y.shape[:2], dtype=bool)

    from training.evaluation.common import HELDOUT_GENERATED_SEED
    sets = {
        "generated camera motion": lambda: (generated(0, train_clips), generated(HELDOUT_GENERATED_SEED, probe_clips)),
        **{env: lambda env=env, base=base: (
            episodes([record_episode(env, base + i, steps=16, image_size=size) for i in range(train_episodes)]),
            episodes(held_out_episodes(env, probe_episodes, image_size=size)))
           for env, base in ENV_VIDEO_SEEDS.items()},
    }
    rows = []
    for name, build in sets.items():
        if only and not any(name.startswith(o) for o in only):
            continue
        (s_tr, y_tr, v_tr), (s_te, y_te, v_te) = build()
        pairs_tr = torch.stack([s_tr[:, :-1], s_tr[:, 1:]], 2)[torch.from_numpy(v_tr)]  # [M, 2, N, D]
        targets = torch.from_numpy(y_tr[v_tr]).float()
        mean, std = targets.mean(0), targets.std(0).clamp_min(1e-8)
        net = InverseDynamicsModel(model.cfg.idm, model.encoder.dim, model.encoder.grid, targets.shape[1])
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.04)
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = 1e-3 * lr_factor(step, steps, 0.1, 0.01)
            idx = torch.from_numpy(rng.choice(len(pairs_tr), size=32))
            p = pairs_tr[idx]
            loss = torch.nn.functional.mse_loss(net.pair(p[:, 0], p[:, 1]), (targets[idx] - mean) / std)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pairs_te = torch.stack([s_te[:, :-1], s_te[:, 1:]], 2)[torch.from_numpy(v_te)]
            pred = torch.cat([net.pair(c[:, 0], c[:, 1]) for c in pairs_te.split(256)]) * std + mean
        names = {"generated camera motion": ("dx", "dy", "log_zoom")}.get(name, ENV_TARGETS.get(name, ()))
        r2 = r2_scores(y_te[v_te], pred.numpy())
        rows.append({"data": name, "features": f"supervised IDM-shaped network ({model.cfg.idm.fusion}), {steps} steps (the ceiling)",
                     "train_pairs": len(pairs_tr),
                     "r2_mean": float(np.mean([v for v in r2 if v is not None])),
                     **{f"r2_{n}": v for n, v in zip(names, r2, strict=True)}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def encoder_label(args: dict) -> str:
    """The ceiling table's name for the states a ceiling run read."""
    return args.get("label") or ("raw pixel patches (no encoder)" if args.get("pixels") else args["checkpoint"])


def ceiling_verdict(rows: list[dict], ceiling_rows: list[dict]) -> str:
    """What limits the probe: the best latents, against what a supervised reader gets from the
    bundled encoder's states and from the raw pixels (when those ceilings were measured)."""
    def ceiling(encoder: str) -> dict[str, float]:
        return {r["data"]: r["r2_mean"] for r in ceiling_rows if r["encoder"] == encoder}

    def three(figures: dict[str, float]) -> str:
        return " / ".join(f"{figures[d]:.2f}" if d in figures else "-"
                          for d in ("generated camera motion", "navigation", "manipulation"))

    best = {key: max((r[f"r2_{key}"] for r in rows if r.get(f"r2_{key}") is not None), default=float("nan"))
            for key in ("generated", "navigation", "manipulation")}
    text = (f"best latent probe R² over these recipes and the bundled model: generated {best['generated']:.2f}, "
            f"navigation {best['navigation']:.2f}, manipulation {best['manipulation']:.2f} (bars 0.9 / 0.8 / 0.6: not met)")
    bundled, pixels = ceiling("models/demo"), ceiling("raw pixel patches (no encoder)")
    if bundled:
        text += f"; a network trained WITH the true motion reads {three(bundled)} from the bundled encoder's states"
    if pixels:
        text += (f" and only {three(pixels)} from the raw pixel patches themselves: with this reader and this much "
                 "data the frames' own motion stays below every bar, so the reader (the IDM's shape, its data), "
                 "not only the encoder, caps the probe")
    scaling = {}  # rows measured before the train_pairs column all used 192 clips: 1,996 valid pairs
    for name, prefix in (("the bundled encoder's states", "models/demo"), ("raw pixels", "raw pixel patches")):
        points = sorted((r.get("train_pairs") or 1996, r["r2_mean"]) for r in ceiling_rows
                        if r["encoder"].startswith(prefix) and r["data"] == "generated camera motion"
                        and "fused" not in r["encoder"])
        if len(points) > 1:
            scaling[name] = points
    if scaling:
        text += "; with more training clips the same reader reads more (generated camera motion, R² by training pairs: " + "; ".join(
            f"{name} " + ", ".join(f"{r2:.2f} from {n:,}" for n, r2 in points) for name, points in scaling.items()
        ) + "): data, more than the encoder, is the lever"
    for run in rows:  # a LAM recipe rerun on more clips: do its latents follow the reader?
        same = [r for r in rows if r is not run and r.get("generated_clips") == 192 and r.get("context") == run.get("context")
                and r.get("regulariser") == run.get("regulariser") and r.get("latent_dim") == run.get("latent_dim")]
        plain = run.get("conditioning", "AdaLN") == "AdaLN" and all(r.get("conditioning", "AdaLN") == "AdaLN" for r in same)
        if (run.get("generated_clips") or 192) > 192 and same and plain and run.get("r2_generated") is not None:
            text += (f"; but the latents hardly follow: the LAM recipe '{same[0]['run']}' on {run['generated_clips']} "
                     f"generated clips reads {run['r2_generated']:.2f} on generated camera motion ({same[0]['r2_generated']:.2f} "
                     "on 192) while predicting as well as before, so the unsupervised objective, not what the states "
                     "hold, now leaves the latents short of the motion")
    return text + warp_verdict(rows) + rebuilt_verdict(rows)


def rebuilt_verdict(rows: list[dict]) -> str:
    """Runs on the rebuilt bundle's encoder: the recipe's levers side by side, and why the warp shrinks."""
    runs = [r for r in rows if r.get("encoder", PREVIOUS_ENCODER) != PREVIOUS_ENCODER and r.get("r2_generated") is not None
            and "(reference)" not in r["run"]]
    if not runs:
        return ""
    text = "; on the rebuilt bundle's encoder (" + runs[0]["encoder"] + "): " + "; ".join(
        f"'{r['run']}' ({r['conditioning'].split(', ', 1)[-1]}) reads {r['r2_generated']:.2f} / {r['r2_navigation']:.2f} / "
        f"{r['r2_manipulation']:.2f}, {r['vs_another_generated']:.0%} below another clip's latents, its warp follows the "
        f"camera at R² {r['warp_r2_pan']:.2f} and shifts {r.get('warp_shift_slope_x', float('nan')):.2f} / "
        f"{r.get('warp_shift_slope_y', float('nan')):.2f} of the way in x / y" for r in runs)
    moved = [r for r in runs if r.get("transfer_render_ratio") is not None]
    if moved:
        text += ("; transfer (`lawm eval motion-transfer`'s protocol on the run's IDM and world model with the bundle's "
                 "decoder; render's error to A / to B, bar x0.5): " + ", ".join(
                     f"'{r['run']}' x{r['transfer_render_ratio']:.2f}" for r in moved))
    calibrated = [r for r in runs if r.get("motion_on_warp_slope_x") is not None]
    if calibrated:
        text += (". Why the warp moves only part of the way: regressed the other way (the true shift on the warp's), "
                 "the slope is " + ", ".join(
                     f"{r['motion_on_warp_slope_x']:.2f} / {r['motion_on_warp_slope_y']:.2f} (x / y) for '{r['run']}'"
                     for r in calibrated)
                 + ". A slope of 1 is a calibrated warp, the conditional mean of the motion given the latent, which moves "
                 "exactly the share of the motion the latent explains (its forward slope equals that R²); above 1 it "
                 "moves less still. The warp term alone leaves it above 1; the motion prior brings it to about 1, so "
                 "the rest of the shrinkage is the reading's noise: only latents that read the motion better (not "
                 "another loss) move further")
    return text


def warp_verdict(rows: list[dict]) -> str:
    """What the warp runs show: the motion the states offer, and whether the latents take it."""
    warped = [r for r in rows if r.get("true_motion_warp_l1_vs_copy") is not None]
    if not warped:
        return ""
    truth = max(r["true_motion_warp_l1_vs_copy"] for r in warped)
    text = (f"; the states do offer the motion: warping each state by the TRUE camera motion explains {truth:.0%} "
            "of the one-step change (L1 against copying the state)")
    alone = [r for r in warped if not (r.get("warp_weight") or r.get("pixel_warp_weight"))]
    if alone:
        best = max(alone, key=lambda r: r["warp_l1_vs_copy"])
        text += (f", yet a world model whose latent drives such a warp (world_model.warp) keeps it near the identity "
                 f"(it explains {best['warp_l1_vs_copy']:.0%}; its shift follows the camera at R² {best['warp_r2_pan']:.2f}): "
                 "AdaLN explains the next state without the motion, so the IDM never puts it into z")
    termed = [r for r in warped if (r.get("warp_weight") or r.get("pixel_warp_weight")) and r.get("r2_generated") is not None]
    if termed:
        best = max(termed, key=lambda r: r["r2_generated"] + r["r2_navigation"])
        text += (f"; the warp term (train.lam.warp_weight: the latent's warp alone must explain the next state) makes it: "
                 f"'{best['run']}' reads {best['r2_generated']:.2f} generated / {best['r2_navigation']:.2f} navigation / "
                 f"{best['r2_manipulation']:.2f} manipulation (its warp explains {best['warp_l1_vs_copy']:.0%}, follows the "
                 f"camera at R² {best['warp_r2_pan']:.2f}) — the largest gain of any lever so far, still far below the bars")
        others = [r for r in termed if r is not best]
        if others:
            text += " (" + "; ".join(
                f"{r['conditioning'].split(', ', 1)[1]}, {r['context']} context, {r['regulariser']}: {r['r2_generated']:.2f} / "
                f"{r['r2_navigation']:.2f} / {r['r2_manipulation']:.2f}" for r in others) + ")"
        full = [r for r in termed if r["context"] == "full"]
        if full:
            text += ("; with full-context teacher forcing (the paper's recipe) the term does not take: " + "; ".join(
                f"{r['regulariser']}: the warp follows the camera at R² {r['warp_r2_pan']:.2f}" for r in full)
                + " (the sparse latents collapse; the full-context runs had 800 steps against the pairs runs' 1500, and "
                "whether the clip's history lets the world model do without the motion is not yet measured), so the "
                "recipe that helps is the pairs context: the product's LAM stage now has it (train.lam.context: pairs) "
                "and the demo config uses it")
    return text


def conditioning(args: dict) -> str:
    """How a run's world model takes the latent."""
    if not args.get("warp"):
        return "AdaLN"
    init, term, pixel = args.get("warp_init") or 0.0, args.get("warp_loss") or 0.0, args.get("pixel_warp_loss") or 0.0
    prior, fusion = args.get("motion_prior") or 0.0, args.get("fusion")
    return ("AdaLN + warp" + (f" (head init σ {init:g})" if init else " (head init 0)")
            + (f", warp term {term:g}" if term else "")
            + (f", pixel warp term {pixel:g} at {args.get('frame_size')} px" if pixel else "")
            + (f", motion prior {prior:g} (phase correlation at {args.get('frame_size')} px)" if prior else "")
            + (f", IDM fusion {fusion}" if fusion and fusion != "tokens" else ""))


def warp_columns(check: dict | None) -> dict[str, float]:
    """A warp run's row: how much of the one-step change the warp alone explains, and whether it
    follows the camera (R² of dx, dy from the warp's parameters)."""
    if not check:
        return {}
    r2 = [v for v in check["warp_r2_dx_dy_zoom"][:2] if v is not None]
    slopes = check.get("warp_shift_slope_dx_dy")
    return {"warp_l1_vs_copy": round(1 - check["l1_warp_only"] / check["l1_copy"], 4),
            "true_motion_warp_l1_vs_copy": round(1 - check["l1_true_motion_warp"] / check["l1_copy"], 4),
            "warp_r2_pan": round(float(np.mean(r2)), 4) if r2 else None,
            **({"warp_shift_slope_x": round(slopes[0], 3), "warp_shift_slope_y": round(slopes[1], 3)} if slopes else {}),
            **({"motion_on_warp_slope_x": round(check["asked_on_warp_slope_dx_dy"][0], 3),
                "motion_on_warp_slope_y": round(check["asked_on_warp_slope_dx_dy"][1], 3)}
               if check.get("asked_on_warp_slope_dx_dy") else {})}


def transfer_column(run: Path) -> dict[str, float]:
    """The transfer render's error to A / to B, when `--transfer` measured the run."""
    path = run / "motion-transfer.json"
    if not path.exists():
        return {}
    rows = {r["measurement"]: r for r in json.loads(path.read_text())["rows"]}
    render = next(r for name, r in rows.items() if name.startswith("transfer render"))
    return {"transfer_render_ratio": round(render["ratio_a_over_b"], 3)}


def measure_transfer(run: Path) -> None:
    """`lawm eval motion-transfer`'s protocol on a finished run: its IDM and world model with the
    checkpoint's encoder and decoder (the run's own cannot render), into the run's motion-transfer.json."""
    from training.evaluation.transfer import motion_transfer

    result = json.loads((run / "result.json").read_text())
    model = load_lam(result["args"]["checkpoint"])
    missing, unexpected = model.load_state_dict(torch.load(run / "lam.pt"), strict=False)
    if unexpected or not all(k.startswith(("encoder.", "decoder.", "controller.")) for k in missing):
        raise SystemExit(f"{run}/lam.pt does not fit {result['args']['checkpoint']}'s model: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    out = motion_transfer(model.eval(), clips=96, seed=0)
    (run / "motion-transfer.json").write_text(json.dumps(out, indent=1))
    print(out["verdict"], flush=True)


def summarise(runs: list[Path], ceilings: list[Path], out: Path) -> None:
    """One table of every finished run (result.json) for docs/results/, rendered by `lawm docs`."""
    rows = []
    for run in runs:
        r = json.loads((run / "result.json").read_text())
        a, probe = r["args"], {(p["data"], p["features"]): p["r2_mean"] for p in r["probe"]}
        reg = a["reg"] + "".join(f", {k} {a[k]:g}" for k in ("var", "l1", "beta") if a.get(k) is not None)
        rows.append({
            "run": run.name, "encoder": a.get("encoder_label") or a["checkpoint"], "context": a["context"], "regulariser": reg, "latent_dim": a.get("latent_dim") or 128,
            "conditioning": conditioning(a), "warp_weight": a.get("warp_loss") or None,
            "pixel_warp_weight": a.get("pixel_warp_loss") or None,
            "steps": a["steps"], "generated_clips": a.get("generated", 192), "wall_min": round(r["train_s"] / 60, 1),
            "vs_another_generated": r["idm_vs_another_generated"]["full_reduction_vs_another"],
            **{f"r2_{key}": probe.get((data, "IDM latent")) for key, data in
               (("generated", "generated camera motion"), ("navigation", "navigation"), ("manipulation", "manipulation"))},
            "shortcut_generated": probe.get(("generated camera motion", "shortcut: latent -> pooled state change")),
            **warp_columns(r["idm_vs_another_generated"].get("warp")),
            **transfer_column(run),
        })
    bundled = Path("docs/results/probe.json")
    if bundled.exists():  # the reference: the bundled model, trained by the video loop
        probe = {(p["data"], p["features"]): p["r2_mean"] for p in json.loads(bundled.read_text())["rows"]}
        demo = load_config("demo")  # the recipe models/demo was built with (`make demo-model`)
        lam, wm = demo.train.lam, demo.model.world_model
        recipe = {"warp": wm.warp, "warp_init": wm.warp_init, "warp_loss": lam.warp_weight,
                  "motion_prior": lam.motion_prior_weight, "frame_size": demo.data.size, "fusion": demo.model.idm.fusion}
        rows.append({"run": "bundled models/demo (reference)", "encoder": "models/demo", "context": lam.context,
                     "regulariser": demo.model.regularizer.kind, "latent_dim": demo.model.idm.latent_dim,
                     "steps": lam.steps, "generated_clips": demo.data.generated_clips, "conditioning": conditioning(recipe),
                     **{f"r2_{key}": probe.get((data, "IDM latent")) for key, data in
                        (("generated", "generated camera motion"), ("navigation", "navigation"),
                         ("manipulation", "manipulation"))},
                     "shortcut_generated": probe.get(("generated camera motion", "shortcut: latent -> pooled state change"))})
    tables = []
    verdict = ""
    ceiling_rows = [{"encoder": encoder_label(json.loads(c.read_text())["args"]), **row}
                    for c in ceilings for row in json.loads(c.read_text())["rows"]]
    # Runs summarised earlier keep their rows (runs/ does not outlive a machine); a rerun replaces its own.
    if out.exists():
        earlier = json.loads(out.read_text())
        names = {r["run"] for r in rows}
        kept = [r for r in earlier.get("rows", []) if r["run"] not in names and "(reference)" not in r["run"]]
        for r in kept:
            r.setdefault("generated_clips", 192)  # every run before the column existed used the default
            r.setdefault("conditioning", "AdaLN")  # and every run before the warp
            r.setdefault("encoder", PREVIOUS_ENCODER)  # and every run before the encoder column
        rows = kept + rows
        keys = {(r["encoder"], r["data"]) for r in ceiling_rows}
        ceiling_rows = [r for t in earlier.get("tables", []) for r in t["rows"]
                        if (r.get("encoder"), r.get("data")) not in keys] + ceiling_rows
    verdict = ceiling_verdict(rows, ceiling_rows)
    if ceiling_rows:
        tables.append({"title": "What the states carry: a supervised IDM-shaped network on each encoder's states "
                       "(held-out R²; no LAM on those states can carry more)", "rows": ceiling_rows})
    payload = {
        "title": "LAM recipe levers on cached encoder states (bundled encoder, not bundled)",
        "protocol": "the bundled model's frozen encoder; its states cached once for 192 generated clips (more where "
        "generated_clips says so; the training corpus's seeds), 96 + 96 unlabelled episodes of both worlds (the env video's seeds) and 32 clips of the real "
        "training video; a fresh IDM + world model + regulariser trained on them (batch 8 windows of 8 states; "
        "'pairs' = every target predicted from the one state before it, 32 pairs per step); scored by `lawm eval probe`'s "
        "held-out probe (64 generated clips, 32 + 32 probe episodes) and the one-step error with the clip's own latents "
        "against another clip's (64 held-out generated clips, full context); wall_min: wall time on the 2 shared cores "
        "(other runs and benches shared them). The bundled row is docs/results/probe.json (96 clips, 48 + 48 episodes). "
        "The ceiling table trains an IDM-shaped network WITH the true motion (MSE on standardised targets, batch 32) on "
        "the same training sets and scores it on the probe's held-out ones; 'raw pixel patches' feeds it each token's "
        "2x16x16x3 pixels instead of an encoder's state: what the frames themselves give this reader. Warp runs "
        "(world_model.warp): warp_l1_vs_copy is how much of the one-step L1 against copying the state the latent's "
        "warp alone removes on the 64 held-out generated clips, true_motion_warp_l1_vs_copy the same for the warp the "
        "true camera motion asks for, warp_r2_pan the R² of dx, dy from the warp's six parameters (least squares); "
        "'warp term' is train.lam.warp_weight, 'pixel warp term' the same L1 on each state's first frame (32 px) "
        "warped by the latent's warp against the next state's; 'motion prior' (train.lam.motion_prior_weight) an L1 between "
        "the warp's translation and the content's shift between the two states' first frames measured by phase "
        "correlation (training/motion.py) on the same unlabelled video; warp_shift_slope_x/y: least-squares slope of the "
        "warp's shift on the shift the true motion asks for (1: all the way), motion_on_warp_slope_x the reverse "
        "regression (1: a calibrated warp); 'IDM fusion correlation': the IDM also reads each cell's local correlation "
        "volume. encoder: whose frozen states the run trained on (earlier runs: the bundle before the 2026-12-02 rebuild)",
        "command": "PYTHONPATH=. python scripts/lam_recipe.py --context pairs|full --reg sparse|noisy|none [--var V] "
        "[--beta B] [--latent-dim Z] --steps N --out runs/recipe/NAME; --ceiling for the supervised table; "
        "--summarise runs/recipe/* --json docs/results/lam-recipe.json; ceilings: --ceiling [--pixels] [--fusion channels] "
        "[--generated N] [--sets generated] [--checkpoint CKPT --label NAME]; warp runs: --warp --warp-init 0.2 "
        "[--warp-loss W | --pixel-warp-loss W | --motion-prior W --frame-size 64] [--fusion correlation] --generated 768 "
        "--cache runs/cache/demo-768.pt [--encoder-label NAME]",
        "verdict": verdict,
        "rows": rows,
        "tables": tables,
    }
    out.write_text(json.dumps(payload, indent=1) + "\n")


def build_model(args: argparse.Namespace) -> LatentActionModel:
    """A fresh IDM + regulariser + world model as the run's options say, on the checkpoint's encoder
    and decoder."""
    base = load_lam(args.checkpoint)
    reg_update = {k: v for k, v in {"kind": args.reg, "var": args.var, "l1": args.l1, "beta": args.beta,
                                     "codebook_size": args.codebook}.items() if v is not None}
    cfg = base.cfg.model_copy(update={"regularizer": base.cfg.regularizer.model_copy(update=reg_update)})
    idm_update = {k: v for k, v in {"latent_dim": args.latent_dim, "fusion": args.fusion}.items() if v}
    if idm_update:
        cfg = cfg.model_copy(update={"idm": cfg.idm.model_copy(update=idm_update)})
    if args.warp:
        warp = {"warp": True, "warp_init": getattr(args, "warp_init", 0.0) or 0.0}
        cfg = cfg.model_copy(update={"world_model": cfg.world_model.model_copy(update=warp)})
    model = LatentActionModel(cfg)
    model.encoder.load_state_dict(base.encoder.state_dict())
    model.decoder.load_state_dict(base.decoder.state_dict())
    return model


def recheck_warp(run: Path) -> None:
    """Add `warp_check` to a finished warp run's result.json (runs that ended before it existed)."""
    result = json.loads((run / "result.json").read_text())
    ns = argparse.Namespace(**{k: result["args"].get(k) for k in (
        "checkpoint", "reg", "var", "l1", "beta", "codebook", "latent_dim", "fusion", "warp", "warp_init")})
    model = build_model(ns)
    model.load_state_dict(torch.load(run / "lam.pt"), strict=False)
    model.eval()
    held = heldout_generated(model.cfg.encoder.image_size, clips=result["args"]["probe_clips"])
    result["idm_vs_another_generated"]["warp"] = warp_check(model, encode_all(model, held.video), held.motion, held.valid)
    (run / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result["idm_vs_another_generated"]["warp"]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="models/demo")
    ap.add_argument("--out", default="runs/recipe/run")
    ap.add_argument("--context", choices=["full", "pairs", "mixed"], default="pairs")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reg", default="sparse", help="sparse|noisy|discrete|none")
    ap.add_argument("--var", type=float, default=None, help="the sparse regulariser's VCM variance weight λ_V")
    ap.add_argument("--l1", type=float, default=None)
    ap.add_argument("--beta", type=float, default=None)
    ap.add_argument("--codebook", type=int, default=None)
    ap.add_argument("--latent-dim", type=int, default=None)
    ap.add_argument("--fusion", choices=["tokens", "channels", "correlation"], default=None, help="how the IDM takes the pair")
    ap.add_argument("--warp", action="store_true", help="world_model.warp: the latent's affine map of the token grid")
    ap.add_argument("--warp-init", type=float, default=0.0,
                    help="std of the warp head's initial weights (0: zero, the identity whatever the latent)")
    ap.add_argument("--warp-loss", type=float, default=0.0,
                    help="weight of an L1 term on the warp alone: the latent's warp of s_t must explain s_{t+1}")
    ap.add_argument("--pixel-warp-loss", type=float, default=0.0,
                    help="weight of an L1 on each state's first frame warped by the latent's warp against the next one")
    ap.add_argument("--motion-prior", type=float, default=0.0,
                    help="weight of an L1 between the warp's translation and the frames' phase-correlation shift")
    ap.add_argument("--frame-size", type=int, default=32,
                    help="frames for --pixel-warp-loss and --motion-prior are cached at this size")
    ap.add_argument("--cache", type=Path, default=None,
                    help="a file of the training states: read when it exists, else written (same checkpoint and sizes)")
    ap.add_argument("--sets", nargs="*", default=None, help="ceiling only on these sets (generated, navigation, manipulation)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--idm-lr-mult", type=float, default=1.0)
    ap.add_argument("--modulation-lr-mult", type=float, default=10.0)
    ap.add_argument("--reg-warmup", type=float, default=0.3)
    ap.add_argument("--generated", type=int, default=192)
    ap.add_argument("--episodes", type=int, default=96)
    ap.add_argument("--real", type=int, default=32, help="clips per real training video")
    ap.add_argument("--probe-clips", type=int, default=64)
    ap.add_argument("--probe-episodes", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ceiling", action="store_true", help="only the supervised ceiling: what the states carry")
    ap.add_argument("--label", default=None, help="the encoder's name in the ceiling table (default: --checkpoint)")
    ap.add_argument("--encoder-label", default=None,
                    help="the encoder's name in the runs table (default: --checkpoint), e.g. which bundle it was")
    ap.add_argument("--pixels", action="store_true", help="ceiling on raw pixel patches instead of the encoder's states")
    ap.add_argument("--summarise", nargs="*", type=Path, help="finished run folders to tabulate into --json")
    ap.add_argument("--json", type=Path, default=Path("docs/results/lam-recipe.json"))
    ap.add_argument("--transfer", nargs="*", type=Path,
                    help="finished runs whose transfer to measure (motion-transfer protocol; the IDM and world model must fit --checkpoint's config)")
    ap.add_argument("--recheck-warp", nargs="*", type=Path, help="finished warp runs to add the warp check to")
    ap.add_argument("--warp-check", type=Path, default=None,
                    help="only print the warp check of this checkpoint or bundle (e.g. models/demo)")
    args = ap.parse_args()
    if args.warp_check is not None:
        model = load_lam(args.warp_check).eval()
        held = heldout_generated(model.cfg.encoder.image_size, clips=args.probe_clips)
        with torch.no_grad():
            print(json.dumps(warp_check(model, encode_all(model, held.video), held.motion, held.valid), indent=1))
        return
    if args.transfer:
        for run in args.transfer:
            measure_transfer(run)
        return
    if args.recheck_warp:
        for run in args.recheck_warp:
            recheck_warp(run)
        return
    if args.summarise is not None:
        runs = [r for r in args.summarise if (r / "result.json").exists()]
        ceilings = [r / "ceiling.json" for r in args.summarise if (r / "ceiling.json").exists()]
        summarise(runs, ceilings, args.json)
        return

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(args)
    cfg = model.cfg
    model.source = f"{args.checkpoint} encoder + {out}"  # type: ignore[attr-defined]

    if args.ceiling:
        if args.pixels:
            model.encoder = PixelTubelets(cfg.encoder.tubelet, cfg.encoder.patch, cfg.encoder.image_size)
            model.source = f"raw pixel patches ({model.encoder.dim} values per token)"  # type: ignore[attr-defined]
        rows = motion_ceiling(model, args.steps, args.probe_clips, args.probe_episodes, rng,
                              train_clips=args.generated, train_episodes=args.episodes, only=args.sets)
        (out / "ceiling.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str))
        return
    t0 = time.perf_counter()
    if args.cache is not None and args.cache.exists():
        pools = torch.load(args.cache)
    else:
        pools = training_states(model, args.generated, args.episodes, args.real,
                                frame_size=args.frame_size if args.pixel_warp_loss or args.motion_prior else 0)
        if args.cache is not None:
            torch.save(pools, args.cache)
    print(f"cached states in {time.perf_counter() - t0:.0f} s: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in pools.items()), flush=True)
    if (args.pixel_warp_loss or args.motion_prior) and not any(":frames" in k for k in pools):
        raise SystemExit(f"{args.cache} holds no frames: give --pixel-warp-loss/--motion-prior runs a cache file of their own")
    if args.motion_prior:  # each step's measured shift, in tokens (the frames are each state's first)
        for name in [n for n in pools if n.endswith(":frames")]:
            frames = pools[name]
            shifts = torch.cat([state_shifts(chunk, tubelet=1) for chunk in frames.split(64)])  # [C, S-1, 2] px
            pools[name.replace(":frames", ":shift")] = shifts * model.encoder.grid / frames.shape[-1]
    weights = {"generated": 0.35, "navigation": 0.2, "manipulation": 0.2, "real": 0.25}

    modules = [("idm", model.idm), ("regularizer", model.regularizer), ("world_model", model.world_model)]
    optim_cfg = OptimConfig(lr=args.lr, idm_lr_mult=args.idm_lr_mult, modulation_lr_mult=args.modulation_lr_mult)
    optimizers = build_optimizers(optim_cfg, modules)
    for _, m in modules:
        m.train()
    log = (out / "metrics.jsonl").open("w")
    t0 = time.perf_counter()
    for step in range(args.steps):
        set_lr(optimizers, lr_factor(step, args.steps, optim_cfg.warmup, optim_cfg.min_lr_ratio))
        states, extras = batch_of(pools, weights, args.batch, 8, rng)  # [B, 8, N, D]; frames, shifts
        pairs = args.context == "pairs" or (args.context == "mixed" and rng.random() < 0.5)
        if pairs:
            states, extras = as_pairs(states, args.batch * 4, rng, extras)
        res = model.lam_loss(states, regularizer_weight=regularizer_ramp(step, args.steps, args.reg_warmup),
                             warp_weight=args.warp_loss, motion_shift=extras.get("shift"), motion_weight=args.motion_prior)
        if args.pixel_warp_loss:
            video = extras["frames"].float() / 255  # [B, T, 3, h, w]
            affine = model.world_model.warp_modulation(res.latents)  # [B, T-1, 6]
            pixel_l1 = F.l1_loss(warp_frames(video[:, :-1], affine, model.encoder.grid), video[:, 1:])
            res = dataclasses.replace(res, loss=res.loss + args.pixel_warp_loss * pixel_l1)
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        res.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, m in modules for p in m.parameters()], 1.0)
        for o in optimizers:
            o.step()
        if (step + 1) % 50 == 0:
            row = {"step": step + 1, "loss": res.loss.item(), "prediction_l1": res.prediction_loss.item(),
                   "regularizer": res.regularizer_loss.item(), "pairs": pairs,
                   "z_batch_std": res.latents.detach().reshape(-1, res.latents.shape[-1]).std(0).mean().item(),
                   "s": time.perf_counter() - t0}
            log.write(json.dumps(row) + "\n")
            log.flush()
            if (step + 1) % 250 == 0:
                print(json.dumps(row), flush=True)
    model.eval()
    train_s = time.perf_counter() - t0
    held = heldout_generated(cfg.encoder.image_size, clips=args.probe_clips)
    held_states = encode_all(model, held.video)
    quick = idm_vs_another(model, held_states)
    if cfg.world_model.warp:
        quick["warp"] = warp_check(model, held_states, held.motion, held.valid)
    probe = probe_table(model, clips=args.probe_clips, episodes=args.probe_episodes)
    plain_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = {"args": plain_args, "train_s": train_s, "idm_vs_another_generated": quick,
              "probe": probe["rows"], "verdict": probe["verdict"]}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith(("encoder.", "decoder."))}, out / "lam.pt")
    print(json.dumps({"train_s": train_s, **quick}), flush=True)
    for r in probe["rows"]:
        print(f"{r['data']:26s} {r['features'][:50]:50s} {r['r2_mean'] if r['r2_mean'] is None else round(r['r2_mean'], 3)}")


if __name__ == "__main__":
    main()
