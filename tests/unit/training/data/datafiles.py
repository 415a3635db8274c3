"""Helpers that write small videos and tar shards with PyAV for the data tests."""

from __future__ import annotations

import fractions
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

# Frame i of a "gray" video is a solid gray of level STEP * i, so a decoded frame tells its index.
STEP = 6
MAX_FRAMES = 255 // STEP


def _codec() -> str:
    try:
        av.codec.Codec("libx264", "w")
    except av.FFmpegError:  # a PyAV build without libx264 still has its native MPEG-4 encoder
        return "mpeg4"
    return "libx264"


def write_video(
    path: Path,
    n: int = 36,
    fps: int = 10,
    width: int = 64,
    height: int = 48,
    gop: int = 5,
    frame: Callable[[int], np.ndarray] | None = None,
    faststart: bool = False,
) -> Path:
    """Write an H.264 (or MPEG-4) video; by default frame i is solid gray STEP * i."""
    codec = _codec()
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop  # several keyframes, so seeking is exercised
        if codec == "libx264":
            stream.options = {"crf": "0"}  # lossless: gray levels survive exactly
        for i in range(n):
            rgb = frame(i) if frame is not None else np.full((height, width, 3), STEP * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path) -> Path:
    """An MP4 holding only an AAC audio stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            samples = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_indices(clip: np.ndarray) -> list[int]:
    """Indices encoded by a gray video's frames (``clip`` is [T, H, W, 3] or [T, 3, H, W])."""
    means = np.asarray(clip, dtype=np.float64).reshape(len(clip), -1).mean(axis=1)
    return [round(m / STEP) for m in means]


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def textured(i: int, width: int, height: int) -> np.ndarray:
    """Frame i of a busy moving picture (stripes, a square, noise): every frame codes with residuals."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(3 * x + 5 * i) % 256, (4 * y + 3 * i) % 256, (2 * (x + y) + 7 * i) % 256], axis=-1)
    left = (2 * i) % (width - 12)
    image[height // 4 : height // 4 + 12, left : left + 12] = 255
    noise = np.random.default_rng(i).integers(-8, 9, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def encode_video(
    container: str,
    codec: str,
    *,
    n: int = 48,
    fps: int = 30,
    width: int = 96,
    height: int = 64,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    pts_ms: list[int] | None = None,
) -> bytes:
    """A clip of `textured` frames in any container and codec, in memory. `pts_ms`: each frame's time
    in milliseconds (a variable frame rate) instead of one frame every 1/fps."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as box:
        stream = box.add_stream(codec, rate=fps)
        if pts_ms is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options or {}
        for i in range(n):
            rgb = av.VideoFrame.from_ndarray(textured(i, width, height), format="rgb24")
            frame = rgb.reformat(format=pix_fmt)
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return out.getvalue()
