"""Information regularizers L_z on latent actions (PAPER-NOTES §1.4).

Each turns the IDM's raw output into the latent z fed to the world model and returns its loss:

- `SparseRegularizer`: energy E(z) = λ_l2·max(√D − ‖z‖₂², 0) + λ_l1·‖z‖₁ (the squared norm against
  √D, as printed) plus VCM: variance λ_V·mean_d max(1 − std_d, 0), covariance
  λ_C·Σ_{i≠j} Cov_ij² / (D(D−1)), mean λ_M·|mean(Z)| (the paper prints the signed mean; a signed
  term would push latents to −∞, so we take its absolute value). Capacity knob: λ_l1.
- `NoisyRegularizer`: the IDM outputs (μ, log σ²); z = μ + σ·ε while training, μ at evaluation;
  loss β·KL(q ‖ N(0, I)). Capacity knob: β.
- `VectorQuantizer`: nearest code of a codebook, straight-through gradient, codebook loss +
  0.25·commitment (van den Oord et al.), and a reset of dead codes. Capacity knob: codebook size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from training.config import RegularizerConfig


@dataclass
class RegularizerOutput:
    z: torch.Tensor  # [..., Z] the latent the world model is conditioned on
    loss: torch.Tensor  # scalar
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars for logging


def energy(z: torch.Tensor, l2: float, l1: float) -> torch.Tensor:
    """Per-latent energy `[N]` of latents `[N, D]`."""
    d = z.shape[-1]
    sq_norm = z.pow(2).sum(-1)
    return l2 * F.relu(math.sqrt(d) - sq_norm) + l1 * z.abs().sum(-1)


def vcm(z: torch.Tensor, var: float, cov: float, mean: float, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """Variance, covariance and mean terms over a batch of latents `[N, D]`."""
    n, d = z.shape
    std = torch.sqrt(z.var(dim=0) + eps)  # [D], unbiased as in VICReg
    centred = z - z.mean(dim=0, keepdim=True)
    covariance = centred.T @ centred / max(n - 1, 1)  # [D, D]
    off_diagonal = covariance - torch.diag(torch.diagonal(covariance))
    return {
        "variance": var * F.relu(1 - std).mean(),
        "covariance": cov * off_diagonal.pow(2).sum() / (d * (d - 1)),
        "mean": mean * z.mean().abs(),
    }


class Regularizer(nn.Module):
    raw_dim: int  # what the IDM must output

    def forward(self, raw: torch.Tensor) -> RegularizerOutput:  # raw [..., raw_dim]
        raise NotImplementedError

    def latent(self, raw: torch.Tensor) -> torch.Tensor:
        """Deterministic latent for inference (mean of the noisy posterior, quantised code)."""
        raise NotImplementedError


class SparseRegularizer(Regularizer):
    def __init__(self, cfg: RegularizerConfig, latent_dim: int) -> None:
        super().__init__()
        self.cfg, self.raw_dim = cfg, latent_dim

    def forward(self, raw: torch.Tensor) -> RegularizerOutput:
        flat = raw.reshape(-1, raw.shape[-1])  # [N, D]
        e = energy(flat, self.cfg.l2, self.cfg.l1).mean()
        terms = vcm(flat, self.cfg.var, self.cfg.cov, self.cfg.mean)
        loss = e + sum(terms.values())
        stats = {"energy": e.detach(), **{k: v.detach() for k, v in terms.items()}}
        stats["z_l1"] = flat.abs().sum(-1).mean().detach()
        return RegularizerOutput(raw, loss, stats)

    def latent(self, raw: torch.Tensor) -> torch.Tensor:
        return raw


class NoisyRegularizer(Regularizer):
    def __init__(self, cfg: RegularizerConfig, latent_dim: int) -> None:
        super().__init__()
        self.cfg, self.raw_dim, self.latent_dim = cfg, 2 * latent_dim, latent_dim

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(μ, σ²) ‖ N(0, I)) summed over the latent dimension: `[..., D]` -> `[...]`."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)

    def split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = raw.chunk(2, dim=-1)
        return mu, logvar.clamp(-20.0, 10.0)

    def forward(self, raw: torch.Tensor) -> RegularizerOutput:
        mu, logvar = self.split(raw)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        kl = self.kl(mu, logvar).mean()
        return RegularizerOutput(z, self.cfg.beta * kl, {"kl": kl.detach()})

    def latent(self, raw: torch.Tensor) -> torch.Tensor:
        return self.split(raw)[0]


class VectorQuantizer(Regularizer):
    def __init__(self, cfg: RegularizerConfig, latent_dim: int) -> None:
        super().__init__()
        self.cfg, self.raw_dim = cfg, latent_dim
        self.codebook = nn.Parameter(torch.randn(cfg.codebook_size, latent_dim) / math.sqrt(latent_dim))
        self.register_buffer("usage", torch.zeros(cfg.codebook_size))  # assignments since the last reset

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Code index `[N]` of each latent `[N, D]`."""
        distances = (
            flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.pow(2).sum(-1)[None]
        )  # [N, K]
        return distances.argmin(-1)

    def forward(self, raw: torch.Tensor) -> RegularizerOutput:
        flat = raw.reshape(-1, raw.shape[-1])  # [N, D]
        index = self.nearest(flat)
        codes = self.codebook[index]  # [N, D]
        codebook_loss = F.mse_loss(codes, flat.detach())
        commitment = F.mse_loss(flat, codes.detach())
        quantised = flat + (codes - flat).detach()  # straight-through: forward = code, backward = identity
        if self.training:
            self.usage += torch.bincount(index, minlength=self.codebook.shape[0]).to(self.usage)
        used = (torch.bincount(index, minlength=self.codebook.shape[0]) > 0).float().mean()
        loss = codebook_loss + self.cfg.commitment * commitment
        stats = {"codebook": codebook_loss.detach(), "commitment": commitment.detach(), "codes_used": used}
        return RegularizerOutput(quantised.reshape(raw.shape), loss, stats)

    def latent(self, raw: torch.Tensor) -> torch.Tensor:
        flat = raw.reshape(-1, raw.shape[-1])
        return self.codebook[self.nearest(flat)].reshape(raw.shape)

    @torch.no_grad()
    def reset_dead_codes(self, samples: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Replace codes unused since the last reset with random recent IDM outputs `[N, D]`.

        Under DDP the usage is summed over ranks and rank 0's new codebook is broadcast, so every
        rank keeps identical weights. Returns the number of codes reset.
        """
        usage = self.usage.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(usage)
        dead = (usage < 1).nonzero().flatten()
        if len(dead):
            pick = torch.randint(0, samples.shape[0], (len(dead),), generator=generator, device=samples.device)
            self.codebook.data[dead] = samples[pick].to(self.codebook)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(self.codebook.data, src=0)
        self.usage.zero_()
        return len(dead)


class Unconstrained(Regularizer):
    """No regularizer: the upper-capacity baseline of the paper's Fig. 4 (z may copy the future)."""

    def __init__(self, cfg: RegularizerConfig, latent_dim: int) -> None:
        super().__init__()
        self.cfg, self.raw_dim = cfg, latent_dim

    def forward(self, raw: torch.Tensor) -> RegularizerOutput:
        return RegularizerOutput(raw, raw.new_zeros(()), {})

    def latent(self, raw: torch.Tensor) -> torch.Tensor:
        return raw


def build_regularizer(cfg: RegularizerConfig, latent_dim: int) -> Regularizer:
    kinds = {"sparse": SparseRegularizer, "noisy": NoisyRegularizer, "discrete": VectorQuantizer, "none": Unconstrained}
    return kinds[cfg.kind](cfg, latent_dim)
