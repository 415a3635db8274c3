"""Video with PyAV, for training and serving alike: probing, decoding and encoding.

- Files (the training data): `probe`, `decode_clip` (a clip from ``start_s``), `decode_all`;
  unusable files raise :class:`UnreadableVideo` with a machine-readable ``kind``.
- Bytes in memory (uploads to the service): `decode_video_bytes` and `decode_image_bytes`, behind
  :class:`DecodeLimits` checked before anything is decoded (from the header) and again while decoding
  (a header can lie); refusals raise :class:`MediaRejected` with a ``kind`` the service maps to HTTP.
- Encoding: `encode_mp4` / `write_mp4` (H.264 where this PyAV has an encoder for it) and
  `encode_png_strip`.

Both decoders sample and resize the same way, so served latents match offline ones:

Time is measured from the first frame of the video stream (its ``start_time``), so ``start_s=0`` is
always the first frame whatever the container's timestamp offset. A clip of ``frames`` frames at
``fps`` takes, for each target time ``start_s + i / fps``, the decoded frame whose timestamp is
nearest (a source slower than ``fps`` therefore repeats frames). A video "contains" a time ``t`` when
``t`` falls before the end of its last frame (last timestamp + one source frame duration).

Frames are resized so the SHORT side equals ``size`` (area filter: we only ever shrink), then
centre-cropped to ``size x size``. A source smaller than the crop raises :class:`VideoTooSmall`
instead of being silently upscaled.

Only what the sampler takes is decoded and converted: H.264 frames that are neither taken nor
referenced by other frames are never sent to the decoder (see "decoding only what is taken"), with
the very same frames as a result. The straightforward path (every frame decoded, a scaler per frame
converted) stays as the reference: ``every_frame=True`` on `_decode_clip`, `_decode_all` and
`_decode_video_bytes`, for the tests and ``lawm bench decode``, and the fallback where a plan breaks.
"""

from __future__ import annotations

import fractions
import io
import itertools
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO, TypeVar

import av
import numpy as np
from av.video.reformatter import VideoReformatter

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


def _resize_crop(
    frame: av.VideoFrame, size: int, name: str, upscale: bool = False, scaler: VideoReformatter | None = None
) -> np.ndarray:
    """Shrink so the short side is ``size`` (area filter), then centre-crop; returns HWC uint8 RGB.
    A frame smaller than the crop is refused unless ``upscale`` (then enlarged, bilinear): training
    data never is, but a served camera below the model's size is still worth answering.

    ``scaler``: one swscale context reused frame after frame, single-threaded (the same pixels as a
    fresh, auto-threaded one per frame, which costs a context and a thread pool for every frame);
    None is the reference path, ``frame.reformat``."""
    w, h = frame.width, frame.height
    small = min(w, h) < size
    if not upscale:
        check_size(name, w, h, size)
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    filter_ = "BILINEAR" if small else "AREA"
    if scaler is None:
        resized = frame.reformat(width=new_w, height=new_h, format="rgb24", interpolation=filter_)
    else:
        resized = scaler.reformat(
            frame, width=new_w, height=new_h, format="rgb24", interpolation=filter_, threads=1
        )
    rgb = resized.to_ndarray()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return rgb[top : top + size, left : left + size]


def _resizer(
    size: int, name: str, upscale: bool, every_frame: bool
) -> Callable[[av.VideoFrame | None], np.ndarray]:
    """The frame converter of one decode: the reference's per-frame ``reformat``, or one shared scaler."""
    scaler = None if every_frame else VideoReformatter()

    def convert(frame: av.VideoFrame | None) -> np.ndarray:
        if frame is None:  # the sampler takes a frame the plan left undecoded
            raise _PlanBroken("a skipped frame was taken")
        return _resize_crop(frame, size, name, upscale, scaler)

    return convert


@dataclass
class _Decoded:
    """Frames chosen by :func:`_sample` and how far decoding got."""

    frames: list[np.ndarray]
    end_s: float | None  # end of the last decoded frame (last timestamp + one frame duration)
    error: Exception | None  # a decoding error that stopped the stream early


