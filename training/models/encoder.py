"""Frame-causal video encoders f_θ: video `[B, T, 3, H, W]` -> states `[B, T/2, N, D]`.

A state is the token grid of one 2-frame tubelet. Both sources encode every tubelet on its own
(PAPER-NOTES §1.1 option b), so the state at step t can never depend on later frames.

- `TinyEncoder`: a small ViT trained here (as an autoencoder with the decoder), so that
  everything runs on a CPU.
- `VJepa2Encoder`: the frozen V-JEPA 2 encoder, loaded through `transformers` from a local
  snapshot directory (never downloaded).

Pixels enter as uint8 or float in [0, 1]; ImageNet normalisation happens inside the encoder so
callers (exporters, service) never repeat it. States are layer-normalised without affine
parameters, as V-JEPA 2-AC does (`normalize_reps`), which keeps the L1 losses on one scale.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training.config import EncoderConfig
from training.models.modules import Block, grid_positions, init_weights, rope_tables

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit_float(video: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1]."""
    if video.dtype == torch.uint8:
        return video.float() / 255.0
    return video.float()


class FrameCausalEncoder(nn.Module):
    """Interface: each tubelet of `tubelet` frames is encoded independently."""

    tubelet: int
    dim: int
    grid: int

    @property
    def tokens(self) -> int:
        return self.grid * self.grid

    @property
    def compute_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def normalize(self, video: torch.Tensor) -> torch.Tensor:
        # The statistics are float32 constants, not buffers: a half-precision copy of the encoder
        # (exported for TensorRT) would round them, shifting every pixel alike (~0.2 error in the states).
        mean = torch.tensor(IMAGENET_MEAN, device=video.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=video.device).view(1, 1, 3, 1, 1)
        return (to_unit_float(video) - mean) / std

    def encode_tubelets(self, tubelets: torch.Tensor) -> torch.Tensor:
        """`[M, tubelet, 3, H, W]` normalised pixels -> `[M, N, D]` states."""
        raise NotImplementedError

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = video.shape  # [B, T, 3, H, W]
        if t % self.tubelet:
            raise ValueError(f"clip has {t} frames; the encoder needs a multiple of the tubelet size {self.tubelet}")
        steps = t // self.tubelet
        # Normalised pixels take the weights' dtype (a no-op in float32; lets a half-precision copy run)
        x = self.normalize(video).to(self.compute_dtype).reshape(b * steps, self.tubelet, c, h, w)  # [B*S, 2, 3, H, W]
        states = self.encode_tubelets(x)  # [B*S, N, D]
        states = F.layer_norm(states, (states.shape[-1],))
        return states.reshape(b, steps, states.shape[1], states.shape[2])  # [B, S, N, D]


class TinyEncoder(FrameCausalEncoder):
    """Small ViT over one tubelet: 3-D patch embedding, 2-D RoPE, pre-norm blocks."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tubelet, self.dim, self.grid = cfg.tubelet, cfg.dim, cfg.grid
        self.patch_embed = nn.Conv3d(3, cfg.dim, kernel_size=(cfg.tubelet, cfg.patch, cfg.patch), stride=(cfg.tubelet, cfg.patch, cfg.patch))
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, rope_axes=2) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        init_weights(self)
        positions = grid_positions(1, cfg.grid, cfg.grid)[:, 1:]  # [N, 2] (row, col)
        cos, sin = rope_tables(positions, cfg.dim // cfg.heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def encode_tubelets(self, tubelets: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(tubelets.transpose(1, 2))  # [M, D, 1, g, g]
        x = x.flatten(2).transpose(1, 2)  # [M, N, D]
        rope = (self.rope_cos, self.rope_sin)
        for block in self.blocks:
            x = block(x, rope=rope)
        return self.norm(x)


class VJepa2Encoder(FrameCausalEncoder):
    """Frozen V-JEPA 2 encoder from a local `transformers` snapshot directory.

    Each tubelet is fed as a 2-frame clip, so the model's own (bidirectional) attention only
    ever sees one latent step: frame-causal by construction.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        try:
            from transformers import VJEPA2Model
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("encoder.source=vjepa2 needs transformers>=4.53: pip install 'lawm[vjepa2]'") from e
        path = Path(cfg.vjepa2_path or "")
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"V-JEPA 2 snapshot not found at '{path}': give encoder.vjepa2_path a local directory holding "
                "config.json and the weights (lawm never downloads models)"
            )
        self.cfg = cfg
        self.model = VJEPA2Model.from_pretrained(str(path), local_files_only=True)
        self.model.requires_grad_(False).eval()
        mcfg = self.model.config
        if mcfg.tubelet_size != cfg.tubelet:
            raise ValueError(f"V-JEPA 2 snapshot has tubelet_size {mcfg.tubelet_size}, config says {cfg.tubelet}")
        if mcfg.patch_size != cfg.patch:
            raise ValueError(f"V-JEPA 2 snapshot has patch_size {mcfg.patch_size}: set model.encoder.patch={mcfg.patch_size}")
        if mcfg.hidden_size != cfg.dim:
            raise ValueError(f"V-JEPA 2 snapshot has hidden_size {mcfg.hidden_size}: set model.encoder.dim={mcfg.hidden_size}")
        self.tubelet, self.dim, self.grid = mcfg.tubelet_size, mcfg.hidden_size, cfg.image_size // mcfg.patch_size

    def train(self, mode: bool = True) -> VJepa2Encoder:
        super().train(mode)
        self.model.eval()  # always frozen
        return self

    @torch.no_grad()
    def encode_tubelets(self, tubelets: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values_videos=tubelets, skip_predictor=True)
        return out.last_hidden_state  # [M, N, D]


def build_encoder(cfg: EncoderConfig) -> FrameCausalEncoder:
    if cfg.source == "vjepa2":
        return VJepa2Encoder(cfg)
    return TinyEncoder(cfg)
