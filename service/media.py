"""Uploaded media in and rendered media out, all in memory with PyAV, behind the service's limits.

In: `decode_clip_bytes` turns an uploaded MP4/MOV/WebM/MKV/AVI/GIF into uint8 frames sampled at
the model's fps and resized/centre-cropped to its image size, exactly as the training data is
(`training.data.video`'s sampling and resize), so served latents match offline ones.
`decode_image_bytes` and `frames_from_base64` read single images (PNG/JPEG/WebP/BMP/GIF) for JSON
bodies; those are never resized: an image of another size is refused with the size expected.
Every limit that can be read from a header (bytes, width x height, duration, frame count) is
checked BEFORE anything is decoded, and again while decoding in case the header lies.

Out: `encode_mp4` (H.264, yuv420p, even sizes) and `encode_png_strip` (frames side by side).

Every failure is an `ApiError` with a 4xx status and a code a client can branch on.
"""

from __future__ import annotations

import base64
import binascii
import fractions
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from service.errors import ApiError
from training.data.video import (
    UnreadableVideo,
    VideoTooSmall,
    _Decoded,
    _resize_crop,
    _sample,
    _stream_fps,
    _timed_frames,
    check_size,
)

# PyAV demuxer name -> what a user calls it.
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


@dataclass(frozen=True)
class MediaLimits:
    """What the model takes (`size`, `fps`) and the most the service accepts per request."""

    size: int  # the model's square input size: clips are resized (short side) and centre-cropped to it
    fps: float  # the model's frame rate: clips are sampled at it
    max_bytes: int  # one upload
    max_frames: int  # frames after sampling at `fps`
    max_pixels: int  # width * height of one source frame
    max_duration_s: float

    @classmethod
    def from_settings(cls, settings: Any, *, size: int, fps: float) -> MediaLimits:
        return cls(
            size=size,
            fps=fps,
            max_bytes=settings.max_upload_bytes,
            max_frames=settings.max_frames,
            max_pixels=settings.max_pixels,
            max_duration_s=settings.max_duration_s,
        )


@dataclass(frozen=True)
class SourceInfo:
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float | None


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # uint8 [T, size, size, 3]
    fps: float  # the sampling rate of `frames`
    timestamps: np.ndarray  # float64 [T]: seconds from the source's first frame
    source: SourceInfo


# ----------------------------------------------------------------------------- checks
def _check_bytes(data: bytes, limits: MediaLimits, what: str) -> None:
    if len(data) == 0:
        raise ApiError(400, "empty_upload", f"{what} is empty (0 bytes)", "send the file's bytes")
    if len(data) > limits.max_bytes:
        raise ApiError(
            413,
            "upload_too_large",
            f"{what} is {len(data)} bytes; the limit is {limits.max_bytes} bytes",
            "send a shorter or smaller clip (the server's LAWM_MAX_UPLOAD_BYTES sets the limit)",
        )


def _check_pixels(width: int, height: int, limits: MediaLimits, what: str) -> None:
    if width * height > limits.max_pixels:
        raise ApiError(
            413,
            "frame_too_large",
            f"{what} has {width}x{height} frames ({width * height} pixels); at most {limits.max_pixels} "
            "pixels per frame are accepted",
            f"downscale to about {limits.size}x{limits.size} before uploading (the model works at that size)",
        )


def _too_many_frames(what: str, count: str, limits: MediaLimits) -> ApiError:
    return ApiError(
        413,
        "too_many_frames",
        f"{what} gives {count} frames at the model's {limits.fps:g} fps; at most {limits.max_frames} are accepted",
        f"send at most {limits.max_frames / limits.fps:g} s of video, or split it into several requests",
    )


def _too_long(what: str, seconds: float, limits: MediaLimits) -> ApiError:
    return ApiError(
        413,
        "too_long",
        f"{what} lasts {seconds:.2f} s; at most {limits.max_duration_s:g} s are accepted",
        "cut the clip, or split it into several requests",
    )


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err)  # FFmpeg's words without the "<none>" file name


