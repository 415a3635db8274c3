"""`training.motion`: phase correlation batched over pairs, on any dtype and scale."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from training.motion import phase_shifts, phase_similarity, state_shifts, state_similarity


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


def zoomed(log_scale: float, dx: float = 0.0, dy: float = 0.0, size: int = 96) -> torch.Tensor:
    """A real photograph's view after the camera zoomed by e^log_scale about the view's centre and the
    content then shifted by e^log_scale · (dx, dy): content at p (from the centre) lies at
    e^log_scale · (p + (dx, dy)). Resampled from a larger crop, so no edge repeats: uint8 `[3, H, W]`."""
    photo = torch.from_numpy(np.ascontiguousarray(skimage.data.astronaut()[40 : 40 + 2 * size, 100 : 100 + 2 * size]))
    source = photo.permute(2, 0, 1)[None].double()  # [1, 3, 2S, 2S]
    s = float(np.exp(log_scale))
    # output pixel y reads the source at y / s - shift; in affine_grid's [-1, 1] units of the big crop,
    # the view is its central half
    theta = torch.tensor([[[0.5 / s, 0.0, -dx / size], [0.0, 0.5 / s, -dy / size]]], dtype=torch.float64)
    grid = torch.nn.functional.affine_grid(theta, [1, 3, size, size], align_corners=False)
    out = torch.nn.functional.grid_sample(source, grid, mode="bilinear", align_corners=False)
    return out[0].round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize(("log_scale", "dx", "dy"), [(0.0, 0.0, 0.0), (0.08, 0.0, 0.0), (-0.06, 3.0, -2.0), (0.1, -4.0, 1.5)])
def test_phase_similarity_reads_the_zoom_and_the_shift_of_a_real_photo(log_scale: float, dx: float, dy: float) -> None:
    motion = phase_similarity(zoomed(0.0)[None], zoomed(log_scale, dx, dy)[None])
    assert motion.shape == (1, 3)
    assert motion[0, 2].item() == pytest.approx(log_scale, abs=0.012)
    assert motion[0, :2].numpy() == pytest.approx(np.array([dx, dy]), abs=0.5)


def test_a_zoom_fools_the_shift_alone_but_not_the_similarity() -> None:
    """Why the similarity exists: under a zoom the translation alone says nothing of it."""
    a, b = zoomed(0.0)[None], zoomed(0.1)[None]
    assert phase_shifts(a, b)[0].abs().max().item() < 1.0  # a centred zoom has no shift to read
    assert phase_similarity(a, b)[0, 2].item() == pytest.approx(0.1, abs=0.012)


def test_phase_similarity_measures_each_pair_on_its_own_and_refuses_an_even_search() -> None:
    pairs = [(0.05, 1.0, 0.0), (-0.08, 0.0, -2.0), (0.0, 2.0, 2.0)]
    a = torch.stack([zoomed(0.0) for _ in pairs])
    b = torch.stack([zoomed(*p) for p in pairs])
    batched = phase_similarity(a, b)
    alone = torch.cat([phase_similarity(a[i : i + 1], b[i : i + 1]) for i in range(len(pairs))])
    assert torch.allclose(batched, alone, atol=1e-4)
    with pytest.raises(ValueError, match="odd and at least 3"):
        phase_similarity(a, b, candidates=12)


def test_state_similarity_pairs_the_first_frames_of_consecutive_states() -> None:
    video = torch.stack([zoomed(0.0), zoomed(0.3), zoomed(0.06), zoomed(-0.3), zoomed(0.0), zoomed(0.3)])[None]
    motion = state_similarity(video, tubelet=2)  # frames 0 -> 2 -> 4: the odd frames are never read
    assert motion.shape == (1, 2, 3)
    assert motion[0, :, 2].numpy() == pytest.approx(np.array([0.06, -0.06]), abs=0.012)
