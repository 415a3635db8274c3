"""Build and write the bundled demo model (`models/demo/`).

The recipe (`lawm build-demo`, about 35 minutes on 2 CPU cores; configs/demo.yaml):
1. the tiny encoder (+ decoder) as an autoencoder, then the LAM, on in-the-wild video (the real
   sample clips and the procedural generator) and unlabelled video of the planning worlds; the LAM
   with the warp term on one-step pairs (docs/results.md, "LAM recipe");
2. the LAM fine-tuned at a low learning rate on the same mix of real, generated and environment
   video (the paper mixes the planning environments' video into its LAM data, App. D; a config
   without `environments` in its sources meets that video only here);
3. a controller for the navigation world, trained on a little labelled data (48 episodes);
4. the bundle: fp16 weights (they load as float32), no optimizer state, its evaluation figures
   measured on the bundle as loaded, and the training logs of every stage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from training.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_manifest, save_checkpoint
from training.config import RunConfig
from training.evaluation.common import load_lam
from training.evaluation.leak import idm_prediction_error, scene_cut_test

# Step 2's data and optimisation: every model part starts from step 1's checkpoint, so the
# warm-ups that protect a fresh IDM are off and the learning rate is a fine-tune's.
ENV_VIDEO = {"navigation": ("runs/data/env/navigation", 7_000_000), "manipulation": ("runs/data/env/manipulation", 7_100_000)}
ENV_FINETUNE = [
    "data.sources=[samples,generated," + ",".join(path for path, _ in ENV_VIDEO.values()) + "]",
    "train.lam.steps=200",
    "train.lam.idm_warmup=0",
    "train.lam.regularizer_warmup=0",
    "train.lam.optim.lr=1.5e-4",
    "train.lam.optim.idm_lr_mult=1.0",
    "train.lam.optim.modulation_lr_mult=1.0",
    "train.lam.checkpoint_every=25",
]
BUNDLED_CONTROLLER_ENV = "navigation"


def _inherited(manifest: dict, key: str) -> object:
    """`manifest[key]`, else from the checkpoint it was made from (a controller checkpoint keeps
    the LAM's training config and data summary only through its `source_checkpoint`)."""
    seen = 0
    while manifest.get(key) is None and manifest.get("source_checkpoint") and seen < 8:
        source = Path(manifest["source_checkpoint"])
        if not (source / "manifest.json").exists():
            return None
        manifest, seen = read_checkpoint_manifest(source), seen + 1
    return manifest.get(key)


# What an encoder checkpoint's training depends on: a run may reuse it only when these agree.
ENCODER_KEYS = (("model",), ("data",), ("train", "encoder"), ("train", "seed"))


def check_reusable_encoder(cfg: RunConfig, checkpoint: Path) -> None:
    """Raise unless `checkpoint` (absent is fine: it is trained afresh) was trained under `cfg`'s
    model, data and encoder-stage settings, so `build-demo --reuse-encoder` never mixes recipes."""
    if not (checkpoint / "manifest.json").exists():
        return
    saved = read_checkpoint_manifest(checkpoint).get("run_config") or {}
    wanted = cfg.model_dump(mode="json")
    for key in ENCODER_KEYS:
        a, b = saved, wanted
        for part in key:
            a, b = (a or {}).get(part), b.get(part)
        if a != b:
            raise CheckpointError(
                f"{checkpoint} was trained with different {'.'.join(key)} settings than config '{cfg.name}': "
                "drop --reuse-encoder to train the encoder afresh, or delete that checkpoint"
            )


def write_bundle(source: Path, out: Path, logs: dict[str, Path], rebuild: str) -> Path:
    """Copy checkpoint `source` (with its controller, if any) to `out` as an fp16 bundle."""
    ckpt = load_checkpoint(source)
    model = load_lam(source)
    out = Path(out)
    extra = {"source_checkpoint": str(source), "rebuild": rebuild}
    manifest = ckpt.manifest
    run_config, data = _inherited(manifest, "run_config"), _inherited(manifest, "data")
    for key in ("controller_config", "controller_env"):
        if key in manifest:
            extra[key] = manifest[key]
    save_checkpoint(
        out, model, components=model.saved_components(), stage="bundle", step=ckpt.step, model_config=model.cfg,
        run_config=run_config, trained=manifest.get("trained"), metrics=manifest.get("metrics"),
        data=data, extra=extra, dtype=torch.float16,
    )
    # Evaluate the bundle as it will be loaded, then record the figures and the logs beside it.
    loaded = load_lam(out)
    evaluation = {"idm_prediction_error": idm_prediction_error(loaded), "scene_cut": scene_cut_test(loaded)}
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    log_dir = out / "logs"
    if log_dir.exists():
        shutil.rmtree(log_dir)
    log_dir.mkdir()
    for name, path in logs.items():
        if path.exists():
            shutil.copy(path, log_dir / f"{name}.metrics.jsonl")
    return out
