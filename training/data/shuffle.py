"""Mix clips across files before they are batched.

:class:`~training.data.dataset.VideoClipDataset` reads one file at a time and yields its
``clips_per_file`` clips in a row, so a batch drawn straight from it holds near-duplicate clips of a
few videos. :class:`ShuffleBuffer` passes the clips through a buffer and yields a random one each
time a new clip arrives (as webdataset's and tf.data's shuffle buffers do), so a batch's clips come
from across the last ``size`` clips read. Seeded by ``(seed, epoch, rank, worker)``: a rerun yields
the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from training.data.dataset import Clip, DataStats, VideoClipDataset

T = TypeVar("T")

_STREAM = 0x5B0F  # keeps this generator apart from the dataset's own (seed, epoch, file) streams


def shuffled(items: Iterable[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """``items`` in a random order that never holds more than ``size`` of them at once.

    Each item is yielded exactly once. ``size`` 1 keeps the order; a ``size`` at least the number of
    items is a full shuffle.
    """
    if size < 1:
        raise ValueError(f"a shuffle buffer holds at least one item, got size={size}")
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        k = int(rng.integers(size))
        yield buffer[k]
        buffer[k] = item
    for k in rng.permutation(len(buffer)):  # the pass is over: what is left, in a random order
        yield buffer[k]


class ShuffleBuffer(IterableDataset):
    """The clips of ``dataset``, mixed through a buffer of ``size`` clips (memory: ``size`` clips of
    uint8 frames, 0.8 MB each at 16 x 128 x 128)."""

    def __init__(self, dataset: VideoClipDataset, size: int, seed: int = 0) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"data.shuffle_buffer={size}: use 0 for no buffer, or at least 1 clip")
        self.dataset, self.size, self.seed = dataset, size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.dataset.set_epoch(epoch)

    @property
    def stats(self) -> DataStats:
        return self.dataset.stats

    def __iter__(self) -> Iterator[Clip]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, self.epoch, self.dataset.rank, worker, _STREAM])
        yield from shuffled(iter(self.dataset), self.size, rng)
