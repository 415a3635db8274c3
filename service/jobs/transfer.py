"""The transfer job: the latent actions of clip A applied to clip B, rendered as an MP4.

The same math as the offline evaluation (training/evaluation/transfer.py, PAPER-NOTES §3.3), run
through the served components instead of the torch model:

1. encode both clips; infer z on A with the IDM;
2. roll the world model out from B's first state with A's latents -> B' (the render);
3. decode [s_B0, B'] to frames -> MP4;
4. cycle consistency: re-infer latents from B' (z_back) and compare them with A's (latent L1,
   cosine); roll A out with z_back and with its own z from A's first state and score both
   against A's true states (representation L1, and the transfer/orig ratio), and their decoded
   frames against A's real frames (PSNR, SSIM): A is the only clip with a ground truth.

Every component call goes through the engine's batchers at `Priority.RENDER`, so renders never
delay robots or interactive calls; each world-model step is a place where a cancel takes effect.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.inference.engine import Engine, Geometry
from service.inference.queue import Priority
from service.inference.rollout import decode_states, rollout_latents
from service.jobs.runner import Handler, JobContext, JobError
from service.jobs.store import JobResult
from training.data.video import DecodeLimits, MediaRejected, decode_video_bytes, encode_mp4
from training.evaluation.pixels import psnr, ssim

Step = Callable[[str, float], Awaitable[None]]  # (stage, progress) -> raises JobCancelled when cancelled

KIND = "transfer"
VIDEO = "video/mp4"
PRIORITY = Priority.RENDER


@dataclass
class TransferOutput:
    frames: np.ndarray  # uint8 [T', H, W, 3]: the render of B driven by A's actions
    metrics: dict[str, Any]


def usable_steps(geo: Geometry, frames_a: int, requested: int | None) -> int:
    """Latent steps of A to transfer: all of A's, or the first `requested`."""
    available, tubelet = geo.latent_steps(frames_a), geo.tubelet  # S_A - 1 latents
    if available < 1:
        raise JobError(
            "clip_too_short",
            f"clip A gives {frames_a} frames; a transfer needs at least {2 * tubelet} "
            f"(two states of {tubelet} frames)",
        )
    if requested is None:
        return available
    if not 1 <= requested <= available:
        raise JobError(
            "bad_steps",
            f"steps={requested} but clip A gives {available} latent steps; ask for "
            f"1..{available} or leave steps out",
        )
    return requested


def _latent_agreement(z_back: np.ndarray, z_a: np.ndarray) -> dict[str, float]:
    """How well the render's re-inferred latents `[H, Z]` match A's: L1 (also relative to |z_A|), cosine."""
    cos = np.sum(z_back * z_a, -1) / (np.linalg.norm(z_back, axis=-1) * np.linalg.norm(z_a, axis=-1) + 1e-12)
    l1 = float(np.mean(np.abs(z_back - z_a)))
    return {
        "latent_l1": l1,
        "latent_l1_relative": l1 / (float(np.mean(np.abs(z_a))) + 1e-12),
        "latent_cosine": float(np.mean(cos)),
    }


def _pixel_scores(decoded: np.ndarray, real: np.ndarray, tubelet: int) -> dict[str, float]:
    """Decoded vs real uint8 frames `[T, H, W, 3]`, skipping the given first state's frames (as offline)."""
    d = decoded[tubelet:].astype(np.float32).transpose(0, 3, 1, 2) / 255.0  # [T-2, 3, H, W] in [0, 1]
    r = real[tubelet : len(decoded)].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return {"psnr": _finite(psnr(d, r)), "ssim": _finite(ssim(d, r))}


def _finite(x: float) -> float | None:
    """JSON has no infinity: a perfect match (PSNR = inf) is reported as null."""
    return float(x) if np.isfinite(x) else None


