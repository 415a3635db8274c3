"""The LitServe server of the peer (`service.bench.peer` holds the work and says why): this module
imports litserve at the top, as LitServe's spawned workers unpickle the API class by its module.

    python -m service.bench.peer_server --repo models/repository --model demo --port 8100
"""

# No `from __future__ import annotations`: LitServe reads `decode_request`'s annotation as a class
# (starlette's Request: the handler parses the multipart form), not as a string.
import argparse
import time
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from fastapi import HTTPException, Request

from service.bench.peer import PATH, LatentActionsWork
from service.settings import Settings
from training.data.video import MediaRejected

Decoded = tuple[np.ndarray, float]  # frames, decode seconds


class LatentActionsAPI(ls.LitAPI):
    """Decode in `decode_request` (per request, in the worker), encoder + IDM per batch in `predict`."""

    def __init__(self, settings: Settings, max_batch_size: int, batch_timeout_s: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout_s, api_path=PATH)
        self.settings = settings

    def setup(self, device: str) -> None:
        self.work = LatentActionsWork.load(self.settings)
        size, tb = self.work.limits.size, self.work.tubelet
        frames = np.zeros((4 * tb, size, size, 3), np.uint8)
        for n in range(1, self.max_batch_size + 1):  # warm the batch shapes (the service warms its own)
            self.work.predict([frames] * n)

    def decode_request(self, request: Request) -> Decoded:  # the parsed form, in fact
        upload = request.get("file") if hasattr(request, "get") else None
        if upload is None or not hasattr(upload, "file"):
            raise HTTPException(422, "upload the clip as the multipart file `file`")
        t0 = time.perf_counter()
        try:
            frames = self.work.decode(upload.file.read(), upload.filename)
        except (MediaRejected, ValueError) as e:
            raise HTTPException(422, str(e)) from None
        return frames, time.perf_counter() - t0

    def batch(self, inputs: list[Decoded]) -> list[Decoded]:
        return inputs

    def predict(self, x: list[Decoded]) -> list[tuple[np.ndarray, float, float]]:
        t0 = time.perf_counter()
        latents = self.work.predict([frames for frames, _ in x])
        model_s = time.perf_counter() - t0
        return [(z, decode_s, model_s) for z, (_, decode_s) in zip(latents, x, strict=True)]

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output: tuple[np.ndarray, float, float]) -> dict[str, Any]:
        latents, decode_s, model_s = output
        return {"latents": latents.tolist(), "steps": len(latents), "latent_dim": int(latents.shape[1]),
                "timing": {"decode_s": decode_s, "model_s": model_s}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A LitServe peer of lawm's /v1/latent-actions")
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--max-batch-size", type=int, default=4, help="requests per batch")
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1, help="inference worker processes")
    args = parser.parse_args(argv)
    # Settings from LAWM_* as `lawm serve` reads them: the same limits, fps, arena and threads.
    settings = Settings(repo=args.repo, model=args.model, version=args.version, runtime="onnxruntime",
                        export_from=None)
    api = LatentActionsAPI(settings, args.max_batch_size, args.batch_timeout_ms / 1000.0)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers)
    server.run(host=args.host, port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    from service.bench.peer_server import main as _main  # the class by its module's name, for spawned workers

    _main()
