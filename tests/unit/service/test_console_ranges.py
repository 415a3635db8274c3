"""Byte ranges of the console's sample clips as RFC 9110 says: another unit is ignored (the whole
file), a bad or unsatisfiable byte range is the JSON error body."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.errors import install_error_handlers
from service.routes import console
from training.data.samples import sample_clips


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(console.router)
    return TestClient(app)


def test_ranges(client: TestClient) -> None:
    path = sample_clips()["carphone_pristine"]
    size = path.stat().st_size
    url = "/console/samples/carphone_pristine"
    whole = client.get(url, headers={"Range": "items=0-1"})  # another unit: ignored
    assert whole.status_code == 200 and len(whole.content) == size
    part = client.get(url, headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == path.read_bytes()[:10]
    outside = client.get(url, headers={"Range": f"bytes={size + 10}-{size + 20}"})
    assert outside.status_code == 416 and outside.json()["error"]["code"] == "range_not_satisfiable"
    assert outside.headers["content-range"] == f"bytes */{size}"
    bad = client.get(url, headers={"Range": "bytes=9-1"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_range"