def _open(data: bytes, what: str, allowed: dict[str, str], kinds: str) -> av.container.InputContainer:
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise ApiError(
            422,
            "unreadable_media",
            f"{what} is not a readable media file (corrupt, truncated or not {kinds}): {_reason(err)}",
            f"send a complete {kinds} file",
        ) from err
    if container.format.name not in allowed:
        container.close()
        raise ApiError(
            415,
            "unsupported_container",
            f"{what} is a {container.format.long_name or container.format.name} file; accepted: {kinds}",
            f"convert it, e.g. `ffmpeg -i in -c:v libx264 out.mp4`, or send one of: {kinds}",
        )
    return container


def _video_stream(container: av.container.InputContainer, what: str) -> av.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        raise ApiError(
            422,
            "no_video_stream",
            f"{what} has no video stream (it holds: {', '.join(kinds)})",
            "send a file with a video track",
        )
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.width or not stream.height:
        raise ApiError(
            415,
            "unsupported_codec",
            f"{what}'s video codec {stream.codec_tag!r} cannot be decoded here",
            "re-encode it as H.264, VP9 or GIF",
        )
    return stream


def _stream_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _guarded(
    frames: Iterator[tuple[float, av.VideoFrame]], limits: MediaLimits, what: str
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Re-check the limits on the decoded frames themselves (a header can lie)."""
    for t, frame in frames:
        _check_pixels(frame.width, frame.height, limits, what)
        if t > limits.max_duration_s:
            raise _too_long(what, t, limits)
        yield t, frame


# ----------------------------------------------------------------------------- decoding
def decode_clip_bytes(data: bytes, *, filename: str | None, limits: MediaLimits) -> Clip:
    """An uploaded video -> uint8 frames `[T, size, size, 3]` sampled at `limits.fps` from its first
    frame (the frame nearest each target time), with their timestamps.

    Raises `ApiError` 400/413/415/422 naming what is wrong and how to fix it.
    """
    what = f"the upload {filename!r}" if filename else "the upload"
    _check_bytes(data, limits, what)
    with _open(data, what, VIDEO_CONTAINERS, VIDEO_KINDS) as container:
        stream = _video_stream(container, what)
        width, height = stream.width, stream.height
        _check_pixels(width, height, limits, what)  # before a single frame is decoded
        src_fps = _stream_fps(stream)
        duration = _stream_duration(container, stream)
        if duration is not None and duration > limits.max_duration_s:
            raise _too_long(what, duration, limits)
        if duration is not None and (expected := math.ceil(duration * limits.fps - 1e-6)) > limits.max_frames:
            raise _too_many_frames(what, f"about {expected}", limits)
        try:
            check_size(what, width, height, limits.size)
        except VideoTooSmall as err:
            raise ApiError(
                422,
                "video_too_small",
                f"{what} is {width}x{height}; the model takes {limits.size}x{limits.size} crops and never "
                "upscales",
                f"send video whose shorter side is at least {limits.size} px",
            ) from err
        state = _Decoded(frames=[], end_s=None, error=None)
        decoded = _guarded(_timed_frames(container, stream, src_fps, state), limits, what)
        try:
            _sample(
                decoded,
                0.0,
                1.0 / limits.fps,
                limits.max_frames + 1,  # one more than allowed: tells "too many" without decoding on
                lambda f: _resize_crop(f, limits.size, what),
                state,
            )
        except UnreadableVideo as err:  # a frame smaller than the crop part-way through
            raise ApiError(422, "video_too_small", err.reason, None) from err
        info = SourceInfo(
            container=VIDEO_CONTAINERS[container.format.name],
            codec=stream.codec_context.name,
            width=width,
            height=height,
            fps=src_fps,
            duration_s=duration,
        )
    if len(state.frames) > limits.max_frames:
        raise _too_many_frames(what, f"more than {limits.max_frames}", limits)
    if state.error is not None or not state.frames:
        reason = f"decoding failed ({state.error})" if state.error is not None else "no frame decodes"
        raise ApiError(
            422, "truncated_video", f"{what} is truncated or damaged: {reason}", "send the complete file"
        )
    if duration is not None and state.end_s is not None and state.end_s + _TRUNCATION_SLACK_S < duration - 1 / src_fps:
        raise ApiError(
            422,
            "truncated_video",
            f"{what} ends at {state.end_s:.2f} s but its header promises {duration:.2f} s: the file is truncated",
            "send the complete file",
        )
    frames = np.stack(state.frames)  # [T, size, size, 3]
    timestamps = np.arange(len(frames), dtype=np.float64) / limits.fps
    return Clip(frames=frames, fps=limits.fps, timestamps=timestamps, source=info)


def decode_image_bytes(data: bytes, *, limits: MediaLimits, what: str = "the image") -> np.ndarray:
    """One PNG/JPEG/WebP/BMP/GIF image -> uint8 `[H, W, 3]` RGB (a GIF's first frame), at its own size
    (never resized)."""
    _check_bytes(data, limits, what)
    with _open(data, what, IMAGE_CONTAINERS, IMAGE_KINDS) as container:
        stream = _video_stream(container, what)
        _check_pixels(stream.width, stream.height, limits, what)
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError as err:
            raise ApiError(422, "unreadable_media", f"{what} does not decode: {_reason(err)}", "send a complete image") from err
        if frame is None:
            raise ApiError(422, "unreadable_media", f"{what} holds no image", "send a complete image")
        _check_pixels(frame.width, frame.height, limits, what)
        return frame.to_ndarray(format="rgb24")


def check_image_size(image: np.ndarray, size: int, what: str) -> None:
    """Images in JSON bodies are the model's size exactly: resizing is the client's choice to make."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ApiError(422, "invalid_image", f"{what} must be RGB [H, W, 3], got shape {list(image.shape)}")
    if image.shape[:2] != (size, size):
        raise ApiError(
            422,
            "wrong_image_size",
            f"{what} is {image.shape[1]}x{image.shape[0]}; the model takes {size}x{size} images",
            f"resize and centre-crop it to {size}x{size} before sending (or upload a video clip, which the "
            "server resizes)",
        )


def b64decode_field(text: str, what: str) -> bytes:
    """Standard base64 (an optional `data:...;base64,` prefix is dropped). URLs are refused: the
    service never fetches anything a client names."""
    stripped = text.strip()
    if stripped.lower().startswith(("http://", "https://", "ftp://", "file:", "s3://", "gs://")):
        raise ApiError(
            422,
            "urls_not_fetched",
            f"{what} is a URL; the service never fetches URLs",
            "send the bytes themselves, base64-encoded",
        )
    if stripped.startswith("data:") and "," in stripped:
        stripped = stripped.split(",", 1)[1]
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(422, "invalid_base64", f"{what} is not valid base64: {err}", "encode the bytes with base64") from err


def frames_from_base64(items: list[str], *, limits: MediaLimits, field: str = "frames") -> np.ndarray:
    """Base64-encoded images, one per frame, each exactly the model's size -> uint8 `[T, size, size, 3]`."""
    if not items:
        raise ApiError(422, "invalid_request", f"{field} is empty", "send at least one frame")
    if len(items) > limits.max_frames:
        raise _too_many_frames(field, str(len(items)), limits)
    frames = []
    for i, item in enumerate(items):
        what = f"{field}[{i}]"
        image = decode_image_bytes(b64decode_field(item, what), limits=limits, what=what)
        check_image_size(image, limits.size, what)
        frames.append(image)
    return np.stack(frames)


# ----------------------------------------------------------------------------- encoding
def _even(frames: np.ndarray) -> np.ndarray:
    """Pad the bottom/right edge by one pixel where a side is odd (yuv420p needs even sizes)."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def encode_mp4(frames: np.ndarray, fps: float) -> bytes:
    """uint8 `[T, H, W, 3]` RGB -> an H.264 MP4 (yuv420p)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 [T>0, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    frames = _even(frames)
    _, h, w, _ = frames.shape
    out = io.BytesIO()
    codec = "libx264" if "libx264" in av.codecs_available else "h264"
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"} if codec == "libx264" else {}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def encode_png_strip(frames: np.ndarray) -> bytes:
    """uint8 `[T, H, W, 3]` -> one PNG with the frames side by side, left to right: `[H, T*W, 3]`."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 [T>0, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    strip = np.ascontiguousarray(np.concatenate(list(frames), axis=1))  # [H, T*W, 3]
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = strip.shape[1], strip.shape[0], "rgb24"
    packets = codec.encode(av.VideoFrame.from_ndarray(strip, format="rgb24"))
    packets += codec.encode(None)
    return b"".join(bytes(p) for p in packets)
