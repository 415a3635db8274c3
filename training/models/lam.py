"""The latent action model: encoder f_θ, IDM g_φ, regularizer L_z, world model p_ψ, decoder.

`LatentActionModel` only wires the parts together; each lives in its own file. The training
loss of the LAM stage (PAPER-NOTES §1.2):  L = ‖s_{t+1} − p_ψ(s_{0:t}, z_t)‖₁ + L_z(z_t),
with z_t = g_φ(s_t, s_{t+1}) and the encoder frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig
from training.models.decoder import FrameCausalDecoder
from training.models.encoder import FrameCausalEncoder, build_encoder
from training.models.idm import InverseDynamicsModel
from training.models.regularizers import Regularizer, build_regularizer
from training.models.world_model import WorldModel, teacher_forced_loss

# Components and the checkpoint key prefixes they own; the tiny encoder is trained here, a
# vjepa2 encoder comes from its own snapshot and is never saved in our checkpoints.
COMPONENTS = ("encoder", "idm", "regularizer", "world_model", "decoder")


def one_step_pairs(states: torch.Tensor) -> torch.Tensor:
    """Clips of states `[B, T, ...]` -> their consecutive pairs `[B*(T-1), 2, ...]`, clip by clip
    (pair `b*(T-1) + t` is `(states[b, t], states[b, t+1])`)."""
    b, t = states.shape[:2]
    if t < 2:
        raise ValueError(f"one-step pairs need clips of at least 2 states, got {t}")
    pairs = torch.stack([states[:, :-1], states[:, 1:]], dim=2)  # [B, T-1, 2, ...]
    return pairs.reshape(b * (t - 1), 2, *states.shape[2:])


def motion_prior_l1(affine: torch.Tensor, motion: torch.Tensor, grid: int) -> torch.Tensor:
    """How far a warp `[B, T, 6]` (`warp_tokens`' (a, b, c, d, tx, ty)) is from undoing the measured
    motion `[B, T, 2 | 3]`.

    The warp reads each output cell from where its content was. A shift (dx, dy) (tokens) alone asks
    for the translation (-dx, -dy): the L1 of the translation. With a third column, the log zoom σ
    (content at p lies at e^σ·(p + shift): `training.motion.phase_similarity`), the warp must also
    scale by e^-σ: a = d = e^-σ - 1, and the L1 of the scale is added where it lands, averaged over
    the grid's cells (|Δa·x|: a zoom moves the grid's edge, not its centre), in tokens like the
    translation's. The two are summed, not measured as one displacement field: in a field's L1 the
    larger translation error sets the sign at every cell and the scale's gradient cancels across
    the grid (measured: the warp's scale then ignored the zoom, correlation 0.07). Rotation and shear
    are not measured, so left free."""
    translation = F.l1_loss(affine[..., 4:], -motion[..., :2])
    if motion.shape[-1] == 2:
        return translation
    if motion.shape[-1] != 3:
        raise ValueError(f"the measured motion has 2 (shift) or 3 (shift, log zoom) columns, not {motion.shape[-1]}")
    axis = torch.arange(grid, device=affine.device, dtype=affine.dtype) - (grid - 1) / 2  # [g] cell centres, tokens
    reach = axis.abs().mean()  # how far a unit of scale moves the average cell
    scale = torch.exp(-motion[..., 2:3]) - 1  # [B, T, 1]: target a = d
    return translation + reach * F.l1_loss(affine[..., [0, 3]], scale.expand(*scale.shape[:-1], 2))


@dataclass
class LamOutput:
    loss: torch.Tensor
    prediction_loss: torch.Tensor
    regularizer_loss: torch.Tensor
    latents: torch.Tensor  # [B, T-1, Z]
    stats: dict[str, torch.Tensor]


class LatentActionModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder: FrameCausalEncoder = build_encoder(cfg.encoder)
        d, g = self.encoder.dim, self.encoder.grid
        self.regularizer: Regularizer = build_regularizer(cfg.regularizer, cfg.idm.latent_dim)
        self.idm = InverseDynamicsModel(cfg.idm, d, g, self.regularizer.raw_dim)
        self.world_model = WorldModel(cfg.world_model, d, g, cfg.idm.latent_dim)
        self.decoder = FrameCausalDecoder(
            cfg.decoder, d, g, cfg.encoder.patch, cfg.encoder.tubelet, cfg.world_model.max_steps
        )
        self.controller: nn.Module | None = None  # trained later, on a little labelled data

    @property
    def latent_dim(self) -> int:
        return self.cfg.idm.latent_dim

    def saved_components(self) -> tuple[str, ...]:
        parts = COMPONENTS if self.cfg.encoder.source == "tiny" else COMPONENTS[1:]
        return (*parts, "controller") if self.controller is not None else parts

    def attach_controller(self, controller: nn.Module) -> None:
        """Add a trained controller (real action -> latent); saved with the model from then on."""
        self.controller = controller

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video `[B, T, 3, H, W]` -> frozen states `[B, T/2, N, D]`."""
        return self.encoder(video)

    def latent_actions(self, states: torch.Tensor) -> torch.Tensor:
        """Deterministic latents for inference: states `[B, T, N, D]` -> `[B, T-1, Z]`."""
        return self.regularizer.latent(self.idm(states))

    def lam_loss(
        self,
        states: torch.Tensor,
        regularizer_weight: float = 1.0,
        warp_weight: float = 0.0,
        motion_shift: torch.Tensor | None = None,
        motion_weight: float = 0.0,
    ) -> LamOutput:
        """Teacher-forced LAM loss on frozen states `[B, T, N, D]`. With a warping world model, plus
        `warp_weight` times the L1 of the latent's warp of each state alone against the next state,
        and `motion_weight` times `motion_prior_l1` of the warp against `motion_shift` `[B, T-1, 2 | 3]`
        (the content's measured motion per step: a shift in tokens, and with a third column its log
        zoom)."""
        reg = self.regularizer(self.idm(states))  # z [B, T-1, Z]
        prediction_loss, _ = teacher_forced_loss(self.world_model, states, reg.z)
        total = prediction_loss + regularizer_weight * reg.loss
        stats = dict(reg.stats)
        if (warp_weight or motion_weight) and self.world_model.warp_modulation is None:
            raise ValueError("warp_weight and motion_weight each needs a warping world model (model.world_model.warp: true)")
        if warp_weight:
            warp_l1 = F.l1_loss(self.world_model.base(states[:, :-1], reg.z), states[:, 1:])
            total = total + warp_weight * warp_l1
            stats["warp_l1"] = warp_l1.detach()
        if motion_weight:
            if motion_shift is None:
                raise ValueError("motion_weight needs the measured motion_shift of every step")
            affine = self.world_model.warp_modulation(reg.z)  # [B, T-1, 6] (a, b, c, d, tx, ty), tokens
            prior_l1 = motion_prior_l1(affine, motion_shift, self.world_model.grid)
            total = total + motion_weight * prior_l1
            stats["motion_prior_l1"] = prior_l1.detach()
        return LamOutput(total, prediction_loss, reg.loss, reg.z, stats)
