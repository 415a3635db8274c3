"""`lawm bench train`: training throughput of a config on this machine.

Per stage it times, side by side in one run, (a) fetching a batch of clips with real PyAV
decoding (no in-memory cache) and (b) one optimisation step on it, and reports medians over
`repeats` runs of `steps` steps: step time, clips/s end to end and compute-only, and the share of
time spent decoding video. For the LAM stage it also times (c) the same step on the batch's states
encoded beforehand, as `train.lam.cache_clips` trains (training/state_cache.py).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

from training.cli_kit import load_average, machine
from training.config import RunConfig
from training.data.corpus import build_refs
from training.data.dataset import VideoClipDataset
from training.loop import _LossModule, set_trainable, train_step
from training.models.lam import LatentActionModel
from training.optim import build_optimizers
from training.state_cache import encode_batch


def logged_rows(cfg: RunConfig, stages: tuple[str, ...]) -> list[dict[str, Any]]:
    """Throughput the real training run logged (runs/<name>/<stage>/metrics.jsonl), if present."""
    import json
    from pathlib import Path

    rows = []
    for stage in stages:
        path = Path(cfg.run_dir) / cfg.name / stage / "metrics.jsonl"
        if not path.exists():
            continue
        records = [json.loads(line) for line in path.read_text().splitlines()][1:]  # drop the warm-up window
        if not records:
            continue
        batch = getattr(cfg.train, stage).batch
        clips = statistics.median(r["clips_per_s"] for r in records)
        share = statistics.median(r["data_share"] for r in records)
        rows.append(
            {"stage": f"{stage} (logged, cached)", "batch": batch, "step_s": batch / clips * (1 - share),
             "decode_s": batch / clips * share, "clips_per_s": clips, "compute_clips_per_s": clips / (1 - share),
             "decode_share": share}
        )
    return rows


def bench_training(cfg: RunConfig, steps: int = 5, repeats: int = 5, stages: tuple[str, ...] = ("encoder", "lam")) -> dict[str, Any]:
    torch.manual_seed(cfg.train.seed)
    load_before = os.getloadavg()
    refs = build_refs(cfg.data, "train", seed=cfg.train.seed)
    rows = []
    for stage in stages:
        batch = getattr(cfg.train, stage).batch
        dataset = VideoClipDataset(refs, frames=cfg.data.frames, fps=cfg.data.fps, size=cfg.data.size, seed=cfg.train.seed, clips_per_file=1)
        clips = iter(dataset)
        model = LatentActionModel(cfg.model)
        modules = set_trainable(model, stage)
        optimizers = build_optimizers(getattr(cfg.train, stage).optim, modules)
        wrapped = _LossModule(model, stage)
        decode_times, step_times, cached_times = [], [], []
        shifts = bool(getattr(cfg.train, stage).motion_prior_weight)
        similarity = getattr(cfg.train, stage).motion_prior == "similarity"
        for repeat in range(repeats + 1):  # the first repeat warms up and is dropped
            dataset.set_epoch(repeat)
            clips = iter(dataset)
            decode, compute, cached = [], [], []
            for _ in range(steps):
                t0 = time.perf_counter()
                video = torch.stack([next(clips)["video"] for _ in range(batch)])
                t1 = time.perf_counter()
                train_step(wrapped, optimizers, video, 1.0)
                t2 = time.perf_counter()
                decode.append(t1 - t0)
                compute.append(t2 - t1)
                if stage == "lam":  # the same step on states encoded beforehand (the cache's)
                    states = encode_batch(model, video, shifts, similarity)
                    t3 = time.perf_counter()
                    train_step(wrapped, optimizers, states, 1.0)
                    cached.append(time.perf_counter() - t3)
            if repeat:
                decode_times.append(statistics.median(decode))
                step_times.append(statistics.median(compute))
                if cached:
                    cached_times.append(statistics.median(cached))
        d, c = statistics.median(decode_times), statistics.median(step_times)
        rows.append(
            {
                "stage": stage,
                "batch": batch,
                "step_s": c,
                "decode_s": d,
                "clips_per_s": batch / (d + c),
                "compute_clips_per_s": batch / c,
                "decode_share": d / (d + c),
            }
        )
        if cached_times:
            k = statistics.median(cached_times)
            rows.append({"stage": "lam, cached states (train.lam.cache_clips)", "batch": batch, "step_s": k,
                         "decode_s": 0.0, "clips_per_s": batch / k, "compute_clips_per_s": batch / k,
                         "decode_share": 0.0, "speedup_vs_video_loop": (d + c) / k})
    rows += logged_rows(cfg, stages)
    return {
        "benchmark": "train",
        "title": "Training throughput of the demo config",
        "config": cfg.name,
        "machine": machine(),
        "load_average": load_average(load_before, os.getloadavg()),
        "command": f"lawm bench train --config {cfg.name} --steps {steps} --repeats {repeats}",
        "steps": steps,
        "repeats": repeats,
        "statistic": "median over repeats of the per-repeat median; 'logged' rows: median over the log windows "
        "of the real training run (in-memory decoded-frame cache on, as the demo config sets; the LAM stage's log is of "
        "its cached states when train.lam.cache_clips is set); the cached-states row times the same step, on the same "
        "batch's states encoded beforehand, right after the video loop's step",
        "rows": rows,
    }
