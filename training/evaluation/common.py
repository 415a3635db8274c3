"""Loading a model for evaluation, and the held-out clips every protocol uses."""

from __future__ import annotations

from pathlib import Path

import torch

from training.checkpoint import CheckpointError, load_checkpoint
from training.config import DataConfig
from training.data.corpus import EVAL_FRAMES, sample_refs
from training.data.dataset import fixed_clips
from training.models.lam import LatentActionModel


def load_lam(checkpoint: Path | str) -> LatentActionModel:
    """A verified checkpoint or bundled model, in eval mode on the CPU, weights as float32."""
    ckpt = load_checkpoint(checkpoint)
    model = LatentActionModel(ckpt.model_config)
    if "controller_config" in ckpt.manifest:
        from training.models.controller import ControllerConfig, build_controller

        cfg = ControllerConfig.model_validate(ckpt.manifest["controller_config"])
        model.attach_controller(build_controller(cfg, model.latent_dim, model.encoder.dim, model.encoder.grid))
    ckpt.load_into(model)
    model.eval()
    model.source = str(checkpoint)  # type: ignore[attr-defined]  # for reports
    return model


def require_controller(model: LatentActionModel) -> torch.nn.Module:
    if model.controller is None:
        raise CheckpointError(
            f"{getattr(model, 'source', 'this checkpoint')} has no controller: train one with "
            "`lawm train controller --checkpoint CKPT --env manipulation|navigation`"
        )
    return model.controller


def heldout_videos(model: LatentActionModel, clips_per_file: int = 6, data: DataConfig | None = None) -> dict[str, torch.Tensor]:
    """Held-out clips of the real sample videos (8 frames = 2 s at 4 fps), per video.

    Returns {video name: uint8 `[C, T, 3, H, W]`}.
    """
    cfg = data or DataConfig(size=model.cfg.encoder.image_size)
    out: dict[str, torch.Tensor] = {}
    for ref in sample_refs(cfg, "heldout"):
        clips = fixed_clips([ref], frames=EVAL_FRAMES, fps=cfg.fps, size=cfg.size, clips_per_file=clips_per_file)
        out[Path(ref.path).stem] = torch.stack([c["video"] for c in clips])
    return out
