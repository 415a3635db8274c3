"""VideoClipDataset: determinism, sharding, time ranges, caching, and skipping bad files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.training.data.datafiles import frame_indices, write_tar, write_video
from training.data.dataset import VideoClipDataset, fixed_clips
from training.data.sources import DataSourceError, VideoRef, resolve_sources
from training.data.video import decode_clip

pytestmark = pytest.mark.unit

# Clips of 4 frames at 2 fps (2 s) from 4 s videos, cropped to 32x32: cheap to decode.
CLIP = {"frames": 4, "fps": 2.0, "size": 32}


def _keys(clips: list[dict]) -> list[tuple[str, float]]:
    return [(c["source"], round(c["start_s"], 6)) for c in clips]


def test_clips_have_the_documented_format(good_folder: Path) -> None:
    ds = VideoClipDataset(resolve_sources(good_folder), **CLIP, clips_per_file=2)
    clips = list(ds)
    assert len(clips) == 12 and ds.stats.clips == 12 and ds.stats.num_skipped == 0
    video = clips[0]["video"]
    assert video.dtype == torch.uint8 and video.shape == (4, 3, 32, 32)
    for clip in clips:
        assert 0.0 <= clip["start_s"] <= 4.0 - 2.0
        # Gray frames index themselves: the clip holds the frames nearest to start + i / 2.
        expected = [round((clip["start_s"] + i / 2) * 10) for i in range(4)]
        assert np.abs(np.subtract(frame_indices(clip["video"]), expected)).max() <= 1


def test_same_seed_same_clips_other_seed_or_epoch_differs(good_folder: Path) -> None:
    refs = resolve_sources(good_folder)
    first = list(VideoClipDataset(refs, **CLIP, seed=3))
    again = list(VideoClipDataset(refs, **CLIP, seed=3))
    assert _keys(first) == _keys(again)
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(first, again, strict=True))
    assert _keys(list(VideoClipDataset(refs, **CLIP, seed=4))) != _keys(first)
    next_epoch = VideoClipDataset(refs, **CLIP, seed=3)
    next_epoch.set_epoch(1)
    assert _keys(list(next_epoch)) != _keys(first)


def test_ranks_and_workers_split_files_without_overlap(good_folder: Path) -> None:
    refs = resolve_sources(good_folder)
    ranks = [VideoClipDataset(refs, **CLIP, rank=r, world_size=2, seed=1) for r in range(2)]
    seen = [{c["source"] for c in ds} for ds in ranks]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == {r.path for r in refs}
    # Rank x worker shares, for 2 workers each, are disjoint and cover every file.
    shares = [
        {ref.path for unit in ranks[r].units_for(r, w, 2) for ref in unit} for r in range(2) for w in range(2)
    ]
    assert sum(len(s) for s in shares) == len(refs) == len(set().union(*shares))


def test_dataloader_workers_share_the_files(good_folder: Path) -> None:
    refs = resolve_sources(good_folder)
    loader = torch.utils.data.DataLoader(VideoClipDataset(refs, **CLIP), batch_size=None, num_workers=2)
    sources = [clip["source"] for clip in loader]
    assert sorted(sources) == sorted(r.path for r in refs)  # each file exactly once


def test_tar_shards_are_the_sharding_unit(tmp_path: Path, good_folder: Path) -> None:
    videos = sorted(good_folder.rglob("*.mp4"))
    for k in range(2):
        write_tar(
            tmp_path / f"s{k}.tar",
            {f"{i}.mp4": v.read_bytes() for i, v in enumerate(videos[3 * k : 3 * k + 3])},
        )
    refs = resolve_sources(str(tmp_path / "*.tar"))
    per_rank = [list(VideoClipDataset(refs, **CLIP, rank=r, world_size=2)) for r in range(2)]
    shards = [{c["source"].split("::")[0] for c in clips} for clips in per_rank]
    assert all(len(clips) == 3 for clips in per_rank)
    assert all(len(s) == 1 for s in shards) and shards[0] != shards[1]


def test_manifest_ranges_and_time_range_bound_the_starts(tmp_path: Path, good_folder: Path) -> None:
    video = next(good_folder.glob("*.mp4"))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": str(video), "start_s": 0.5, "end_s": 3.0}) + "\n")
    refs = resolve_sources(manifest)
    starts = [c["start_s"] for c in VideoClipDataset(refs, **CLIP, clips_per_file=20)]
    assert len(starts) == 20 and min(starts) >= 0.5 and max(starts) <= 3.0 - 2.0
    # time_range keeps the last 25% of a 10 s video: starts in [7.5, 10 - 2].
    long = write_video(
        tmp_path / "long.mp4", n=100, gop=20, frame=lambda i: np.full((48, 64, 3), i, np.uint8)
    )
    held_out = VideoClipDataset([VideoRef(str(long))], **CLIP, clips_per_file=10, time_range=(0.75, 1.0))
    starts = [c["start_s"] for c in held_out]
    assert len(starts) == 10 and min(starts) >= 7.5 and max(starts) <= 8.0


def test_cache_decoded_matches_direct_decoding(good_folder: Path) -> None:
    refs = resolve_sources(good_folder)[:2]
    cached = list(VideoClipDataset(refs, **CLIP, cache_decoded=True, clips_per_file=3, seed=5))
    assert len(cached) == 6
    for clip in cached:
        assert clip["start_s"] * 2 == pytest.approx(round(clip["start_s"] * 2))  # on the 1/fps grid
        direct = decode_clip(clip["source"], clip["start_s"], 4, 2.0, 32)
        assert torch.equal(clip["video"], torch.from_numpy(direct).permute(0, 3, 1, 2))
    assert _keys(cached) == _keys(
        list(VideoClipDataset(refs, **CLIP, cache_decoded=True, clips_per_file=3, seed=5))
    )


@pytest.mark.parametrize("cache_decoded", [False, True])
def test_bad_files_are_skipped_counted_and_logged_once(
    tmp_path: Path,
    good_folder: Path,
    bad_files: dict[str, Path],
    cache_decoded: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for path in bad_files.values():
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(next(good_folder.glob("*.mp4")), tmp_path / "good.mp4")
    ds = VideoClipDataset(resolve_sources(tmp_path), frames=7, fps=2.0, size=32, cache_decoded=cache_decoded)
    with caplog.at_level(logging.WARNING, logger="lawm.data"):
        clips = list(ds)
        again = list(ds)  # a second pass neither retries nor re-logs the bad files
    assert [c["source"] for c in clips + again] == [str(tmp_path / "good.mp4")] * 2
    expected = {"corrupt": 2, "empty": 1, "truncated": 1, "no_video_stream": 1, "too_small": 1}
    assert ds.stats.skipped == expected
    assert sorted(Path(p).name for p in ds.stats.skipped_files) == sorted(p.name for p in bad_files.values())
    warnings = [r for r in caplog.records if r.name == "lawm.data" and r.levelno == logging.WARNING]
    assert len(warnings) == 6
    assert any("tiny.mp4" in r.getMessage() and "24x24" in r.getMessage() for r in warnings)


def test_nothing_readable_is_an_error_not_an_endless_loop(tmp_path: Path, bad_files: dict[str, Path]) -> None:
    for path in bad_files.values():
        shutil.copy(path, tmp_path / path.name)
    ds = VideoClipDataset(resolve_sources(tmp_path), **CLIP)
    with pytest.raises(
        DataSourceError, match=r"no readable video in 6 videos .*6 files skipped \(corrupt: 2, empty: 1"
    ):
        list(ds)


def test_a_share_of_only_bad_files_is_not_fatal(
    tmp_path: Path, good_folder: Path, bad_files: dict[str, Path]
) -> None:
    refs = [VideoRef(path=str(bad_files["empty"])), VideoRef(path=str(next(good_folder.glob("*.mp4"))))]
    ranks = [VideoClipDataset(refs, **CLIP, rank=r, world_size=2, shuffle=False) for r in range(2)]
    assert list(ranks[0]) == []  # its only file is empty, but rank 1's is fine
    assert len(list(ranks[1])) == 1


def test_too_short_files_are_skipped(good_folder: Path) -> None:
    refs = resolve_sources(good_folder)[:1]
    ds = VideoClipDataset(refs, frames=10, fps=2.0, size=32)  # 5 s clips from 4 s videos
    with pytest.raises(DataSourceError, match=r"too_short: 1.*shorter than one clip"):
        list(ds)


def test_fixed_clips_are_evenly_spaced_and_deterministic(
    good_folder: Path, bad_files: dict[str, Path]
) -> None:
    refs = [*resolve_sources(good_folder)[:2], VideoRef(path=str(bad_files["empty"]))]
    clips = fixed_clips(refs, **CLIP, clips_per_file=3, time_range=(0.25, 1.0))
    # Usable 1-4 s, clips of 2 s: starts 1.0, 1.5, 2.0 for each readable file; the empty one is skipped.
    assert [round(c["start_s"], 6) for c in clips] == [1.0, 1.5, 2.0] * 2
    assert [frame_indices(c["video"]) for c in clips[:3]] == [
        [10, 15, 20, 25],
        [15, 20, 25, 30],
        [20, 25, 30, 35],
    ]
    assert _keys(fixed_clips(refs, **CLIP, clips_per_file=3, time_range=(0.25, 1.0))) == _keys(clips)
    explicit = fixed_clips(refs[:1], **CLIP, starts=[0.0, 0.5])
    assert [frame_indices(c["video"])[0] for c in explicit] == [0, 5]
    with pytest.raises(DataSourceError, match="no readable video"):
        fixed_clips(refs[2:], **CLIP)
