"""The LitServe peer of `lawm bench serve --peer litserve` does the service's work: the same clip
uploaded to the peer (a real LitServe process) and to the service answers the same latents."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.bench.loadgen import latent_actions_request, sample_clip_frames
from service.bench.peer import PATH, LatentActionsWork, peer_command
from service.bench.processes import ServerProcess, _group_pids, free_port
from tests.integration.service.conftest import running_app, service_settings
from tests.service_fixtures import TINY_NAME, TINY_VERSION

pytest.importorskip("litserve")
pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def peer(tiny_model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    command = peer_command(port, tiny_model_repo, TINY_NAME, TINY_VERSION, max_batch_size=2, batch_timeout_ms=5)
    server = ServerProcess(command, port, tmp_path_factory.mktemp("peer") / "log.txt", ready_path="/health",
                           env={"PYTHONPATH": str(ROOT)}, group=True)
    with server.start(timeout_s=180):
        yield server
    assert server.proc is not None
    ends = time.monotonic() + 10  # the group is gone: no worker left behind (SIGKILLed ones reaped by init)
    while _group_pids(server.proc.pid) and time.monotonic() < ends:
        time.sleep(0.1)
    assert _group_pids(server.proc.pid) == []


async def test_the_peer_answers_the_services_latents(tiny_model_repo: Path, peer: ServerProcess) -> None:
    async with running_app(service_settings(tiny_model_repo)) as (client, _):
        info = (await client.get("/v1/models")).json()["models"][0]
        fps, size = float(info["fps"]), int(info["image_size"])
        spec = latent_actions_request(sample_clip_frames(size, fps, 16), fps)  # the bench's own upload
        served = await client.post(spec.path, content=spec.content, headers=spec.headers)
    assert served.status_code == 200, served.text
    async with httpx.AsyncClient(base_url=peer.url, timeout=60) as peer_client:
        answered = await peer_client.post(spec.path, content=spec.content, headers=spec.headers)
    assert answered.status_code == 200, answered.text
    ours, theirs = np.asarray(served.json()["latents"]), np.asarray(answered.json()["latents"])
    assert ours.shape == theirs.shape == (served.json()["steps"], served.json()["latent_dim"])
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)


async def test_a_bad_upload_is_refused_not_fatal(peer: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=peer.url, timeout=60) as client:
        r = await client.post(PATH, files={"file": ("clip.mp4", b"not a video", "video/mp4")})
        assert r.status_code == 422
        assert (await client.get("/health")).status_code == 200  # the worker lives on


def test_batched_predict_equals_one_clip_at_a_time(tiny_model_repo: Path) -> None:
    settings = service_settings(tiny_model_repo)
    work = LatentActionsWork.load(settings)
    size, tb = work.limits.size, work.tubelet
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (n * tb, size, size, 3), dtype=np.uint8) for n in (2, 3, 5)]
    together = work.predict(clips)
    alone = [work.predict([c])[0] for c in clips]
    assert [z.shape[0] for z in together] == [1, 2, 4]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
