"""The LAM stage's frozen encoder states, computed once (`train.lam.cache_clips`).

The encoder is frozen while the LAM trains, so a clip's states never change: the video loop
decodes and encodes every batch again at every step, and on a CPU that forward pass is most of the
step. With `cache_clips: N` the stage decodes and encodes N training clips once, keeps their states
(and, for the motion prior, each step's measured content shift), and then trains on batches drawn
from them: the regime docs/results.md's "LAM recipe" runs were measured in. The price is a fixed
set of clips (N of them, each at one start time) instead of fresh ones every step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from training.models.lam import LatentActionModel
from training.motion import state_shifts, state_similarity

log = logging.getLogger("lawm.train")


@dataclass
class StateBatch:
    """What one LAM step trains on: frozen states and, for the motion prior, their shifts."""

    states: torch.Tensor  # [B, S, N, D]
    shifts: torch.Tensor | None = None  # [B, S-1, 2 | 3] content shift per step in tokens (and log zoom)

    def to(self, device: torch.device, non_blocking: bool = False) -> StateBatch:
        shifts = None if self.shifts is None else self.shifts.to(device, non_blocking=non_blocking)
        return StateBatch(self.states.to(device, non_blocking=non_blocking), shifts)

    def __len__(self) -> int:
        return len(self.states)


def token_shifts(model: LatentActionModel, video: torch.Tensor, similarity: bool = False) -> torch.Tensor:
    """The content's motion per latent step, measured by phase correlation, its shift expressed in
    tokens: uint8 `[B, T, 3, H, W]` -> `[B, S-1, 2]` (the motion prior's target), or with `similarity`
    `[B, S-1, 3]`: the shift after undoing the zoom, and the log zoom (`training.motion.phase_similarity`)."""
    tubelet = model.cfg.encoder.tubelet
    motion = state_similarity(video, tubelet) if similarity else state_shifts(video, tubelet)
    to_tokens = torch.ones(motion.shape[-1], dtype=motion.dtype, device=motion.device)
    to_tokens[:2] = model.encoder.grid / video.shape[-1]
    return motion * to_tokens


@torch.no_grad()
def encode_batch(model: LatentActionModel, video: torch.Tensor, with_shifts: bool, similarity: bool = False) -> StateBatch:
    """A batch of clips `[B, T, 3, H, W]` as the LAM stage trains on it."""
    return StateBatch(model.encode(video), token_shifts(model, video, similarity) if with_shifts else None)


class StateCache:
    """`clips` training clips' states, drawn in a fresh random order every pass."""

    def __init__(self, states: torch.Tensor, shifts: torch.Tensor | None, seed: int) -> None:
        if shifts is not None and shifts.shape[:2] != (states.shape[0], states.shape[1] - 1):
            raise ValueError(f"shifts {tuple(shifts.shape)} do not fit states {tuple(states.shape)}")
        self.states, self.shifts = states, shifts  # [C, S, N, D], [C, S-1, 2 | 3] | None
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.states)

    @property
    def nbytes(self) -> int:
        extra = 0 if self.shifts is None else self.shifts.numel() * self.shifts.element_size()
        return self.states.numel() * self.states.element_size() + extra

    def batches(self, batch: int) -> Iterator[StateBatch]:
        """Endless batches of `batch` clips; every clip once per pass, in a new order each pass."""
        if batch > len(self):
            raise ValueError(f"a batch of {batch} clips needs at least that many cached clips, got {len(self)}")
        while True:
            if len(self._order) < batch:
                self._order = torch.randperm(len(self), generator=self.generator)
            index, self._order = self._order[:batch], self._order[batch:]
            yield StateBatch(self.states[index], None if self.shifts is None else self.shifts[index])


@torch.no_grad()
def build_state_cache(
    model: LatentActionModel, clips: Iterator[torch.Tensor], count: int, with_shifts: bool, seed: int,
    device: torch.device | None = None, similarity: bool = False,
) -> StateCache:
    """Encode `count` clips taken from `clips` (batches `[B, T, 3, H, W]`) with the frozen encoder.
    The states are kept in float32 on the CPU (`[count, S, N, D]`: 256 KiB a clip for the demo's encoder)."""
    if count < 1:
        raise ValueError(f"cache_clips must be at least 1, got {count}")
    states: list[torch.Tensor] = []
    shifts: list[torch.Tensor] = []
    got = 0
    while got < count:
        video = next(clips)[: count - got]
        if device is not None:
            video = video.to(device, non_blocking=True)
        encoded = encode_batch(model, video, with_shifts, similarity)
        states.append(encoded.states.float().cpu())
        if encoded.shifts is not None:
            shifts.append(encoded.shifts.float().cpu())
        got += len(video)
    cache = StateCache(torch.cat(states), torch.cat(shifts) if with_shifts else None, seed)
    log.info("cached the frozen states of %d clips (%.0f MiB)", len(cache), cache.nbytes / 2**20)
    return cache
