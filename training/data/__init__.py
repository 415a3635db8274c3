"""Video data: sources (folders, globs, manifests, tar shards), PyAV decoding and clip datasets."""

from training.data.dataset import DataStats, VideoClipDataset, fixed_clips, usable_range
from training.data.samples import SampleDataMissing, sample_clips
from training.data.sources import (
    VIDEO_EXTENSIONS,
    DataSourceError,
    VideoRef,
    open_ref,
    resolve_sources,
)
from training.data.video import (
    UnreadableVideo,
    VideoInfo,
    VideoTooSmall,
    decode_all,
    decode_clip,
    probe,
)

__all__ = [
    "VIDEO_EXTENSIONS",
    "DataSourceError",
    "DataStats",
    "SampleDataMissing",
    "UnreadableVideo",
    "VideoClipDataset",
    "VideoInfo",
    "VideoRef",
    "VideoTooSmall",
    "decode_all",
    "decode_clip",
    "fixed_clips",
    "open_ref",
    "probe",
    "resolve_sources",
    "sample_clips",
    "usable_range",
]
