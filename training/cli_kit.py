"""What every `lawm` command shares, whichever package defines it (training, exporters, service).

- `console`: messages to stderr. Its lines never wrap: a line such as "serving PATH on
  http://HOST:PORT" is read by people and by grep, and rich would otherwise break it at 80 columns
  whenever stderr is not a terminal (a log file, a pipe), wherever a long path pushes it over.
- `print_table`: a figures table on stdout; `write_json`: the same figures for `--json PATH`.
- `friendly_errors`: the project's known errors as one red line and exit status 2, never a
  traceback (LAWM_DEBUG=1 shows it); anything unexpected keeps its traceback.
- `setup_logging`, and `machine()`: the line every benchmark names its machine with.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["console", "errors_as_exit", "friendly_errors", "machine", "print_table", "setup_logging", "write_json"]

# soft_wrap: a line longer than the console is written whole, never broken into several.
console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def _known_errors() -> tuple[type[BaseException], ...]:
    from training.checkpoint import CheckpointError
    from training.config import ConfigError
    from training.data.sources import DataSourceError
    from training.data.video import UnreadableVideo
    from training.loop import TrainingError

    return (ConfigError, CheckpointError, DataSourceError, UnreadableVideo, TrainingError, FileNotFoundError)


def errors_as_exit(known: Callable[[], tuple[type[BaseException], ...]]) -> Callable[[F], F]:
    """A decorator turning the errors `known()` names into one red line and exit code 2 (`known` is
    called late, so a command module need not import every error's package up front)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except known() as e:
                if os.environ.get("LAWM_DEBUG"):
                    raise
                console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
                raise typer.Exit(2) from None

        return wrapper  # type: ignore[return-value]

    return decorate


friendly_errors = errors_as_exit(_known_errors)
"""The project's own errors (config, checkpoint, data, video, training) as one red line and exit 2."""


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(str(key))
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {path}")


def load_average(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """The 1-minute load average around a measurement (`os.getloadavg()` before and after)."""
    return f"{before[0]:.2f} before, {after[0]:.2f} after (1-min)"


def machine() -> str:
    """The CPU, its cores and bf16 support (AMX / AVX-512 BF16: machines here differ), torch and its
    threads, and the GPU when there is one."""
    import torch

    from training.precision import cpu_bf16_support

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    text = (f"{cpu}, {os.cpu_count()} cores, bf16: {cpu_bf16_support().kind}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text
