"""`lawm serve` as a user runs it: a real uvicorn process on a free port, real HTTP, real signals."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from exporters.runtime import load_model
from service.bench.processes import free_port
from tests.service_fixtures import API_KEY, TINY_NAME, TINY_VERSION
from training.data.samples import sample_clips
from training.data.video import decode_all

LAWM = str(Path(sys.executable).with_name("lawm"))
CARPHONE = sample_clips()["carphone_pristine"]


@contextlib.contextmanager
def lawm_serve(args: list[str], env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start `lawm serve ARGS`; yield (process, base url) once /readyz answers 200; kill it if still up."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [LAWM, "serve", "--port", str(port), *args], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "LAWM_EXPORT_FROM": "", **env},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        ends = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"lawm serve exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < ends, f"lawm serve never became ready:\n{log.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def offline_latents(repo: Path) -> np.ndarray:
    model = load_model(repo, TINY_NAME, TINY_VERSION, "onnxruntime")
    frames = decode_all(CARPHONE, 4.0, 32)[:16]
    video = (frames.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)[None]
    states = model.components["encoder"].run({"video": video})["states"]
    return model.components["idm"].run({"states": states})["latents"][0]


def stop(proc: subprocess.Popen, log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) in (0, -signal.SIGTERM), log.read_text()  # uvicorn re-raises the signal it handled
    assert "drained" in log.read_text()


@pytest.mark.slow
def test_lawm_serve_on_a_free_port(tiny_model_repo: Path, tmp_path: Path) -> None:
    args = ["--repo", str(tiny_model_repo), "--model", TINY_NAME, "--version", str(TINY_VERSION),
            "--runtime", "onnxruntime", "--api-key", API_KEY]
    log = tmp_path / "serve.log"
    with lawm_serve(args, {}, log) as (proc, url):
        assert httpx.get(url + "/livez").json() == {"live": True}  # exempt from the key
        assert httpx.get(url + "/v1/models").status_code == 401
        auth = {"Authorization": f"Bearer {API_KEY}"}
        (info,) = httpx.get(url + "/v1/models", headers=auth).json()["models"]
        assert (info["name"], info["version"], info["runtime"]) == (TINY_NAME, TINY_VERSION, "onnxruntime")
        response = httpx.post(url + "/v1/latent-actions", headers=auth, timeout=60,
                              files={"file": (CARPHONE.name, CARPHONE.read_bytes(), "video/mp4")})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(np.asarray(response.json()["latents"]), offline_latents(tiny_model_repo),
                                   rtol=1e-4, atol=1e-5)
        assert "lawm_requests_total" in httpx.get(url + "/metrics").text
        stop(proc, log)
    assert f"serving {tiny_model_repo / TINY_NAME} v1" in log.read_text()


def in_flight(url: str) -> int:
    """Requests the server is handling now, not counting this /metrics request."""
    text = httpx.get(url + "/metrics", timeout=5).text
    m = re.search(r"^lawm_inflight_requests (\S+)$", text, re.MULTILINE)
    assert m, text
    return int(float(m.group(1))) - 1


@pytest.mark.slow
def test_sigterm_loses_no_accepted_request(tiny_model_repo: Path, tmp_path: Path) -> None:
    """Requests the server accepted when SIGTERM arrives are all answered, then the server exits."""
    env = {"LAWM_REPO": str(tiny_model_repo), "LAWM_MODEL": TINY_NAME, "LAWM_VERSION": str(TINY_VERSION),
           "LAWM_MAX_BATCH_SIZE": "64", "LAWM_MAX_QUEUE_DELAY_MS": "4000"}  # batches wait: requests stay in flight
    log = tmp_path / "serve.log"
    clients, results = 6, {}
    with lawm_serve([], env, log) as (proc, url):

        def call(i: int) -> None:
            with httpx.Client(timeout=60) as client:
                results[i] = client.post(url + "/v1/latent-actions", content=CARPHONE.read_bytes(),
                                         headers={"content-type": "video/mp4"})

        threads = [threading.Thread(target=call, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        ends = time.monotonic() + 60
        while (busy := in_flight(url)) + len(results) < clients:  # every request reached the server
            assert time.monotonic() < ends, f"requests never arrived:\n{log.read_text()}"
            time.sleep(0.02)
        stop(proc, log)
        for t in threads:
            t.join(60)
    assert busy >= 1  # SIGTERM came while requests were in flight
    assert sorted(results) == list(range(clients))
    assert all(r.status_code == 200 for r in results.values()), [r.text for r in results.values()]
    expected = offline_latents(tiny_model_repo)
    for response in results.values():
        np.testing.assert_allclose(np.asarray(response.json()["latents"]), expected, rtol=1e-4, atol=1e-5)
