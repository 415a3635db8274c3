"""A throwaway `redis-server` on a free loopback port, in a folder of its own (tests, `lawm bench jobs`).

Never the machine's own Redis: each `RedisServer` gets a fresh port and directory, keeps nothing
unless asked (`appendonly=True` writes an AOF there, fsynced on every write, so a stop and restart
loses no acknowledged write), and is stopped by whoever started it.

    with RedisServer.start_new(tmp_path, appendonly=True) as server:
        server.url            # redis://127.0.0.1:PORT/0
        server.restart()      # SHUTDOWN (AOF flushed), then the same port and folder again
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from service.bench.processes import free_port

ENV_BINARY = "LAWM_REDIS_SERVER"  # path to a redis-server binary, when not on PATH


def find_redis_server() -> str | None:
    """The redis-server binary: $LAWM_REDIS_SERVER, then PATH, then Debian's /usr/bin."""
    explicit = os.environ.get(ENV_BINARY)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None)


class RedisServer:
    def __init__(self, binary: str, folder: Path, port: int, appendonly: bool = False) -> None:
        self.binary, self.folder, self.port, self.appendonly = binary, folder, port, appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start_new(cls, folder: Path, appendonly: bool = False, binary: str | None = None) -> RedisServer:
        found = binary or find_redis_server()
        if found is None:
            raise FileNotFoundError(
                "redis-server not found: install it (Debian: apt-get install redis-server; `make test` does) "
                f"or set {ENV_BINARY}=/path/to/redis-server"
            )
        folder.mkdir(parents=True, exist_ok=True)
        server = cls(found, folder.resolve(), free_port(), appendonly)  # absolute: redis-server chdirs to --dir
        server.start()
        return server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
            "--save", "", "--daemonize", "no", "--logfile", str(self.folder / "redis.log"),
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ends = time.monotonic() + timeout_s
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > ends:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:] if (
                    self.folder / "redis.log").exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)

    def ping(self) -> bool:
        """One PING over a raw socket (no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM: Redis flushes its AOF and exits."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
