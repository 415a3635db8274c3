"""Loading a model for evaluation, and the held-out clips every protocol uses."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from training.checkpoint import CheckpointError, load_checkpoint
from training.config import DataConfig
from training.data.corpus import EVAL_FRAMES, sample_refs
from training.data.dataset import fixed_clips
from training.data.generator import ClipMotion, GeneratorConfig, clip_seed, generate_clip
from training.data.video import decode_all, write_mp4
from training.models.lam import LatentActionModel


def load_lam(checkpoint: Path | str) -> LatentActionModel:
    """A verified checkpoint or bundled model, in eval mode on the CPU, weights as float32."""
    ckpt = load_checkpoint(checkpoint)
    model = LatentActionModel(ckpt.model_config)
    if "controller_config" in ckpt.manifest:
        from training.models.controller import ControllerConfig, build_controller

        cfg = ControllerConfig.model_validate(ckpt.manifest["controller_config"])
        model.attach_controller(build_controller(cfg, model.latent_dim, model.encoder.dim, model.encoder.grid))
    ckpt.load_into(model)
    model.eval()
    model.source = str(checkpoint)  # type: ignore[attr-defined]  # for reports
    return model


def require_controller(model: LatentActionModel) -> torch.nn.Module:
    if model.controller is None:
        raise CheckpointError(
            f"{getattr(model, 'source', 'this checkpoint')} has no controller: train one with "
            "`lawm train controller --checkpoint CKPT --env manipulation|navigation`"
        )
    return model.controller


def heldout_videos(model: LatentActionModel, clips_per_file: int = 6, data: DataConfig | None = None) -> dict[str, torch.Tensor]:
    """Held-out clips of the real sample videos (8 frames = 2 s at 4 fps), per video.

    Returns {video name: uint8 `[C, T, 3, H, W]`}.
    """
    cfg = data or DataConfig(size=model.cfg.encoder.image_size)
    out: dict[str, torch.Tensor] = {}
    for ref in sample_refs(cfg, "heldout"):
        clips = fixed_clips([ref], frames=EVAL_FRAMES, fps=cfg.fps, size=cfg.size, clips_per_file=clips_per_file)
        out[Path(ref.path).stem] = torch.stack([c["video"] for c in clips])
    return out


# ----------------------------------------------------------------------------- generated clips with known motion
HELDOUT_GENERATED_SEED = 1_000_003  # the training corpus is `generated_corpus(cfg, seed=0)`: disjoint clip seeds
MOTION_NAMES = ("dx", "dy", "log_zoom")


@dataclass
class GeneratedSet:
    """Held-out procedural clips at the model's fps and size, with the true camera motion per latent step.

    Latent step j runs from the first frame of state j to the first frame of state j + 1 (one
    tubelet later): `motion[c, j]` is the content's shift over that span (x, y in the model's
    pixels, as the image moves; against the camera's pan) and the change of log-zoom. A step is not
    `valid` when a scene cut falls anywhere inside the two states (a cut is not a motion).
    """

    video: torch.Tensor  # uint8 [C, T, 3, H, W]
    motion: np.ndarray  # float64 [C, S-1, 3]: dx, dy, log_zoom
    valid: np.ndarray  # bool [C, S-1]
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.seeds)

    def first_states(self, states: int, tubelet: int = 2) -> GeneratedSet:
        """The clips cut to their first `states` states (a model's world model and decoder take at most
        `max_steps`)."""
        steps = min(states, self.video.shape[1] // tubelet) - 1
        return GeneratedSet(self.video[:, : (steps + 1) * tubelet], self.motion[:, :steps], self.valid[:, :steps], self.seeds)


def step_motion(motion: ClipMotion, states: int, frame_stride: int, tubelet: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(motion [states-1, 3], valid [states-1]) of a generated clip sampled every `frame_stride`
    source frames; `scale` converts the generator's pixels into the model's."""
    shift = motion.image_shift() * scale  # [T0, 2]: t-1 -> t
    log_zoom = np.log(np.asarray(motion.zoom))
    span = frame_stride * tubelet  # source frames between the first frames of consecutive states
    out = np.zeros((states - 1, 3))
    valid = np.ones(states - 1, dtype=bool)
    for j in range(states - 1):
        a, b = j * span, (j + 1) * span
        out[j, :2] = shift[a + 1 : b + 1].sum(axis=0)
        out[j, 2] = log_zoom[b] - log_zoom[a]
        last = b + frame_stride * (tubelet - 1)  # the last source frame of state j + 1
        valid[j] = not any(a < c <= last for c in motion.cuts)
    return out, valid


def heldout_generated(
    size: int, fps: float = 4.0, clips: int = 48, seed: int = HELDOUT_GENERATED_SEED, tubelet: int = 2
) -> GeneratedSet:
    """`clips` generated clips the model never trained on, through the training data path (MP4, then
    decoded at `fps`, resized and centre-cropped to `size`), with their per-step motion. Kept per
    process: the probe, the IDM headline and the transfer test share them."""
    return _heldout_generated(int(size), float(fps), int(clips), int(seed), int(tubelet))


@cache
def _heldout_generated(size: int, fps: float, clips: int, seed: int, tubelet: int) -> GeneratedSet:
    cfg = GeneratorConfig()
    stride = cfg.fps / fps
    if abs(stride - round(stride)) > 1e-9:
        raise ValueError(f"the generator's {cfg.fps:g} fps must be a whole multiple of the model's {fps:g} fps")
    stride = round(stride)
    videos, motions, valids, seeds = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(clips):
            clip_seed_i = clip_seed(seed, i)
            frames, motion = generate_clip(cfg, clip_seed_i)
            path = write_mp4(frames, Path(tmp) / f"clip_{i:05d}.mp4", cfg.fps)
            decoded = decode_all(path, fps, size)  # [T, size, size, 3]
            decoded = decoded[: len(decoded) // tubelet * tubelet]
            m, v = step_motion(motion, len(decoded) // tubelet, stride, tubelet, size / min(cfg.width, cfg.height))
            videos.append(torch.from_numpy(decoded).permute(0, 3, 1, 2))
            motions.append(m)
            valids.append(v)
            seeds.append(clip_seed_i)
    return GeneratedSet(torch.stack(videos), np.stack(motions), np.stack(valids), seeds)
