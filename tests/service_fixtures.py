"""Session fixtures shared by the service's integration and e2e tests (imported by tests/conftest.py).

`tiny_model_repo`: a tiny seeded checkpoint WITH a controller, exported by `exporters.export_model`
into a model repository (`REPO/tiny/1/`). Exporting takes tens of seconds on 2 cores, so the
repository is kept in pytest's cache under a key hashed from the exporter, model and fixture sources
(and torch/onnx versions): any change to them exports afresh. Loading still verifies every sha256.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY_NAME, TINY_VERSION = "tiny", 1
API_KEY = "test-key-0123456789abcdef"
_SOURCES = ("exporters/*.py", "training/models/*.py", "training/config.py", "tests/unit/exporters/tiny.py")


def _source_key() -> str:
    digest = hashlib.sha256()
    for pattern in _SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    for dist in ("torch", "onnx", "onnxruntime", "onnxscript"):
        digest.update(f"{dist}={importlib.metadata.version(dist)}".encode())
    return digest.hexdigest()[:16]


def export_tiny_repo(repo: Path, workdir: Path, controller: str | None = "state") -> Path:
    from exporters.export import export_model
    from tests.unit.exporters.tiny import tiny_checkpoint

    checkpoint = tiny_checkpoint(workdir / "checkpoint", controller=controller)
    export_model(checkpoint, repo, name=TINY_NAME, version=TINY_VERSION, real_inputs=False)
    return repo


@pytest.fixture(scope="session")
def tiny_model_repo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding `tiny` v1 (encoder, idm, world_model, world_model_step, decoder,
    controller with 3-d actions; 32 px images, 16-d latents), exported to ONNX."""
    cache = getattr(request.config, "cache", None)  # None under `-p no:cacheprovider`
    base = cache.mkdir("lawm-tiny-repo") if cache is not None else tmp_path_factory.mktemp("tiny-repo")
    repo = base / _source_key()
    if not _complete(repo):
        shutil.rmtree(repo, ignore_errors=True)
        export_tiny_repo(repo, tmp_path_factory.mktemp("tiny-export"))
    return repo


def _complete(repo: Path) -> bool:
    """A cached export is reused only when its manifest lists every component's file and each is there."""
    folder = repo / TINY_NAME / str(TINY_VERSION)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        files = [f for entry in manifest["components"].values() for f in entry["files"].values()]
    except (OSError, ValueError, KeyError, AttributeError):
        return False
    return bool(files) and all((folder / f).is_file() and f in manifest.get("files", {}) for f in files)
