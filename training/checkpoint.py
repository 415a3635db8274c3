"""Checkpoints: safetensors weights + a JSON manifest. Nothing is ever unpickled.

A checkpoint is a directory:
    model.safetensors      every component known so far, keys `<component>.<param>`
    optimizer.safetensors  optimizer tensors, for resuming (absent in bundled models)
    manifest.json          format, stage, step, model/run config, data summary, metrics,
                           trained components, sha256 of every file, git commit, versions

Loading verifies every sha256 and compares the model config field by field, so a tampered
file or a checkpoint from another config is refused with the file or fields named.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training.config import ModelConfig, model_config_diff

FORMAT = "lawm-checkpoint/1"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
MANIFEST_FILE = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, tampered with, or does not match the config."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import safetensors

    from training import __version__

    return {"lawm": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__, "python": platform.python_version()}


# ----------------------------------------------------------------------------- optimizer state
def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------- save / load
def model_state(model: nn.Module, components: tuple[str, ...], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    tensors = {}
    for name in components:
        for key, value in getattr(model, name).state_dict().items():
            value = value.detach().cpu().contiguous()
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            tensors[f"{name}.{key}"] = value
    return tensors


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    *,
    components: tuple[str, ...],
    stage: str,
    step: int,
    model_config: ModelConfig,
    run_config: dict[str, Any] | None = None,
    trained: list[str] | None = None,
    metrics: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    optimizers: list[torch.optim.Optimizer] | None = None,
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write atomically: into `<dir>.tmp`, then rename over `<dir>`."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(model_state(model, components, dtype), str(tmp / MODEL_FILE))
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "stage": stage,
        "step": step,
        "components": list(components),
        "trained": trained or [],
        "model_config": model_config.model_dump(mode="json"),
        "run_config": run_config,
        "data": data or {},
        "metrics": metrics or {},
        "weights_dtype": str(dtype or torch.float32).replace("torch.", ""),
        "git_commit": git_commit(),
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    if optimizers:
        tensors, metas = {}, []
        for i, optimizer in enumerate(optimizers):
            part, meta = _flatten_optimizer(optimizer.state_dict())
            tensors.update({f"{i}.{k}": v for k, v in part.items()})
            metas.append(meta)
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        manifest["optimizers"] = metas
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST_FILE}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    return directory


def read_json_manifest(
    path: Path, expected_format: str, error: type[Exception], missing: str, damaged: str
) -> dict[str, Any]:
    """A manifest JSON file of a known format, or `error` saying what is wrong: `missing` when the
    file is absent, `damaged` (how to recover) appended when it is not JSON, or its format unknown.
    Shared by checkpoints and exported model repositories."""
    if not path.is_file():
        raise error(missing)
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e}); {damaged}") from None
    if manifest.get("format") != expected_format:
        raise error(f"{path}: unknown format {manifest.get('format')!r}, expected {expected_format!r}")
    return manifest


def read_checkpoint_manifest(directory: Path) -> dict[str, Any]:
    directory = Path(directory)
    return read_json_manifest(
        directory / MANIFEST_FILE, FORMAT, CheckpointError,
        missing=f"{directory} is not a lawm checkpoint: {MANIFEST_FILE} is missing",
        damaged="the checkpoint is damaged — retrain or restore it",
    )


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    for name, expected in manifest.get("files", {}).items():
        path = Path(directory) / name
        if not path.exists():
            raise CheckpointError(f"{path} is listed in the manifest but missing; restore the checkpoint")
        actual = sha256_file(path)
        if actual != expected:
            raise CheckpointError(
                f"{path}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…): the file was modified "
                "or damaged after it was written — restore it or retrain; it will not be loaded"
            )


def check_config(
    manifest: dict[str, Any], expected: ModelConfig, source: Path, components: list[str] | None = None
) -> None:
    diff = model_config_diff(expected, manifest["model_config"], components=components)
    if diff:
        raise CheckpointError(
            f"checkpoint {source} was trained with another model config; mismatching fields:\n  "
            + "\n  ".join(diff)
            + "\nUse the config it was trained with (its manifest.json holds it) or train a new one."
        )


class LoadedCheckpoint:
    def __init__(self, directory: Path, manifest: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.directory, self.manifest, self.tensors = directory, manifest, tensors

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.model_validate(self.manifest["model_config"])

    @property
    def step(self) -> int:
        return int(self.manifest["step"])

    def load_into(self, model: nn.Module, components: list[str] | tuple[str, ...] | None = None) -> None:
        """Copy weights into `model`'s components (float tensors cast to the model's dtype)."""
        components = components or self.manifest["components"]
        for name in components:
            prefix = f"{name}."
            part = {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}
            module = getattr(model, name)
            reference = module.state_dict()
            if not reference:  # parameter-free component (e.g. the sparse regularizer)
                continue
            if not part:
                raise CheckpointError(f"checkpoint {self.directory} holds no '{name}' weights")
            part = {k: v.to(reference[k].dtype) if k in reference else v for k, v in part.items()}
            missing, unexpected = module.load_state_dict(part, strict=False)
            if missing or unexpected:
                raise CheckpointError(
                    f"checkpoint {self.directory}: '{name}' weights do not fit the model "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )

    def load_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> bool:
        """Restore optimizer state for resuming; False when the checkpoint has none that fits."""
        path = self.directory / OPTIMIZER_FILE
        metas = self.manifest.get("optimizers")
        if not metas or not path.exists() or len(metas) != len(optimizers):
            return False
        tensors = load_file(str(path))
        for i, (optimizer, meta) in enumerate(zip(optimizers, metas, strict=True)):
            prefix = f"{i}."
            part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            optimizer.load_state_dict(_unflatten_optimizer(part, meta))
        return True


def load_checkpoint(
    directory: Path | str, expected: ModelConfig | None = None, components: list[str] | None = None
) -> LoadedCheckpoint:
    """Verify and load a checkpoint directory. Raises `CheckpointError` naming what is wrong.

    With `components`, only the config fields those components depend on must match (a LAM
    stage may start from an encoder trained under another regularizer, say)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} not found (expected a directory holding {MANIFEST_FILE})")
    manifest = read_checkpoint_manifest(directory)
    verify_files(directory, manifest)
    if expected is not None:
        check_config(manifest, expected, directory, components)
    try:
        tensors = load_file(str(directory / MODEL_FILE))
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{directory / MODEL_FILE} cannot be read: {e}") from None
    return LoadedCheckpoint(directory, manifest, tensors)
