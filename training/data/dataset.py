"""Random video clips for training, and fixed clips for evaluation.

:class:`VideoClipDataset` is an ``IterableDataset``: each pass shuffles the files (or tar shards),
hands each DDP rank and each DataLoader worker a disjoint share, and yields ``clips_per_file`` clips
per file at uniformly random starts within the usable part of the file (``time_range``, a fraction
of each video, keeps e.g. the last 25% for evaluation). Everything random derives from
``(seed, epoch, file index)``, so the same seed, epoch and rank give the same clips in the same order.

A file that cannot be used (corrupt, empty, too small, too short, no video stream...) is skipped,
counted in ``dataset.stats`` and logged once at WARNING on ``lawm.data``; it is never fatal. A pass
in which no file at all is usable raises :class:`DataSourceError` instead of yielding nothing forever.

Notes: ``stats`` and the ``cache_decoded`` frames live in the process that iterates, i.e. in each
DataLoader worker when ``num_workers > 0``. ``set_epoch`` reaches workers that are started per epoch
(the default, ``persistent_workers=False``), and ``cache_decoded`` pays off with ``num_workers=0``
or persistent workers.
"""

from __future__ import annotations

import logging
import math
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from training.data.sources import DataSourceError, VideoRef, open_ref, read_member
from training.data.video import UnreadableVideo, check_size, decode_all, decode_clip, probe

logger = logging.getLogger("lawm.data")

_EPS = 1e-6

Clip = dict[str, torch.Tensor | str | float]


@dataclass
class DataStats:
    """Clips produced and files skipped by this process, with the reason for each skip."""

    clips: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason kind -> number of files
    skipped_files: list[str] = field(default_factory=list)

    def record_skip(self, path: str, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        self.skipped_files.append(path)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_files)


def _reasons(counts: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items()))


def usable_range(ref: VideoRef, duration_s: float, time_range: tuple[float, float]) -> tuple[float, float]:
    """The seconds ``[lo, hi]`` of a video that clips may cover.

    The ref's own ``start_s``/``end_s`` (from a manifest) bound the video first, then ``time_range``
    keeps that fraction of what is left.
    """
    a = ref.start_s or 0.0
    b = duration_s if ref.end_s is None else min(ref.end_s, duration_s)
    length = max(0.0, b - a)
    return a + time_range[0] * length, a + time_range[1] * length


def _too_short(ref: VideoRef, lo: float, hi: float, frames: int, fps: float) -> UnreadableVideo:
    return UnreadableVideo(
        ref.path,
        f"its usable range {lo:.2f}-{hi:.2f}s is shorter than one clip "
        f"({frames} frames at {fps:g} fps = {frames / fps:.2f}s)",
        kind="too_short",
    )


def _clip(video: np.ndarray, source: str, start_s: float) -> Clip:
    """``[T, H, W, 3]`` uint8 frames as the dataset's dict with a ``[T, 3, H, W]`` tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).contiguous()
    return {"video": tensor, "source": source, "start_s": float(start_s)}


def _group_units(refs: Sequence[VideoRef]) -> list[list[int]]:
    """Indices of refs grouped into sharding units: one per tar shard, else one per file."""
    units: list[list[int]] = []
    by_shard: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        if ref.shard is None:
            units.append([i])
        elif ref.shard in by_shard:
            by_shard[ref.shard].append(i)
        else:
            by_shard[ref.shard] = [i]
            units.append(by_shard[ref.shard])
    return units


@contextmanager
def _unit_reader(refs: Sequence[VideoRef], unit: list[int]) -> Iterator[Callable[[VideoRef], str | BinaryIO]]:
    """Open a tar shard once for all its members; plain files are opened by path."""
    shard = refs[unit[0]].shard
    if shard is None:
        yield open_ref
        return
    try:
        # Not a `with`: only errors opening the shard belong here, not those of the caller's body.
        tar = tarfile.open(shard, mode="r:*")  # noqa: SIM115
    except (tarfile.TarError, OSError) as err:
        reason = f"cannot open its tar shard: {err}"

        def fail(ref: VideoRef) -> str | BinaryIO:
            raise UnreadableVideo(ref.path, reason, kind="corrupt")

        yield fail
        return
    with tar:
        yield lambda ref: read_member(tar, ref)


def _read(reader: Callable[[VideoRef], str | BinaryIO], ref: VideoRef) -> str | BinaryIO:
    """The ref's source, with a missing/unreadable tar member turned into :class:`UnreadableVideo`."""
    try:
        return reader(ref)
    except (KeyError, FileNotFoundError, OSError) as err:
        raise UnreadableVideo(ref.path, f"cannot read it: {err}", kind="missing") from err


