"""The global motion of frames, measured without a model: phase correlation.

Used by the evaluation (does a render move like the clip whose latents drove it?) and, in the LAM
stage, as an unsupervised motion prior (`train.lam.motion_prior_weight`): the content's global shift
between consecutive states, measured on the same unlabelled video, is what the latent's warp of the
token grid should apply.
"""

from __future__ import annotations

import torch


def phase_shifts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The content's displacement (dx, dy) in pixels from each frame of `a` to the same frame of `b`.

    a, b `[M, 3, H, W]` (any scale or dtype) -> `[M, 2]` in a's floating dtype (float32 for integer
    frames). Phase correlation on grey levels under a Hann window, refined to sub-pixel by a parabola
    through the peak and its neighbours, wrapped to [-W/2, W/2) and [-H/2, H/2). Positive dx: the
    content moved right (the generator's sign)."""
    dtype = a.dtype if a.is_floating_point() else torch.float32
    grey_a, grey_b = a.to(dtype).mean(1), b.to(dtype).mean(1)  # [M, H, W]
    m, h, w = grey_a.shape
    hann = {n: torch.hann_window(n, periodic=False, dtype=dtype, device=a.device) for n in (h, w)}
    window = torch.outer(hann[h], hann[w])  # [H, W]
    fa = torch.fft.fft2((grey_a - grey_a.mean((1, 2), keepdim=True)) * window)
    fb = torch.fft.fft2((grey_b - grey_b.mean((1, 2), keepdim=True)) * window)
    cross = fb * fa.conj()
    surface = torch.fft.ifft2(cross / (cross.abs() + 1e-12)).real  # [M, H, W]: peaks at b's offset from a
    peak = surface.flatten(1).argmax(1)  # [M]
    py, px = peak // w, peak % w
    rows = torch.arange(m, device=a.device)

    def refine(minus: torch.Tensor, centre: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
        denominator = minus - 2 * centre + plus
        safe = torch.where(denominator.abs() < 1e-12, torch.ones_like(denominator), denominator)
        return torch.where(denominator.abs() < 1e-12, torch.zeros_like(denominator), 0.5 * (minus - plus) / safe)

    centre = surface[rows, py, px]
    dy = py + refine(surface[rows, (py - 1) % h, px], centre, surface[rows, (py + 1) % h, px])
    dx = px + refine(surface[rows, py, (px - 1) % w], centre, surface[rows, py, (px + 1) % w])
    return torch.stack([(dx + w / 2) % w - w / 2, (dy + h / 2) % h - h / 2], dim=-1)  # [M, 2]


def state_shifts(video: torch.Tensor, tubelet: int) -> torch.Tensor:
    """Measured motion per latent step: `[B, T, 3, H, W]` -> `[B, S-1, 2]` (pixels), between the first
    frames of consecutive states (the span a latent step covers, and the generator's step motion)."""
    firsts = video[:, ::tubelet]  # [B, S, 3, H, W]
    b, s = firsts.shape[:2]
    shifts = phase_shifts(firsts[:, :-1].flatten(0, 1), firsts[:, 1:].flatten(0, 1))  # [B*(S-1), 2]
    return shifts.reshape(b, s - 1, 2)
