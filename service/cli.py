"""The `lawm` console script: the training CLI plus the exporter and service commands.

`training` never imports `exporters` or `service` (DESIGN.md's dependency direction), so the
commands of the upper layers are registered here, on top of the training CLI.
"""

from __future__ import annotations

from exporters.cli import register as register_exporters
from training.cli import app, bench_app

register_exporters(app, bench_app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