def _timed_frames(
    container: av.container.InputContainer, stream: av.VideoStream, fps: float, state: _Decoded
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Every frame from the container's position, with its time from the stream start (the reference)."""
    return _timed(container.decode(stream), stream, fps, state)


def _timed(
    frames: Iterable[av.VideoFrame], stream: av.VideoStream, fps: float, state: _Decoded
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames with their time from the stream start; a decoding error ends the stream."""
    offset, frame_dur = _start_offset(stream), 1.0 / fps
    last: float | None = None
    try:
        for frame in frames:
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


# ----------------------------------------------------------------------------- decoding only what is taken
# The sampler takes few of the frames a video holds (40 of 250 for 10 s at 25 fps sampled at 4 fps),
# and only those are converted to RGB. Frames it passes over must still be decoded when later frames
# are predicted from them, but an H.264 frame that nothing is predicted from (nal_ref_idc 0: most
# B-frames) need not be sent to the decoder at all: every other frame decodes to the same pixels.
# Which frames the sampler takes is worked out ahead from the packets' timestamps (demuxing is cheap),
# and a frame left undecoded still reaches the sampler as (t, None), so it chooses exactly as over
# every frame. Whatever the packets cannot vouch for is not skipped; if the decoder then gives other
# frames than planned, or the sampler takes a skipped one, `_PlanBroken` has the caller decode every
# frame instead (the reference, `every_frame=True`).


class _PlanBroken(Exception):
    """What was decoded differs from what the packets promised: decode every frame instead."""


@dataclass(frozen=True)
class _Targets:
    """The times a sampler takes frames at: ``first + i * step`` for ``i < count`` (all, when None)."""

    first: float
    step: float
    count: int | None


# NAL unit types a skipped H.264 packet may hold: non-IDR slices, access unit delimiters, filler.
# (Parameter sets and SEI are never skipped: later frames may depend on them.)
_SKIPPABLE_NALS = frozenset({1, 9, 12})
_SLICE, _IDR = 1, 5
_MAX_REORDER = 16  # the most frames an H.264 decoder holds back (its largest picture buffer)
# How far past the last target a window reads when no keyframe comes: a frame shown earlier but
# demuxed later would break the plan (and be decoded the reference way), never be missed.
_HORIZON_SLACK_S = 1.0


@dataclass(frozen=True)
class _H264:
    """Reads the NAL unit headers of an H.264 stream's packets."""

    length_size: int | None  # bytes of each NAL unit's length prefix (MP4/MKV); None: start codes (Annex B)

    @classmethod
    def of(cls, stream: av.VideoStream) -> _H264 | None:
        if stream.codec_context.name != "h264":
            return None
        extra = bytes(stream.codec_context.extradata or b"")
        avcc = len(extra) > 4 and extra[0] == 1  # an avcC record, else Annex B
        return cls(length_size=(extra[4] & 3) + 1 if avcc else None)

    def headers(self, packet: av.Packet) -> list[int] | None:
        """The first byte of each NAL unit in ``packet``; None when it does not parse."""
        if self.length_size is None:
            return _annexb_headers(bytes(packet))
        return _length_prefixed_headers(memoryview(packet), self.length_size)  # no copy: headers only

    def disposable(self, packet: av.Packet) -> bool:
        """Nothing is predicted from this frame and the packet holds nothing else (no parameter sets)."""
        headers = self.headers(packet)
        return (
            bool(headers)
            and all(h & 0xE0 == 0 and h & 0x1F in _SKIPPABLE_NALS for h in headers)  # nal_ref_idc 0
            and any(h & 0x1F == _SLICE for h in headers)
        )

    def is_idr(self, packet: av.Packet) -> bool:
        """An instantaneous refresh: nothing before it is referenced, nothing after it is shown before it."""
        return any(h & 0x1F == _IDR for h in self.headers(packet) or [])


def _length_prefixed_headers(data: memoryview, length_size: int) -> list[int] | None:
    headers, i = [], 0
    while i < len(data):
        size = int.from_bytes(data[i : i + length_size], "big")
        i += length_size
        if size == 0 or i + size > len(data):
            return None
        headers.append(data[i])
        i += size
    return headers


def _annexb_headers(data: bytes) -> list[int]:
    headers, i = [], data.find(b"\x00\x00\x01")
    while 0 <= i < len(data) - 3:
        headers.append(data[i + 3])
        i = data.find(b"\x00\x00\x01", i + 3)
    return headers


def _pts_time(pts: int, time_base: fractions.Fraction) -> float:
    """A timestamp in seconds, computed exactly as PyAV's ``Frame.time`` does (so ties break alike)."""
    return float(pts) * time_base.numerator / time_base.denominator


@dataclass
class _Window:
    """Packets demuxed ahead of decoding, in decode order."""

    coded: list[av.Packet]
    flush: av.Packet | None  # the demuxer's end-of-stream packet, when the window reaches the end
    rest: Iterator[av.Packet]  # the packets after the window (when it stops short of the end)
    error: av.FFmpegError | None  # the demuxer failed after `coded` (decoding stops there too)


def _demux_ahead(
    container: av.container.InputContainer, stream: av.VideoStream, horizon_s: float | None
) -> _Window:
    """Demux to the end of the stream, or to the first keyframe shown after ``horizon_s`` (seconds from
    the stream start; the frames shown before it are then all in the window), or at the latest to
    ``_HORIZON_SLACK_S`` after it (a stream without keyframes is not read whole ahead of decoding)."""
    demuxed = container.demux(stream)
    offset, coded = _start_offset(stream), []
    try:
        for packet in demuxed:
            coded.append(packet)
            if horizon_s is None or packet.pts is None:
                continue
            t = _pts_time(packet.pts, stream.time_base) - offset
            if t > horizon_s and (packet.is_keyframe or t > horizon_s + _HORIZON_SLACK_S):
                return _Window(coded=coded, flush=None, rest=demuxed, error=None)
    except av.FFmpegError as err:
        return _Window(coded=coded, flush=None, rest=iter(()), error=err)
    flush = coded.pop() if coded else None  # PyAV ends a demux with an empty packet that drains the decoder
    return _Window(coded=coded, flush=flush, rest=iter(()), error=None)


def _reorder_depth(pts: list[int]) -> int:
    """How many frames a decoder must hold back to show frames decoded in this order by time: the
    most packets before one that are shown after it (more than ``_MAX_REORDER``: ``_MAX_REORDER + 1``)."""
    depth, latest, older_max = 0, None, None
    for i, p in enumerate(pts):
        if i > _MAX_REORDER:
            gone = pts[i - _MAX_REORDER - 1]
            older_max = gone if older_max is None else max(older_max, gone)
            if older_max > p:
                return _MAX_REORDER + 1
        if latest is not None and p < latest:  # shown before something already decoded: count what
            depth = max(depth, sum(q > p for q in pts[max(0, i - _MAX_REORDER) : i]))
        latest = p if latest is None else max(latest, p)
    return depth


def _taken(times: list[float], targets: _Targets, frame_dur: float, ended: bool) -> set[int]:
    """Indices into ``times`` (frame times in presentation order) of the frames :func:`_sample` takes."""
    state = _Decoded(frames=[], end_s=times[-1] + frame_dur if ended and times else None, error=None)
    indexed = iter(zip(times, range(len(times)), strict=True))
    _sample(indexed, targets.first, targets.step, targets.count, int, state)
    return set(state.frames)


@dataclass(frozen=True)
class _Plan:
    skip: frozenset[int]  # pts of the window's packets left undecoded
    shown: list[tuple[int, bool]]  # every window frame's pts in presentation order, and whether it is skipped


def _plan(window: _Window, h264: _H264, stream: av.VideoStream, src_fps: float, targets: _Targets) -> _Plan:
    """The window's non-reference frames the sampler will not take; none where that is not certain."""
    none = _Plan(skip=frozenset(), shown=[])
    coded, time_base = window.coded, stream.time_base
    if window.error is not None or not coded or time_base is None or not h264.is_idr(coded[0]):
        return none  # a damaged stream, or one that starts without a clean refresh point
    pts = [p.pts for p in coded]
    if None in pts or len(set(pts)) < len(pts) or any(p.is_discard or p.size == 0 for p in coded):
        return none  # each packet must be exactly one shown frame at its own time
    depth = _reorder_depth(pts)
    if depth == 0 and stream.codec_context.reorder_depth > 0:
        return none  # a reordering decoder but timestamps in decode order (AVI): they do not say when
    if depth > stream.codec_context.reorder_depth:
        return none  # the decoder would guess its reordering as it goes and may drop frames
    order = sorted(pts)
    offset = _start_offset(stream)
    times = [_pts_time(p, time_base) - offset for p in order]
    taken = _taken(times, targets, 1.0 / src_fps, ended=window.flush is not None)
    taken_pts = {order[i] for i in taken}
    skip = frozenset(p.pts for p in coded if p.pts not in taken_pts and h264.disposable(p))
    return _Plan(skip=skip, shown=[(p, p in skip) for p in order])


def _replay(stream: av.VideoStream, window: _Window) -> Iterator[av.VideoFrame]:
    """Decode every packet, the window's then the rest, as ``container.decode`` would."""
    for packet in window.coded:
        yield from stream.decode(packet)
    if window.error is not None:
        raise window.error
    for packet in itertools.chain([window.flush] if window.flush is not None else [], window.rest):
        yield from stream.decode(packet)


def _decode_skipping(
    stream: av.VideoStream, window: _Window, skip: frozenset[int]
) -> Iterator[av.VideoFrame]:
    for packet in window.coded:
        if packet.pts not in skip:
            yield from stream.decode(packet)
    for packet in itertools.chain([window.flush] if window.flush is not None else [], window.rest):
        yield from stream.decode(packet)


def _planned(
    frames: Iterator[av.VideoFrame], plan: _Plan, stream: av.VideoStream, fps: float, state: _Decoded
) -> Iterator[tuple[float, av.VideoFrame | None]]:
    """Decoded frames, with the skipped ones as ``(t, None)`` in their place, checked against the plan."""
    offset, frame_dur, time_base = _start_offset(stream), 1.0 / fps, stream.time_base
    pending = deque(plan.shown)
    last_planned = plan.shown[-1][0]

    def timed(t: float, frame: av.VideoFrame | None) -> tuple[float, av.VideoFrame | None]:
        state.end_s = t + frame_dur
        return t, frame

    try:
        for frame in frames:
            while pending and pending[0][1]:
                yield timed(_pts_time(pending.popleft()[0], time_base) - offset, None)
            if frame.pts is None or frame.time != _pts_time(frame.pts, time_base):
                raise _PlanBroken("a decoded frame's timestamp is not its packet's")
            expected = pending.popleft()[0] if pending else None
            if frame.pts != expected and (expected is not None or frame.pts <= last_planned):
                raise _PlanBroken(f"the decoder gave the frame at pts {frame.pts}, not {expected}")
            yield timed(frame.time - offset, frame)
    except av.FFmpegError as err:  # frames held back when it failed differ from the reference's
        raise _PlanBroken(f"decoding failed with frames skipped: {err}") from err
    for pts, skipped in pending:
        if not skipped:
            raise _PlanBroken(f"the frame at pts {pts} never came out of the decoder")
        yield timed(_pts_time(pts, time_base) - offset, None)


def _needed_frames(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    fps: float,
    state: _Decoded,
    targets: _Targets,
) -> Iterator[tuple[float, av.VideoFrame | None]]:
    """Like :func:`_timed_frames`, leaving undecoded the H.264 non-reference frames the sampler will not
    take (their times come as ``(t, None)``); may raise :class:`_PlanBroken` as the frames are read."""
    h264 = _H264.of(stream)
    if h264 is None:
        return _timed_frames(container, stream, fps, state)
    last_target = targets.first + (targets.count - 1) * targets.step if targets.count is not None else None
    window = _demux_ahead(container, stream, None if last_target is None else last_target + 1.0 / fps)
    plan = _plan(window, h264, stream, fps, targets)
    if not plan.skip:
        return _timed(_replay(stream, window), stream, fps, state)
    return _planned(_decode_skipping(stream, window, plan.skip), plan, stream, fps, state)


def _frames(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    fps: float,
    state: _Decoded,
    targets: _Targets,
    every_frame: bool,
) -> Iterator[tuple[float, av.VideoFrame | None]]:
    """Timed frames from the container's position: every one (the reference), or those it may take."""
    if every_frame:
        return _timed_frames(container, stream, fps, state)
    return _needed_frames(container, stream, fps, state, targets)


T = TypeVar("T")


def _needed_else_every_frame(decode: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``decode(..., every_frame=False)``; where its plan breaks (odd streams), decode every frame instead."""
    try:
        return decode(*args, every_frame=False, **kwargs)
    except _PlanBroken:
        return decode(*args, every_frame=True, **kwargs)


# ----------------------------------------------------------------------------- files
def decode_clip(path: VideoInput, start_s: float, frames: int, fps: float, size: int) -> np.ndarray:
    """Decode ``frames`` frames sampled at ``fps`` from ``start_s`` (seconds from the first frame).

    Returns uint8 ``[frames, size, size, 3]`` RGB. Raises :class:`VideoTooSmall` when the source's
    short side is below ``size`` and :class:`UnreadableVideo` when the video cannot be decoded or
    ends before the clip's last frame.
    """
    return _needed_else_every_frame(_decode_clip, path, start_s, frames, fps, size)


def _decode_clip(
    path: VideoInput, start_s: float, frames: int, fps: float, size: int, *, every_frame: bool
) -> np.ndarray:
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
        targets = _Targets(first=start_s, step=1.0 / fps, count=frames)
        convert = _resizer(size, name, False, every_frame)
        state = _read_clip(container, stream, targets, convert, src_fps, every_frame)
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
    targets: _Targets,
    convert: Callable[[av.VideoFrame], np.ndarray],
    src_fps: float,
    every_frame: bool,
) -> _Decoded:
    """Seek to the keyframe before the first target and sample; fall back to decoding from the start
    when the demuxer's seek lands after it (imprecise seeking in some containers)."""
    start_s, half_frame = targets.first, 0.5 / src_fps
    for seek_s in (start_s, 0.0) if start_s > 0 else (0.0,):
        if seek_s > 0:
            offset = _start_offset(stream) + seek_s
            container.seek(math.floor(offset / stream.time_base), stream=stream, backward=True)
        state = _Decoded(frames=[], end_s=None, error=None)
        decoded = _frames(container, stream, src_fps, state, targets, every_frame)
        first = next(decoded, None)
        if first is None:
            return state
        if seek_s > 0 and first[0] > start_s + half_frame:
            if not every_frame:
                raise _PlanBroken("the seek overshot: start over as the reference does")
            container.seek(0, stream=stream)  # overshot: start over from the first frame
            continue
        _sample(itertools.chain([first], decoded), start_s, targets.step, targets.count, convert, state)
        return state
    raise AssertionError("unreachable: the last attempt decodes from the start")


def decode_all(path: VideoInput, fps: float, size: int) -> np.ndarray:
    """Decode a whole (short) video sampled at ``fps`` from its first frame: uint8 ``[T, size, size, 3]``.

    ``T`` covers every target time before the end of the last frame. Raises like :func:`decode_clip`;
    a decoding error part-way through is :class:`UnreadableVideo` rather than a silently short result.
    """
    return _needed_else_every_frame(_decode_all, path, fps, size)


def _decode_all(path: VideoInput, fps: float, size: int, *, every_frame: bool) -> np.ndarray:
    if fps <= 0 or size < 1:
        raise ValueError(f"need fps > 0 and size >= 1, got {fps=}, {size=}")
    name = source_name(path)
    with _open(path) as container:
        stream = _video_stream(container, name)
        if stream.width and stream.height:
            check_size(name, stream.width, stream.height, size)
        state = _Decoded(frames=[], end_s=None, error=None)
        targets = _Targets(first=0.0, step=1.0 / fps, count=None)
        decoded = _frames(container, stream, _stream_fps(stream), state, targets, every_frame)
        _sample(decoded, 0.0, targets.step, None, _resizer(size, name, False, every_frame), state)
    if state.error is not None:
        raise _stopped_early(name, state, "before the end its header promises")
    if not state.frames:
        raise UnreadableVideo(name, "the video stream holds no decodable frame", kind="corrupt")
    return np.stack(state.frames)


# ----------------------------------------------------------------------------- bytes in memory (uploads)
# PyAV demuxer name -> what a person calls it.
VIDEO_CONTAINERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV",
    "matroska,webm": "WebM/MKV",
    "avi": "AVI",
    "gif": "GIF",
}
IMAGE_CONTAINERS = {"png_pipe": "PNG", "jpeg_pipe": "JPEG", "webp_pipe": "WebP", "bmp_pipe": "BMP", "gif": "GIF"}
VIDEO_KINDS = ", ".join(VIDEO_CONTAINERS.values())
IMAGE_KINDS = ", ".join(IMAGE_CONTAINERS.values())
# A stream decoding this much further than its header's duration is lying about its length.
_TRUNCATION_SLACK_S = 0.25


class MediaRejected(Exception):
    """Media in memory that is refused. ``kind`` says why, for a caller to answer with:
    ``"unreadable"``, ``"unsupported_container"``, ``"no_video_stream"``, ``"unsupported_codec"``,
    ``"too_small"``, ``"truncated"`` (the file), or ``"frame_too_large"``, ``"too_long"``,
    ``"too_many_frames"`` (a limit). The message names the media and what is wrong."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


@dataclass(frozen=True)
class DecodeLimits:
    """The most one piece of media may hold; checked from its header first, then frame by frame."""

    max_frames: int  # frames after sampling
    max_pixels: int  # width * height of one source frame
    max_duration_s: float


@dataclass(frozen=True)
class SourceInfo:
    """What an uploaded video was, as its container says."""

    container: str  # as a person calls it ("MP4/MOV", ...)
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float | None


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # uint8 [T, size, size, 3]
    fps: float  # the sampling rate of `frames`
    source: SourceInfo


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err)  # FFmpeg's words without the "<none>" file name


def _open_bytes(data: bytes, what: str, allowed: dict[str, str], kinds: str) -> av.container.InputContainer:
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise MediaRejected(
            "unreadable", f"{what} is not a readable media file (corrupt, truncated or not {kinds}): {_reason(err)}"
        ) from err
    if container.format.name not in allowed:
        container.close()
        raise MediaRejected(
            "unsupported_container",
            f"{what} is a {container.format.long_name or container.format.name} file; accepted: {kinds}",
        )
    return container


def _decodable_stream(container: av.container.InputContainer, what: str) -> av.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        raise MediaRejected("no_video_stream", f"{what} has no video stream (it holds: {', '.join(kinds)})")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.width or not stream.height:
        raise MediaRejected("unsupported_codec", f"{what}'s video codec {stream.codec_tag!r} cannot be decoded here")
    return stream


def _check_pixels(width: int, height: int, limits: DecodeLimits, what: str) -> None:
    if width * height > limits.max_pixels:
        raise MediaRejected(
            "frame_too_large",
            f"{what} has {width}x{height} frames ({width * height} pixels); at most {limits.max_pixels} "
            "pixels per frame are accepted",
        )


def _too_many_frames(what: str, count: str, fps: float, limits: DecodeLimits) -> MediaRejected:
    return MediaRejected(
        "too_many_frames", f"{what} gives {count} frames at {fps:g} fps; at most {limits.max_frames} are accepted"
    )


def _too_long(what: str, seconds: float, limits: DecodeLimits) -> MediaRejected:
    return MediaRejected("too_long", f"{what} lasts {seconds:.2f} s; at most {limits.max_duration_s:g} s are accepted")


def _guarded(
    frames: Iterator[tuple[float, av.VideoFrame | None]], limits: DecodeLimits, what: str
) -> Iterator[tuple[float, av.VideoFrame | None]]:
    """Re-check the limits on the decoded frames themselves (a header can lie)."""
    for t, frame in frames:
        if frame is not None:  # a frame left undecoded has its stream's size (only an IDR frame changes it)
            _check_pixels(frame.width, frame.height, limits, what)
        if t > limits.max_duration_s:
            raise _too_long(what, t, limits)
        yield t, frame


def _checked_header(
    container: av.container.InputContainer, what: str, fps: float, size: int, limits: DecodeLimits, upscale: bool
) -> tuple[av.VideoStream, SourceInfo]:
    """The checks a header allows, before a single frame is decoded."""
    stream = _decodable_stream(container, what)
    width, height = stream.width, stream.height
    _check_pixels(width, height, limits, what)
    src_fps = _stream_fps(stream)
    duration = _header_duration(container, stream)
    if duration is not None and duration > limits.max_duration_s:
        raise _too_long(what, duration, limits)
    if duration is not None and (expected := math.ceil(duration * fps - 1e-6)) > limits.max_frames:
        raise _too_many_frames(what, f"about {expected}", fps, limits)
    if min(width, height) < size and not upscale:
        raise MediaRejected(
            "too_small",
            f"{what} is {width}x{height}; the model takes {size}x{size} crops and this server does not upscale",
        )
    source = SourceInfo(
        container=VIDEO_CONTAINERS[container.format.name],
        codec=stream.codec_context.name,
        width=width,
        height=height,
        fps=src_fps,
        duration_s=duration,
    )
    return stream, source


def probe_video_bytes(
    data: bytes, *, what: str, fps: float, size: int, limits: DecodeLimits, upscale: bool = False
) -> SourceInfo:
    """What :func:`decode_video_bytes` checks from the container and stream headers alone (no frame
    is decoded): for refusing a bad upload at once while deferring its decoding. Raises
    :class:`MediaRejected`; a file damaged past its header is only found when decoded."""
    with _open_bytes(data, what, VIDEO_CONTAINERS, VIDEO_KINDS) as container:
        return _checked_header(container, what, fps, size, limits, upscale)[1]


def decode_video_bytes(
    data: bytes, *, what: str, fps: float, size: int, limits: DecodeLimits, upscale: bool = False
) -> DecodedVideo:
    """A video file in memory (MP4/MOV, WebM/MKV, AVI, GIF) -> uint8 frames `[T, size, size, 3]`
    sampled at `fps` from its first frame, resized and centre-cropped as :func:`decode_all` does.
    A video whose shorter side is below `size` is refused ("too_small"), or resized up if `upscale`.

    `what` names the media in messages ("the upload 'a.mp4'"). Raises :class:`MediaRejected`."""
    return _needed_else_every_frame(
        _decode_video_bytes, data, what=what, fps=fps, size=size, limits=limits, upscale=upscale
    )


def _decode_video_bytes(
    data: bytes, *, what: str, fps: float, size: int, limits: DecodeLimits, upscale: bool, every_frame: bool
) -> DecodedVideo:
    with _open_bytes(data, what, VIDEO_CONTAINERS, VIDEO_KINDS) as container:
        stream, source = _checked_header(container, what, fps, size, limits, upscale)
        src_fps, duration = source.fps, source.duration_s
        state = _Decoded(frames=[], end_s=None, error=None)
        # one more frame than allowed: tells "too many" without decoding on
        targets = _Targets(first=0.0, step=1.0 / fps, count=limits.max_frames + 1)
        decoded = _guarded(_frames(container, stream, src_fps, state, targets, every_frame), limits, what)
        try:
            convert = _resizer(size, what, upscale, every_frame)
            _sample(decoded, 0.0, targets.step, targets.count, convert, state)
        except UnreadableVideo as err:  # a frame smaller than the crop part-way through
            raise MediaRejected("too_small", err.reason) from err
    if len(state.frames) > limits.max_frames:
        raise _too_many_frames(what, f"more than {limits.max_frames}", fps, limits)
    if state.error is not None or not state.frames:
        reason = f"decoding failed ({state.error})" if state.error is not None else "no frame decodes"
        raise MediaRejected("truncated", f"{what} is truncated or damaged: {reason}")
    if duration is not None and state.end_s is not None and state.end_s + _TRUNCATION_SLACK_S < duration - 1 / src_fps:
        raise MediaRejected(
            "truncated",
            f"{what} ends at {state.end_s:.2f} s but its header promises {duration:.2f} s: the file is truncated",
        )
    return DecodedVideo(frames=np.stack(state.frames), fps=fps, source=source)


def _header_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def decode_image_bytes(data: bytes, *, what: str, max_pixels: int) -> np.ndarray:
    """One PNG/JPEG/WebP/BMP/GIF image in memory -> uint8 `[H, W, 3]` RGB (a GIF's first frame), at its
    own size (never resized). Raises :class:`MediaRejected`."""
    limits = DecodeLimits(max_frames=1, max_pixels=max_pixels, max_duration_s=math.inf)
    with _open_bytes(data, what, IMAGE_CONTAINERS, IMAGE_KINDS) as container:
        stream = _decodable_stream(container, what)
        _check_pixels(stream.width, stream.height, limits, what)
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError as err:
            raise MediaRejected("unreadable", f"{what} does not decode: {_reason(err)}") from err
        if frame is None:
            raise MediaRejected("unreadable", f"{what} holds no image")
        _check_pixels(frame.width, frame.height, limits, what)
        return frame.to_ndarray(format="rgb24")


# ----------------------------------------------------------------------------- encoding
@cache
def video_codec() -> str:
    """The H.264 encoder of this PyAV build (libx264, or another one FFmpeg calls h264), else MPEG-4
    Part 2, which every FFmpeg has (but browsers do not play)."""
    for name in ("libx264", "h264"):
        try:
            return av.codec.Codec(name, "w").name
        except Exception:  # noqa: S112  # not built into this FFmpeg
            continue
    return "mpeg4"


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 [T>0, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return frames


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad the bottom/right edge by one pixel where a side is odd (yuv420p needs even sizes)."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _encode(frames: np.ndarray, target: str | BinaryIO, fps: float) -> None:
    frames = _even(_check_frames(frames))
    _, h, w, _ = frames.shape
    codec = video_codec()
    with av.open(target, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            # one thread: renders are a few small frames, and frame threads add start-up work and nondeterminism
            stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        elif codec == "mpeg4":
            stream.bit_rate = 4_000_000
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode(None))  # flush delayed frames


def encode_mp4(frames: np.ndarray, fps: float) -> bytes:
    """uint8 `[T, H, W, 3]` RGB -> an MP4 in memory (yuv420p; an odd side is padded by one pixel)."""
    out = io.BytesIO()
    _encode(frames, out, fps)
    return out.getvalue()


def write_mp4(frames: np.ndarray, path: str | os.PathLike[str], fps: float) -> Path:
    """uint8 `[T, H, W, 3]` RGB -> an MP4 file at `path` (its folder is created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _encode(frames, str(path), fps)
    return path


def encode_png_strip(frames: np.ndarray) -> bytes:
    """uint8 `[T, H, W, 3]` -> one PNG with the frames side by side, left to right: `[H, T*W, 3]`."""
    frames = _check_frames(frames)
    strip = np.ascontiguousarray(np.concatenate(list(frames), axis=1))  # [H, T*W, 3]
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = strip.shape[1], strip.shape[0], "rgb24"
    packets = codec.encode(av.VideoFrame.from_ndarray(strip, format="rgb24"))
    packets += codec.encode(None)
    return b"".join(bytes(p) for p in packets)
