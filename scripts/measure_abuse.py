"""Abuse figures of a real `lawm serve` (issue 13): the amplification body and slow clients.

1. `POST /v1/rollouts` with `{"latents": [0, 0, …]}` of 10⁶ zeros (a 2 MB body that used to answer
   a 70 MB 422 after 18 s): the answer's time and size, and `/livez` polled every 20 ms meanwhile.
2. Slow clients on raw sockets: a body declared as 1 MB sent at 1 byte/s, and request headers that
   never finish: how long until the server answers or closes, against the configured time-outs.

  PYTHONPATH=. python scripts/measure_abuse.py models/repository docs/benchmarks/abuse.json
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

from service.bench.processes import ServerProcess, free_port, lawm_serve_command
from training.cli_kit import load_average, machine

BODY_TIMEOUT_S, HEADER_TIMEOUT_S = 5.0, 3.0  # set short for the run: the defaults are 120 s and 10 s


def amplification(url: str) -> dict[str, object]:
    body = ('{"latents": [' + ",".join(["0"] * 1_000_000) + "]}").encode()
    livez: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                t = time.perf_counter()
                c.get(url + "/livez")
                livez.append((time.perf_counter() - t) * 1000)
                time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)  # a baseline of /livez before the body
    t0 = time.perf_counter()
    r = httpx.post(url + "/v1/rollouts", content=body, headers={"content-type": "application/json"}, timeout=120)
    answered = time.perf_counter() - t0
    time.sleep(0.3)
    stop.set()
    poller.join()
    return {"request_bytes": len(body), "status": r.status_code, "answer_s": answered, "answer_bytes": len(r.content),
            "code": r.json().get("error", {}).get("code"), "livez_polls": len(livez),
            "livez_max_ms": max(livez), "livez_median_ms": statistics.median(livez)}


def slow_client(host: str, port: int, request: bytes, drip: bytes, limit_s: float) -> dict[str, object]:
    """Send `request`, then `drip` one byte a second; seconds until the server answers or closes."""
    s = socket.create_connection((host, port))
    s.settimeout(1.0)
    s.sendall(request)
    t0, answer = time.monotonic(), b""
    i = 0
    while time.monotonic() - t0 < limit_s:
        try:
            chunk = s.recv(4096)
            if not chunk:
                break  # closed
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
        except TimeoutError:
            try:
                s.sendall(drip[i % len(drip) : i % len(drip) + 1])
                i += 1
            except OSError:
                break
        except OSError:
            break
    s.close()
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else None
    return {"closed_after_s": time.monotonic() - t0, "status": status, "bytes_dripped": i}


def main() -> None:
    repo, out = Path(sys.argv[1]), Path(sys.argv[2])
    port = free_port()
    env = {"LAWM_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S), "LAWM_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "OMP_NUM_THREADS": "1"}
    before = os.getloadavg()
    server = ServerProcess(lawm_serve_command(port, ["--repo", str(repo), "--log-level", "warning"]), port,
                           Path("runs/abuse/serve.log"), env=env)
    with server.start(timeout_s=1800):
        amp = amplification(server.url)
        body = slow_client("127.0.0.1", port, b"POST /v1/rollouts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 1000000\r\n\r\n{", b"0", 60)
        headers = slow_client("127.0.0.1", port, b"GET /livez HTTP/1.1\r\n", b"X", 60)
    rows = [
        {"check": "2 MB body of 10^6 zeros to /v1/rollouts", "status": amp["status"],
         "answer_ms": round(amp["answer_s"] * 1000, 1), "answer_bytes": amp["answer_bytes"],
         "livez_max_ms": round(amp["livez_max_ms"], 1), "bar": "answer < 1 s, body < 16 KB, /livez < 100 ms",
         "met": amp["answer_s"] < 1 and amp["answer_bytes"] < 16384 and amp["livez_max_ms"] < 100},
        {"check": f"body declared 1 MB, sent at 1 byte/s (LAWM_BODY_TIMEOUT_S={BODY_TIMEOUT_S:g})",
         "status": body["status"], "closed_after_s": round(body["closed_after_s"], 2),
         "bar": f"answered or closed within the time-out ({BODY_TIMEOUT_S:g} s) + 1 s",
         "met": body["closed_after_s"] <= BODY_TIMEOUT_S + 1},
        {"check": f"headers never finished (LAWM_HEADER_TIMEOUT_S={HEADER_TIMEOUT_S:g})",
         "status": headers["status"], "closed_after_s": round(headers["closed_after_s"], 2),
         "bar": f"answered or closed within the time-out ({HEADER_TIMEOUT_S:g} s) + 1 s",
         "met": headers["closed_after_s"] <= HEADER_TIMEOUT_S + 1},
    ]
    payload = {
        "benchmark": "abuse",
        "title": "Abuse: the amplification body and slow clients, against a real `lawm serve`",
        "machine": machine(), "load_average": load_average(before, os.getloadavg()),
        "command": f"PYTHONPATH=. python scripts/measure_abuse.py {repo} {out}",
        "statistic": "one run each; /livez polled every 20 ms from another connection while the body is sent and "
        f"answered ({amp['livez_polls']} polls, median {amp['livez_median_ms']:.1f} ms); slow clients on raw "
        "sockets, one byte a second after the first line; time-outs shortened for the run",
        "verdict": "; ".join(f"{r['check']}: {'pass' if r['met'] else 'not met'}" for r in rows),
        "rows": rows,
        "details": {"amplification": amp, "slow_body": body, "slow_headers": headers},
    }
    out.write_text(json.dumps(payload, indent=1) + "\n")
    print(payload["verdict"])


if __name__ == "__main__":
    main()
