"""Uploaded media: real clips decode exactly as the training data does; every kind of bad file is a
4xx ApiError with a code (encoding: tests/unit/training/data/test_data_video.py)."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import ApiError
from service.media import (
    MediaLimits,
    b64decode_field,
    check_image_size,
    decode_clip_bytes,
    decode_image,
    frames_from_base64,
    resized_from,
)
from training.data.samples import sample_clips
from training.data.video import decode_all, encode_png_strip

from .media_files import (
    audio_only_mp4,
    clip,
    gif_with_screen,
    jpeg_bytes,
    mp4,
    png_b64,
    random_bytes,
    small_video,
    truncated,
    webm,
)

LIMITS = MediaLimits(size=32, fps=4.0, max_bytes=8 << 20, max_frames=64, max_pixels=2000 * 2000, max_duration_s=30.0)


def fails(code: str, status: int, fn, *args, **kwargs) -> ApiError:  # noqa: ANN001
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    assert (info.value.status, info.value.code) == (status, code), info.value.message
    assert info.value.message
    return info.value


def test_sample_clip_decodes_exactly_like_the_training_data() -> None:
    path = sample_clips()["carphone_pristine"]
    got = decode_clip_bytes(path.read_bytes(), filename=path.name, limits=LIMITS)
    np.testing.assert_array_equal(got.frames, decode_all(path, 4.0, 32))
    assert got.frames.shape == (17, 32, 32, 3) and got.fps == 4.0
    assert (got.source.width, got.source.height, got.source.container) == (176, 144, "MP4/MOV")


def test_webm_and_gif_are_accepted() -> None:
    assert decode_clip_bytes(webm(16), filename="a.webm", limits=LIMITS).frames.shape == (8, 32, 32, 3)
    assert decode_clip_bytes(gif_with_screen(40, 40), filename="a.gif", limits=LIMITS).frames.shape[1:] == (32, 32, 3)


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        pytest.param(b"", "empty_upload", 400, id="zero-bytes"),
        pytest.param(random_bytes(), "unreadable_media", 422, id="random-bytes"),
        pytest.param(truncated(mp4(16)), "unreadable_media", 422, id="truncated-mp4"),
        pytest.param(audio_only_mp4(), "no_video_stream", 422, id="audio-only"),
        pytest.param(gif_with_screen(10_000, 10_000), "frame_too_large", 413, id="10000x10000-header"),
    ],
)
def test_bad_uploads_are_refused_with_a_code(data: bytes, code: str, status: int) -> None:
    err = fails(code, status, decode_clip_bytes, data, filename="upload.bin", limits=LIMITS)
    assert err.message  # every refusal says what was wrong


def test_huge_frame_header_is_refused_before_decoding() -> None:
    # 10000 x 10000 RGB would be 300 MB per frame: the header check must come first.
    err = fails("frame_too_large", 413, decode_clip_bytes, gif_with_screen(10_000, 10_000), filename=None, limits=LIMITS)
    assert "10000x10000" in err.message and err.hint


def test_too_many_frames_and_too_long() -> None:
    few = MediaLimits(**{**LIMITS.__dict__, "max_frames": 5})
    err = fails("too_many_frames", 413, decode_clip_bytes, mp4(24), filename="a.mp4", limits=few)  # 3 s -> 12 frames
    assert "at most 5" in err.message
    short = MediaLimits(**{**LIMITS.__dict__, "max_duration_s": 1.0})
    fails("too_long", 413, decode_clip_bytes, mp4(24), filename="a.mp4", limits=short)
    tiny = MediaLimits(**{**LIMITS.__dict__, "max_bytes": 100})
    fails("upload_too_large", 413, decode_clip_bytes, mp4(24), filename="a.mp4", limits=tiny)


def test_an_image_is_not_a_clip() -> None:
    err = fails("unsupported_container", 415, decode_clip_bytes, jpeg_bytes(clip(1)[0]), filename="a.jpg", limits=LIMITS)
    assert err.message


def test_images_keep_their_size_and_a_wrong_size_names_the_expected_one() -> None:
    image = clip(1, size=32)[0]
    np.testing.assert_array_equal(decode_image(encode_png_strip(image[None]), limits=LIMITS), image)
    assert decode_image(jpeg_bytes(image), limits=LIMITS).shape == (32, 32, 3)
    err = fails("wrong_image_size", 422, check_image_size, clip(1, size=48)[0], 32, "goal")
    assert "48x48" in err.message and "32x32" in err.message
    fails("frame_too_large", 413, decode_image, gif_with_screen(10_000, 10_000), limits=LIMITS)


def test_base64_frames() -> None:
    frames = clip(3, size=32)
    np.testing.assert_array_equal(frames_from_base64([png_b64(f) for f in frames], limits=LIMITS), frames)
    fails("wrong_image_size", 422, frames_from_base64, [png_b64(clip(1, size=40)[0])], limits=LIMITS)
    fails("invalid_base64", 422, b64decode_field, "not base64!", "frames[0]")
    fails("urls_not_fetched", 422, b64decode_field, "https://example.com/a.png", "goal")
    assert b64decode_field("data:image/png;base64,aGk=", "x") == b"hi"


@pytest.mark.parametrize(
    ("codec", "container", "pix_fmt", "width", "height"),
    [
        pytest.param("ffv1", "matroska", "gray", 160, 120, id="160x120-gray-ffv1"),
        pytest.param("ffv1", "matroska", "yuv420p", 127, 93, id="127x93-ffv1"),
        pytest.param("gif", "gif", "rgb8", 96, 72, id="96x72-gif"),
        pytest.param("libx264", "mp4", "yuv420p", 96, 72, id="96x72-h264"),
    ],
)
def test_small_videos_are_resized_up_by_default_and_refused_when_asked(
    codec: str, container: str, pix_fmt: str, width: int, height: int
) -> None:
    data = small_video(codec, container, pix_fmt, width, height)
    model = MediaLimits(**{**LIMITS.__dict__, "size": 128})  # the demo model's crop: larger than the clip
    got = decode_clip_bytes(data, filename="small", limits=model)
    assert got.frames.shape == (8, 128, 128, 3) and got.frames.dtype == np.uint8  # 2 s at 4 fps
    assert got.frames.std() > 0  # real picture, not a blank fill
    assert resized_from(got.source, 128) == [width, height]
    assert resized_from(got.source, 64) is None  # large enough for a 64 px model: not resized up
    refuse = MediaLimits(**{**model.__dict__, "upscale": False})
    err = fails("video_too_small", 422, decode_clip_bytes, data, filename="small", limits=refuse)
    assert f"{width}x{height}" in err.message and "128" in err.hint
