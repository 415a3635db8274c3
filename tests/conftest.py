"""Shared fixtures: tiny configs and a tiny generated corpus; markers applied from the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.service_fixtures import tiny_model_repo  # noqa: F401  # session fixture of the service tests
from training.config import RunConfig, config_from_dict

FOLDER_MARKERS = {"unit": pytest.mark.unit, "integration": pytest.mark.integration, "e2e": pytest.mark.e2e, "gpu": pytest.mark.gpu}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for name, marker in FOLDER_MARKERS.items():
            if name in parts:
                item.add_marker(marker)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


def tiny_config_dict(run_dir: str, sources: list[str], **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "tiny",
        "run_dir": run_dir,
        "model": {
            "encoder": {"image_size": 32, "patch": 8, "dim": 32, "depth": 1, "heads": 2},
            "idm": {"dim": 32, "depth": 1, "heads": 2, "latent_dim": 16},
            "world_model": {"dim": 32, "depth": 2, "heads": 2, "max_steps": 8},
            "decoder": {"dim": 32, "depth": 1, "heads": 2},
        },
        "data": {"sources": sources, "frames": 8, "fps": 4.0, "size": 32, "clips_per_file": 2, "cache_decoded": True},
        "train": {
            "encoder": {"steps": 3, "batch": 2, "log_every": 1, "checkpoint_every": 2},
            "lam": {"steps": 3, "batch": 2, "log_every": 1, "checkpoint_every": 2},
            "decoder": {"steps": 2, "batch": 2, "log_every": 1},
        },
    }
    for key, value in overrides.items():
        node = raw
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six short generated MP4s (48 px, 4 s at 8 fps) with their motion manifest."""
    from training.data.generator import GeneratorConfig, generate_corpus

    out = tmp_path_factory.mktemp("corpus")
    generate_corpus(out, 6, GeneratorConfig(width=48, height=48, fps=8, seconds=4), seed=1)
    return out


@pytest.fixture
def tiny_config(tmp_path: Path, tiny_corpus: Path) -> RunConfig:
    return config_from_dict(tiny_config_dict(str(tmp_path / "runs"), [str(tiny_corpus)]))
