"""The shuffle buffer: every clip once per pass, mixed across files, seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import DataConfig
from training.data.dataset import VideoClipDataset
from training.data.shuffle import ShuffleBuffer, shuffled
from training.data.sources import resolve_sources

CLIP = {"frames": 4, "fps": 2.0, "size": 32}


@pytest.mark.parametrize("n", [0, 1, 7, 40])
@pytest.mark.parametrize("size", [1, 3, 16, 100])
def test_every_item_once_and_never_before_it_was_read(n: int, size: int) -> None:
    out = list(shuffled(range(n), size, np.random.default_rng(n * 101 + size)))
    assert sorted(out) == list(range(n))
    # at output position p at most p + size items have been read: item p + size is not yet in hand
    assert all(item < p + size for p, item in enumerate(out))


def test_size_one_keeps_the_order_and_a_large_buffer_shuffles() -> None:
    assert list(shuffled(range(20), 1, np.random.default_rng(0))) == list(range(20))
    assert list(shuffled(range(20), 50, np.random.default_rng(0))) != list(range(20))
    same = [list(shuffled(range(20), 5, np.random.default_rng(3))) for _ in range(2)]
    assert same[0] == same[1]
    with pytest.raises(ValueError, match="at least one item"):
        list(shuffled(range(3), 0, np.random.default_rng(0)))


def _keys(clips: list[dict]) -> list[tuple[str, float]]:
    return [(c["source"], round(c["start_s"], 6)) for c in clips]


def test_batches_mix_files_and_a_pass_holds_the_same_clips(good_folder: Path) -> None:
    refs = resolve_sources(good_folder)
    plain = list(VideoClipDataset(refs, **CLIP, seed=2, clips_per_file=4))
    assert len({c["source"] for c in plain[:4]}) == 1  # without the buffer: one file's clips in a row
    buffered = ShuffleBuffer(VideoClipDataset(refs, **CLIP, seed=2, clips_per_file=4), size=12, seed=2)
    mixed = list(buffered)
    assert sorted(_keys(mixed)) == sorted(_keys(plain))  # the same clips, each once
    firsts = [{c["source"] for c in mixed[i : i + 4]} for i in range(0, len(mixed), 4)]
    assert sum(len(s) for s in firsts) > len(firsts) * 2  # batches of 4 from more than two files on average
    assert buffered.stats.clips == len(plain)


def test_the_order_follows_seed_and_epoch(good_folder: Path) -> None:
    refs = resolve_sources(good_folder)

    def order(seed: int, epoch: int) -> list[tuple[str, float]]:
        buffer = ShuffleBuffer(VideoClipDataset(refs, **CLIP, seed=1, clips_per_file=2), size=6, seed=seed)
        buffer.set_epoch(epoch)
        return _keys(list(buffer))

    assert order(0, 0) == order(0, 0)
    assert order(1, 0) != order(0, 0)
    assert order(0, 1) != order(0, 0)


def test_a_loader_batches_the_mixed_clips(good_folder: Path) -> None:
    refs = resolve_sources(good_folder)
    buffer = ShuffleBuffer(VideoClipDataset(refs, **CLIP, clips_per_file=2), size=4)
    batches = list(torch.utils.data.DataLoader(buffer, batch_size=4, drop_last=True))
    assert len(batches) == 3 and batches[0]["video"].shape == (4, 4, 3, 32, 32)


def test_a_negative_buffer_is_refused(good_folder: Path) -> None:
    with pytest.raises(ValueError, match="shuffle_buffer"):
        DataConfig(shuffle_buffer=-1)
    with pytest.raises(ValueError, match="use 0 for no buffer"):
        ShuffleBuffer(VideoClipDataset(resolve_sources(good_folder), **CLIP), size=0)


@pytest.mark.parametrize("buffer", [0, 64])
def test_the_training_loader_mixes_only_when_asked(tmp_path: Path, tiny_corpus: Path, buffer: int) -> None:
    from tests.conftest import tiny_config_dict
    from training.config import config_from_dict
    from training.distributed import DistInfo
    from training.loop import clip_batches

    def first_pass(shuffle_buffer: int) -> list[bytes]:
        raw = tiny_config_dict(str(tmp_path), [str(tiny_corpus)], **{"data.shuffle_buffer": shuffle_buffer})
        batches, dataset = clip_batches(config_from_dict(raw), DistInfo(0, 1, 0, torch.device("cpu")), 2)
        clips = [clip.numpy().tobytes() for _ in range(6) for clip in next(batches)]  # 6 files x 2 clips
        assert dataset.stats.clips == 12
        return clips

    plain, mixed = first_pass(0), first_pass(buffer)
    assert sorted(plain) == sorted(mixed)  # one pass: the same clips either way
    assert (plain == mixed) == (buffer == 0)
