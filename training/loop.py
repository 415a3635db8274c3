"""Training stages: `encoder` (tiny encoder + decoder), `lam` (IDM + WM + regularizer on frozen
states), `decoder` (decoder on frozen states).

Each stage runs in `runs/<name>/<stage>/`: the resolved config (`config.yaml`), a JSONL metrics
log (`metrics.jsonl`), TensorBoard events when tensorboard is installed, and the checkpoint
(`checkpoint/`), which always holds every component known so far, so the last stage's
checkpoint is a complete model. A stage resumes from its own checkpoint when one exists.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from training import distributed
from training.checkpoint import CheckpointError, check_config, load_checkpoint, save_checkpoint
from training.config import RunConfig, StageConfig
from training.data.corpus import build_refs
from training.data.dataset import VideoClipDataset
from training.data.shuffle import ShuffleBuffer
from training.models.encoder import to_unit_float
from training.models.lam import LatentActionModel, one_step_pairs
from training.models.regularizers import VectorQuantizer
from training.models.temporal_metric import temporal_ranking_loss
from training.optim import build_optimizers, lr_factor, set_lr
from training.state_cache import StateBatch, build_state_cache, encode_batch

log = logging.getLogger("lawm.train")
Stage = Literal["encoder", "lam", "decoder"]
STAGES: tuple[Stage, ...] = ("encoder", "lam", "decoder")
# What each stage trains; the rest of the model is frozen (or absent) during it.
TRAINABLE: dict[str, tuple[str, ...]] = {
    "encoder": ("encoder", "decoder"),
    "lam": ("idm", "regularizer", "world_model"),
    "decoder": ("decoder",),
}
# Which earlier stage a stage starts from (its weights are loaded before training).
PREVIOUS: dict[str, tuple[str, ...]] = {"encoder": (), "lam": ("encoder",), "decoder": ("lam", "encoder")}


class TrainingError(RuntimeError):
    """A stage cannot run as configured; the message says what to do."""


def stage_dir(cfg: RunConfig, stage: str) -> Path:
    return Path(cfg.run_dir) / cfg.name / stage


# ----------------------------------------------------------------------------- losses
def encoder_stage_loss(
    model: LatentActionModel, video: torch.Tensor, ranking_weight: float = 0.0, change_weight: float = 0.0,
    window: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Tiny encoder: L1 between decoded and input pixels; when weighted, the L1 between their
    frame-to-frame changes (the states keep what moves) and the temporal ranking of state distances
    that makes them a planning cost (training/models/temporal_metric.py)."""
    if window:
        b, t = video.shape[:2]
        if window % model.cfg.encoder.tubelet or t % window:
            raise ValueError(f"window {window} must be a multiple of the tubelet and divide the clip's {t} frames")
        video = video.reshape(b * t // window, window, *video.shape[2:])  # [B*T/W, W, 3, H, W]
    states = model.encoder(video)  # [B, S, N, D]
    reconstruction = model.decoder(states)  # [B, T, 3, H, W]
    target = to_unit_float(video)
    pixel_l1 = F.l1_loss(reconstruction, target)
    loss, stats = pixel_l1, {"pixel_l1": pixel_l1.item()}
    if change_weight > 0:
        change_l1 = F.l1_loss(reconstruction.diff(dim=1), target.diff(dim=1))
        loss = loss + change_weight * change_l1
        stats["change_l1"] = change_l1.item()
    if ranking_weight > 0:
        ranking, accuracy = temporal_ranking_loss(states)
        loss = loss + ranking_weight * ranking
        stats.update(ranking=ranking.item(), ranking_accuracy=accuracy.item())
    return loss, stats


def lam_stage_loss(
    model: LatentActionModel,
    batch: torch.Tensor | StateBatch,
    regularizer_weight: float = 1.0,
    warp_weight: float = 0.0,
    context: str = "full",
    motion_prior_weight: float = 0.0,
    motion_prior: str = "translation",
) -> tuple[torch.Tensor, dict[str, float]]:
    """The LAM loss on clips `[B, T, 3, H, W]` (encoded here by the frozen encoder) or on their
    cached states (train.lam.cache_clips)."""
    if not isinstance(batch, StateBatch):
        batch = encode_batch(model, batch, with_shifts=bool(motion_prior_weight), similarity=motion_prior == "similarity")
    states, shift = batch.states, batch.shifts  # frozen [B, S, N, D]; [B, S-1, 2 | 3] (tokens, log zoom) or None
    if motion_prior_weight and shift is None:
        raise ValueError("the motion prior needs each step's measured shift: cache the states with their shifts")
    if context == "pairs":
        states = one_step_pairs(states)  # [B*(S-1), 2, N, D]
        shift = None if shift is None else shift.reshape(-1, 1, shift.shape[-1])  # [B*(S-1), 1, 2 | 3], pair by pair
    out = model.lam_loss(states, regularizer_weight=regularizer_weight, warp_weight=warp_weight,
                         motion_shift=shift, motion_weight=motion_prior_weight)
    stats = {"prediction_l1": out.prediction_loss.item(), "regularizer": out.regularizer_loss.item()}
    stats["z_batch_std"] = out.latents.detach().reshape(-1, out.latents.shape[-1]).std(0).mean().item()
    stats.update({k: v.item() for k, v in out.stats.items()})
    return out.loss, stats


def decoder_stage_loss(model: LatentActionModel, video: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    with torch.no_grad():
        states = model.encode(video)
    loss = F.l1_loss(model.decoder(states), to_unit_float(video))
    return loss, {"pixel_l1": loss.item()}


LOSSES: dict[str, Callable[[LatentActionModel, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]] = {
    "encoder": encoder_stage_loss,
    "lam": lam_stage_loss,
    "decoder": decoder_stage_loss,
}


def regularizer_ramp(step: int, total: int, warmup: float) -> float:
    """Weight of L_z at `step`: linear from 0 to 1 over `warmup·total` steps, then 1."""
    ramp = int(warmup * total)
    return 1.0 if ramp <= 0 else min(1.0, step / ramp)


class _LossModule(nn.Module):
    """Wraps model + stage loss so DDP sees one forward that returns the loss."""

    def __init__(self, model: LatentActionModel, stage: str) -> None:
        super().__init__()
        self.model, self.stage = model, stage
        self.regularizer_weight = 1.0  # L_z's weight in the LAM stage, set by the loop each step
        self.encoder_options: dict[str, float | int] = {}  # the encoder stage's loss options, set by the loop
        self.warp_weight = 0.0  # the LAM stage's warp term (train.lam.warp_weight)
        self.context = "full"  # the LAM stage's world-model context (train.lam.context)
        self.motion_prior_weight = 0.0  # the LAM stage's motion prior (train.lam.motion_prior_weight)
        self.motion_prior = "translation"  # and what it measures (train.lam.motion_prior)

    def forward(self, batch: torch.Tensor | StateBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if self.stage == "lam":
            return lam_stage_loss(self.model, batch, self.regularizer_weight, self.warp_weight, self.context,
                                  self.motion_prior_weight, self.motion_prior)
        if self.stage == "encoder":
            return encoder_stage_loss(self.model, batch, **self.encoder_options)
        return LOSSES[self.stage](self.model, batch)


# ----------------------------------------------------------------------------- the step
@dataclass
class StepResult:
    loss: float
    stats: dict[str, float] = field(default_factory=dict)


def train_step(
    wrapped: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    batch: torch.Tensor | StateBatch,
    grad_clip: float,
    autocast: Any = None,
) -> StepResult:
    """One optimisation step on a batch `[B, T, 3, H, W]` or the LAM stage's cached states (this rank's share)."""
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    with autocast or nullcontext():
        loss, stats = wrapped(batch)
    loss.backward()
    params = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
    if grad_clip > 0:
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    for optimizer in optimizers:
        optimizer.step()
    return StepResult(loss.item(), stats)


def set_trainable(model: LatentActionModel, stage: str) -> list[tuple[str, nn.Module]]:
    model.requires_grad_(False)
    modules = [(name, getattr(model, name)) for name in TRAINABLE[stage]]
    for _, module in modules:
        module.requires_grad_(True)
    model.eval()
    for _, module in modules:
        module.train()
    return modules


# ----------------------------------------------------------------------------- data
def clip_batches(
    cfg: RunConfig, info: distributed.DistInfo, per_rank_batch: int, first_epoch: int = 0
) -> tuple[Iterator[torch.Tensor], VideoClipDataset]:
    """Endless batches of this rank's clips. A resumed run starts at another epoch number so it
    does not replay the clips the run began with."""
    refs = build_refs(cfg.data, "train", seed=cfg.train.seed)
    dataset = VideoClipDataset(
        refs,
        frames=cfg.data.frames,
        fps=cfg.data.fps,
        size=cfg.data.size,
        seed=cfg.train.seed,
        rank=info.rank,
        world_size=info.world_size,
        cache_decoded=cfg.data.cache_decoded,
        clips_per_file=cfg.data.clips_per_file,
    )
    source: VideoClipDataset | ShuffleBuffer = dataset
    if cfg.data.shuffle_buffer > 1:
        source = ShuffleBuffer(dataset, cfg.data.shuffle_buffer, seed=cfg.train.seed)
    loader = DataLoader(source, batch_size=per_rank_batch, num_workers=cfg.data.workers, drop_last=True)

    def forever() -> Iterator[torch.Tensor]:
        epoch = first_epoch
        while True:
            source.set_epoch(epoch)
            got = False
            for batch in loader:
                got = True
                yield batch["video"]
            if not got:
                raise TrainingError(
                    f"one pass over the data gave fewer than {per_rank_batch} clips per rank: add videos, "
                    "raise data.clips_per_file or lower the batch size"
                )
            epoch += 1

    return forever(), dataset


# ----------------------------------------------------------------------------- the stage
def load_previous(
    cfg: RunConfig, stage: str, model: LatentActionModel, init_from: Path | None, finetune: bool = False
) -> list[str]:
    """Load the weights a stage starts from; returns the components already trained.

    `finetune` also loads the components this stage trains (e.g. a LAM adapted to new video),
    instead of starting them afresh."""
    candidates = [init_from] if init_from else [stage_dir(cfg, s) / "checkpoint" for s in PREVIOUS[stage]]
    for path in candidates:
        if path is not None and Path(path).exists():
            # only what this stage keeps frozen must match; what it trains starts afresh
            ckpt = load_checkpoint(path)
            keep = [c for c in ckpt.manifest.get("trained", []) if finetune or c not in TRAINABLE[stage]]
            keep = [c for c in keep if c in model.saved_components()]
            check_config(ckpt.manifest, cfg.model, Path(path), keep)
            ckpt.load_into(model, keep)
            return keep
    if stage == "encoder":
        return []
    if cfg.model.encoder.source == "tiny":
        tried = ", ".join(str(p) for p in candidates if p)
        raise TrainingError(
            f"stage '{stage}' needs a trained tiny encoder; none found at {tried}. "
            f"Run `lawm train encoder --config {cfg.name}` first, or pass --init CHECKPOINT"
        )
    return ["encoder"]  # vjepa2: frozen and pretrained


def run_stage(
    cfg: RunConfig,
    stage: Stage,
    *,
    resume: bool = True,
    init_from: Path | None = None,
    finetune: bool = False,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    max_steps: int | None = None,
) -> Path:
    """Train one stage; returns the checkpoint directory."""
    if stage not in STAGES:
        raise TrainingError(f"unknown stage '{stage}': choose one of {', '.join(STAGES)}")
    if stage == "encoder" and cfg.model.encoder.source != "tiny":
        raise TrainingError("stage 'encoder' trains the tiny encoder; a vjepa2 encoder is frozen — train 'decoder' instead")
    info = distributed.setup()
    stage_cfg: StageConfig = getattr(cfg.train, stage)
    if stage_cfg.batch % info.world_size:
        raise TrainingError(f"train.{stage}.batch={stage_cfg.batch} must divide by the {info.world_size} ranks")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)

    out = stage_dir(cfg, stage)
    ckpt_dir = out / "checkpoint"
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    model = LatentActionModel(cfg.model)
    if finetune and init_from is None:
        raise TrainingError("finetune needs the checkpoint to start from: pass --init CHECKPOINT")
    trained = load_previous(cfg, stage, model, init_from, finetune)
    model.to(info.device)
    modules = set_trainable(model, stage)
    optimizers = build_optimizers(stage_cfg.optim, modules)
    start = 0
    if resume and ckpt_dir.exists():
        ckpt = load_checkpoint(ckpt_dir, expected=cfg.model)
        if ckpt.manifest.get("stage") != stage:
            raise CheckpointError(f"{ckpt_dir} holds stage {ckpt.manifest.get('stage')!r}, not {stage!r}")
        ckpt.load_into(model)
        ckpt.load_optimizers(optimizers)
        start = ckpt.step
        log.info("resuming %s from step %d", stage, start)

    loss_module = _LossModule(model, stage)
    loss_module.encoder_options = {"ranking_weight": stage_cfg.ranking_weight,
                                   "change_weight": stage_cfg.change_weight, "window": stage_cfg.window}
    loss_module.warp_weight = stage_cfg.warp_weight
    loss_module.context = stage_cfg.context
    loss_module.motion_prior_weight = stage_cfg.motion_prior_weight
    loss_module.motion_prior = stage_cfg.motion_prior
    wrapped: nn.Module = loss_module
    if info.enabled:
        wrapped = DistributedDataParallel(loss_module, find_unused_parameters=False)
    use_bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and info.device.type == "cuda")
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16) if use_bf16 else None

    per_rank = stage_cfg.batch // info.world_size
    batches, dataset = clip_batches(cfg, info, per_rank, first_epoch=start)
    total = stage_cfg.steps
    end = min(total, start + max_steps) if max_steps else total
    inputs: Iterator[torch.Tensor | StateBatch] = batches
    cached = 0
    if stage == "lam" and stage_cfg.cache_clips and end > start:
        # The encoder is frozen: encode the clips once (each rank its own share), then train on them.
        # A resumed run caches the clips of the pass it resumes at, in an order seeded by its first step.
        # No more clips than the run will draw: a short stage (a fine-tune) need not encode the rest.
        wanted = min(stage_cfg.cache_clips // info.world_size or 1, (end - start) * per_rank)
        cache = build_state_cache(model, batches, wanted,
                                  with_shifts=bool(stage_cfg.motion_prior_weight),
                                  similarity=stage_cfg.motion_prior == "similarity",
                                  seed=cfg.train.seed * 1_000_003 + start * 101 + info.rank, device=info.device)
        inputs, cached = cache.batches(per_rank), len(cache)
    metrics_path = out / "metrics.jsonl"
    if start == 0 and info.is_main:
        metrics_path.unlink(missing_ok=True)  # a fresh run starts a fresh log
    writer = _tensorboard(out) if info.is_main else None
    last: dict[str, float] = {}
    window_start, window_clips = time.perf_counter(), 0
    data_time = 0.0
    for step in range(start, end):
        frozen = ("idm",) if step < stage_cfg.idm_warmup * total else ()
        set_lr(optimizers, lr_factor(step, total, stage_cfg.optim.warmup, stage_cfg.optim.min_lr_ratio), frozen)
        loss_module.regularizer_weight = regularizer_ramp(step, total, stage_cfg.regularizer_warmup)
        t0 = time.perf_counter()
        batch = next(inputs).to(info.device, non_blocking=True)
        data_time += time.perf_counter() - t0
        result = train_step(wrapped, optimizers, batch, stage_cfg.optim.grad_clip, autocast)
        window_clips += len(batch) * info.world_size
        if isinstance(model.regularizer, VectorQuantizer) and stage == "lam" and (step + 1) % cfg.model.regularizer.reset_every == 0:
            with torch.no_grad():
                states = batch.states if isinstance(batch, StateBatch) else model.encode(batch)
                samples = model.idm(states).reshape(-1, model.regularizer.raw_dim)
            result.stats["codes_reset"] = model.regularizer.reset_dead_codes(samples)
        if (step + 1) % stage_cfg.log_every == 0 or step + 1 == end:
            elapsed = time.perf_counter() - window_start
            loss = float(distributed.mean_across_ranks(torch.tensor(result.loss)))
            last = {
                "step": step + 1,
                "loss": loss,
                **result.stats,
                "lr_factor": lr_factor(step, total, stage_cfg.optim.warmup, stage_cfg.optim.min_lr_ratio),
                "clips_per_s": window_clips / max(elapsed, 1e-9),
                "data_share": data_time / max(elapsed, 1e-9),
            }
            window_start, window_clips, data_time = time.perf_counter(), 0, 0.0
            if info.is_main:
                with metrics_path.open("a") as f:
                    f.write(json.dumps({"stage": stage, "time": time.time(), **last}) + "\n")
                if writer is not None:
                    for key, value in last.items():
                        writer.add_scalar(f"{stage}/{key}", value, step + 1)
            if progress is not None and info.is_main:
                progress(step + 1, total, last)
        if info.is_main and ((step + 1) % stage_cfg.checkpoint_every == 0 or step + 1 == end):
            _save(ckpt_dir, model, cfg, stage, step + 1, trained, last, dataset, optimizers, cached)
    if end == start and info.is_main and not ckpt_dir.exists():
        _save(ckpt_dir, model, cfg, stage, end, trained, last, dataset, optimizers, cached)
    distributed.barrier()
    if writer is not None:
        writer.close()
    return ckpt_dir


def _save(
    ckpt_dir: Path,
    model: LatentActionModel,
    cfg: RunConfig,
    stage: str,
    step: int,
    trained: list[str],
    metrics: dict[str, float],
    dataset: VideoClipDataset,
    optimizers: list[torch.optim.Optimizer],
    cached_clips: int = 0,
) -> None:
    done = sorted(set(trained) | set(TRAINABLE[stage]))
    stats = dataset.stats  # this process' view; DataLoader workers keep their own counts
    save_checkpoint(
        ckpt_dir,
        model,
        components=model.saved_components(),
        stage=stage,
        step=step,
        model_config=cfg.model,
        run_config=cfg.model_dump(mode="json"),
        trained=done,
        metrics=metrics,
        data={
            "sources": list(cfg.data.sources),
            "files": len(dataset.refs),
            "clips_seen_by_rank0": stats.clips,
            "skipped": dict(stats.skipped),
            "skipped_files": list(stats.skipped_files)[:50],
            **({"cached_clips_rank0": cached_clips} if cached_clips else {}),
        },
        optimizers=optimizers,
    )


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
