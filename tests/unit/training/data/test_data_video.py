"""PyAV decoding: probing, frame selection at a target fps, resize/crop, and failures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.training.data.datafiles import frame_indices, write_video
from training.data.video import (
    UnreadableVideo,
    VideoTooSmall,
    _Decoded,
    _sample,
    decode_all,
    decode_clip,
    decode_image_bytes,
    encode_mp4,
    encode_png_strip,
    probe,
    video_codec,
    write_mp4,
)

pytestmark = pytest.mark.unit


def test_probe_real_samples(samples: dict[str, Path]) -> None:
    carphone = probe(samples["carphone_pristine"])
    assert (carphone.width, carphone.height) == (176, 144)
    assert carphone.fps == pytest.approx(30000 / 1001)
    assert carphone.duration_s == pytest.approx(4.0, abs=0.05)
    assert carphone.num_frames == 120
    bikes = probe(samples["bikes"])
    assert (bikes.width, bikes.height, bikes.fps, bikes.num_frames) == (640, 272, 25.0, 250)
    assert bikes.duration_s == pytest.approx(10.0)


def test_decode_clip_real_sample(samples: dict[str, Path]) -> None:
    clip = decode_clip(samples["bikes"], start_s=2.0, frames=6, fps=4.0, size=128)
    assert clip.shape == (6, 128, 128, 3) and clip.dtype == np.uint8
    assert clip.std() > 10  # a real picture, not a blank frame
    assert np.abs(np.diff(clip.astype(np.int16), axis=0)).mean() > 1  # the scene moves


def test_seeking_matches_sequential_decoding(samples: dict[str, Path]) -> None:
    # bikes has B-frames and keyframes at 0, 1.2, 3.04, 5.48 s...: a clip starting after a
    # keyframe must equal the same frames decoded from the beginning.
    everything = decode_all(samples["bikes"], fps=4.0, size=64)
    assert everything.shape == (40, 64, 64, 3)
    clip = decode_clip(samples["bikes"], start_s=5.5, frames=4, fps=4.0, size=64)
    np.testing.assert_array_equal(clip, everything[22:26])


@pytest.mark.parametrize(
    ("start_s", "fps", "expected"),
    [
        (0.0, 10.0, [0, 1, 2, 3]),  # the source rate: every frame
        (0.52, 2.0, [5, 10, 15, 20]),  # nearest to 0.52, 1.02, 1.52, 2.02 s
        (1.26, 4.0, [13, 15, 18, 20]),  # 1.26, 1.51, 1.76, 2.01 s, across keyframes every 0.5 s
        (2.84, 4.0, [28, 31, 33, 35]),  # the last target, 3.59 s, is within the last frame (3.5-3.6 s)
    ],
)
def test_decode_clip_picks_nearest_frames(
    gray_mp4: Path, start_s: float, fps: float, expected: list[int]
) -> None:
    clip = decode_clip(gray_mp4, start_s=start_s, frames=4, fps=fps, size=32)
    assert frame_indices(clip) == expected


@settings(max_examples=200, deadline=None, database=None)  # no .hypothesis folder in the repo
@given(
    src_fps=st.floats(1.0, 60.0),
    n_src=st.integers(1, 80),
    fps=st.floats(0.5, 30.0),
    start_frac=st.floats(0.0, 1.0),
    count=st.integers(1, 12),
)
def test_sampling_picks_the_nearest_frame(
    src_fps: float, n_src: int, fps: float, start_frac: float, count: int
) -> None:
    times = [i / src_fps for i in range(n_src)]
    end = n_src / src_fps
    start = start_frac * end
    state = _Decoded(frames=[], end_s=end, error=None)
    _sample(iter(zip(times, range(n_src), strict=True)), start, 1 / fps, count, np.array, state)
    targets = [start + i / fps for i in range(count)]
    covered = [t for t in targets if t < end - 1e-6]  # the video holds times before its end only
    assert len(state.frames) == len(covered)
    for target, chosen in zip(covered, state.frames, strict=True):
        best = min(abs(t - target) for t in times)
        assert abs(times[int(chosen)] - target) <= best + 1e-9


def test_slow_source_repeats_frames(tmp_path: Path) -> None:
    slow = write_video(tmp_path / "slow.mp4", n=8, fps=2)  # frames at 0, 0.5, 1.0 ... s
    clip = decode_clip(slow, start_s=0.3, frames=8, fps=8.0, size=32)
    assert frame_indices(clip) == [1, 1, 1, 1, 2, 2, 2, 2]


def test_decode_all_samples_the_whole_video(gray_mp4: Path) -> None:
    frames = decode_all(gray_mp4, fps=3.0, size=32)
    # Targets 0, 1/3, 2/3, ... up to the end of the last frame (3.6 s).
    assert frame_indices(frames) == [0, 3, 7, 10, 13, 17, 20, 23, 27, 30, 33]


@pytest.mark.parametrize(("width", "height"), [(96, 48), (48, 96)])
def test_short_side_resize_then_centre_crop(tmp_path: Path, width: int, height: int) -> None:
    def frame(_: int) -> np.ndarray:
        # Red on the outer quarters of the long side, green in its middle half.
        rgb = np.zeros((height, width, 3), np.uint8)
        rgb[..., 0] = 255
        long = max(width, height)
        middle = slice(long // 4, 3 * long // 4)
        if width > height:
            rgb[:, middle] = (0, 255, 0)
        else:
            rgb[middle, :] = (0, 255, 0)
        return rgb

    video = write_video(tmp_path / "wide.mp4", n=4, width=width, height=height, frame=frame)
    clip = decode_clip(video, start_s=0.0, frames=2, fps=10.0, size=32)
    assert clip.shape == (2, 32, 32, 3)
    # The short side shrinks 48 -> 32 and the crop keeps exactly the green middle half (the
    # scaler may blend the outermost row or column with the red beyond it).
    inner = clip[:, 2:-2, 2:-2]
    assert inner[..., 1].min() > 240 and inner[..., 0].max() < 15
    assert clip[..., 0].mean() < 15


def test_reads_in_memory_files(gray_mp4: Path) -> None:
    data = io.BytesIO(gray_mp4.read_bytes())
    data.name = "shard.tar::gray.mp4"
    assert probe(data).path == "shard.tar::gray.mp4"
    np.testing.assert_array_equal(decode_clip(data, 1.0, 3, 2.0, 32), decode_clip(gray_mp4, 1.0, 3, 2.0, 32))


@pytest.mark.parametrize("suffix", [".webm", ".mkv", ".avi", ".gif"])
def test_other_containers(tmp_path: Path, suffix: str) -> None:
    import av

    path = tmp_path / f"v{suffix}"
    codec = {".webm": "libvpx-vp9", ".mkv": "libx264", ".avi": "mpeg4", ".gif": "gif"}[suffix]
    pix = "rgb8" if suffix == ".gif" else "yuv420p"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 40, 40, pix
        for i in range(10):
            rgb = np.full((40, 40, 3), 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info = probe(path)
    assert (info.width, info.height, info.fps) == (40, 40, 10.0)
    clip = decode_clip(path, 0.12, 3, 2.5, 32)  # 0.12, 0.52, 0.92 s: frames 1, 5 and 9
    assert clip.shape == (3, 32, 32, 3)
    assert np.abs(clip.reshape(3, -1).mean(axis=1) - [20, 100, 180]).max() < 12


def test_too_small_is_refused_with_advice(samples: dict[str, Path]) -> None:
    with pytest.raises(VideoTooSmall, match=r"176x144.*160x160.*data\.size to 144") as err:
        decode_clip(samples["carphone_pristine"], 0.0, 2, 4.0, 160)
    assert isinstance(err.value, UnreadableVideo) and err.value.kind == "too_small"
    assert "carphone_pristine.mp4" in str(err.value)


def test_clip_past_the_end_is_truncated(gray_mp4: Path) -> None:
    with pytest.raises(UnreadableVideo, match=r"gray\.mp4.*ends at 3\.60s.*3\.75s") as err:
        decode_clip(gray_mp4, 2.0, 8, 4.0, 32)
    assert err.value.kind == "truncated"


@pytest.mark.parametrize(
    ("key", "kind", "message"),
    [
        ("corrupt:random", "corrupt", "not a readable video container"),
        ("empty", "empty", r"empty \(0 bytes\)"),
        ("corrupt:half_bikes", "corrupt", "not a readable video container"),
        ("no_video_stream", "no_video_stream", r"no video stream \(the file holds: audio\)"),
    ],
)
def test_probe_failures_name_the_file_and_reason(
    bad_files: dict[str, Path], key: str, kind: str, message: str
) -> None:
    path = bad_files[key]
    with pytest.raises(UnreadableVideo, match=message) as err:
        probe(path)
    assert err.value.kind == kind
    assert str(path) in str(err.value)


def test_truncated_file_opens_but_fails_to_decode_its_end(bad_files: dict[str, Path]) -> None:
    cut = bad_files["truncated"]
    info = probe(cut)  # the header (written first) still promises 4 s
    assert info.duration_s == pytest.approx(4.0)
    with pytest.raises(UnreadableVideo, match=r"cut\.mp4: decoding fails at .*truncated or damaged") as err:
        decode_clip(cut, 0.0, 8, 2.0, 32)  # the last frame, at 3.5 s, lies beyond the cut
    assert err.value.kind == "truncated"
    with pytest.raises(UnreadableVideo, match="truncated or damaged"):
        decode_all(cut, 2.0, 32)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableVideo, match="file not found") as err:
        probe(tmp_path / "nope.mp4")
    assert err.value.kind == "missing"


# ----------------------------------------------------------------------------- encoding
def moving_square(frames: int, size: int) -> np.ndarray:
    """uint8 `[frames, size, size, 3]`: a bright square moving over a smooth gradient."""
    ramp = np.linspace(0, 1, size)
    background = (ramp[:, None, None] * ramp[None, :, None] * np.array([120.0, 80.0, 40.0])).astype(np.uint8)
    video = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        x = (3 * t) % (size - 8)
        video[t, 8:16, x : x + 8] = 255
    return video


def test_mp4_round_trip_with_odd_sizes() -> None:
    import av

    frames = moving_square(6, size=33)  # odd: padded to 34 for yuv420p
    data = encode_mp4(frames, 4.0)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 4.0
    assert len(decoded) == 6 and decoded[0].shape == (34, 34, 3)
    assert np.abs(decoded[2][:33, :33].astype(int) - frames[2]).mean() < 12  # lossy, but the same picture


def _encoding_of(data: bytes) -> dict[str, object]:
    """What an MP4's video was encoded with: codec, pixel format, size, rate, frame count, and
    x264's own record of its settings (the SEI text it writes into the stream), when present."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        settings = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                    "size": (stream.width, stream.height), "rate": stream.average_rate, "frames": frames}
    start = data.find(b"options: ")
    settings["x264"] = data[start:data.index(b"\x00", start)] if start >= 0 else None
    return settings