async def transfer(
    engine: Engine,
    frames_a: np.ndarray,
    frames_b: np.ndarray,
    steps: int | None = None,
    step: Step | None = None,
) -> TransferOutput:
    """Clip A's actions applied to clip B (uint8 `[T, H, W, 3]` each) -> the render and its metrics.

    `step` is called between stages with the progress so far and may raise to stop the job."""

    async def report(stage: str, progress: float) -> None:
        if step is not None:
            await step(stage, progress)

    tb = engine.geo.tubelet
    h = usable_steps(engine.geo, len(frames_a), steps)
    frames_a = frames_a[: (h + 1) * tb]  # only the frames whose states are used
    if len(frames_b) < tb:
        raise JobError(
            "clip_too_short", f"clip B gives {len(frames_b)} frames; it needs at least {tb} (one state)"
        )

    await report("encode", 0.02)
    states_a = await engine.encode(frames_a, PRIORITY)  # [S_A, N, D]
    first_b = await engine.encode(frames_b[:tb], PRIORITY)  # [1, N, D]: B's first state is the context
    await report("latent_actions", 0.1)
    z_a = await engine.latent_actions(states_a, PRIORITY)  # [H, Z]

    await report("rollout", 0.15)
    on_b = await rollout_latents(engine, first_b, z_a, PRIORITY, None)  # [H, N, D]: B'
    await report("render", 0.35)
    render_states = np.concatenate([first_b, on_b])  # [H+1, N, D]
    frames = await decode_states(engine, render_states, PRIORITY, None)  # uint8 [2(H+1), H, W, 3]

    await report("cycle", 0.5)
    z_back = await engine.latent_actions(render_states, PRIORITY)  # [H, Z]: A's actions as seen in the render
    own = await rollout_latents(engine, states_a[:1], z_a, PRIORITY, None)  # [H, N, D]
    await report("cycle", 0.65)
    cycled = await rollout_latents(engine, states_a[:1], z_back, PRIORITY, None)
    truth = states_a[1:]
    own_l1, cycled_l1 = float(np.mean(np.abs(own - truth))), float(np.mean(np.abs(cycled - truth)))

    await report("pixel_metrics", 0.8)
    own_px = await decode_states(engine, np.concatenate([states_a[:1], own]), PRIORITY, None)
    cycled_px = await decode_states(engine, np.concatenate([states_a[:1], cycled]), PRIORITY, None)
    orig_scores, cycled_scores = await asyncio.gather(
        asyncio.to_thread(_pixel_scores, own_px, frames_a, tb),
        asyncio.to_thread(_pixel_scores, cycled_px, frames_a, tb),
    )
    metrics = {
        "steps": h,
        "latent_dim": int(z_a.shape[-1]),
        "clip_a": {"frames_used": len(frames_a), "states": int(states_a.shape[0])},
        "clip_b": {"frames_used": tb, "states": 1},
        "render": {
            "frames": int(frames.shape[0]),
            "height": int(frames.shape[1]),
            "width": int(frames.shape[2]),
        },
        "cycle": {
            **_latent_agreement(z_back, z_a),
            "orig_l1": own_l1,
            "transfer_l1": cycled_l1,
            "ratio_l1": cycled_l1 / own_l1 if own_l1 > 0 else None,
        },
        "pixels": {"ground_truth": "clip A", "orig": orig_scores, "transfer": cycled_scores},
        "protocol": "z from clip A -> world-model rollout from B's first state (the render) -> z re-inferred "
        "from the render -> rollout from A's first state, vs A's own rollout; L1 against A's true states, "
        "PSNR/SSIM of decoded vs A's real frames (as `lawm eval transfer`)",
    }
    return TransferOutput(frames, metrics)


# ----------------------------------------------------------------------------- job plumbing
def pack_frames(frames: np.ndarray) -> bytes:
    """uint8 `[T, H, W, 3]` -> .npy bytes (a job input any store can hold)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(frames, dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def unpack_frames(data: bytes) -> np.ndarray:
    frames = np.load(io.BytesIO(data), allow_pickle=False)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise JobError(
            "bad_input", f"stored frames are {frames.dtype} {frames.shape}; expected uint8 [T, H, W, 3]"
        )
    return frames


UPLOAD, FRAMES = "upload", "frames"  # what a job input holds: the uploaded file's bytes, or packed frames


def decode_input(data: bytes, kind: str, decode: dict[str, Any] | None, what: str) -> np.ndarray:
    """A job input -> uint8 frames `[T, H, W, 3]`. Uploads are kept as their bytes while the job is
    queued (a fraction of the decoded frames' size) and decoded here, when it runs, with the
    sampling and limits the API checked their headers against (`decode`, in the job's params)."""
    if kind != UPLOAD:
        return unpack_frames(data)
    if decode is None:
        raise JobError("bad_input", f"{what} is an upload but the job has no decoding settings")
    limits = DecodeLimits(decode["max_frames"], decode["max_pixels"], decode["max_duration_s"])
    try:
        return decode_video_bytes(data, what=what, fps=decode["fps"], size=decode["size"], limits=limits,
                                  upscale=decode.get("upscale", False)).frames
    except MediaRejected as err:
        raise JobError(err.kind, err.message) from err


def transfer_handler(engine: Engine) -> Handler:
    """The runner's handler for "transfer" jobs: inputs "a" and "b" (uploads or packed frames, as
    params["inputs"] says), params steps/fps/decode."""

    async def handle(ctx: JobContext, params: dict[str, Any], inputs: dict[str, bytes]) -> JobResult:
        await ctx.step("load", 0.0)
        kinds = params.get("inputs") or {}
        frames_a, frames_b = await asyncio.gather(*(
            asyncio.to_thread(decode_input, inputs[k], kinds.get(k, FRAMES), params.get("decode"), f"clip_{k}")
            for k in ("a", "b")
        ))
        out = await transfer(engine, frames_a, frames_b, params.get("steps"), ctx.step)
        await ctx.step("mp4", 0.95)
        fps = float(params.get("fps") or engine.geo.fps)
        video = await asyncio.to_thread(encode_mp4, out.frames, fps)
        out.metrics["render"].update({"fps": fps, "bytes": len(video), "content_type": VIDEO})
        return JobResult(metrics=out.metrics, artifacts={VIDEO: video})

    return handle
