"""The synchronous client's retry policy and error parsing, on a scripted transport."""

from __future__ import annotations

import io
import zlib

import httpx
import numpy as np
import pytest

from service.client import Client, LawmError, png_bytes


def error(status: int, code: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, json={"error": {"code": code, "message": "m", "hint": "h", "request_id": "r"}},
                          headers=headers)


STEP = {"session_id": "sess-1", "step": 0, "warm": False, "actions_now": [[0.5, 0.25]],
        "actions": [[0.1, 0.2], [0.3, 0.4]], "cost": 1.5, "deadline_hit": False, "timing": {"total_s": 0.1}}


def scripted(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.Client(transport=httpx.MockTransport(handle), base_url="http://lawm.test")


def test_retries_429_and_503_waiting_retry_after_then_answers() -> None:
    seen: list[httpx.Request] = []
    waits: list[float] = []
    answers = [error(429, "overloaded", "2"), error(503, "not_ready"), httpx.Response(200, json=STEP)]
    with Client(http=scripted(answers, seen), sleep=waits.append, default_wait_s=0.25, max_wait_s=1.5) as lawm:
        step = lawm.step("sess-1", np.zeros((4, 4, 3), np.uint8), step=0)
    assert waits == [1.5, 0.5]  # Retry-After capped by max_wait_s; no header: exponential default
    assert len(seen) == 3 and seen[0].headers["content-type"] == "application/x-npy"
    assert seen[0].url.params["step"] == "0"
    sent = np.load(io.BytesIO(seen[0].content), allow_pickle=False)
    assert sent.dtype == np.uint8 and sent.shape == (4, 4, 3)
    np.testing.assert_array_equal(step.actions_now, [[0.5, 0.25]])
    assert step.actions.dtype == np.float32 and step.cost == 1.5


def test_gives_up_after_the_retries_and_does_not_retry_client_errors() -> None:
    waits: list[float] = []
    lawm = Client(http=scripted([error(429, "overloaded", "1")] * 3, []), retries=2, sleep=waits.append)
    with lawm, pytest.raises(LawmError) as err:
        lawm.end_session("sess-1")
    assert (err.value.status, err.value.code, err.value.retry_after_s, waits) == (429, "overloaded", 1.0, [1.0, 1.0])
    seen: list[httpx.Request] = []
    lawm = Client(http=scripted([error(409, "session_busy")], seen), sleep=waits.append)
    with lawm, pytest.raises(LawmError, match="409 session_busy: m"):
        lawm.step("sess-1", np.zeros((4, 4, 3), np.uint8))
    assert len(seen) == 1


def test_png_writer_round_trips() -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = png_bytes(image)
    assert data.startswith(b"\x89PNG")
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(5, 1 + 7 * 3)
    np.testing.assert_array_equal(rows[:, 1:].reshape(5, 7, 3), image)
    with pytest.raises(ValueError):
        png_bytes(np.zeros((5, 7), np.uint8))
