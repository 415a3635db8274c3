"""Fixtures for the data tests: the real sample clips and small videos written with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.training.data.datafiles import write_audio_only, write_video
from training.data.samples import sample_clips


@pytest.fixture(scope="session")
def samples() -> dict[str, Path]:
    return sample_clips()


@pytest.fixture(scope="session")
def gray_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 frames at 10 fps (3.6 s), 64x48, a keyframe every 5 frames."""
    return write_video(tmp_path_factory.mktemp("gray") / "gray.mp4")


@pytest.fixture(scope="session")
def good_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six short gray videos (4 s at 10 fps) in a folder tree."""
    root = tmp_path_factory.mktemp("good")
    (root / "sub").mkdir()
    for i in range(6):
        folder = root / "sub" if i % 2 else root
        write_video(folder / f"v{i}.mp4", n=40, gop=10)
    return root


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Path]) -> dict[str, Path]:
    """One file per way a video can be unusable, keyed by the expected skip reason."""
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    (root / "random.mp4").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (root / "empty.mp4").write_bytes(b"")
    data = samples["bikes"].read_bytes()
    (root / "half_bikes.mp4").write_bytes(data[: len(data) // 2])  # its index (moov) is at the end
    noisy = write_video(
        root / "noisy_full.mp4",
        n=40,
        gop=40,
        faststart=True,  # index first: the truncated copy still opens and probes
        frame=lambda i: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
    )
    full = noisy.read_bytes()
    (root / "cut.mp4").write_bytes(full[: int(len(full) * 0.6)])
    noisy.unlink()
    write_audio_only(root / "audio.mp4")
    write_video(root / "tiny.mp4", n=40, width=24, height=24)
    return {
        "corrupt:random": root / "random.mp4",
        "empty": root / "empty.mp4",
        "corrupt:half_bikes": root / "half_bikes.mp4",
        "truncated": root / "cut.mp4",
        "no_video_stream": root / "audio.mp4",
        "too_small": root / "tiny.mp4",
    }
