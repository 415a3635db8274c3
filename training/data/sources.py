"""Where training videos come from: folders, globs, JSONL manifests and WebDataset-style tar shards.

:func:`resolve_sources` turns a spec (or a list of them) into :class:`VideoRef` s. A tar shard is
listed, not extracted: each member with a video extension is one sample, and :func:`open_ref` reads
that member's bytes into memory when it is decoded.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".avi", ".mkv", ".gif", ".m4v"})
_GLOB_CHARS = frozenset("*?[")
_SPEC_HELP = "give a folder of videos, a glob pattern, a .jsonl manifest or .tar shards"


class DataSourceError(Exception):
    """A data source that cannot be used at all (as opposed to one bad file, which is skipped)."""


@dataclass(frozen=True)
class VideoRef:
    """One video to sample clips from.

    ``path`` names the video (for a tar member: ``"<shard>::<member>"``); ``start_s``/``end_s``
    restrict it to a time range (from a manifest); ``shard``/``member`` locate a tar member.
    """

    path: str
    start_s: float | None = None
    end_s: float | None = None
    shard: str | None = None
    member: str | None = None


def is_video_file(path: str | os.PathLike[str]) -> bool:
    """Whether the file name has one of :data:`VIDEO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def open_ref(ref: VideoRef) -> str | BinaryIO:
    """What to hand to the decoder: the file path, or a tar member's bytes in memory."""
    if ref.shard is None or ref.member is None:
        return ref.path
    with tarfile.open(ref.shard, mode="r:*") as tar:
        return read_member(tar, ref)


def read_member(tar: tarfile.TarFile, ref: VideoRef) -> BinaryIO:
    """A tar member's bytes as an in-memory file named after the ref (for error messages)."""
    extracted = tar.extractfile(ref.member or "")
    if extracted is None:
        raise FileNotFoundError(f"{ref.member} is not a regular file in {ref.shard}")
    data = io.BytesIO(extracted.read())
    data.name = ref.path  # type: ignore[attr-defined]  # PyAV and our messages use it as the name
    return data


def resolve_sources(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[VideoRef]:
    """Expand a source spec into video refs, in a stable (sorted) order.

    A spec is a folder (searched recursively for video files), a glob pattern (``**`` allowed), a
    ``.jsonl`` manifest, a ``.tar`` shard, a single video file, or a list of any of these. Identical
    refs reached twice are kept once. Raises :class:`DataSourceError` when a spec matches nothing.
    """
    specs: Iterable[str | os.PathLike[str]] = [spec] if isinstance(spec, str | os.PathLike) else spec
    refs: list[VideoRef] = []
    for one in specs:
        refs.extend(_resolve_one(one))
    if not refs:
        raise DataSourceError(f"no data source given ({spec!r}): {_SPEC_HELP}")
    return list(dict.fromkeys(refs))  # dedupe, keeping order


def _resolve_one(spec: str | os.PathLike[str]) -> list[VideoRef]:
    text = os.fspath(spec)
    if any(c in text for c in _GLOB_CHARS):
        return _resolve_glob(text)
    path = Path(text)
    if path.is_dir():
        return _resolve_folder(path)
    if not path.exists():
        raise DataSourceError(f"data source {text} does not exist: {_SPEC_HELP}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_video_list(path)
    if suffix == ".tar":
        return list_shard(path)
    if suffix in VIDEO_EXTENSIONS:
        return [VideoRef(path=text)]
    raise DataSourceError(
        f"data source {text} has an unsupported extension {suffix!r}: {_SPEC_HELP} "
        f"(video extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})"
    )


def _resolve_glob(pattern: str) -> list[VideoRef]:
    matches = sorted(m for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))
    shards = [m for m in matches if m.lower().endswith(".tar")]
    videos = [m for m in matches if is_video_file(m)]
    if not shards and not videos:
        raise DataSourceError(
            f"the pattern {pattern} matches no video file or .tar shard ({len(matches)} other files): "
            "check the path, or quote the pattern so the shell does not expand it"
        )
    refs = [VideoRef(path=v) for v in videos]
    for shard in shards:
        refs.extend(list_shard(Path(shard)))
    return refs


def _resolve_folder(folder: Path) -> list[VideoRef]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    videos = [p for p in files if is_video_file(p)]
    if not videos:
        tars = sum(p.suffix.lower() == ".tar" for p in files)
        hint = f"; it holds {tars} .tar shards: pass {folder}/*.tar instead" if tars else ""
        raise DataSourceError(
            f"the folder {folder} holds no video file ({len(files)} files, none with a video extension: "
            f"{', '.join(sorted(VIDEO_EXTENSIONS))}){hint}"
        )
    return [VideoRef(path=str(p)) for p in videos]


def list_shard(shard: Path) -> list[VideoRef]:
    """The video members of a WebDataset-style tar shard, one ref each, in archive order."""
    try:
        with tarfile.open(shard, mode="r:*") as tar:
            members = [m.name for m in tar.getmembers() if m.isfile() and is_video_file(m.name)]
    except (tarfile.TarError, OSError) as err:
        raise DataSourceError(f"cannot read the tar shard {shard}: {err}") from err
    if not members:
        raise DataSourceError(
            f"the tar shard {shard} holds no video member (expected names like 000001.mp4 with "
            f"extensions {', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    return [VideoRef(path=f"{shard}::{m}", shard=str(shard), member=m) for m in members]


def read_video_list(manifest: Path) -> list[VideoRef]:
    """Refs from a JSONL manifest: one object per line with ``path`` and optional ``start_s``/``end_s``.

    Relative paths are relative to the manifest's folder. Blank lines are ignored; a malformed line
    raises :class:`DataSourceError` naming the line. Missing files are not checked here: they are
    skipped and counted when decoded, like any unreadable video.
    """
    refs = []
    with manifest.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if line.strip():
                refs.append(_manifest_entry(manifest, lineno, line))
    if not refs:
        raise DataSourceError(f"the manifest {manifest} is empty: add one JSON object per line with a 'path'")
    return refs


def _manifest_entry(manifest: Path, lineno: int, line: str) -> VideoRef:
    where = f"{manifest}:{lineno}"
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataSourceError(f"{where}: not valid JSON ({err.msg})") from err
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
        raise DataSourceError(f'{where}: expected an object with a "path" string, got {line.strip()[:80]}')
    start, end = _seconds(entry, "start_s", where), _seconds(entry, "end_s", where)
    if start is not None and end is not None and end <= start:
        raise DataSourceError(f"{where}: end_s ({end}) must be after start_s ({start})")
    path = Path(entry["path"])
    if not path.is_absolute():
        path = manifest.parent / path
    return VideoRef(path=str(path), start_s=start, end_s=end)


def _seconds(entry: dict, key: str, where: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise DataSourceError(f"{where}: {key} must be a number of seconds >= 0, got {value!r}")
    return float(value)
