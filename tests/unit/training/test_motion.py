"""`training.motion`: phase correlation batched over pairs, on any dtype and scale."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from training.motion import phase_shifts, state_shifts


def crop(dx: int = 0, dy: int = 0, size: int = 64) -> torch.Tensor:
    """A real photograph's crop whose content has moved right by dx and down by dy: uint8 `[3, H, W]`."""
    photo = skimage.data.astronaut()[80 : 80 + size + 16, 130 : 130 + size + 16]
    return torch.from_numpy(np.ascontiguousarray(photo[8 - dy : 8 - dy + size, 8 - dx : 8 - dx + size].transpose(2, 0, 1)))


def test_a_batch_measures_each_pair_on_its_own_with_the_generator_sign() -> None:
    shifts = [(3, -2), (-5, 4), (0, 0), (1, 6)]
    a = torch.stack([crop() for _ in shifts])
    b = torch.stack([crop(dx, dy) for dx, dy in shifts])  # real crops: content leaves and enters the view
    batched = phase_shifts(a, b)
    assert batched.dtype == torch.float32 and batched.shape == (4, 2)
    assert batched.numpy() == pytest.approx(np.array(shifts, dtype=float), abs=0.3)
    alone = torch.cat([phase_shifts(a[i : i + 1], b[i : i + 1]) for i in range(len(shifts))])
    assert torch.allclose(batched, alone, atol=1e-4)  # no pair reads another's spectrum


def test_the_scale_and_dtype_of_the_frames_do_not_change_the_shift() -> None:
    a, b = crop()[None], crop(2, -3)[None]
    as_unit = phase_shifts(a.double() / 255, b.double() / 255)
    assert as_unit.dtype == torch.float64
    assert torch.allclose(as_unit.float(), phase_shifts(a, b), atol=1e-3)


def test_state_shifts_pair_the_first_frames_of_consecutive_states() -> None:
    video = torch.stack([crop(), crop(5, 5), crop(2, 0), crop(7, 7), crop(3, 1), crop()])[None]  # [1, 6, 3, H, W]
    shifts = state_shifts(video, tubelet=2)  # frames 0 -> 2 -> 4: the odd frames are never read
    assert shifts.shape == (1, 2, 2)
    assert shifts[0].numpy() == pytest.approx(np.array([[2, 0], [1, 1]], dtype=float), abs=0.3)
