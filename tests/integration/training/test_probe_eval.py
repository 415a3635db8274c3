"""The probe, the motion-transfer test and the IDM headline on a tiny seeded model and real data."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.unit.exporters.tiny import tiny_model
from training.evaluation.common import heldout_generated
from training.evaluation.leak import idm_prediction_error, step_errors
from training.evaluation.probe import probe_table, service_latents
from training.evaluation.transfer import frame_motion, motion_transfer

CLIPS = 8  # one cached generated set (per size) shared by every test here


def test_generated_step_motion_is_what_the_frames_show() -> None:
    """The recorded per-step motion lines up with the decoded frames (sign, scale and steps)."""
    data = heldout_generated(64, clips=3)
    assert data.video.shape[:2] == (3, 24) and data.motion.shape == (3, 11, 3)
    measured = frame_motion(data.video.float().numpy(), tubelet=2)
    truth = data.motion[..., :2]
    error = np.linalg.norm(measured - truth, axis=-1)[data.valid]
    assert error.mean() < 0.3 * np.linalg.norm(truth, axis=-1)[data.valid].mean()
    shuffled = np.linalg.norm(measured - truth[::-1], axis=-1)[data.valid & data.valid[::-1]]
    assert error.mean() < 0.5 * shuffled.mean()


def test_probe_table_rows_constants_and_the_served_latents() -> None:
    model = tiny_model()
    data = heldout_generated(32, clips=CLIPS)
    requests: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        """A stand-in service: decodes the PNG frames and answers the same model's latents."""
        body = json.loads(request.content)
        requests.append(body)
        frames = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(f)))) for f in body["frames"]])
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]
        latents = model.latent_actions(model.encode(video))[0]
        return httpx.Response(200, json={"latents": latents.tolist()})

    served = service_latents("http://lawm.test", transport=httpx.MockTransport(handler))
    result = probe_table(model, clips=CLIPS, episodes=3, served=served)
    assert len(requests) == CLIPS and len(requests[0]["frames"]) == data.video.shape[1] and requests[0]["fps"] == 4.0
    assert result["served_max_abs_diff"] < 1e-5  # PNG is lossless: the served latents are the offline ones
    rows = {(r["data"], r["features"]): r for r in result["rows"]}
    assert rows[("generated camera motion", "IDM latent, served")]["r2_mean"] == pytest.approx(
        rows[("generated camera motion", "IDM latent")]["r2_mean"], abs=1e-6)
    for data_name in ("generated camera motion", "navigation", "manipulation"):
        assert rows[(data_name, "constant")]["r2_mean"] <= 0
        assert (data_name, "pooled state change (encoder)") in rows and (data_name, "shortcut: latent -> pooled state change") in rows
    per_target = {t["title"]: t["rows"] for t in result["tables"]}
    nav = per_target["R² per target: navigation"][0]
    assert {"r2_forward", "r2_lateral", "r2_yaw"} <= set(nav) and nav["groups"] == 3
    assert "FAIL" in result["verdict"]  # an untrained model carries no motion


def test_motion_transfer_rows_and_that_a_constant_cannot_pass() -> None:
    result = motion_transfer(tiny_model(), clips=CLIPS)
    rows = {r["measurement"]: r for r in result["rows"]}
    assert rows["constant: no motion"]["ratio_a_over_b"] == pytest.approx(1.0, abs=0.35)
    assert rows["estimator on A's real frames (check)"]["ratio_a_over_b"] < 0.6  # the estimator follows A
    assert "FAIL" in result["verdict"]


def test_idm_headline_is_against_another_videos_latents() -> None:
    model = tiny_model()
    video = heldout_generated(32, clips=CLIPS).video[:3, :8]
    own = step_errors(model, video, "idm")
    assert torch.allclose(step_errors(model, video, "shuffled", other=video), own)  # clip i <- clip i of `other`
    assert not torch.allclose(step_errors(model, video, "shuffled", other=video.flip(0)), own)
    result = idm_prediction_error(model, clips_per_file=2, generated_clips=CLIPS)
    names = [r["video"] for r in result["rows"]]
    assert names[0] == "generated (held-out)" and names[-1] == "mean (real)"
    assert result["verdict"].startswith("IDM latents lower the one-step error by")
    assert result["reduction_vs_shuffled"] == result["rows"][-1]["reduction_vs_shuffled"]


def test_the_commands_write_json_that_lawm_docs_renders(tmp_path) -> None:
    from typer.testing import CliRunner

    from tests.unit.exporters.tiny import tiny_checkpoint
    from training.cli import app
    from training.reports import write_docs

    checkpoint = tiny_checkpoint(tmp_path / "tiny", controller=None)
    results = tmp_path / "docs" / "results"
    runner = CliRunner()
    for args in (
        ["probe", "--clips", str(CLIPS), "--episodes", "3", "--json", str(results / "probe.json")],
        ["motion-transfer", "--clips", str(CLIPS), "--json", str(results / "motion-transfer.json")],
        ["oracle", "--env", "navigation", "--episodes", "2", "--planner", "samples=8", "--planner", "elites=2",
         "--json", str(results / "oracle-navigation.json")],
    ):
        outcome = runner.invoke(app, ["eval", args[0], "--checkpoint", str(checkpoint), *args[1:]])
        assert outcome.exit_code == 0, outcome.output
    oracle = json.loads((results / "oracle-navigation.json").read_text())
    assert [r["planner"] for r in oracle["rows"]] == [
        "oracle: pose cost", "oracle: pixel L2", "oracle: encoder-state L2", "random actions (uniform per step)"]
    assert oracle["rows"][0]["ate_norm"] == 1.0 and oracle["rows"][-1]["rpe_norm"] == 0.0
    assert oracle["command"].endswith("--planner samples=8 --planner elites=2")
    (page,) = write_docs(tmp_path / "docs")
    text = page.read_text()
    assert "## Do the latents carry the motion?" in text and "### R² per target: manipulation" in text
    assert "| constant: no motion |" in text and "![motion-transfer](img/motion-transfer.png)" in text
