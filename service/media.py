"""Uploaded media behind the service's limits, and what the client is told when it is refused.

Decoding is `training.data.video`'s, the same as the training data's (`decode_video_bytes` samples at
the model's fps and resizes/centre-crops to its image size), so served latents match offline ones.
Here: the limits (`MediaLimits`, from the settings), base64 and the JSON forms of clips and images,
and the mapping of every refusal to an `ApiError` with a 4xx status and a code a client can branch
on. Images in JSON bodies are never resized: an image of another size is refused with the size
expected. Uploaded video smaller than the model's crop is resized up (`resized_from` in the answer)
unless the operator set `small_videos="refuse"`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.errors import ApiError
from service.inputs import Body
from training.data.video import (
    IMAGE_KINDS,
    VIDEO_KINDS,
    DecodedVideo,
    DecodeLimits,
    MediaRejected,
    SourceInfo,
    decode_image_bytes,
    decode_video_bytes,
    probe_video_bytes,
)

if TYPE_CHECKING:
    from service.inference.stage import Stage
    from service.settings import Settings


@dataclass(frozen=True)
class MediaLimits:
    """What the model takes (`size`, `fps`) and the most the service accepts per request."""

    size: int  # the model's square input size: clips are resized (short side) and centre-cropped to it
    fps: float  # the model's frame rate: clips are sampled at it
    max_bytes: int  # one upload
    max_frames: int  # frames after sampling at `fps`
    max_pixels: int  # width * height of one source frame
    max_duration_s: float
    upscale: bool = True  # a video smaller than `size` is resized up (else refused: video_too_small)

    @classmethod
    def from_settings(cls, settings: Settings, *, size: int, fps: float) -> MediaLimits:
        return cls(
            size=size,
            fps=fps,
            max_bytes=settings.max_upload_bytes,
            max_frames=settings.max_frames,
            max_pixels=settings.max_pixels,
            max_duration_s=settings.max_duration_s,
            upscale=settings.small_videos == "resize",
        )

    @property
    def decoding(self) -> DecodeLimits:
        return DecodeLimits(max_frames=self.max_frames, max_pixels=self.max_pixels, max_duration_s=self.max_duration_s)


# ----------------------------------------------------------------------------- refusals as HTTP
def refused(err: MediaRejected, limits: MediaLimits, kinds: str) -> ApiError:
    """A decoder's refusal as the client's answer: status, code and how to fix it."""
    size = limits.size
    answers: dict[str, tuple[int, str, str | None]] = {
        "unreadable": (422, "unreadable_media", f"send a complete {kinds} file"),
        "unsupported_container": (
            415, "unsupported_container", f"convert it, e.g. `ffmpeg -i in -c:v libx264 out.mp4`, or send one of: {kinds}"
        ),
        "no_video_stream": (422, "no_video_stream", "send a file with a video track"),
        "unsupported_codec": (415, "unsupported_codec", "re-encode it as H.264, VP9 or GIF"),
        "too_small": (
            422, "video_too_small",
            f"send video whose shorter side is at least {size} px (this server refuses smaller video: "
            "LAWM_SMALL_VIDEOS=refuse)",
        ),
        "truncated": (422, "truncated_video", "send the complete file"),
        "frame_too_large": (
            413, "frame_too_large", f"downscale to about {size}x{size} before uploading (the model works at that size)"
        ),
        "too_long": (413, "too_long", "cut the clip, or split it into several requests"),
        "too_many_frames": (
            413, "too_many_frames",
            f"send at most {limits.max_frames / limits.fps:g} s of video, or split it into several requests",
        ),
    }
    status, code, hint = answers.get(err.kind, (422, "unreadable_media", None))
    return ApiError(status, code, err.message, hint)


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


# ----------------------------------------------------------------------------- decoding
def decode_clip_bytes(data: bytes, *, filename: str | None, limits: MediaLimits) -> DecodedVideo:
    """An uploaded video -> uint8 frames `[T, size, size, 3]` sampled at `limits.fps` from its first
    frame (the frame nearest each target time). Raises `ApiError` 400/413/415/422."""
    what = f"the upload {filename!r}" if filename else "the upload"
    _check_bytes(data, limits, what)
    try:
        return decode_video_bytes(data, what=what, fps=limits.fps, size=limits.size, limits=limits.decoding,
                                  upscale=limits.upscale)
    except MediaRejected as err:
        raise refused(err, limits, VIDEO_KINDS) from err


def probe_clip_bytes(data: bytes, *, filename: str | None, limits: MediaLimits) -> SourceInfo:
    """The checks of `decode_clip_bytes` that need no decoding (size, container, codec, limits from
    the headers): a job refuses a bad upload at once and decodes it only when it runs."""
    what = f"the upload {filename!r}" if filename else "the upload"
    _check_bytes(data, limits, what)
    try:
        return probe_video_bytes(data, what=what, fps=limits.fps, size=limits.size, limits=limits.decoding,
                                 upscale=limits.upscale)
    except MediaRejected as err:
        raise refused(err, limits, VIDEO_KINDS) from err


def decode_image(data: bytes, *, limits: MediaLimits, what: str = "the image") -> np.ndarray:
    """One PNG/JPEG/WebP/BMP/GIF image -> uint8 `[H, W, 3]` RGB at its own size (never resized)."""
    _check_bytes(data, limits, what)
    try:
        return decode_image_bytes(data, what=what, max_pixels=limits.max_pixels)
    except MediaRejected as err:
        raise refused(err, limits, IMAGE_KINDS) from err


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


def model_sized_image(data: bytes, what: str, limits: MediaLimits) -> np.ndarray:
    """An image that must already be the model's size (goals, observations, JSON frames)."""
    image = decode_image(data, limits=limits, what=what)
    check_image_size(image, limits.size, what)
    return image


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
        raise ApiError(
            413, "too_many_frames", f"{field} has {len(items)} frames; at most {limits.max_frames} are accepted",
            "send fewer frames, or split them into several requests",
        )
    frames = [model_sized_image(b64decode_field(item, f"{field}[{i}]"), f"{field}[{i}]", limits)
              for i, item in enumerate(items)]
    return np.stack(frames)


