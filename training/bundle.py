"""Write a bundled model (e.g. `models/demo/`): the last stage's checkpoint with fp16 weights,
no optimizer state, its evaluation figures, and the training logs of every stage.

Bundled weights are stored in float16 to keep the repository small; they load as float32, and
the evaluation figures in the manifest are measured on the bundle as loaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import RunConfig
from training.evaluation.common import load_model
from training.evaluation.leak import idm_prediction_error, scene_cut_test
from training.loop import stage_dir
from training.models.lam import LatentActionModel


def write_bundle(cfg: RunConfig, out: Path, stage: str = "lam") -> Path:
    source = stage_dir(cfg, stage) / "checkpoint"
    ckpt = load_checkpoint(source, expected=cfg.model)
    model = LatentActionModel(cfg.model)
    ckpt.load_into(model)
    out = Path(out)
    logs = {s: stage_dir(cfg, s) / "metrics.jsonl" for s in ("encoder", "lam", "decoder")}
    extra = {"source_checkpoint": str(source), "rebuild": f"lawm build-demo --config {cfg.name} --out {out}"}
    manifest = ckpt.manifest
    save_checkpoint(
        out, model, components=model.saved_components(), stage="bundle", step=ckpt.step, model_config=cfg.model,
        run_config=manifest.get("run_config"), trained=manifest.get("trained"), metrics=manifest.get("metrics"),
        data=manifest.get("data"), extra=extra, dtype=torch.float16,
    )
    # Evaluate the bundle as it will be loaded, then record the figures and the logs beside it.
    loaded = load_model(out)
    evaluation = {"idm_prediction_error": idm_prediction_error(loaded), "scene_cut": scene_cut_test(loaded)}
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    log_dir = out / "logs"
    log_dir.mkdir(exist_ok=True)
    for name, path in logs.items():
        if path.exists():
            shutil.copy(path, log_dir / f"{name}.metrics.jsonl")
    return out
