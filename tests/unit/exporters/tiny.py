"""Tiny checkpoints for the exporter tests: real safetensors + manifest, weights from a fixed seed."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import tiny_config_dict
from training.checkpoint import save_checkpoint
from training.config import ModelConfig, config_from_dict
from training.models.controller import ControllerConfig, build_controller
from training.models.lam import LatentActionModel

ACTION_DIM = 3


def tiny_model_config(**overrides: object) -> ModelConfig:
    return config_from_dict(tiny_config_dict("runs", ["samples"], **overrides)).model


def tiny_model(controller: str | None = None, seed: int = 0, **overrides: object) -> LatentActionModel:
    """A tiny LAM whose every weight is perturbed (so no block is the zero-initialised identity)."""
    torch.manual_seed(seed)
    model = LatentActionModel(tiny_model_config(**overrides))
    if controller is not None:
        cfg = ControllerConfig(kind=controller, action_dim=ACTION_DIM, dim=32, heads=2, depth=1)
        model.attach_controller(build_controller(cfg, model.latent_dim, model.encoder.dim, model.encoder.grid))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def save_tiny(directory: Path, model: LatentActionModel) -> Path:
    extra = {}
    if model.controller is not None:
        extra["controller_config"] = model.controller.cfg.model_dump(mode="json")
    return save_checkpoint(
        directory, model, components=model.saved_components(), stage="bundle", step=1, model_config=model.cfg,
        trained=list(model.saved_components()), extra=extra,
    )


def tiny_checkpoint(directory: Path, controller: str | None = "state", seed: int = 0, **overrides: object) -> Path:
    return save_tiny(directory, tiny_model(controller, seed, **overrides))
