"""The real photographs and textures scikit-image ships, loaded once per process: the backgrounds and
objects of the procedural generator, the ground and table of the environments, and the fallback
real pixels of the exporters' parity checks.

Nothing is downloaded: a photo this scikit-image install cannot load offline is left out of
`available_photos()`.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import skimage.data

__all__ = ["PHOTO_CANDIDATES", "available_photos", "horse", "photo", "square_photo", "texture"]

# Candidate photographs; the ones a given scikit-image install cannot load offline are dropped.
PHOTO_CANDIDATES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "motorcycle_left",
    "motorcycle_right",
    "coins",
    "moon",
)


def _to_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8, copy=False)


def _load(name: str) -> np.ndarray:
    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(skimage.data, name)()


@cache
def photo(name: str) -> np.ndarray:
    """An RGB uint8 photograph `[H, W, 3]` (read-only), loaded once per process."""
    img = _to_rgb(_load(name))
    img.setflags(write=False)
    return img


@cache
def available_photos() -> tuple[str, ...]:
    """Photographs this scikit-image install can load without a network."""
    names = []
    for name in PHOTO_CANDIDATES:
        try:
            photo(name)
        except Exception:  # some skimage data needs pooch and a download
            continue
        names.append(name)
    if len(names) < 2:
        raise RuntimeError("scikit-image ships fewer than two loadable photographs")
    return tuple(names)


@cache
def square_photo(name: str) -> np.ndarray:
    """The photograph centre-cropped to a square on its shorter side, uint8 `[S, S, 3]` (read-only)."""
    img = photo(name)
    side = min(img.shape[:2])
    y0, x0 = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    out = np.ascontiguousarray(img[y0 : y0 + side, x0 : x0 + side])
    out.setflags(write=False)
    return out


@cache
def texture(name: str) -> np.ndarray:
    """A grayscale texture as scikit-image ships it ("brick", "grass", "gravel"), read-only."""
    img = np.asarray(getattr(skimage.data, name)())
    img.setflags(write=False)
    return img


@cache
def horse() -> np.ndarray:
    """scikit-image's horse silhouette, bool `[H, W]`: True is the background (read-only)."""
    img = np.asarray(skimage.data.horse(), dtype=bool)
    img.setflags(write=False)
    return img
