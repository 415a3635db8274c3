"""A self-supervised shaping of state distances: within a clip, later is farther.

A planner scores a candidate by the distance between its predicted final state and the goal's
state, so the encoder's distances must grow with how far the scene has moved. An autoencoder
alone does not give that: two views a metre apart are as far from each other as two unrelated
photos (measured: a worse planning cost than raw pixels). Along any video the camera or the scene
moves on, so states further apart in time should be further apart in space. For every anchor
step i and two other steps j, k of the same clip with |i - j| < |i - k|, the loss asks
log d(s_i, s_j) < log d(s_i, s_k) (a soft ranking, scale-free, so it never fights the
reconstruction term over the states' norm). Nothing but frame order is used: no labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Sharpness of the soft ranking and the log-distance margin it asks for.
SHARPNESS = 4.0
MARGIN = 0.125


def temporal_ranking_loss(states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """states `[B, S, N, D]` -> (loss, share of triplets ranked correctly), both scalars.

    d(s_i, s_j) is the L2 distance of the flattened token grids, the planner's own cost.
    """
    b, s = states.shape[:2]
    flat = states.reshape(b, s, -1).float()  # [B, S, N*D]
    dist = torch.cdist(flat, flat).clamp_min(1e-6).log()  # [B, S, S]
    steps = torch.arange(s, device=states.device)
    gap = (steps[:, None] - steps[None, :]).abs()  # [S, S]
    # triplets (i, j, k): j nearer to i in time than k, and j != i
    closer = (gap[:, :, None] < gap[:, None, :]) & (gap[:, :, None] > 0)  # [S(i), S(j), S(k)]
    diff = dist[:, :, :, None] - dist[:, :, None, :]  # [B, i, j, k]: log d_ij - log d_ik
    chosen = diff[:, closer]  # [B, triplets]
    loss = F.softplus(SHARPNESS * (chosen + MARGIN)).mean()
    accuracy = (chosen < 0).float().mean()
    return loss, accuracy
