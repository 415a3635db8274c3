"""Phase correlation measures the content's displacement between frames, with the generator's sign."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from scipy.ndimage import shift as subpixel_shift

from training.evaluation.transfer import frame_motion, phase_shift


def photo(size: int = 96) -> np.ndarray:
    return skimage.data.astronaut()[100 : 100 + size, 150 : 150 + size].transpose(2, 0, 1).astype(np.float64)  # [3, H, W]


@pytest.mark.parametrize(("dx", "dy"), [(3, -5), (-7, 2), (0, 0)])
def test_integer_shifts_are_recovered_with_their_sign(dx: int, dy: int) -> None:
    a = photo()
    b = np.roll(a, (dy, dx), axis=(1, 2))  # content moves right by dx, down by dy
    assert phase_shift(a, b) == pytest.approx([dx, dy], abs=0.2)


def test_subpixel_shift_of_a_crop() -> None:
    big = skimage.data.astronaut().transpose(2, 0, 1).astype(np.float64)
    moved = np.stack([subpixel_shift(c, (1.5, -2.5), order=3) for c in big])
    a, b = big[:, 100:196, 150:246], moved[:, 100:196, 150:246]  # a real crop: content leaves and enters
    assert phase_shift(a, b) == pytest.approx([-2.5, 1.5], abs=0.35)


def test_frame_motion_pairs_the_first_frames_of_consecutive_states() -> None:
    a = photo()
    frames = np.stack([a, a * 0.5, np.roll(a, 4, axis=2), a * 0.1, np.roll(a, 6, axis=2), a])[None]  # [1, 6, 3, H, W]
    motion = frame_motion(frames, tubelet=2)  # frames 0 -> 2 -> 4; the odd frames are ignored
    assert motion.shape == (1, 2, 2)
    assert motion[0] == pytest.approx(np.array([[4, 0], [2, 0]]), abs=0.2)
