"""The export of a checkpoint into the model repository, in a child process.

`lawm serve` exports the bundled demo model (or `LAWM_EXPORT_FROM`) on its first start. That takes
minutes and gigabytes (torch graphs, ONNX conversion, parity runs), so it runs in a spawned child —
a fresh interpreter — never in the server process: the server listens at once, its event loop
stays free, and the export's memory goes back to the system when the child exits.

    progress = ExportProgress()
    folder = await run_export(ExportRequest(source, repo, "demo", 1), progress)
    progress.describe()   # "export (3/8 components, 1m20s elapsed, ~2m left)" while it runs

The child reports each component as it starts; the estimate of what is left is the mean time of
the components done so far times the components still to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger("lawm.service")

POLL_S = 0.2  # how often the parent looks for the child's messages (minutes-long work)
STOP_GRACE_S = 10.0  # a child asked to stop (SIGTERM: it removes its staging folder) gets this long


class ExportFailed(Exception):
    """The export did not produce a version; the message says why (the child's error, or how it died)."""


@dataclass(frozen=True)
class ExportRequest:
    """Export `source` (a checkpoint folder) into `repo/name/version` (replacing it when `force`)."""

    source: Path
    repo: Path
    name: str
    version: int
    force: bool = False


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds} s"


@dataclass
class ExportProgress:
    """What the child reported so far; read by /readyz and the log."""

    started: float = field(default_factory=time.monotonic)
    total: int | None = None  # components to export, once the child has loaded the checkpoint
    done: int = 0  # components finished
    current: str | None = None  # the component being exported
    first_at: float | None = None  # when the first component started (before: loading torch, the checkpoint)
    current_at: float | None = None  # when the current component started

    def component(self, done: int, total: int, name: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.first_at is None:
            self.first_at = now
        self.done, self.total, self.current, self.current_at = done, total, name or None, now

    def seconds_left(self, now: float | None = None) -> float | None:
        """Mean seconds of the finished components x those left, less the current one's time so
        far; None before one has finished."""
        now = time.monotonic() if now is None else now
        if self.first_at is None or self.current_at is None or not self.done or self.total is None:
            return None
        per = (self.current_at - self.first_at) / self.done
        return max(0.0, per * (self.total - self.done) - (now - self.current_at))

    def describe(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = _duration(now - self.started)
        if self.total is None:
            return f"export (loading the checkpoint, {elapsed} elapsed)"
        left = self.seconds_left(now)
        estimate = f", ~{_duration(left)} left" if left is not None else ""
        return f"export ({self.done}/{self.total} components, {elapsed} elapsed{estimate})"


# ----------------------------------------------------------------------------- the child
Target = Callable[[ExportRequest, Callable[[int, int, str], None], Callable[[str], None]], Path]


def export_checkpoint(
    request: ExportRequest, on_component: Callable[[int, int, str], None], say: Callable[[str], None]
) -> Path:
    """The real export (`exporters.export.export_model`), run in the child."""
    from exporters.export import export_model

    return export_model(request.source, request.repo, name=request.name, version=request.version,
                        force=request.force, progress=say, on_component=on_component)


def _child(target: Target, request: ExportRequest, conn: Connection) -> None:
    """The child's main: run `target`, sending ("component", done, total, name), ("log", text), then
    ("done", folder) or ("failed", message) to the parent."""
    # SIGTERM (the server stopping) unwinds through the exporter's `finally`, which removes the
    # staging folder, instead of killing the process where it stands.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        folder = target(request, lambda d, t, n: conn.send(("component", d, t, n)),
                        lambda text: conn.send(("log", text)))
        conn.send(("done", str(folder)))
    except BaseException as e:  # noqa: BLE001 — everything the parent must hear of, SystemExit included
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(e).__name__}: {e}" if not isinstance(e, SystemExit) else "stopped"))
        if not isinstance(e, Exception):
            raise
    finally:
        conn.close()


# ----------------------------------------------------------------------------- the parent
async def run_export(
    request: ExportRequest, progress: ExportProgress, target: Target = export_checkpoint,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Run `target(request, ...)` in a spawned child and return the version folder it wrote;
    `ExportFailed` when it failed or died. Cancelling stops the child (SIGTERM, then SIGKILL)."""
    say = report or (lambda text: log.info("%s", text))
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(target, request, send), name="lawm-export")
    child.start()
    send.close()  # the child holds the only writer now: its exit is our end of file
    say(f"exporting {request.source} to {request.repo}/{request.name}/{request.version} in process {child.pid}")
    result: tuple[str, Any] | None = None
    try:
        while result is None:
            try:
                while receive.poll():
                    message = receive.recv()
                    if message[0] == "component":
                        _, done, total, name = message
                        progress.component(done, total, name)
                        if name:
                            say(f"{progress.describe()}: {name}")
                    elif message[0] == "log":
                        log.debug("export: %s", message[1])
                    else:
                        result = message
                        break
            except EOFError:  # the child exited without a word: killed, or out of memory
                break
            if result is None:
                await asyncio.sleep(POLL_S)
        await asyncio.to_thread(child.join)
    except asyncio.CancelledError:
        await asyncio.shield(asyncio.to_thread(stop_child, child))
        raise
    finally:
        receive.close()
    if result is not None and result[0] == "done":
        say(f"exported {result[1]} in {_duration(time.monotonic() - progress.started)}")
        return Path(result[1])
    if result is not None:
        raise ExportFailed(f"exporting {request.source} failed: {result[1]}")
    raise ExportFailed(f"the export process of {request.source} exited with code {child.exitcode} before it finished "
                       "(killed, or out of memory?)")


def stop_child(child: Any) -> None:
    """SIGTERM, then SIGKILL after `STOP_GRACE_S`; waits for the child to be gone."""
    if child.is_alive():
        child.terminate()
        child.join(STOP_GRACE_S)
    if child.is_alive():
        child.kill()
        child.join()
