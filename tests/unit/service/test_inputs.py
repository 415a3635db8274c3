"""Request plumbing of the v1 routes: cancelling work when the client goes away, and the .npy answer."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from starlette.requests import Request

from service.errors import ApiError
from service.inputs import cancel_on_disconnect, npy_response, wants_npy


def request_with(receive, accept: str = "") -> Request:  # noqa: ANN001
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"accept", accept.encode())]}
    return Request(scope, receive)


def test_work_is_cancelled_when_the_client_disconnects() -> None:
    async def scenario() -> tuple[ApiError, bool]:
        gone, started, cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def receive() -> dict:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def work() -> None:
            started.set()
            try:
                await asyncio.Event().wait()  # stands for a queued engine call
            except asyncio.CancelledError:
                cancelled.set()
                raise

        task = asyncio.ensure_future(cancel_on_disconnect(request_with(receive), work()))
        await started.wait()
        gone.set()
        with pytest.raises(ApiError) as info:
            await task
        return info.value, cancelled.is_set()

    error, cancelled = asyncio.run(scenario())
    assert error.status == 499 and error.code == "client_closed_request" and cancelled


def test_work_that_finishes_first_returns_its_result() -> None:
    async def scenario() -> int:
        async def receive() -> dict:
            await asyncio.Event().wait()  # the client never leaves
            return {"type": "http.disconnect"}

        async def work() -> int:
            await asyncio.sleep(0)
            return 42

        return await cancel_on_disconnect(request_with(receive), work())

    assert asyncio.run(scenario()) == 42


def test_npy_answers_only_when_asked() -> None:
    async def never() -> dict:
        return {"type": "http.disconnect"}

    assert wants_npy(request_with(never, "application/x-npy, application/json;q=0.5"))
    assert not wants_npy(request_with(never, "application/json"))
    latents = np.arange(6, dtype=np.float32).reshape(2, 3)
    response = npy_response(latents)
    assert response.media_type == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(response.body), allow_pickle=False), latents)