class VideoClipDataset(IterableDataset):
    """Random clips ``{"video": uint8 [T, 3, size, size], "source": str, "start_s": float}``.

    Args:
        refs: videos from :func:`~training.data.sources.resolve_sources`.
        frames, fps, size: clip length, sampling rate and square crop side.
        seed: base of every random choice; combine with :meth:`set_epoch` for a new order per epoch.
        rank, world_size: this DDP process's share of the files (tar shards when the refs are
            shard members); DataLoader workers split that share further.
        time_range: fraction ``(begin, end)`` of each video that clips may cover.
        cache_decoded: decode each file once at ``fps``/``size`` and keep its frames in memory
            (small corpora on CPU). Starts then fall on the ``1/fps`` grid.
        clips_per_file: clips drawn from each file per pass.
        shuffle: shuffle the file order every epoch (otherwise the refs' order).
    """

    def __init__(
        self,
        refs: Sequence[VideoRef],
        frames: int = 16,
        fps: float = 4.0,
        size: int = 128,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        time_range: tuple[float, float] = (0.0, 1.0),
        cache_decoded: bool = False,
        clips_per_file: int = 1,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        if not refs:
            raise DataSourceError("VideoClipDataset got no videos: resolve_sources() found nothing")
        if frames < 1 or fps <= 0 or size < 1 or clips_per_file < 1:
            raise ValueError(
                f"need frames, fps, size, clips_per_file > 0: {frames=}, {fps=}, {size=}, {clips_per_file=}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if not 0.0 <= time_range[0] < time_range[1] <= 1.0:
            raise ValueError(f"time_range must satisfy 0 <= begin < end <= 1, got {time_range}")
        self.refs = list(refs)
        self.frames, self.fps, self.size = frames, fps, size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.time_range = (float(time_range[0]), float(time_range[1]))
        self.cache_decoded, self.clips_per_file, self.shuffle = cache_decoded, clips_per_file, shuffle
        self.epoch = 0
        self.stats = DataStats()
        self._units = _group_units(self.refs)
        self._bad: dict[VideoRef, UnreadableVideo] = {}  # skipped once, never retried in this process
        self._cache: dict[str, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        """Choose the pass: file order and clip starts are a function of ``(seed, epoch)``."""
        self.epoch = int(epoch)

    def units_for(self, rank: int, worker: int = 0, num_workers: int = 1) -> list[list[VideoRef]]:
        """The files (grouped by tar shard) that ``rank``/``worker`` reads this epoch, in order."""
        return [[self.refs[i] for i in unit] for unit in self._unit_indices(rank, worker, num_workers)]

    def _unit_indices(self, rank: int, worker: int, num_workers: int) -> list[list[int]]:
        order = np.arange(len(self._units))
        if self.shuffle:  # the same permutation on every rank and worker, so the shares stay disjoint
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self._units))
        total = self.world_size * num_workers
        return [self._units[u] for u in order[rank * num_workers + worker :: total]]

    def __iter__(self) -> Iterator[Clip]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        units = self._unit_indices(self.rank, worker, num_workers)
        if not units:
            logger.debug(
                "rank %d worker %d has no files this epoch (more workers than files)", self.rank, worker
            )
            return
        yielded = 0
        for unit in units:
            for clip in self._iter_unit(unit):
                yielded += 1
                yield clip
        if yielded == 0:
            self._raise_if_nothing_usable(units)

    def _iter_unit(self, unit: list[int]) -> Iterator[Clip]:
        with _unit_reader(self.refs, unit) as reader:
            for idx in unit:
                ref = self.refs[idx]
                if ref in self._bad:
                    continue
                try:
                    clips = self._clips_for(idx, ref, reader)
                except UnreadableVideo as err:
                    self._skip(ref, err)
                    continue
                self.stats.clips += len(clips)
                yield from clips

    def _skip(self, ref: VideoRef, err: UnreadableVideo) -> None:
        self._bad[ref] = err
        self.stats.record_skip(ref.path, err.kind)
        logger.warning("skipping a video [%s]: %s", err.kind, err)

    def _rng(self, idx: int) -> np.random.Generator:
        # Per file, so a file's clips do not depend on how files are split across ranks and workers.
        return np.random.default_rng([self.seed, self.epoch, idx])

    def _clips_for(self, idx: int, ref: VideoRef, reader: Callable[[VideoRef], str | BinaryIO]) -> list[Clip]:
        if self.cache_decoded:
            return self._cached_clips(idx, ref, reader)
        src = _read(reader, ref)
        info = probe(src)
        check_size(ref.path, info.width, info.height, self.size)
        lo, hi = usable_range(ref, info.duration_s, self.time_range)
        latest = hi - self.frames / self.fps
        if latest < lo - _EPS:
            raise _too_short(ref, lo, hi, self.frames, self.fps)
        starts = self._rng(idx).uniform(lo, max(lo, latest), size=self.clips_per_file)
        return [
            _clip(decode_clip(src, float(s), self.frames, self.fps, self.size), ref.path, float(s))
            for s in starts
        ]

    def _cached_clips(
        self, idx: int, ref: VideoRef, reader: Callable[[VideoRef], str | BinaryIO]
    ) -> list[Clip]:
        # Cache by path: refs of one file with different time ranges share the decoded frames.
        if ref.path not in self._cache:
            self._cache[ref.path] = decode_all(_read(reader, ref), self.fps, self.size)
        video = self._cache[ref.path]
        lo, hi = usable_range(ref, len(video) / self.fps, self.time_range)
        first = math.ceil(lo * self.fps - _EPS)
        last = min(math.floor((hi - self.frames / self.fps) * self.fps + _EPS), len(video) - self.frames)
        if last < first:
            raise _too_short(ref, lo, hi, self.frames, self.fps)
        starts = self._rng(idx).integers(first, last + 1, size=self.clips_per_file)
        return [_clip(video[k : k + self.frames], ref.path, k / self.fps) for k in starts]

    def _raise_if_nothing_usable(self, mine: list[list[int]]) -> None:
        """Called when this process's share gave no clip: fine if another share can, else an error."""
        taken = {i for unit in mine for i in unit}
        reasons: Counter[str] = Counter(err.kind for err in self._bad.values())
        for unit in self._units:
            others = [self.refs[i] for i in unit if i not in taken]
            if others and self._any_usable(others, reasons):
                logger.warning(
                    "rank %d: every file in this share was skipped (%s); other shares have usable videos",
                    self.rank,
                    _reasons(reasons),
                )
                return
        first = next(iter(self._bad.values()), None)
        example = f"; e.g. {first}" if first is not None else ""
        raise DataSourceError(
            f"no readable video in {_describe(self.refs)}: {sum(reasons.values())} files skipped "
            f"({_reasons(reasons)}){example}"
        )

    def _any_usable(self, refs: list[VideoRef], reasons: Counter[str]) -> bool:
        """Whether one of ``refs`` (another share's files) could give a clip; probes, no decoding."""
        with _unit_reader(refs, [0]) as reader:  # refs come from one unit: one file or one shard
            for ref in refs:
                try:
                    info = probe(_read(reader, ref))
                    check_size(ref.path, info.width, info.height, self.size)
                    lo, hi = usable_range(ref, info.duration_s, self.time_range)
                    if hi - lo < self.frames / self.fps - _EPS:
                        raise _too_short(ref, lo, hi, self.frames, self.fps)
                except UnreadableVideo as err:
                    reasons[err.kind] += 1
                    continue
                return True
        return False


def _describe(refs: Sequence[VideoRef]) -> str:
    """A short name for a set of refs, for error messages."""
    if len(refs) == 1:
        return refs[0].path
    return f"{len(refs)} videos ({refs[0].path}, ...)"


def fixed_clips(
    refs: Sequence[VideoRef],
    frames: int = 16,
    fps: float = 4.0,
    size: int = 128,
    clips_per_file: int = 1,
    time_range: tuple[float, float] = (0.0, 1.0),
    starts: Sequence[float] | None = None,
) -> list[Clip]:
    """Deterministic evaluation clips, in ref order.

    Each file gives ``clips_per_file`` clips with evenly spaced starts over its usable range (the
    first at the range's beginning, the last ending at its end), or clips at the given ``starts``
    (seconds) when provided. Unusable files are skipped with a warning; if none is usable this raises
    :class:`DataSourceError`.
    """
    clips: list[Clip] = []
    skipped: Counter[str] = Counter()
    for ref in refs:
        try:
            clips.extend(_fixed_for(ref, frames, fps, size, clips_per_file, time_range, starts))
        except UnreadableVideo as err:
            skipped[err.kind] += 1
            logger.warning("skipping a video [%s]: %s", err.kind, err)
    if not clips:
        raise DataSourceError(
            f"no readable video in {_describe(refs) if refs else 'an empty list'}: "
            f"{sum(skipped.values())} files skipped ({_reasons(skipped)})"
        )
    return clips


def _fixed_for(
    ref: VideoRef,
    frames: int,
    fps: float,
    size: int,
    clips_per_file: int,
    time_range: tuple[float, float],
    starts: Sequence[float] | None,
) -> list[Clip]:
    src = _read(open_ref, ref)
    info = probe(src)
    check_size(ref.path, info.width, info.height, size)
    if starts is None:
        lo, hi = usable_range(ref, info.duration_s, time_range)
        latest = hi - frames / fps
        if latest < lo - _EPS:
            raise _too_short(ref, lo, hi, frames, fps)
        latest = max(lo, latest)
        chosen = [lo] if clips_per_file == 1 else np.linspace(lo, latest, clips_per_file).tolist()
    else:
        chosen = list(starts)
    return [_clip(decode_clip(src, s, frames, fps, size), ref.path, s) for s in chosen]
