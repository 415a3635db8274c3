"""`lawm serve`'s first-start export: when a repository version is (re)exported and when it is left alone
(the export itself, in the background, is tests/integration/service/test_startup.py's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from service.settings import Settings
from service.startup import _stale, ensure_exported, export_request, export_source
from tests.service_fixtures import TINY_NAME, TINY_VERSION


def own_copy(tiny_model_repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the tiny repository whose manifest names `source` (a copy of its weights) as its source."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_model_repo, repo)
    folder = repo / TINY_NAME / str(TINY_VERSION)
    source = shutil.copytree(folder / "checkpoint", tmp_path / "source")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["source"]["checkpoint"] = str(source)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return repo, source


def test_an_up_to_date_export_is_kept_and_a_changed_source_is_stale(tiny_model_repo: Path, tmp_path: Path) -> None:
    repo, source = own_copy(tiny_model_repo, tmp_path)
    settings = Settings(repo=repo, model=TINY_NAME, version=TINY_VERSION, export_from=source)
    assert ensure_exported(settings) is None  # same weights: nothing to do
    folder = repo / TINY_NAME / str(TINY_VERSION)
    assert not _stale(folder, source)
    (source / "model.safetensors").write_bytes(b"retrained")  # the source changed since the export
    assert _stale(folder, source)
    request = export_request(settings)  # what the server exports in the background
    assert request is not None and (request.source, request.version, request.force) == (source, TINY_VERSION, True)
    assert not _stale(folder, tmp_path / "another-checkpoint")  # exported from elsewhere: never replaced


def test_only_the_demo_model_is_exported_by_default(tmp_path: Path) -> None:
    assert export_source(Settings(model="mine")) is None
    assert ensure_exported(Settings(repo=tmp_path, model="mine")) is None  # loading will say how to export
    assert export_source(Settings(model="demo")) is not None  # the bundled models/demo
    assert ensure_exported(Settings(checkpoint=tmp_path)) is None  # a checkpoint is served as it is
