"""Per-component precision of a loaded model: what was asked for, checked, and the recorded choice.

    resolve_precisions("bf16", components, "torch")     # the planner's components in bf16, the rest fp32
    resolve_precisions("auto", components, "torch", folder)   # what `lawm bench precision --record` chose
    write_record(folder, choice, check)                 # (the bench) record a plan-parity choice

bf16 here is torch autocast around a component's calls (`training.precision`), so it exists on the
torch runtime only; onnxruntime and TensorRT run the graphs at the precision they were exported at.

The choice needs planning problems from the simulator, so it is made offline (`lawm bench
precision`) and recorded in `precision.json` beside the version's `manifest.json`; the server only
reads it, and only under LAWM_PRECISION=auto. Why a sidecar rather than a manifest field: `verify`
checks the sha256 of the files the manifest lists, not of the manifest itself, so an edited manifest
would still load, but the manifest is the export's own record (written once, with the version, in
one atomic rename, and read by servers starting at any moment). A measurement made later on one
machine goes beside it instead, and names the manifest's sha256, so a record can never apply to
another export than the one it was measured on.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporters.errors import RepositoryError
from exporters.repository import MANIFEST
from training.checkpoint import sha256_file
from training.precision import PRECISIONS

# The components a plan runs (one-frame: world_model_step; full context: prefill + kv step).
PLANNER_COMPONENTS = ("world_model_step", "world_model_prefill", "world_model_kv_step", "controller")
# The parts `training.precision.choose_precisions` lowers one at a time, and the components of each.
PLANNER_PARTS = {
    "world_model": ("world_model_step", "world_model_prefill", "world_model_kv_step"),
    "controller": ("controller",),
}
RECORD_FILE = "precision.json"
RECORD_FORMAT = "lawm-precision/1"
# Where a loaded model's precisions came from (GET /v1/models reports it).
DEFAULT, SETTING, RECORDED, EXPORT = "default", "setting", "recorded plan-parity check", "export"
ASKABLE = (*PRECISIONS, "auto")

Asked = dict[str, str] | str | None


def expand_parts(parts: dict[str, str], components: Sequence[str]) -> dict[str, str]:
    """{"world_model": "bf16", "controller": "fp32"} -> the precision of each planner component the
    model has (a model exported before the key/value cache has no prefill / kv step)."""
    unknown = sorted(set(parts) - set(PLANNER_PARTS))
    if unknown:
        raise ValueError(f"unknown planner part(s) {unknown}; parts are {sorted(PLANNER_PARTS)}")
    return {c: p for part, p in parts.items() for c in PLANNER_PARTS[part] if c in components}


def _check_values(per_component: dict[str, str], components: Sequence[str], where: str) -> None:
    unknown = sorted(set(per_component) - set(components))
    if unknown:
        raise RepositoryError(f"{where}: unknown component(s) {unknown}; this model has {list(components)}")
    bad = {c: p for c, p in per_component.items() if p not in PRECISIONS}
    if bad:
        raise RepositoryError(f"{where}: precision must be one of {PRECISIONS} per component, got {bad}")


def resolve_precisions(
    asked: Asked, components: Sequence[str], runtime: str, folder: Path | None = None, export_precision: str = "fp32"
) -> tuple[dict[str, str], str]:
    """(precision of every component, where it came from) for a model about to be loaded.

    `asked`: None (fp32), "fp32" / "bf16" (the planner's components at that precision, the others
    fp32), "auto" (the choice recorded in `folder`, fp32 where there is none), or a dict of
    component -> "fp32" | "bf16" (the rest fp32)."""
    if isinstance(asked, str) and asked not in ASKABLE:
        raise RepositoryError(f"precision must be one of {ASKABLE} or a dict of component -> precision, got {asked!r}")
    if isinstance(asked, dict):
        _check_values(asked, components, "precision")
    lowered = asked == "bf16" or (isinstance(asked, dict) and "bf16" in asked.values())
    if runtime != "torch":
        if lowered:
            raise RepositoryError(
                f"bf16 components run on the torch runtime only (autocast over fp32 weights); {runtime} runs the "
                f"graphs as exported ({export_precision}): use runtime torch (--runtime torch / LAWM_RUNTIME=torch), "
                "or export reduced-precision graphs (lawm export --precision)"
            )
        return dict.fromkeys(components, export_precision), EXPORT
    out = dict.fromkeys(components, "fp32")
    if asked is None:
        return out, DEFAULT
    if asked == "auto":
        record = read_record(folder) if folder is not None else None
        if record is None:
            return out, DEFAULT
        _check_values(record["components"], components, f"{Path(folder or '.') / RECORD_FILE}")
        return out | record["components"], RECORDED
    if isinstance(asked, str):
        return out | {c: asked for c in PLANNER_COMPONENTS if c in components}, SETTING
    return out | asked, SETTING


def read_record(folder: Path) -> dict[str, Any] | None:
    """The choice recorded beside a version's manifest, or None where none was recorded.

    A record that does not parse, or that was measured on another export (its manifest sha256
    differs), raises `RepositoryError` rather than being applied or silently ignored."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    redo = f"re-run `lawm bench precision --repo REPO --record` for this version, or delete {path}"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RepositoryError(f"{path} cannot be read ({e}); {redo}") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or not isinstance(record.get("components"), dict):
        raise RepositoryError(f"{path} is not a {RECORD_FORMAT} record; {redo}")
    if record.get("manifest_sha256") != sha256_file(Path(folder) / MANIFEST):
        raise RepositoryError(f"{path} was recorded for another export of this version (manifest sha256 differs); {redo}")
    return record


def write_record(folder: Path, parts: dict[str, str], components: Sequence[str], check: dict[str, Any]) -> Path:
    """Record a plan-parity choice (`parts`: world_model / controller -> precision) for the version
    in `folder`, with the check that made it; replaces any earlier record, atomically."""
    folder = Path(folder)
    record = {
        "format": RECORD_FORMAT,
        "manifest_sha256": sha256_file(folder / MANIFEST),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parts": dict(parts),
        "components": expand_parts(parts, components),
        "check": check,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{RECORD_FILE}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, folder / RECORD_FILE)  # a server reading it sees the old record or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / RECORD_FILE
