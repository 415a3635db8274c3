"""Video decoding with PyAV: probing, and clips sampled at a target fps, resized and centre-cropped.

Time is measured from the first frame of the video stream (its ``start_time``), so ``start_s=0`` is
always the first frame whatever the container's timestamp offset. A clip of ``frames`` frames at
``fps`` takes, for each target time ``start_s + i / fps``, the decoded frame whose timestamp is
nearest (a source slower than ``fps`` therefore repeats frames). A video "contains" a time ``t`` when
``t`` falls before the end of its last frame (last timestamp + one source frame duration).

Frames are resized so the SHORT side equals ``size`` (area filter: we only ever shrink), then
centre-cropped to ``size x size``. A source smaller than the crop raises :class:`VideoTooSmall`
instead of being silently upscaled.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

# A file on disk, or an in-memory file (e.g. a tar member read into io.BytesIO).
VideoInput = str | os.PathLike[str] | BinaryIO

# Slack for comparing float timestamps (well below any real frame duration).
_EPS = 1e-6


class UnreadableVideo(Exception):
    """A video that cannot be used: empty, no video stream, corrupt, truncated or unsupported.

    ``kind`` is a short machine-readable reason (``"missing"``, ``"empty"``, ``"no_video_stream"``,
    ``"unsupported"``, ``"corrupt"``, ``"truncated"``, ``"too_short"``, ``"too_small"``) used to
    count skipped files.
    """

    def __init__(self, path: str, reason: str, kind: str = "corrupt") -> None:
        self.path = str(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"cannot use video {self.path}: {reason}")


class VideoTooSmall(UnreadableVideo):
    """The source is smaller than the requested crop on at least one side (we never upscale)."""

    def __init__(self, path: str, width: int, height: int, size: int) -> None:
        self.width, self.height, self.size = width, height, size
        reason = (
            f"it is {width}x{height}, smaller than the {size}x{size} crop; the shorter side must be at "
            f"least {size} px because frames are never upscaled. Lower data.size to {min(width, height)} "
            f"or less, or drop the file"
        )
        super().__init__(path, reason, kind="too_small")


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video's first video stream."""

    path: str
    width: int
    height: int
    fps: float
    duration_s: float
    num_frames: int


def source_name(src: VideoInput) -> str:
    """A printable name for a path or file object (file objects may carry a ``name``)."""
    if isinstance(src, str | os.PathLike):
        return os.fspath(src)
    return str(getattr(src, "name", "<in-memory video>"))


def _open(src: VideoInput) -> av.container.InputContainer:
    """Open ``src`` for reading, turning every failure into :class:`UnreadableVideo`."""
    name = source_name(src)
    if isinstance(src, str | os.PathLike):
        path = Path(src)
        if not path.is_file():
            raise UnreadableVideo(name, "file not found", kind="missing")
        if path.stat().st_size == 0:
            raise UnreadableVideo(name, "the file is empty (0 bytes)", kind="empty")
        target: str | BinaryIO = os.fspath(src)
    else:
        src.seek(0, os.SEEK_END)
        if src.tell() == 0:
            raise UnreadableVideo(name, "the file is empty (0 bytes)", kind="empty")
        src.seek(0)  # the same in-memory file is opened once to probe and again to decode
        target = src
    try:
        return av.open(target, mode="r", metadata_errors="ignore")
    except av.FFmpegError as err:
        raise UnreadableVideo(
            name, f"not a readable video container (corrupt, truncated or not a video): {err}", kind="corrupt"
        ) from err


def _video_stream(container: av.container.InputContainer, name: str) -> av.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise UnreadableVideo(
            name, f"no video stream (the file holds: {', '.join(kinds)})", kind="no_video_stream"
        )
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnreadableVideo(name, f"unsupported video codec {stream.codec_tag!r}", kind="unsupported")
    return stream


