"""Resolving data sources: folders, globs, JSONL manifests and tar shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.training.data.datafiles import write_tar, write_video
from training.data.sources import DataSourceError, VideoRef, open_ref, resolve_sources
from training.data.video import probe

pytestmark = pytest.mark.unit


def test_folder_is_searched_recursively_for_video_extensions(tmp_path: Path) -> None:
    for name in ["a.mp4", "sub/b.WEBM", "sub/deeper/c.gif", "notes.txt", "sub/d.json"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    refs = resolve_sources(tmp_path)
    assert [Path(r.path).relative_to(tmp_path).as_posix() for r in refs] == [
        "a.mp4",
        "sub/b.WEBM",
        "sub/deeper/c.gif",
    ]
    assert all(r.start_s is None and r.shard is None for r in refs)


def test_glob_and_lists_are_deduplicated(tmp_path: Path) -> None:
    for name in ["x1.mp4", "x2.mp4", "y.mkv"]:
        (tmp_path / name).write_bytes(b"x")
    refs = resolve_sources([str(tmp_path / "x*.mp4"), tmp_path])
    assert [Path(r.path).name for r in refs] == ["x1.mp4", "x2.mp4", "y.mkv"]


def test_manifest_paths_and_time_ranges(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    absolute = tmp_path / "elsewhere.mp4"
    lines = [
        {"path": "clips/a.mp4", "start_s": 1.5, "end_s": 4},
        {"path": str(absolute)},
        {"path": "clips/b.mp4", "end_s": 2.0, "caption": "ignored"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert resolve_sources(manifest) == [
        VideoRef(path=str(tmp_path / "clips/a.mp4"), start_s=1.5, end_s=4.0),
        VideoRef(path=str(absolute)),
        VideoRef(path=str(tmp_path / "clips/b.mp4"), end_s=2.0),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"m\.jsonl:2: not valid JSON"),
        ('{"file": "a.mp4"}', r'm\.jsonl:2: expected an object with a "path"'),
        ('{"path": "a.mp4", "start_s": 3, "end_s": 2}', r"m\.jsonl:2: end_s \(2\.0\) must be after start_s"),
        ('{"path": "a.mp4", "start_s": -1}', r"m\.jsonl:2: start_s must be a number of seconds >= 0"),
    ],
)
def test_malformed_manifest_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "ok.mp4"}\n' + line + "\n")
    with pytest.raises(DataSourceError, match=message):
        resolve_sources(manifest)


def test_tar_shards_list_video_members(tmp_path: Path, gray_mp4: Path) -> None:
    data = gray_mp4.read_bytes()
    for k in range(2):
        write_tar(
            tmp_path / f"shard-{k}.tar",
            {f"{k}000.mp4": data, f"{k}000.json": b"{}", f"{k}001.mp4": data},
        )
    refs = resolve_sources(str(tmp_path / "shard-*.tar"))
    assert [(Path(r.shard or "").name, r.member) for r in refs] == [
        ("shard-0.tar", "0000.mp4"),
        ("shard-0.tar", "0001.mp4"),
        ("shard-1.tar", "1000.mp4"),
        ("shard-1.tar", "1001.mp4"),
    ]
    assert refs[0].path == f"{tmp_path / 'shard-0.tar'}::0000.mp4"
    member = open_ref(refs[3])
    assert member.read() == data  # type: ignore[union-attr]
    info = probe(open_ref(refs[3]))
    assert info.path == refs[3].path and info.num_frames == 36


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"nowhere does not exist: give a folder of videos"):
        resolve_sources(tmp_path / "nowhere")


def test_folder_without_videos_suggests_shards(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    write_tar(tmp_path / "s.tar", {"a.mp4": b"x"})
    with pytest.raises(DataSourceError, match=r"holds no video file .*2 files.*pass .*\*\.tar instead"):
        resolve_sources(tmp_path)


def test_glob_without_matches(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(DataSourceError, match=r"\*\.mp4 matches no video file or \.tar shard"):
        resolve_sources(str(tmp_path / "*.mp4"))


def test_unsupported_extension(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(DataSourceError, match=r"a\.txt has an unsupported extension '\.txt'"):
        resolve_sources(tmp_path / "a.txt")


def test_single_file(tmp_path: Path) -> None:
    video = write_video(tmp_path / "one.mov", n=3)
    assert resolve_sources(video) == [VideoRef(path=str(video))]
