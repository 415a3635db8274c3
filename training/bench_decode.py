"""`lawm bench decode`: the CPU one uploaded video costs in `decode_video_bytes`, the path the service
decodes uploads with, against the reference path (every frame decoded, a scaler for each frame
converted), side by side in one run.

Each repeat times both paths, in alternating order so that a change in the machine's load falls on
both alike; CPU is `time.process_time()` (every thread of this process: decoder and scaler threads
count). Both paths must give identical frames, which the bench checks before timing anything.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.cli_kit import machine
from training.data import video
from training.data.samples import sample_clips
from training.data.video import DecodedVideo, DecodeLimits, MediaRejected, UnreadableVideo

# The service's default limits (service/settings.py): they only refuse, never change what is decoded.
LIMITS = DecodeLimits(max_frames=256, max_pixels=4096 * 4096, max_duration_s=300.0)
PATHS = ("every frame (reference)", "frames needed")
TARGET_RATIO = 0.5  # the serving issue's aim for frames needed / reference CPU


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        return "unknown"
    return names[0] if names else "unknown"


def _decoders(data: bytes, name: str, fps: float, size: int) -> dict[str, Callable[[], DecodedVideo]]:
    kwargs: dict[str, Any] = {"what": name, "fps": fps, "size": size, "limits": LIMITS, "upscale": True}
    return {
        PATHS[0]: lambda: video._decode_video_bytes(data, every_frame=True, **kwargs),
        PATHS[1]: lambda: video.decode_video_bytes(data, **kwargs),
    }


def _timed(decode: Callable[[], DecodedVideo]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one decode."""
    cpu, wall = time.process_time(), time.perf_counter()
    decode()
    return time.process_time() - cpu, time.perf_counter() - wall


def bench_decode(path: Path | None = None, fps: float = 4.0, size: int = 128, repeats: int = 5) -> dict[str, Any]:
    """``path``: the video to decode; None is the bikes sample (10 s of 640x272 H.264 at 25 fps)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    video_option = "" if path is None else f" --video {path}"
    path = path or sample_clips()["bikes"]
    data, name = path.read_bytes(), path.name
    decoders = _decoders(data, name, fps, size)
    try:
        reference, needed = (decode() for decode in decoders.values())  # also the warm-up
    except MediaRejected as err:
        raise UnreadableVideo(str(path), err.message, kind=err.kind) from err
    identical = reference.frames.shape == needed.frames.shape and bool(np.array_equal(reference.frames, needed.frames))
    load_before = os.getloadavg()
    cpu: dict[str, list[float]] = {p: [] for p in PATHS}
    wall: dict[str, list[float]] = {p: [] for p in PATHS}
    for repeat in range(repeats):
        for p in PATHS if repeat % 2 == 0 else PATHS[::-1]:
            c, w = _timed(decoders[p])
            cpu[p].append(c)
            wall[p].append(w)
    load_after = os.getloadavg()
    ratios = [n / r for n, r in zip(cpu[PATHS[1]], cpu[PATHS[0]], strict=True)]
    ratio = statistics.median(cpu[PATHS[1]]) / statistics.median(cpu[PATHS[0]])
    source = reference.source
    rows = [
        {
            "path": p,
            "cpu_ms": 1000 * statistics.median(cpu[p]),
            "cpu_ms_min": 1000 * min(cpu[p]),
            "wall_ms": 1000 * statistics.median(wall[p]),
            "frames_out": len(reference.frames),
        }
        for p in PATHS
    ]
    return {
        "benchmark": "decode",
        "title": "Decoding an uploaded video: every frame (reference) vs only the frames needed",
        "protocol": (
            f"{name} ({source.codec} {source.width}x{source.height} at {source.fps:g} fps, "
            f"{source.duration_s or 0:.1f} s, {len(data)} bytes) through decode_video_bytes at {fps:g} fps, "
            f"{size} px; {repeats} repeats after one warm-up, the two paths alternating in order"
        ),
        "machine": machine(),
        "cpu": cpu_model(),
        "load_average": f"{_load(load_before)} before, {_load(load_after)} after (1/5/15 min)",
        "command": f"lawm bench decode{video_option} --fps {fps:g} --size {size} --repeats {repeats}",
        "statistic": "median (and min) over repeats of time.process_time() per decode, all threads",
        "verdict": (
            f"frames needed / reference CPU = {ratio:.2f} (median of paired ratios {statistics.median(ratios):.2f}; "
            f"target <= {TARGET_RATIO:g}: {'met' if ratio <= TARGET_RATIO else 'missed'}); frames identical: {identical}"
        ),
        "cpu_ratio": ratio,
        "paired_cpu_ratios": ratios,
        "identical": identical,
        "rows": rows,
    }


def _load(avg: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in avg)
