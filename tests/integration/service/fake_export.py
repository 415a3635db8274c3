"""A stand-in for the export the server runs in a child process, steered through files so tests
synchronise with it instead of timing it.

The request's `source` folder holds:
- `from`: the path of an exported version folder to copy into place (the tiny model);
- `release`: created by the test when the export may finish (until then it waits, having reported
  its first component and written `started`);
- `fail`: when present at release, the export raises instead of writing anything.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from exporters.repository import version_dir
from service.exporting import ExportRequest

COMPONENTS = ("encoder", "idm")


def slow_export(request: ExportRequest, on_component: Callable[[int, int, str], None],
                say: Callable[[str], None]) -> Path:
    on_component(0, len(COMPONENTS), COMPONENTS[0])
    (request.source / "started").touch()
    while not (request.source / "release").exists():  # the child waits for the test, not for a clock
        time.sleep(0.02)
    if (request.source / "fail").exists():
        raise RuntimeError("parity failed on onnxruntime: max|err| 3.1 > 0.001 (a stand-in failure)")
    on_component(1, len(COMPONENTS), COMPONENTS[1])
    final = version_dir(request.repo, request.name, request.version)
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(Path((request.source / "from").read_text()), final)
    on_component(len(COMPONENTS), len(COMPONENTS), "")
    return final
