"""`lawm export` and `lawm bench export`, registered on the main CLI by `service.cli`."""

from __future__ import annotations

import typer

from training.cli import app, bench_app  # noqa: F401  # commands below register on these


def register(root: typer.Typer, bench: typer.Typer) -> None:
    """Add the exporter commands to the `lawm` CLI (called once by `service.cli`)."""
