"""What `lawm serve` and `lawm worker` do before the server starts: settings from flags + environment,
checked with messages that name the setting; whether the bundled demo model (or `export_from`)
must be exported first; and the refusal, in one line, of a repository version that is not there."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.exporting import ExportRequest
from service.settings import Settings
from training.config import ConfigError

log = logging.getLogger("lawm.service")

ROOT = Path(__file__).resolve().parent.parent  # the source checkout (editable installs)
DEMO = "demo"


def settings_from(flags: dict[str, Any]) -> Settings:
    """Settings from the LAWM_* environment, overridden by the flags that were given."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as err:
        lines = []
        for e in err.errors(include_url=False):
            name = ".".join(str(p) for p in e["loc"]) or "settings"
            lines.append(f"{name} (--{name.replace('_', '-')} or LAWM_{name.upper()}): {e['msg']}")
        raise ConfigError("invalid server settings:\n  " + "\n  ".join(lines)) from None


def export_source(settings: Settings) -> Path | None:
    """The checkpoint to export when the served version is missing: `export_from`, or the bundled
    demo model for the model named "demo"."""
    if settings.export_from is not None:
        return settings.export_from
    if settings.model != DEMO:
        return None
    for candidate in (Path("models/demo"), ROOT / "models" / "demo"):
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def _stale(folder: Path, source: Path) -> bool:
    """True when `folder` was exported from `source` and the source's weights changed since (e.g.
    the bundled demo model was retrained with a controller)."""
    from exporters.repository import read_version_manifest
    from training.checkpoint import MODEL_FILE, sha256_file

    recorded = read_version_manifest(folder).get("source") or {}
    if not recorded.get("checkpoint") or Path(recorded["checkpoint"]).resolve() != source.resolve():
        return False  # exported from something else: not ours to replace
    return (source / MODEL_FILE).is_file() and recorded.get("sha256") != sha256_file(source / MODEL_FILE)


def export_request(settings: Settings) -> ExportRequest | None:
    """What to export before serving: the source checkpoint into the served version when that is
    missing from the repository, or was exported from that source before it changed; None when
    nothing has to be done (or nothing can: loading then says how to export)."""
    if settings.checkpoint is not None:
        return None
    from exporters.repository import version_dir, versions

    source = export_source(settings)
    found = versions(settings.repo, settings.model)
    version = settings.version or (found[-1] if found else 1)
    if version in found and (source is None or not _stale(version_dir(settings.repo, settings.model, version), source)):
        return None
    if source is None:
        return None  # loading reports the missing version, with how to export one
    return ExportRequest(source, settings.repo, settings.model, version, force=version in found)


def ensure_exported(settings: Settings) -> Path | None:
    """`export_request`'s export, run now in a child process (for `lawm worker` and the benches,
    which start serving only once it is done); returns the new version's folder, or None when
    nothing had to be done. `lawm serve` exports in the background instead (`service.app`)."""
    request = export_request(settings)
    if request is None:
        return None
    import asyncio

    from exporters.errors import ExportError
    from service.exporting import ExportFailed, ExportProgress, run_export

    try:
        return asyncio.run(run_export(request, ExportProgress()))
    except ExportFailed as e:
        raise ExportError(str(e)) from None


def check_servable(settings: Settings) -> None:
    """Refuse early (`ExportError` naming what to run) when the repository version to serve is missing."""
    if settings.checkpoint is not None:
        if not (settings.checkpoint / "manifest.json").is_file():
            from exporters.errors import RepositoryError

            raise RepositoryError(f"{settings.checkpoint} is not a lawm checkpoint (no manifest.json)")
        return
    from exporters.repository import read_version_manifest, resolve_version

    read_version_manifest(resolve_version(settings.repo, settings.model, settings.version))
