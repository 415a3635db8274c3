"""Pixel metrics of decoded frames against real ones, for the transfer evaluation and the service's
transfer jobs alike (LPIPS is left out: it needs weights lawm never downloads)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of float images in [0, 1]."""
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over frames `[T, 3, H, W]` in [0, 1]."""
    return float(np.mean([structural_similarity(x, y, channel_axis=0, data_range=1.0) for x, y in zip(a, b, strict=True)]))