def _stream_fps(stream: av.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and float(rate) > 0:
            return float(rate)
    if stream.frames and stream.duration and stream.time_base:
        return stream.frames / float(stream.duration * stream.time_base)
    return 25.0  # unknown rate: only used for the last frame's duration and the frame count estimate


def _start_offset(stream: av.VideoStream) -> float:
    """Timestamp of the stream's first frame, which we call time 0."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _duration(container: av.container.InputContainer, stream: av.VideoStream, fps: float) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    if stream.frames:
        return stream.frames / fps
    return None


def _scan_duration(container: av.container.InputContainer, stream: av.VideoStream, fps: float) -> float:
    """Duration from the packets themselves, for containers that do not store one (rare)."""
    offset = _start_offset(stream)
    end = None
    for packet in container.demux(stream):
        if packet.pts is None or packet.time_base is None:
            continue
        t = float(packet.pts * packet.time_base) - offset
        dur = float(packet.duration * packet.time_base) if packet.duration else 1.0 / fps
        end = t + dur if end is None else max(end, t + dur)
    return end or 0.0


def probe(path: VideoInput) -> VideoInfo:
    """Read a video's size, frame rate and duration, and check its first frame decodes.

    Raises :class:`UnreadableVideo` naming the file and what is wrong.
    """
    name = source_name(path)
    with _open(path) as container:
        stream = _video_stream(container, name)
        fps = _stream_fps(stream)
        duration = _duration(container, stream, fps)
        try:
            first = next(container.decode(stream), None)
            if duration is None:
                duration = _scan_duration(container, stream, fps)
        except av.FFmpegError as err:
            raise UnreadableVideo(name, f"the video stream does not decode: {err}", kind="corrupt") from err
        if first is None:
            raise UnreadableVideo(name, "the video stream holds no decodable frame", kind="corrupt")
        width = stream.width or first.width
        height = stream.height or first.height
    if duration <= 0:
        raise UnreadableVideo(name, "the video has zero duration", kind="corrupt")
    num_frames = stream.frames if stream.frames > 0 else max(1, round(duration * fps))
    return VideoInfo(
        path=name, width=width, height=height, fps=fps, duration_s=duration, num_frames=num_frames
    )


def check_size(name: str, width: int, height: int, size: int) -> None:
    """Raise :class:`VideoTooSmall` when a ``size x size`` crop would need upscaling."""
    if min(width, height) < size:
        raise VideoTooSmall(name, width, height, size)


def _resize_crop(frame: av.VideoFrame, size: int, name: str) -> np.ndarray:
    """Shrink so the short side is ``size`` (area filter), then centre-crop; returns HWC uint8 RGB."""
    w, h = frame.width, frame.height
    check_size(name, w, h, size)
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = frame.reformat(width=new_w, height=new_h, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return rgb[top : top + size, left : left + size]


@dataclass
class _Decoded:
    """Frames chosen by :func:`_sample` and how far decoding got."""

    frames: list[np.ndarray]
    end_s: float | None  # end of the last decoded frame (last timestamp + one frame duration)
    error: Exception | None  # a decoding error that stopped the stream early


def _timed_frames(
    container: av.container.InputContainer, stream: av.VideoStream, fps: float, state: _Decoded
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames with their time from the stream start; a decoding error ends the stream."""
    offset, frame_dur = _start_offset(stream), 1.0 / fps
    last: float | None = None
    try:
        for frame in container.decode(stream):
            # A frame without a timestamp (some AVI/raw streams) follows the previous one.
            t = (
                frame.time - offset
                if frame.time is not None
                else (last + frame_dur if last is not None else 0.0)
            )
            last = t
            state.end_s = t + frame_dur
            yield t, frame
    except av.FFmpegError as err:
        state.error = err


def _sample(
    decoded: Iterator[tuple[float, av.VideoFrame]],
    first_target: float,
    step: float,
    count: int | None,
    convert: Callable[[av.VideoFrame], np.ndarray],
    state: _Decoded,
) -> None:
    """Append to ``state.frames`` the frame nearest to each target ``first_target + i * step``.

    Frames arrive in presentation order, so a target is settled as soon as a frame at or after it
    shows up: the nearer of that frame and the previous one wins (the earlier on a tie). Only chosen
    frames are converted, and a frame chosen for several targets is converted once.
    """
    converted: tuple[av.VideoFrame, np.ndarray] | None = None

    def take(frame: av.VideoFrame) -> None:
        nonlocal converted
        if converted is None or converted[0] is not frame:
            converted = (frame, convert(frame))
        state.frames.append(converted[1])

    def done() -> bool:
        return count is not None and len(state.frames) >= count

    prev: tuple[float, av.VideoFrame] | None = None
    for t, frame in decoded:
        while not done() and t >= first_target + len(state.frames) * step - _EPS:
            target = first_target + len(state.frames) * step
            take(prev[1] if prev is not None and target - prev[0] <= t - target else frame)
        if done():
            return
        prev = (t, frame)
    # End of stream: the last frame still covers targets before its end.
    while prev is not None and not done() and state.end_s is not None:
        if first_target + len(state.frames) * step >= state.end_s - _EPS:
            break
        take(prev[1])


def decode_clip(path: VideoInput, start_s: float, frames: int, fps: float, size: int) -> np.ndarray:
    """Decode ``frames`` frames sampled at ``fps`` from ``start_s`` (seconds from the first frame).

    Returns uint8 ``[frames, size, size, 3]`` RGB. Raises :class:`VideoTooSmall` when the source's
    short side is below ``size`` and :class:`UnreadableVideo` when the video cannot be decoded or
    ends before the clip's last frame.
    """
    if frames < 1 or fps <= 0 or size < 1:
        raise ValueError(f"need frames >= 1, fps > 0 and size >= 1, got {frames=}, {fps=}, {size=}")
    if start_s < 0:
        raise ValueError(f"start_s must be >= 0, got {start_s}")
    name = source_name(path)
    with _open(path) as container:
        stream = _video_stream(container, name)
        if stream.width and stream.height:  # fail before decoding anything when the header says so
            check_size(name, stream.width, stream.height, size)
        src_fps = _stream_fps(stream)
        state = _read_clip(container, stream, name, start_s, frames, fps, size, src_fps)
    if len(state.frames) < frames:
        raise _stopped_early(
            name, state, f"before the clip's last frame at {start_s + (frames - 1) / fps:.2f}s"
        )
    return np.stack(state.frames)


def _stopped_early(name: str, state: _Decoded, what: str) -> UnreadableVideo:
    """The error for a stream that ends (or stops decoding) too early: a truncated or damaged file."""
    at = f"at {state.end_s:.2f}s" if state.end_s is not None else "before its first frame"
    if state.error is not None:
        reason = f"decoding fails {at}, {what} ({state.error}): the file is truncated or damaged"
    else:
        reason = f"the video ends {at}, {what} (a truncated file, or a header promising more than the stream holds)"
    return UnreadableVideo(name, reason, kind="truncated")


def _read_clip(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    name: str,
    start_s: float,
    frames: int,
    fps: float,
    size: int,
    src_fps: float,
) -> _Decoded:
    """Seek to the keyframe before ``start_s`` and sample; fall back to decoding from the start when
    the demuxer's seek lands after the first target (imprecise seeking in some containers)."""
    half_frame = 0.5 / src_fps
    for seek_s in (start_s, 0.0) if start_s > 0 else (0.0,):
        if seek_s > 0:
            offset = _start_offset(stream) + seek_s
            container.seek(math.floor(offset / stream.time_base), stream=stream, backward=True)
        state = _Decoded(frames=[], end_s=None, error=None)
        decoded = _timed_frames(container, stream, src_fps, state)
        first = next(decoded, None)
        if first is None:
            return state
        if seek_s > 0 and first[0] > start_s + half_frame:
            container.seek(0, stream=stream)  # overshot: start over from the first frame
            continue
        _sample(
            itertools.chain([first], decoded),
            start_s,
            1.0 / fps,
            frames,
            lambda f: _resize_crop(f, size, name),
            state,
        )
        return state
    raise AssertionError("unreachable: the last attempt decodes from the start")


def decode_all(path: VideoInput, fps: float, size: int) -> np.ndarray:
    """Decode a whole (short) video sampled at ``fps`` from its first frame: uint8 ``[T, size, size, 3]``.

    ``T`` covers every target time before the end of the last frame. Raises like :func:`decode_clip`;
    a decoding error part-way through is :class:`UnreadableVideo` rather than a silently short result.
    """
    if fps <= 0 or size < 1:
        raise ValueError(f"need fps > 0 and size >= 1, got {fps=}, {size=}")
    name = source_name(path)
    with _open(path) as container:
        stream = _video_stream(container, name)
        if stream.width and stream.height:
            check_size(name, stream.width, stream.height, size)
        state = _Decoded(frames=[], end_s=None, error=None)
        decoded = _timed_frames(container, stream, _stream_fps(stream), state)
        _sample(decoded, 0.0, 1.0 / fps, None, lambda f: _resize_crop(f, size, name), state)
    if state.error is not None:
        raise _stopped_early(name, state, "before the end its header promises")
    if not state.frames:
        raise UnreadableVideo(name, "the video stream holds no decodable frame", kind="corrupt")
    return np.stack(state.frames)