def test_files_and_uploads_are_encoded_alike(tmp_path: Path) -> None:
    """The training data's writer and the service's renders pick the same codec and settings.
    (Not the same bytes: libx264's output can differ between calls in one process, even on one
    thread, so a byte comparison fails by test order.)"""
    frames = moving_square(8, size=32)
    path = write_mp4(frames, tmp_path / "sub" / "clip.mp4", 8.0)
    in_memory = encode_mp4(frames, 8.0)
    assert _encoding_of(path.read_bytes()) == _encoding_of(in_memory)
    assert _encoding_of(in_memory)["frames"] == 8 and _encoding_of(in_memory)["size"] == (32, 32)
    if video_codec() == "libx264":
        assert b"crf=18.0" in _encoding_of(in_memory)["x264"] and b" threads=1 " in _encoding_of(in_memory)["x264"]
    assert video_codec() in ("libx264", "h264", "mpeg4")
    decoded_file, decoded_memory = decode_all(path, 8.0, 32), decode_all(io.BytesIO(in_memory), 8.0, 32)
    assert decoded_file.shape == decoded_memory.shape == (8, 32, 32, 3)
    assert np.abs(decoded_file.astype(int) - decoded_memory.astype(int)).mean() < 2  # the same picture


def test_png_strip_lays_frames_side_by_side() -> None:
    frames = moving_square(4, size=32)
    strip = decode_image_bytes(encode_png_strip(frames), what="the strip", max_pixels=1 << 20)
    assert strip.shape == (32, 128, 3)
    np.testing.assert_array_equal(strip[:, 64:96], frames[2])
