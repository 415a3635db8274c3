"""The bundled demo model's KV cache on real clips: 8 observed states + 8 predicted ones.

Two kinds of parity. Per step (the same inputs into the cached and the uncached model), float32
agrees to 1e-5 of the output's scale. Over a closed-loop rollout each prediction is fed back, and
float32 rounding compounds in any evaluation order: on these clips a 1e-6 change of the observed
states moves the 8th prediction by ~1e-3 even in float64, so the uncached float32 rollout is itself
~2e-3 from the exact one, and two float32 evaluation orders land anywhere in that band. So the
rollout is checked exactly in float64, and in float32 to be inside the band the uncached float32
rollout sets (a wrong position or a leaked latent lands far outside it).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from exporters.components import build_graph
from exporters.real_inputs import real_clips
from training.evaluation.common import load_lam
from training.models.world_model import autoregressive_rollout

DEMO = Path(__file__).resolve().parents[3] / "models" / "demo"
CONTEXT, STEPS = 8, 8


@pytest.fixture(scope="module")
def clips() -> dict[str, torch.Tensor]:
    model = load_lam(DEMO).eval()
    video, _ = real_clips(2, 2 * (CONTEXT + STEPS), model.cfg.encoder.image_size)  # carphone, bikes
    with torch.inference_mode():
        states = model.encode(torch.from_numpy(video))  # [2, 16, N, D]
        latents = build_graph(model, "idm")(states)  # [2, 15, Z]
    return {"model": model, "states": states, "latents": latents}


def scale(x: torch.Tensor) -> float:
    return max(1.0, float(x.abs().max()))


@torch.inference_mode()
def test_each_cached_step_equals_the_uncached_step_on_real_states(clips: dict) -> None:
    wm, states, latents = clips["model"].world_model, clips["states"], clips["latents"]
    trajectory = autoregressive_rollout(wm, states[:, :CONTEXT], latents[:, : CONTEXT - 1], latents[:, CONTEXT - 1 :], cached=False)
    history = torch.cat([states[:, :CONTEXT], trajectory], dim=1)  # [2, 8 + 8, N, D]
    applied = latents[:, : CONTEXT - 1 + STEPS]  # [2, 15, Z]
    nxt, cache = wm.prefill(history[:, :CONTEXT], applied[:, :CONTEXT])
    worst = float((nxt - trajectory[:, 0]).abs().max()) / scale(trajectory[:, 0])
    for h in range(1, STEPS):
        t = CONTEXT - 1 + h  # the newest state's index
        expected = wm.next_state(history[:, : t + 1], applied[:, : t + 1])
        nxt, cache = wm.step(cache, history[:, t], applied[:, t])
        worst = max(worst, float((nxt - expected).abs().max()) / scale(expected))
    assert worst <= 1e-5


@torch.inference_mode()
def test_cached_rollout_is_exact_in_float64_and_within_float32_rounding_of_it(clips: dict) -> None:
    wm, states, latents = clips["model"].world_model, clips["states"], clips["latents"]
    args = (states[:, :CONTEXT], latents[:, : CONTEXT - 1], latents[:, CONTEXT - 1 :])
    exact_wm = copy.deepcopy(wm).double()
    exact = autoregressive_rollout(exact_wm, *(x.double() for x in args), cached=False)
    exact_cached = autoregressive_rollout(exact_wm, *(x.double() for x in args))
    assert float((exact_cached - exact).abs().max()) <= 1e-10 * scale(exact)
    cached_err = float((autoregressive_rollout(wm, *args).double() - exact).abs().max())
    uncached_err = float((autoregressive_rollout(wm, *args, cached=False).double() - exact).abs().max())
    assert cached_err <= max(10 * uncached_err, 1e-5 * scale(exact)), (cached_err, uncached_err)
