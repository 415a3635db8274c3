"""`lawm bench sessions` on the tiny model through the real app (a Starlette test client under
`service.client.Client`): both phases run, their figures are consistent, and every session ends."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.bench.sessions import SessionBench, run
from service.client import Client
from tests.integration.service.conftest import service_settings
from tests.service_fixtures import API_KEY


def test_session_bench_through_the_api(tiny_model_repo: Path) -> None:
    app = create_app(service_settings(tiny_model_repo))
    with TestClient(app, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        while http.get("/readyz").status_code != 200:
            time.sleep(0.2)
        client = Client(http=http)
        bench = SessionBench(sessions=2, steps=3, pairs=2, control_hz=2.0, image_size=32,
                             overrides=(("samples", 8), ("elites", 2)))
        slept: list[float] = []
        result = run(bench, client, lambda: contextlib.nullcontext(client), sleep=slept.append)
        assert len(app.state.sessions) == 0  # every session was ended
    cold, warm, ahead, crowd, first = result["rows"]
    assert cold["n"] == warm["n"] == 2 and cold["ratio"] == 1.0
    assert warm["ratio"] == pytest.approx(warm["p50_ms"] / cold["p50_ms"])
    assert ahead["n"] == 2 and "answered ahead" in ahead["measurement"]
    assert 0 <= result["phases"]["ahead"]["answered_ahead"] <= 2
    assert crowd["n"] == 2 * 2 and first["n"] == 2  # each robot's first step is cold, the rest warm
    phase = result["phases"]["concurrent"]
    assert phase["steps"] == 6 and 0 <= phase["deadline_misses"] <= 6
    assert phase["p99_over_p50"] >= 1.0
    assert "warm step p50" in result["verdict"]
    assert slept and all(0.0 <= s <= 0.5 for s in slept)  # never longer than the 0.5 s period


@pytest.mark.parametrize("bad", [{"sessions": 0}, {"steps": 1}, {"pairs": 0}, {"control_hz": 0.0}])
def test_session_bench_settings_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SessionBench(**bad)  # type: ignore[arg-type]
