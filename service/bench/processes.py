"""Real server processes for `lawm bench serve --spawn`: start one on a free port, wait until it
says it is ready, stop it the way an orchestrator would (SIGTERM, then a bounded wait)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerError(RuntimeError):
    """The server process exited or never became ready; the message carries its log's tail."""


class ServerProcess:
    """`command` (argv) run as a child process that listens on `port`; a context manager.

    `group`: the command starts processes of its own (e.g. LitServe's workers), so it runs in a process
    group of its own, which `stop` signals as a whole and `cpu_seconds` sums over. `nice`: added to
    its scheduling niceness (a load generator on the same host then keeps its schedule)."""

    def __init__(self, command: list[str], port: int, log_path: Path, *, ready_path: str = "/readyz",
                 host: str = "127.0.0.1", env: dict[str, str] | None = None, group: bool = False,
                 nice: int = 0) -> None:
        self.command, self.port, self.log_path, self.ready_path, self.host = command, port, log_path, ready_path, host
        self.env, self.group, self.nice = env, group, nice
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 600.0) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        env = {**os.environ, **(self.env or {})}
        command = ["nice", "-n", str(self.nice), *self.command] if self.nice else self.command  # nice execs it: same pid
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=self.group)
        log.close()  # the child holds its own descriptor
        self.wait_ready(timeout_s)
        return self

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used so far (all its threads, user + system), from /proc;
        None where /proc is missing. Unlike wall time, it barely moves with other processes' load."""
        if self.proc is None:
            return None
        pids = _group_pids(self.proc.pid) if self.group else [self.proc.pid]
        ticks = [t for t in (_cpu_ticks(pid) for pid in pids) if t is not None]
        return sum(ticks) / os.sysconf("SC_CLK_TCK") if ticks else None

    def pause(self) -> None:
        """SIGSTOP (the group): an idle server that still polls (LitServe's workers do) takes no CPU
        from another server under measurement. `resume` (or `stop`) continues it."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout_s: float) -> None:
        """Poll the readiness path until it answers 200 (start-up: loading, exporting, warming)."""
        assert self.proc is not None
        ends = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while time.monotonic() < ends:
                if self.proc.poll() is not None:
                    raise ServerError(f"`{' '.join(self.command)}` exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(self.ready_path).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass  # not listening yet
                time.sleep(0.25)
        self.stop()
        raise ServerError(f"`{' '.join(self.command)}` was not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL if it has not exited after `timeout_s`."""
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is not None:
                return self.proc.returncode
            self.resume()  # a paused server would not act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(10)
        finally:
            if self.group:  # workers the command left behind (LitServe's outlive a SIGTERM to their parent)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _cpu_ticks(pid: int) -> int | None:
    """utime + stime of one process from /proc (None where it is gone or /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def _group_pids(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (field 5 of /proc/PID/stat)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def lawm_serve_command(port: int, args: list[str]) -> list[str]:
    """`lawm serve` on `port`, run through this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
