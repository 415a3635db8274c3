"""The model repository, laid out like Triton's: `REPO/<name>/<version>/<component>.onnx|.plan`.

Each version folder also holds `manifest.json` (specs, profiles, files and their sha256, source
checkpoint, versions, parity) and `checkpoint/` (the source weights, for the torch runtime).
Versions are positive integers; names are plain folder names, so nothing can escape the root.
A version is written into a hidden temporary folder and renamed into place at the end, so a
failed export (parity included) leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from exporters.errors import RepositoryError
from training.checkpoint import read_json_manifest, sha256_file

FORMAT = "lawm-model-repository/1"
MANIFEST = "manifest.json"
CHECKPOINT_DIR = "checkpoint"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise RepositoryError(
            f"model name {name!r} is not a plain folder name: use letters, digits, '.', '_' or '-' "
            "(no '/', no '..'), starting with a letter or digit"
        )
    return name


def model_dir(repo: Path, name: str) -> Path:
    """`repo/name`, refusing any name that would resolve outside `repo`."""
    root = Path(repo).resolve()
    path = (root / check_name(name)).resolve()
    if path.parent != root:  # e.g. a symlink pointing elsewhere
        raise RepositoryError(f"model folder {path} lies outside the repository root {root}; remove the link")
    return path


def version_dir(repo: Path, name: str, version: int) -> Path:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RepositoryError(f"version must be a positive integer, got {version!r}")
    return model_dir(repo, name) / str(version)


def versions(repo: Path, name: str) -> list[int]:
    """Complete versions of a model (those with a manifest), ascending."""
    folder = model_dir(repo, name)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / MANIFEST).is_file())


def resolve_version(repo: Path, name: str, version: int | None) -> Path:
    """The folder of `version`, or of the latest version when None."""
    if not Path(repo).is_dir():
        raise RepositoryError(f"model repository {repo} not found: create one with `lawm export CHECKPOINT --to {repo}`")
    found = versions(repo, name)
    if not found:
        raise RepositoryError(f"{Path(repo) / name} holds no exported version: run `lawm export CHECKPOINT --to {repo} --name {name}`")
    if version is None:
        version = found[-1]
    if version not in found:
        raise RepositoryError(f"{name} has no version {version} in {repo}; available: {found}")
    return version_dir(repo, name, version)


def read_version_manifest(folder: Path) -> dict[str, Any]:
    return read_json_manifest(
        Path(folder) / MANIFEST, FORMAT, RepositoryError,
        missing=f"{folder} is not a model repository version: {MANIFEST} is missing",
        damaged="re-export this version (lawm export ... --force)",
    )


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except the manifest, keyed by POSIX relative path."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != folder / MANIFEST
    }


def verify(folder: Path, manifest: dict[str, Any], only: list[str] | None = None) -> None:
    """Check the sha256 of every file the manifest lists (or only those named)."""
    listed: dict[str, str] = manifest.get("files", {})
    for rel in only if only is not None else listed:
        if rel not in listed:
            raise RepositoryError(f"{folder / MANIFEST} lists no sha256 for {rel}; re-export this version")
        path = Path(folder) / rel
        if not path.is_file():
            raise RepositoryError(f"{path} is listed in the manifest but missing; re-export this version (--force)")
        actual = sha256_file(path)
        if actual != listed[rel]:
            raise RepositoryError(
                f"{path}: sha256 mismatch (manifest {listed[rel][:12]}…, file {actual[:12]}…): the file was "
                "modified or damaged after export; it will not be loaded — re-export this version (--force)"
            )


def staging_dir(repo: Path, name: str, version: int) -> Path:
    """A fresh hidden folder beside the version's, to write into before `commit`; unique, so two
    exports of one version at once (two servers starting on a fresh repository) never share it."""
    final = version_dir(repo, name, version)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=final.parent))


def commit(tmp: Path, final: Path) -> Path:
    """Replace `final` by `tmp` (the old version, if any, only goes once the new one is in place)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
