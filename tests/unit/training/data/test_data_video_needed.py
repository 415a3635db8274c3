"""Decoding only the frames the sampler takes gives the very arrays that decoding every frame gives.

The reference is the straightforward path kept in `training.data.video` (``every_frame=True``: every
frame decoded in order, each converted with a scaler of its own). The videos are the real samples
and clips made here of each kind the planner treats differently: H.264 with B-frames in MP4, MKV,
MPEG-TS (start codes) and AVI, an open GOP, a variable frame rate, B-frames that are never
references, one- and three-frame clips, a truncated file, and GIF, FFV1 and MJPEG (never skipped).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from tests.unit.training.data.datafiles import encode_video
from training.data import video
from training.data.video import DecodeLimits, MediaRejected, UnreadableVideo

pytestmark = pytest.mark.unit

# x264 with B-frames that are references (b-pyramid) and ones that are not, keyframes every 24 frames.
X264_B = {"x264-params": "bframes=3:b-pyramid=normal:keyint=24", "crf": "26", "preset": "veryfast"}
VFR_MS = [sum(([0] + [33, 41, 25, 50, 17, 33] * 8)[: i + 1]) for i in range(48)]  # 17-50 ms apart
GENERATED: dict[str, tuple[str, Callable[[], bytes]]] = {
    "h264_b.mp4": ("mp4", lambda: encode_video("mp4", "libx264", options=X264_B)),
    "h264_b.mkv": ("mkv", lambda: encode_video("matroska", "libx264", options=X264_B)),
    "h264_b.ts": ("ts", lambda: encode_video("mpegts", "libx264", options=X264_B)),  # Annex B start codes
    "h264_b.avi": (
        "avi",
        lambda: encode_video("avi", "libx264", options=X264_B),
    ),  # timestamps in decode order
    "h264_open_gop.mp4": (
        "mp4",
        lambda: encode_video(
            "mp4", "libx264", options={"x264-params": "bframes=3:keyint=12:open-gop=1", "crf": "26"}
        ),
    ),
    "h264_vfr.mp4": ("mp4", lambda: encode_video("mp4", "libx264", options=X264_B, pts_ms=VFR_MS)),
    "h264_no_pyramid.mp4": (
        "mp4",
        lambda: encode_video(
            "mp4", "libx264", options={"x264-params": "bframes=2:b-pyramid=none", "crf": "26"}
        ),
    ),
    "h264_one_frame.mp4": ("mp4", lambda: encode_video("mp4", "libx264", n=1, options=X264_B)),
    "h264_three_frames.mp4": ("mp4", lambda: encode_video("mp4", "libx264", n=3, options=X264_B)),
    "anim.gif": ("gif", lambda: encode_video("gif", "gif", n=20, fps=10, pix_fmt="rgb8")),
    "ffv1.mkv": ("mkv", lambda: encode_video("matroska", "ffv1", n=20, pix_fmt="yuv444p")),
    "mjpeg.avi": ("avi", lambda: encode_video("avi", "mjpeg", n=20, pix_fmt="yuvj422p")),
}
UPLOADS = {"mp4", "mkv", "avi", "gif"}  # the containers the service accepts
LIMITS = DecodeLimits(max_frames=256, max_pixels=4096 * 4096, max_duration_s=300.0)


@pytest.fixture(scope="module")
def generated() -> dict[str, bytes]:
    return {name: make() for name, (_, make) in GENERATED.items()}


def named(data: bytes, name: str) -> io.BytesIO:
    file = io.BytesIO(data)
    file.name = name
    return file


def outcome(decode: Callable[..., object], *args: object, **kwargs: object) -> object:
    """What a decode gives: its frames, or the refusal it raises (type, kind and message)."""
    try:
        result = decode(*args, **kwargs)
    except (UnreadableVideo, MediaRejected) as err:
        return (type(err).__name__, err.kind, str(err))
    return result.frames if isinstance(result, video.DecodedVideo) else result


def same(needed: object, reference: object) -> bool:
    """Identical frames (dtype, shape and every value), or the identical refusal."""
    if isinstance(reference, np.ndarray):
        return (isinstance(needed, np.ndarray) and needed.dtype == reference.dtype
                and needed.shape == reference.shape and bool(np.array_equal(needed, reference)))
    return needed == reference


def both_paths(
    decode: Callable[..., object], private: Callable[..., object], *args: object, **kw: object
) -> bool:
    """Whether the public decode (only the frames needed, falling back if need be) gives exactly what
    the reference (every frame decoded) gives."""
    return same(outcome(decode, *args, **kw), outcome(private, *args, every_frame=True, **kw))


@pytest.mark.parametrize("name", sorted(GENERATED))
@pytest.mark.parametrize("fps", [4.0, 12.0, 29.0])  # 12 from 30 fps: targets fall half-way between frames
def test_decode_all_is_identical(generated: dict[str, bytes], name: str, fps: float) -> None:
    assert both_paths(video.decode_all, video._decode_all, named(generated[name], name), fps, 32)


@pytest.mark.parametrize("name", sorted(GENERATED))
@pytest.mark.parametrize(("start_s", "frames", "fps"), [(0.0, 6, 7.5), (0.4, 4, 7.5), (0.9, 3, 4.0)])
def test_decode_clip_is_identical(
    generated: dict[str, bytes], name: str, start_s: float, frames: int, fps: float
) -> None:
    assert both_paths(video.decode_clip, video._decode_clip, named(generated[name], name), start_s, frames, fps, 32)


@pytest.mark.parametrize("name", sorted(n for n, (kind, _) in GENERATED.items() if kind in UPLOADS))
@pytest.mark.parametrize("size", [48, 80])  # 80 is above the 64-pixel short side: resized up (bilinear)
def test_uploads_are_identical(generated: dict[str, bytes], name: str, size: int) -> None:
    assert both_paths(
        video.decode_video_bytes,
        video._decode_video_bytes,
        generated[name],
        what=f"the upload {name!r}",
        fps=4.0,
        size=size,
        limits=LIMITS,
        upscale=True,
    )


def test_truncated_upload_is_refused_alike() -> None:
    whole = encode_video("mp4", "libx264", n=60, options={**X264_B, "movflags": "faststart"})
    for keep in (0.5, 0.8):
        cut = whole[: int(len(whole) * keep)]
        assert both_paths(
            video.decode_video_bytes,
            video._decode_video_bytes,
            cut,
            what="the upload",
            fps=4.0,
            size=48,
            limits=LIMITS,
            upscale=False,
        )
        assert both_paths(video.decode_all, video._decode_all, named(cut, "cut.mp4"), 4.0, 32)


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("bikes", ("bytes", 4.0, 128)),  # the service's case: a 10 s upload sampled at 4 fps, 128 px
        ("bikes", ("all", 4.0, 64)),
        ("bikes", ("clip", 5.5, 4, 4.0, 64)),  # seeks to the keyframe at 5.48 s
        ("bikes", ("clip", 2.0, 16, 8.0, 64)),
        ("carphone_pristine", ("bytes", 4.0, 128)),
        ("carphone_pristine", ("all", 29.97, 64)),  # the source's rate: every frame taken
        ("bigbuckbunny", ("all", 4.0, 128)),
    ],
)
def test_real_samples_are_identical(samples: dict[str, Path], name: str, call: tuple) -> None:
    path = samples[name]
    kind, *args = call
    if kind == "bytes":
        fps, size = args
        assert both_paths(
            video.decode_video_bytes,
            video._decode_video_bytes,
            path.read_bytes(),
            what="the upload",
            fps=fps,
            size=size,
            limits=LIMITS,
            upscale=True,
        )
    elif kind == "all":
        assert both_paths(video.decode_all, video._decode_all, path, *args)
    else:
        assert both_paths(video.decode_clip, video._decode_clip, path, *args)


@pytest.mark.parametrize(
    "name", ["h264_b.mp4", "h264_b.mkv", "h264_b.ts", "h264_vfr.mp4", "h264_no_pyramid.mp4"]
)
def test_b_frame_streams_are_decoded_without_falling_back(generated: dict[str, bytes], name: str) -> None:
    # The identity tests above would pass if every plan broke; these streams must keep theirs.
    skipped = planned_skips(generated[name], fps=4.0)
    assert skipped > 0
    frames = video._decode_all(named(generated[name], name), 4.0, 32, every_frame=False)  # raises if it broke
    np.testing.assert_array_equal(
        frames, video._decode_all(named(generated[name], name), 4.0, 32, every_frame=True)
    )


def test_bikes_leaves_most_non_reference_frames_undecoded(samples: dict[str, Path]) -> None:
    # 250 frames at 25 fps of which 115 are non-reference B-frames; 40 are taken at 4 fps.
    assert planned_skips(samples["bikes"].read_bytes(), fps=4.0) >= 90


def planned_skips(data: bytes, fps: float) -> int:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        h264 = video._H264.of(stream)
        assert h264 is not None
        window = video._demux_ahead(container, stream, None)
        targets = video._Targets(first=0.0, step=1 / fps, count=None)
        return len(video._plan(window, h264, stream, video._stream_fps(stream), targets).skip)


def test_a_broken_plan_falls_back_to_every_frame(
    generated: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A planner that wrongly skips the frames the sampler takes: the sampler meets a frame that was
    # never decoded, and the decode starts over the reference way.
    data = generated["h264_b.mp4"]
    reference = video._decode_all(named(data, "b.mp4"), 4.0, 32, every_frame=True)
    monkeypatch.setattr(video, "_taken", lambda *args, **kwargs: set())
    with pytest.raises(video._PlanBroken):
        video._decode_all(named(data, "b.mp4"), 4.0, 32, every_frame=False)
    np.testing.assert_array_equal(video.decode_all(named(data, "b.mp4"), 4.0, 32), reference)


@pytest.mark.parametrize(
    ("pts", "depth"),
    [
        ([0, 1, 2, 3], 0),
        ([0, 2, 1, 3], 1),  # one B-frame
        ([0, 4, 2, 1, 3, 8, 6, 5, 7], 2),  # a B-pyramid: 1 comes after 4 and 2
        ([5, 0, 1, 2], 1),
        ([100] + list(range(20)), 17),  # held back past the largest picture buffer
    ],
)
def test_reorder_depth(pts: list[int], depth: int) -> None:
    assert video._reorder_depth(pts) == depth


def test_nal_headers_of_both_h264_framings() -> None:
    slice_nonref, slice_ref, sps = 0x01, 0x41, 0x67
    length_prefixed = b"".join(
        len(n).to_bytes(4, "big") + n for n in (bytes([sps, 1, 2]), bytes([slice_ref, 9]))
    )
    assert video._length_prefixed_headers(memoryview(length_prefixed), 4) == [sps, slice_ref]
    assert video._length_prefixed_headers(memoryview(length_prefixed[:-1]), 4) is None  # cut short
    annexb = b"\x00\x00\x00\x01" + bytes([0x09, 0xF0]) + b"\x00\x00\x01" + bytes([slice_nonref, 0x88, 0x80])
    assert video._annexb_headers(annexb) == [0x09, slice_nonref]
