"""`lawm bench robot`'s loop on the tiny model through the real app (a Starlette test client under
`service.client.Client`), with a fake clock: figures are computed, sessions are ended."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.bench.robot import RobotBench, run
from service.client import Client
from tests.integration.service.conftest import service_settings
from tests.service_fixtures import API_KEY


class FakeClock:
    """Each reading advances 0.1 s; sleeping advances by the requested time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        self.now += 0.1
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_closed_loop_bench_through_the_api(tiny_model_repo: Path) -> None:
    app = create_app(service_settings(tiny_model_repo))
    with TestClient(app, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        while http.get("/readyz").status_code != 200:
            time.sleep(0.2)
        bench = RobotBench(episodes=2, steps=3, goal_steps=2, control_hz=2.0, image_size=32,
                           overrides=(("samples", 8), ("elites", 2)))
        clock = FakeClock()
        result = run(bench, Client(http=http), clock=clock, sleep=clock.sleep)
        assert len(app.state.sessions) == 0  # every episode ended its session
    model, random = result["rows"]
    assert (model["policy"], random["policy"]) == ("model", "random")
    for row in (model, random):
        assert 0.0 <= row["success_rate"] <= 1.0 and row["final_distance_m"] >= 0 and row["episodes"] == 2
    assert model["deadline_misses"] == 0 and model["step_p50_ms"] == pytest.approx(100.0)
    assert clock.slept and all(s == pytest.approx(0.3) for s in clock.slept)  # 0.5 s period - 0.2 s used
    assert random["step_p50_ms"] is None
    assert "bar: at least 2x random's" in result["verdict"] and result["protocol"]
    with pytest.raises(ValueError):
        RobotBench(policies=("oracle",))
