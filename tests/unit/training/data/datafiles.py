"""Helpers that write small videos and tar shards with PyAV for the data tests."""

from __future__ import annotations

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
