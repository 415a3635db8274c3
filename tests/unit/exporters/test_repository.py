"""Repository layout: names that cannot escape the root, versions, sha256 verification, atomic commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporters.errors import RepositoryError
from exporters.repository import (
    FORMAT,
    commit,
    file_hashes,
    model_dir,
    read_version_manifest,
    resolve_version,
    staging_dir,
    verify,
    version_dir,
    versions,
    write_manifest,
)


def fake_version(repo: Path, name: str, version: int, payload: bytes = b"graph") -> Path:
    folder = version_dir(repo, name, version)
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "idm.onnx").write_bytes(payload)
    (folder / "checkpoint" / "model.safetensors").write_bytes(b"weights")
    write_manifest(folder, {"format": FORMAT, "files": file_hashes(folder)})
    return folder


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "/abs", "", "-dash", "x" * 200, "a\\b"])
def test_names_that_could_escape_the_root_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RepositoryError, match="not a plain folder name"):
        model_dir(tmp_path, name)


def test_a_symlinked_model_folder_pointing_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "repo" / "demo").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RepositoryError, match="outside the repository root"):
        model_dir(tmp_path / "repo", "demo")


@pytest.mark.parametrize("version", [0, -1, True, "1"])
def test_versions_are_positive_integers(tmp_path: Path, version: object) -> None:
    with pytest.raises(RepositoryError, match="positive integer"):
        version_dir(tmp_path, "demo", version)  # type: ignore[arg-type]


def test_latest_complete_version_is_resolved(tmp_path: Path) -> None:
    for v in (1, 3, 10):
        fake_version(tmp_path, "demo", v)
    (tmp_path / "demo" / "11").mkdir()  # no manifest: an interrupted write, not a version
    assert versions(tmp_path, "demo") == [1, 3, 10]
    assert resolve_version(tmp_path, "demo", None).name == "10"
    assert resolve_version(tmp_path, "demo", 3).name == "3"
    with pytest.raises(RepositoryError, match=r"no version 2 .*available: \[1, 3, 10\]"):
        resolve_version(tmp_path, "demo", 2)
    with pytest.raises(RepositoryError, match="holds no exported version"):
        resolve_version(tmp_path, "other", None)
    with pytest.raises(RepositoryError, match="not found"):
        resolve_version(tmp_path / "missing", "demo", None)


def test_manifest_covers_every_file_and_tampering_is_named(tmp_path: Path) -> None:
    folder = fake_version(tmp_path, "demo", 1)
    manifest = read_version_manifest(folder)
    assert set(manifest["files"]) == {"idm.onnx", "checkpoint/model.safetensors"}
    verify(folder, manifest)
    (folder / "idm.onnx").write_bytes(b"grapH")
    with pytest.raises(RepositoryError, match=r"idm.onnx: sha256 mismatch .* re-export"):
        verify(folder, manifest)
    (folder / "idm.onnx").unlink()
    with pytest.raises(RepositoryError, match="listed in the manifest but missing"):
        verify(folder, manifest)


def test_a_damaged_or_foreign_manifest_is_refused(tmp_path: Path) -> None:
    folder = fake_version(tmp_path, "demo", 1)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(RepositoryError, match="not valid JSON"):
        read_version_manifest(folder)
    (folder / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(RepositoryError, match="unknown format"):
        read_version_manifest(folder)


def test_commit_replaces_a_version_only_once_the_new_one_is_complete(tmp_path: Path) -> None:
    old = fake_version(tmp_path, "demo", 1, payload=b"old")
    tmp = staging_dir(tmp_path, "demo", 1)
    (tmp / "idm.onnx").write_bytes(b"new")
    write_manifest(tmp, {"format": FORMAT, "files": file_hashes(tmp)})
    assert (old / "idm.onnx").read_bytes() == b"old"  # untouched while the new one is staged
    assert versions(tmp_path, "demo") == [1]  # the hidden staging folder is not a version
    final = commit(tmp, old)
    assert (final / "idm.onnx").read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["1"]
