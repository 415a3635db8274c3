"""A LitServe peer of `/v1/latent-actions` for `lawm bench serve --peer litserve`.

The same work as the service, done the way a LitServe user would: the upload is decoded by
`training.data.video.decode_video_bytes` with the service's limits, fps and size (so the frames are
identical), then the repository's `encoder` and `idm` run on onnxruntime through the service's own
loader (`load_served_model`: same files, same session and thread settings), batched by LitServe
(`max_batch_size` requests per batch, `batch_timeout`). LitServe has no admission control: past its
capacity requests queue (until its request `timeout`, 30 s by default, answers 504).

Here: that work, free of litserve (tested on its own), and the server's command line. The server
is `service.bench.peer_server`, spawned by the bench on a free port (readiness on `/health`); only it
imports litserve (the `bench` extra), the service never does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.runtime import LoadedModel
from service.media import MediaLimits
from service.settings import Settings
from training.data.video import decode_video_bytes

PATH = "/v1/latent-actions"


@dataclass
class LatentActionsWork:
    """Decode and infer as the service does, without its batchers or HTTP (litserve-free: testable)."""

    model: LoadedModel
    limits: MediaLimits
    tubelet: int

    @classmethod
    def load(cls, settings: Settings) -> LatentActionsWork:
        from service.inference.engine import geometry_of, load_served_model

        model, fps = load_served_model(settings)
        geo = geometry_of(model, fps)
        return cls(model, MediaLimits.from_settings(settings, size=geo.image_size, fps=geo.fps), geo.tubelet)

    def decode(self, data: bytes, filename: str | None = None) -> np.ndarray:
        """An upload -> uint8 frames `[T, size, size, 3]`, whole tubelets only (as the route keeps)."""
        what = f"the upload {filename!r}" if filename else "the upload"
        frames = decode_video_bytes(data, what=what, fps=self.limits.fps, size=self.limits.size,
                                    limits=self.limits.decoding, upscale=self.limits.upscale).frames
        usable = len(frames) // self.tubelet * self.tubelet
        if usable < 2 * self.tubelet:
            raise ValueError(f"the clip gives {len(frames)} frames; latent actions need at least {2 * self.tubelet}")
        return frames[:usable]

    def predict(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Clips -> latents `[S-1, Z]` each: one encoder call on every clip's tubelets, one IDM call on
        every consecutive state pair (the tensors `Engine.encode` / `Engine.latent_actions` build)."""
        tb = self.tubelet
        videos = [c.reshape(len(c) // tb, tb, *c.shape[1:]).transpose(0, 1, 4, 2, 3) for c in clips]  # [S, 2, 3, H, W]
        video = np.concatenate(videos).astype(np.float32) / np.float32(255.0)
        states = self.model.components["encoder"].run({"video": video})["states"][:, 0]  # [sum S, N, D]
        bounds = np.cumsum([len(v) for v in videos])[:-1]
        per_clip = np.split(states, bounds)
        pairs = np.concatenate([np.stack([s[:-1], s[1:]], axis=1) for s in per_clip])  # [sum (S-1), 2, N, D]
        latents = self.model.components["idm"].run({"states": pairs})["latents"][:, 0]
        return np.split(latents, np.cumsum([len(s) - 1 for s in per_clip])[:-1])


def peer_command(port: int, repo: Path, model: str, version: int | None, *, max_batch_size: int,
                 batch_timeout_ms: float, workers: int = 1) -> list[str]:
    """argv of the peer's server (`service.bench.peer_server`), run through this interpreter."""
    command = [sys.executable, "-m", "service.bench.peer_server", "--port", str(port), "--repo", str(repo), "--model", model,
               "--max-batch-size", str(max_batch_size), "--batch-timeout-ms", str(batch_timeout_ms),
               "--workers", str(workers)]
    return command + (["--version", str(version)] if version is not None else [])
