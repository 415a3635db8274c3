"""Tests of the procedural video generator: determinism, true motion, cuts, files on disk."""

from __future__ import annotations

import dataclasses
import json

import av
import numpy as np
import pytest

from training.data.generator import (
    ClipMotion,
    GeneratorConfig,
    clip_seed,
    generate_clip,
    generate_corpus,
    load_manifest,
)
from training.data.video import write_mp4

pytestmark = pytest.mark.unit

# Everything but the camera switched off, so frame-to-frame change is pure camera motion.
STILL_WORLD = GeneratorConfig(
    seconds=3.0, object_count_range=(0, 0), flicker_amplitude=0.0, noise_sigma=0.0, cut_probability=0.0
)


def _gray(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float64).mean(axis=2)


def _phase_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(dx, dy) by which content moved from a to b, with parabolic sub-pixel refinement."""
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa, fb = np.fft.fft2((a - a.mean()) * window), np.fft.fft2((b - b.mean()) * window)
    cross = fb * np.conj(fa)
    corr = np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-9)).real
    peak = np.array(np.unravel_index(np.argmax(corr), corr.shape))
    shift = peak.astype(np.float64)
    for axis, n in enumerate(corr.shape):
        idx = list(peak)
        idx[axis] = (peak[axis] - 1) % n
        left = corr[tuple(idx)]
        idx[axis] = (peak[axis] + 1) % n
        right = corr[tuple(idx)]
        centre = corr[tuple(peak)]
        denom = left - 2 * centre + right
        if denom < 0:
            shift[axis] += 0.5 * (left - right) / denom
    shift = (shift + np.array(corr.shape) / 2) % np.array(corr.shape) - np.array(corr.shape) / 2
    return shift[::-1]  # (row, col) → (dx, dy)


def _predict_from_previous(prev: np.ndarray, motion: ClipMotion, t: int) -> np.ndarray:
    """Frame t predicted from frame t - 1 by the recorded camera alone (bilinear resampling)."""
    h, w = prev.shape

    def source(axis_len: int, centre: list[float]) -> np.ndarray:
        # Output pixel of frame t → canvas point → output pixel of frame t - 1.
        canvas = centre[t] + (np.arange(axis_len) - (axis_len - 1) / 2) / motion.zoom[t]
        return (canvas - centre[t - 1]) * motion.zoom[t - 1] + (axis_len - 1) / 2

    ys, xs = source(h, motion.cam_y), source(w, motion.cam_x)
    y0 = np.clip(np.floor(ys).astype(int), 0, h - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, w - 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = prev[y0][:, x0] * (1 - fx) + prev[y0][:, x0 + 1] * fx
    bottom = prev[y0 + 1][:, x0] * (1 - fx) + prev[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def test_same_seed_gives_identical_frames_and_motion_json() -> None:
    cfg = GeneratorConfig(seconds=2.0, cut_probability=0.5)
    frames_a, motion_a = generate_clip(cfg, 7)
    frames_b, motion_b = generate_clip(cfg, 7)
    assert frames_a.dtype == np.uint8
    assert frames_a.shape == (cfg.num_frames, cfg.height, cfg.width, 3)
    assert np.array_equal(frames_a, frames_b)
    assert motion_a.to_json() == motion_b.to_json()
    # The config seed is the default seed.
    frames_c, motion_c = generate_clip(dataclasses.replace(cfg, seed=7))
    assert np.array_equal(frames_a, frames_c) and motion_c.to_json() == motion_a.to_json()


def test_different_seeds_give_different_clips() -> None:
    cfg = GeneratorConfig(seconds=1.0)
    frames_a, motion_a = generate_clip(cfg, 1)
    frames_b, motion_b = generate_clip(cfg, 2)
    assert np.abs(frames_a.astype(int) - frames_b.astype(int)).mean() > 5
    assert motion_a.cam_x != motion_b.cam_x


def test_motion_json_round_trips_and_is_consistent() -> None:
    _, motion = generate_clip(GeneratorConfig(seconds=3.0, cut_probability=1.0, object_count_range=(2, 2)), 3)
    restored = ClipMotion.from_dict(json.loads(motion.to_json()))
    assert restored == motion
    n = motion.num_frames
    for name in ("cam_x", "cam_y", "zoom", "dx", "dy", "dzoom", "gain", "scene"):
        assert len(getattr(motion, name)) == n, name
    assert motion.cuts and all(motion.scene[c] == motion.scene[c - 1] + 1 for c in motion.cuts)
    cuts = set(motion.cuts)
    for t in range(1, n):
        if t in cuts:
            assert motion.dx[t] == motion.dy[t] == motion.dzoom[t] == 0.0
        else:
            assert motion.dx[t] == pytest.approx(motion.cam_x[t] - motion.cam_x[t - 1], abs=2e-4)
            assert motion.dzoom[t] == pytest.approx(motion.zoom[t] - motion.zoom[t - 1], abs=2e-4)
    assert len(motion.objects) == 2 * len(motion.scenes)
    for obj in motion.objects:
        assert motion.scene[obj.start] == motion.scene[obj.end]
        steps = np.diff(obj.x)
        assert np.allclose(steps, obj.vx[1:], atol=2e-4)


@pytest.mark.parametrize("zoom", [1.0, 1.5])
def test_recorded_pan_matches_image_motion(zoom: float) -> None:
    cfg = dataclasses.replace(STILL_WORLD, zoom_range=(zoom, zoom), pan_speed_range=(24.0, 64.0))
    frames, motion = generate_clip(cfg, 11)
    assert set(motion.zoom) == {zoom}
    expected = motion.image_shift()
    assert np.abs(expected[1:]).max() > 1.0  # the camera really moved
    errors = [
        np.abs(_phase_correlation(_gray(frames[t - 1]), _gray(frames[t])) - expected[t]).max()
        for t in range(1, len(frames))
    ]
    assert max(errors) < 1.0, errors


def test_recorded_zoom_matches_image_scaling() -> None:
    cfg = dataclasses.replace(
        STILL_WORLD,
        pan_speed_range=(0.0, 0.0),
        zoom_range=(0.8, 1.6),
        zoom_speed=0.8,
        photos=("astronaut", "coffee", "chelsea"),
    )
    frames, motion = generate_clip(cfg, 5)
    log_ratio = np.abs(np.diff(np.log(motion.zoom)))
    assert log_ratio.max() > 0.02  # the zoom really changed
    inner = np.s_[16:-16, 16:-16]
    for t in np.flatnonzero(log_ratio > 0.01) + 1:
        prev, cur = _gray(frames[t - 1]), _gray(frames[t])
        err_recorded = np.abs(_predict_from_previous(prev, motion, t) - cur)[inner].mean()
        err_static = np.abs(prev - cur)[inner].mean()
        assert err_recorded < 0.5 * err_static, (t, err_recorded, err_static)


def test_scene_cuts_are_where_frames_jump() -> None:
    cfg = dataclasses.replace(
        STILL_WORLD,
        seconds=4.0,
        cut_probability=1.0,
        max_cuts=2,
        pan_speed_range=(5.0, 15.0),
        noise_sigma=2.0,
    )
    for seed in range(3):
        frames, motion = generate_clip(cfg, seed)
        assert motion.cuts and len({s.photo for s in motion.scenes}) >= 2
        diff = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
        # diff[t - 1] compares frame t with frame t - 1.
        jumps = np.flatnonzero(diff > 4 * np.median(diff)) + 1
        assert jumps.tolist() == motion.cuts, (seed, diff.round(1).tolist())


def test_objects_appear_where_recorded() -> None:
    base = dataclasses.replace(STILL_WORLD, seconds=2.0)
    with_objects = dataclasses.replace(base, object_count_range=(3, 3))
    plain, motion_plain = generate_clip(base, 4)
    frames, motion = generate_clip(with_objects, 4)
    assert motion.cam_x == motion_plain.cam_x  # objects draw from their own random stream
    changed = np.abs(frames.astype(int) - plain.astype(int)).max(axis=3) > 0
    assert changed.any()
    covered = np.zeros_like(changed)
    yy, xx = np.mgrid[: base.height, : base.width]
    for obj in motion.objects:
        for i, t in enumerate(range(obj.start, obj.end + 1)):
            u, v = motion.to_screen(obj.x[i], obj.y[i], t)
            half = obj.size * motion.zoom[t] / 2 + 1.5
            covered[t] |= (np.abs(xx - u) <= half) & (np.abs(yy - v) <= half)
    assert not (changed & ~covered).any()


def test_flicker_gain_is_the_recorded_gain() -> None:
    base = dataclasses.replace(STILL_WORLD, seconds=2.0)
    plain, _ = generate_clip(base, 9)
    flick, motion = generate_clip(dataclasses.replace(base, flicker_amplitude=0.2), 9)
    gains = np.array(motion.gain)
    assert np.ptp(gains) > 0.05 and np.all(np.abs(gains - 1) <= 0.2 + 1e-9)
    for t in range(len(plain)):
        ok = (plain[t] > 30) & (plain[t] < 200)
        measured = np.median(flick[t][ok] / plain[t][ok].astype(np.float64))
        assert measured == pytest.approx(gains[t], abs=0.02)


def test_written_mp4_decodes_to_the_frames(tmp_path) -> None:
    cfg = GeneratorConfig(seconds=2.0)
    frames, _ = generate_clip(cfg, 2)
    path = write_mp4(frames, tmp_path / "clip.mp4", cfg.fps)
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 8


def test_write_mp4_rejects_bad_frames_and_pads_odd_sizes(tmp_path) -> None:
    with pytest.raises(ValueError):
        write_mp4(np.zeros((2, 16, 16), dtype=np.uint8), tmp_path / "a.mp4", 8)
    with pytest.raises(ValueError):
        write_mp4(np.zeros((0, 16, 16, 3), dtype=np.uint8), tmp_path / "a.mp4", 8)
    path = write_mp4(np.zeros((2, 15, 16, 3), dtype=np.uint8), tmp_path / "b.mp4", 8)  # yuv420p: 16 x 16
    with av.open(str(path)) as container:
        assert (container.streams.video[0].height, container.streams.video[0].width) == (16, 16)


def test_corpus_manifest_lists_existing_clips(tmp_path) -> None:
    cfg = GeneratorConfig(seconds=1.0)
    paths = generate_corpus(tmp_path, 2, cfg, seed=3)
    assert [p.name for p in paths] == ["clip_00000.mp4", "clip_00001.mp4"]
    lines = (tmp_path / "motion.jsonl").read_text().splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines):
        record = json.loads(line)
        assert record["path"] == f"clip_{i:05d}.mp4"
        assert (tmp_path / record["path"]).is_file()
        assert record["motion"]["num_frames"] == cfg.num_frames
        # A corpus clip can be regenerated from its recorded seed.
        _, motion = generate_clip(cfg, record["motion"]["seed"])
        assert record["motion"]["seed"] == clip_seed(3, i)
        assert motion.to_dict() == record["motion"]
    entries = load_manifest(tmp_path / "motion.jsonl")
    assert [p for p, _ in entries] == paths


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        GeneratorConfig(zoom_range=(2.0, 1.0))
    with pytest.raises(ValueError):
        GeneratorConfig(cut_probability=1.5)
    with pytest.raises(ValueError):
        GeneratorConfig(photos=("no_such_photo",))
