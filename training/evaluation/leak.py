""""Latents carry the action" and "no future leak" (PAPER-NOTES §3.1, §3.2, Table 1).

- `idm_prediction_error`: one-step, teacher-forced prediction error in representation space
  (L1) on held-out clips, with the IDM's latents vs with zero latents. The IDM sees the future
  state, so this is the upper bound the paper reports as capacity.
- `scene_cut_test`: swap the ends of two clips, so that the step after the cut shows another
  scene. A latent that merely encodes "motion" cannot explain the new scene, so the error at
  the cut should spike; no spike would mean the latent copies the next frame.
"""

from __future__ import annotations

from typing import Any

import torch

from training.evaluation.common import heldout_videos
from training.models.lam import LatentActionModel


@torch.no_grad()
def step_errors(model: LatentActionModel, video: torch.Tensor, latents_from: str = "idm") -> torch.Tensor:
    """Per-step one-step L1 errors `[C, S-1]` of clips `[C, T, 3, H, W]`.

    `latents_from`: "idm" (the clip's own latents), "zero", or "shuffled" (each clip gets the
    latents of another clip: same distribution, no information about this clip's motion).
    """
    states = model.encode(video)  # [C, S, N, D]
    latents = model.latent_actions(states)  # [C, S-1, Z]
    if latents_from == "zero":
        latents = torch.zeros_like(latents)
    elif latents_from == "shuffled":
        latents = latents.roll(1, dims=0)
    predictions = model.world_model(states[:, :-1], latents)  # [C, S-1, N, D]
    return (predictions - states[:, 1:]).abs().mean(dim=(-1, -2))


@torch.no_grad()
def idm_prediction_error(
    model: LatentActionModel, clips_per_file: int = 6, unconstrained: LatentActionModel | None = None
) -> dict[str, Any]:
    """IDM vs zero and shuffled latents; with `unconstrained` (a LAM trained without a regularizer
    on the same frozen encoder), also that model's IDM error: the capacity upper bound."""
    if unconstrained is not None and unconstrained.cfg.encoder != model.cfg.encoder:
        raise ValueError("the unconstrained baseline must share the model's encoder (same representation space)")
    rows = []
    for name, video in heldout_videos(model, clips_per_file).items():
        idm, zero, shuffled = (step_errors(model, video, m).mean().item() for m in ("idm", "zero", "shuffled"))
        row = {"video": name, "clips": len(video), "idm_l1": idm, "zero_l1": zero, "shuffled_l1": shuffled,
               "reduction": 1 - idm / zero, "reduction_vs_shuffled": 1 - idm / shuffled}
        if unconstrained is not None:
            row["unconstrained_l1"] = step_errors(unconstrained, video).mean().item()
        rows.append(row)
    idm, zero, shuffled = (sum(r[k] for r in rows) / len(rows) for k in ("idm_l1", "zero_l1", "shuffled_l1"))
    mean = {"video": "mean", "clips": sum(r["clips"] for r in rows), "idm_l1": idm, "zero_l1": zero, "shuffled_l1": shuffled,
            "reduction": 1 - idm / zero, "reduction_vs_shuffled": 1 - idm / shuffled}
    if unconstrained is not None:
        mean["unconstrained_l1"] = sum(r["unconstrained_l1"] for r in rows) / len(rows)
    rows.append(mean)
    reduction = 1 - idm / zero
    return {
        "title": "Latents carry the action: IDM one-step prediction error vs a zero latent",
        "verdict": f"IDM latents lower the error by {reduction:.1%} vs zero latents (bar: at least 20%): "
        f"{'pass' if reduction >= 0.2 else 'FAIL'}; by {1 - idm / shuffled:.1%} vs another clip's latents",
        "protocol": "one-step teacher-forced L1 in representation space on held-out real clips: carphone_pristine "
        "(never trained on) and the last 30% of bikes, 8-frame clips (2 s at 4 fps, 4 latent steps); 'shuffled' gives "
        "each clip another clip's latents (same distribution, no information about this clip's motion)",
        "checkpoint": getattr(model, "source", None),
        "rows": rows,
        "idm_l1": idm,
        "zero_l1": zero,
        "shuffled_l1": shuffled,
        "reduction": reduction,
        "reduction_vs_shuffled": 1 - idm / shuffled,
    }


@torch.no_grad()
def scene_cut_test(model: LatentActionModel, clips_per_file: int = 6) -> dict[str, Any]:
    """Pairs each held-out clip of one video with one of another; the second half is swapped in."""
    videos = list(heldout_videos(model, clips_per_file).items())
    if len(videos) < 2:
        raise ValueError("the scene-cut test needs held-out clips from two different videos")
    rows = []
    ratios_num, ratios_den = [], []
    for i, (name_a, a) in enumerate(videos):
        name_b, b = videos[(i + 1) % len(videos)]
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
        frames = a.shape[1]
        cut_frame = frames // 2  # the first frame of the swapped-in end
        cut = torch.cat([a[:, :cut_frame], b[:, cut_frame:]], dim=1)
        step = cut_frame // model.cfg.encoder.tubelet  # state index of the first swapped state
        error_index = step - 1  # prediction t -> t+1 lands on state `step`
        without = step_errors(model, a)[:, error_index].mean().item()
        with_cut = step_errors(model, cut)[:, error_index].mean().item()
        ratios_num.append(with_cut)
        ratios_den.append(without)
        rows.append({"clips": f"{name_a} <- {name_b}", "pairs": n, "without_cut": without, "with_cut": with_cut, "ratio": with_cut / without})
    without, with_cut = sum(ratios_den) / len(ratios_den), sum(ratios_num) / len(ratios_num)
    rows.append({"clips": "mean", "pairs": sum(r["pairs"] for r in rows), "without_cut": without, "with_cut": with_cut, "ratio": with_cut / without})
    ratio = with_cut / without
    return {
        "title": "No future leak: scene-cut test (paper Table 1)",
        "verdict": f"the cut raises the error x{ratio:.2f} (bar: at least x1.5; paper x2.0-2.5): {'pass' if ratio >= 1.5 else 'FAIL'}",
        "protocol": "ends of two held-out clips swapped at the middle frame; one-step L1 at the first swapped state, IDM latents",
        "checkpoint": getattr(model, "source", None),
        "rows": rows,
        "without_cut": without,
        "with_cut": with_cut,
        "ratio": with_cut / without,
    }
