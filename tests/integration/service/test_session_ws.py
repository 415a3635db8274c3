"""The WebSocket form of session steps, end to end (Starlette's test client speaks WebSocket)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.app import create_app
from tests.integration.service.conftest import service_settings
from tests.integration.service.test_sessions import SETTINGS, image
from tests.service_fixtures import API_KEY
from tests.unit.service.media_files import png_b64

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def test_websocket_session_end_to_end(tiny_model_repo: Path) -> None:
    with TestClient(create_app(service_settings(tiny_model_repo)), headers=AUTH) as client:
        while client.get("/readyz").status_code != 200:  # warming in the background
            time.sleep(0.2)
        created = client.post("/v1/sessions", json={"goal": png_b64(image(0)), **SETTINGS})
        sid = created.json()["session_id"]
        with client.websocket_connect(f"/v1/sessions/{sid}/ws", headers=AUTH) as ws:
            ws.send_bytes(npy(image(1)))
            first = ws.receive_json()
            assert (first["step"], first["warm"], len(first["actions"])) == (0, False, 3)
            ws.send_text(json.dumps({"frame": png_b64(image(2)), "step": 1}))
            second = ws.receive_json()
            assert (second["step"], second["warm"]) == (1, True)
            ws.send_bytes(npy(np.zeros((8, 8, 3), np.uint8)))  # a bad frame: an error, the stream goes on
            bad = ws.receive_json()["error"]
            assert (bad["status"], bad["code"]) == (422, "wrong_image_size")
            ws.send_text(json.dumps({"array": image(3).tolist(), "step": 7}))
            assert ws.receive_json()["error"]["code"] == "step_out_of_order"
            ws.send_text(json.dumps({"array": image(3).tolist()}))
            assert ws.receive_json()["step"] == 2
        assert client.get(f"/v1/sessions/{sid}").json()["steps"] == 3  # a closed stream does not end the session
        assert client.delete(f"/v1/sessions/{sid}").status_code == 204
        with client.websocket_connect(f"/v1/sessions/{sid}/ws", headers=AUTH) as ws:
            ws.send_bytes(npy(image(1)))
            assert ws.receive_json()["error"]["code"] == "unknown_session"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 4404
        wrong_key = {"Authorization": "Bearer wrong"}
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(f"/v1/sessions/{sid}/ws",
                                                                                     headers=wrong_key):
            pass  # a wrong API key is refused at the handshake
        assert refused.value.code == 1008
