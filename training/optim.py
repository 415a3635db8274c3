"""Optimisers and the learning-rate schedule.

The paper's recipe (PAPER-NOTES §2): Muon for matrix parameters plus AdamW for the rest,
10% linear warm-up then cosine, weight decay 0.04. Muon takes the 2-D weights of hidden layers;
AdamW takes biases, norms, embeddings, codebooks and the input/output projections (the usual
split: Muon's orthogonalised update suits square-ish hidden matrices, not read-in/read-out).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from training.config import OptimConfig

ADAMW_ONLY = ("proj_in", "proj_out", "head", "patch_embed", "codebook", "step_embed", "query", "embed", "warp")


def split_parameters(modules: Iterable[tuple[str, nn.Module]]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(matrix parameters for Muon, everything else for AdamW)."""
    matrices, rest = [], []
    for prefix, module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            full = f"{prefix}.{name}"
            if p.ndim == 2 and not any(part in full for part in ADAMW_ONLY):
                matrices.append(p)
            else:
                rest.append(p)
    return matrices, rest


def build_optimizers(cfg: OptimConfig, modules: list[tuple[str, nn.Module]]) -> list[torch.optim.Optimizer]:
    if cfg.optimizer == "muon":
        matrices, rest = split_parameters(modules)
        optimizers: list[torch.optim.Optimizer] = []
        if matrices:
            optimizers.append(
                torch.optim.Muon(matrices, lr=cfg.muon_lr, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw")
            )
        if rest:
            optimizers.append(torch.optim.AdamW(rest, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas))
        return optimizers
    groups: dict[str, list[nn.Parameter]] = {"rest": [], "modulation": []}
    for prefix, module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad:
                group = "modulation" if "modulation" in name else prefix if prefix == "idm" else "rest"
                groups.setdefault(group, []).append(p)
    scale = {"modulation": cfg.modulation_lr_mult, "idm": cfg.idm_lr_mult}
    param_groups = [
        {"params": params, "lr": cfg.lr * scale.get(name, 1.0), "name": name} for name, params in groups.items() if params
    ]
    return [torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)]


def lr_factor(step: int, total: int, warmup: float, min_ratio: float) -> float:
    """Linear warm-up over `warmup·total` steps, then cosine from 1 to `min_ratio`."""
    warm = max(1, int(round(warmup * total)))
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizers: list[torch.optim.Optimizer], factor: float, frozen: tuple[str, ...] = ()) -> None:
    """Scale every group's base rate by `factor`; groups named in `frozen` get rate 0."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = 0.0 if group.get("name") in frozen else group["base_lr"] * factor