def clip_from(
    body: Body, field: str, frames: list[str] | None, limits: MediaLimits, frames_field: str = "frames"
) -> tuple[np.ndarray, SourceInfo | None]:
    """The clip a request carries: the upload `field` (decoded and resized by the server) or base64
    `frames` (named `frames_field` in messages) of the model's size, not both -> (uint8 frames
    `[T, size, size, 3]`, the upload's source)."""
    upload = body.files.get(field)
    if upload is not None and frames:
        raise ApiError(422, "invalid_request", f"send {field} either as the `{field}` upload or as frames, not both")
    if upload is not None:
        clip = decode_clip_bytes(upload.data, filename=upload.filename, limits=limits)
        return clip.frames, clip.source
    if frames:
        return frames_from_base64(frames, limits=limits, field=frames_field), None
    raise ApiError(422, "invalid_request", f"no {field}: upload it as the multipart file `{field}` or send its frames",
                   "see /docs for both forms")


def resized_from(source: SourceInfo | None, size: int) -> list[int] | None:
    """`[width, height]` of an upload that was smaller than the model's crop and was resized up."""
    if source is None or min(source.width, source.height) >= size:
        return None
    return [source.width, source.height]


def decode_work(source: SourceInfo, limits: MediaLimits) -> float:
    """Frames the decoder will go through for an upload (every source frame is decoded), from its
    headers; the most a clip may hold when the header gives no duration."""
    if source.duration_s is None:
        return limits.max_duration_s * source.fps if source.fps > 0 else float(limits.max_frames)
    return max(1.0, source.duration_s * source.fps)


async def clip_in_stage(
    stage: Stage, body: Body, field: str, frames: list[str] | None, limits: MediaLimits, frames_field: str = "frames",
    deadline: float | None = None,
) -> tuple[np.ndarray, SourceInfo | None]:
    """`clip_from` run in the decode `stage`: admitted by its work in frames (an upload's from its
    headers, checked first in a thread: a bad file is refused before it waits), or 429 at once."""
    upload = body.files.get(field)
    if upload is not None and not frames:
        source = await asyncio.to_thread(probe_clip_bytes, upload.data, filename=upload.filename, limits=limits)
        work = decode_work(source, limits)
    else:
        work = float(len(frames or ()))
    return await stage.run(lambda: clip_from(body, field, frames, limits, frames_field), work, deadline)
