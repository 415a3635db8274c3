"""A real `lawm serve` process on a free port, serving the tiny exported model: a transfer job from
submit to an MP4 that PyAV decodes, KServe v2 through tritonclient on the same server, and a clean
exit on SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from service.bench.processes import free_port
from tests.service_fixtures import TINY_NAME, TINY_VERSION
from training.data.samples import sample_clips

pytestmark = pytest.mark.slow  # a server process: imports, load and warm-up take ~10 s on 2 cores


@pytest.fixture(scope="module")
def server(tiny_model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        **os.environ,
        "LAWM_PLAN_MAX_BATCH_SIZE": "8",
        "LAWM_MAX_QUEUE_DELAY_MS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--repo",
        str(tiny_model_repo),
        "--model",
        TINY_NAME,
        "--version",
        str(TINY_VERSION),
        "--port",
        str(port),
        "--max-batch-size",
        "4",
        "--log-level",
        "warning",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).resolve().parents[2]
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):  # bounded by polls; each waits up to 0.1 s
            if proc.poll() is not None:
                raise AssertionError(f"lawm serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"lawm serve never became ready:\n{log.read_text()}")
        yield url
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM), (
            log.read_text()
        )  # uvicorn re-raises what it handled
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_transfer_job_over_http_to_a_decodable_mp4(server: str) -> None:
    clips = sample_clips()
    files = {
        "clip_a": ("carphone.mp4", clips["carphone_pristine"].read_bytes(), "video/mp4"),
        "clip_b": ("bikes.mp4", clips["bikes"].read_bytes(), "video/mp4"),
    }
    with httpx.Client(base_url=server, timeout=60) as client:
        submitted = client.post(
            "/v1/transfers",
            files=files,
            data={"request": '{"steps": 5}'},
            headers={"Idempotency-Key": "e2e-transfer-1"},
        )
        assert submitted.status_code == 202, submitted.text
        location = submitted.headers["location"]
        replay = client.post(
            "/v1/transfers",
            files=files,
            data={"request": '{"steps": 5}'},
            headers={"Idempotency-Key": "e2e-transfer-1"},
        )
        assert replay.json()["id"] == submitted.json()["id"]
        for _ in range(2000):
            job = client.get(location).json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.05)
        assert job["state"] == "succeeded", job
        video = client.get(f"{location}/result")
        assert video.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(video.content)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        size = client.get("/v1/models").json()["models"][0]["image_size"]
        assert len(frames) == 2 * (5 + 1) and frames[0].shape == (size, size, 3)
        metrics = client.get(f"{location}/result", params={"format": "json"}).json()["metrics"]
        assert metrics["steps"] == 5 and metrics["cycle"]["orig_l1"] > 0
        assert client.get("/v1/jobs/not-a-job").status_code == 404
        assert 'lawm_jobs_total{state="succeeded"} 1.0' in client.get("/metrics").text


def test_kserve_v2_through_tritonclient_on_the_real_server(server: str) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(server.removeprefix("http://"))
    try:
        assert client.is_server_ready() and client.is_model_ready("world_model_step")
        meta = client.get_model_metadata("world_model_step")
        n, d = meta["inputs"][0]["shape"][1:]
        z = meta["inputs"][1]["shape"][1]
        rng = np.random.default_rng(0)
        states = rng.standard_normal((5, n, d)).astype(np.float32)
        latents = rng.standard_normal((5, z)).astype(np.float32)
        inputs = [
            triton.InferInput("states", [5, n, d], "FP32"),
            triton.InferInput("latents", [5, z], "FP32"),
        ]
        inputs[0].set_data_from_numpy(states)
        inputs[1].set_data_from_numpy(latents)
        binary = client.infer("world_model_step", inputs).as_numpy("next_states")
        inputs[0].set_data_from_numpy(states, binary_data=False)
        inputs[1].set_data_from_numpy(latents, binary_data=False)
        as_json = client.infer(
            "world_model_step",
            inputs,
            outputs=[triton.InferRequestedOutput("next_states", binary_data=False)],
        ).as_numpy("next_states")
        assert binary.shape == (5, n, d) and np.isfinite(binary).all()
        np.testing.assert_allclose(as_json, binary, rtol=1e-6, atol=1e-6)
    finally:
        client.close()
