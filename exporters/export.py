"""`lawm export`: a checkpoint -> one version of the model repository.

    export_model(Path("models/demo"), Path("repo"))                   # repo/demo/1/*.onnx + manifest.json
    export_model(ckpt, repo, fmt="tensorrt", precision="fp16")        # + *.plan (on a CUDA host)

Steps: load and verify the checkpoint (its config, when `expected` is given), export every
component to ONNX (checked by onnx.checker), run parity against torch through onnxruntime, build
TensorRT engines when asked (and check them too), copy the source weights for the torch runtime,
write the manifest, then move the version into place. Any failure leaves the repository as it was.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from exporters.components import (
    build_graph,
    component_names,
    component_specs,
    controller_action_dim,
    default_profiles,
)
from exporters.errors import ExportError, ParityError, RepositoryError, RuntimeUnavailable
from exporters.onnx_export import OPSET, PRECISIONS, cast_graph, export_component
from exporters.parity import RealInputs, check_components, failures
from exporters.repository import (
    CHECKPOINT_DIR,
    FORMAT,
    commit,
    file_hashes,
    staging_dir,
    version_dir,
    versions,
    write_manifest,
)
from exporters.runtime import describe_components
from exporters.torch_runtime import build_model
from training.checkpoint import MANIFEST_FILE, MODEL_FILE, sha256_file
from training.config import ModelConfig

FORMATS = ("onnx", "tensorrt")
log = logging.getLogger("lawm.export")


def runtime_versions() -> dict[str, str | None]:
    import onnx
    import onnxruntime
    import onnxscript

    from training import __version__

    return {
        "lawm": __version__, "python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__,
    }


def require_export_stack() -> None:
    """Refuse at once, saying what to install, where the export extra is missing."""
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeUnavailable(
            f"exporting needs {', '.join(missing)}, which this install lacks: pip install 'lawm[export]'"
        )


def next_version(repo: Path, name: str) -> int:
    found = versions(repo, name)
    return found[-1] + 1 if found else 1


def _check_request(
    repo: Path, name: str, version: int | None, fmt: str, precision: str, force: bool, device: str = "cpu"
) -> int:
    if fmt not in FORMATS:
        raise ExportError(f"unsupported format {fmt!r}: use --format onnx or --format tensorrt")
    if precision not in PRECISIONS:
        raise ExportError(f"unsupported precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeUnavailable(f"--device {device}: this torch ({torch.__version__}) sees no CUDA device; use --device cpu")
    if fmt == "onnx" and precision == "bf16":
        raise ExportError(
            "bf16 ONNX graphs do not run on onnxruntime's CPU provider (no bf16 MatMul): "
            "use --precision fp16, or --format tensorrt --precision bf16"
        )
    version = next_version(repo, name) if version is None else version
    final = version_dir(repo, name, version)  # refuses names that escape the root
    if final.exists() and not force:
        raise RepositoryError(
            f"{final} already holds version {version} of {name}: pass --force to replace it, "
            f"or --version {next_version(repo, name)} to add a new one"
        )
    return version


def export_model(
    checkpoint: Path,
    repo: Path,
    name: str = "demo",
    version: int | None = None,
    fmt: str = "onnx",
    precision: str | None = None,
    force: bool = False,
    expected: ModelConfig | None = None,
    real_inputs: bool = True,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    on_component: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Export `checkpoint` into `repo/name/version`; returns the version folder.

    `device` is where the torch reference of the parity checks runs ("cuda" on a GPU host).
    `on_component(done, total, name)` is called as each component starts, and once more with
    `(total, total, "")` when the last is done (for progress bars and estimates)."""
    say = progress or (lambda msg: log.info("%s", msg))
    precision = precision or ("fp16" if fmt == "tensorrt" else "fp32")
    version = _check_request(Path(repo), name, version, fmt, precision, force, device)
    require_export_stack()
    if fmt == "tensorrt":
        from exporters.tensorrt_runtime import require_tensorrt

        require_tensorrt()  # fail before minutes of work on a host that cannot build engines
    model, ckpt = build_model(checkpoint, expected)
    cfg = model.cfg
    action_dim = controller_action_dim(model)
    specs = component_specs(cfg, action_dim)
    profiles = {k: v for k, v in default_profiles(cfg).items() if k in specs}
    names = component_names(model)
    existed = [d for d in (Path(repo), Path(repo) / name) if d.exists()]
    tmp = staging_dir(Path(repo), name, version)
    try:
        real = _real_inputs(model) if real_inputs else None
        files: dict[str, dict[str, str]] = {c: {} for c in names}
        reports = []
        export_s = 0.0
        for i, c in enumerate(names):  # export and check one component at a time: a failure stops at once
            ins, outs = specs[c]
            if on_component is not None:
                on_component(i, len(names), c)
            say(f"exporting {c} to ONNX ({precision}) and checking it against torch")
            t0 = time.perf_counter()
            path = export_component(cast_graph(build_graph(model, c), precision, ins), ins, outs, profiles[c], cfg, tmp / f"{c}.onnx")
            export_s += time.perf_counter() - t0
            files[c]["onnx"] = path.name
            if precision != "bf16":  # bf16 graphs are for TensorRT only, checked below
                reports.append(_onnx_parity(model, path, c, specs, profiles, precision, real, device))
                _raise_on_failure(reports[-1], precision)
        if on_component is not None:
            on_component(len(names), len(names), "")
        parity = {"onnxruntime": _merge(reports)} if reports else {}
        trt_info: dict[str, Any] | None = None
        if fmt == "tensorrt":
            from exporters.tensorrt_build import build_engines, engine_parity

            say(f"building TensorRT engines ({precision})")
            trt_info = build_engines(tmp, names, specs, profiles, precision, cfg)
            for c in names:
                files[c]["tensorrt"] = f"{c}.plan"
            say("checking parity of the TensorRT engines")
            parity["tensorrt"] = engine_parity(model, tmp, trt_info, specs, profiles, precision, real)
            _raise_on_failure(parity["tensorrt"], precision)
        _copy_checkpoint(Path(checkpoint), tmp / CHECKPOINT_DIR)
        manifest = _manifest(
            name, version, fmt, precision, Path(checkpoint), ckpt.manifest, cfg, model, specs, profiles, files, parity,
            trt_info, export_s,
        )
        manifest["files"] = file_hashes(tmp)
        write_manifest(tmp, manifest)
        return commit(tmp, version_dir(Path(repo), name, version))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in (Path(repo) / name, Path(repo)):  # a failed first export leaves no empty folders either
            if d not in existed and d.is_dir() and not any(d.iterdir()):
                d.rmdir()


def _real_inputs(model: Any) -> RealInputs:
    from exporters.real_inputs import real_clips

    frames = model.cfg.encoder.tubelet * min(model.cfg.world_model.max_steps, 8)
    video, source = real_clips(count=8, frames=frames, size=model.cfg.encoder.image_size)
    return RealInputs(model, video, source)


def _onnx_parity(model: Any, path: Path, component: str, specs: dict[str, Any], profiles: dict[str, Any],
                 precision: str, real: RealInputs | None, device: str) -> dict[str, Any]:
    from exporters.ort_runtime import OrtComponent

    ins, outs = specs[component]
    candidate = OrtComponent(component, path, ins, outs, profiles[component], ["CPUExecutionProvider"])
    report = check_components(model, {component: candidate}, profiles, precision, real, device=device)  # type: ignore[dict-item]
    report["runtime"] = "onnxruntime CPUExecutionProvider"
    return report


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(reports[0])
    merged["cases"] = [case for r in reports for case in r["cases"]]
    merged["seconds"] = round(sum(r["seconds"] for r in reports), 2)
    merged["passed"] = all(r["passed"] for r in reports)
    return merged


def _raise_on_failure(report: dict[str, Any], precision: str) -> None:
    bad = failures(report)
    if bad:
        raise ParityError(
            f"parity failed on {report['runtime']} ({precision}; bound: max|err| <= {report['tolerance']:g} x "
            f"{report['scale']}); nothing was written:\n  " + "\n  ".join(bad)
        )


def _copy_checkpoint(source: Path, dest: Path) -> None:
    """The weights and their manifest, for the torch runtime (the optimizer state stays behind)."""
    dest.mkdir(parents=True)
    for fname in (MODEL_FILE, MANIFEST_FILE):
        shutil.copy2(source / fname, dest / fname)


def _manifest(
    name: str, version: int, fmt: str, precision: str, checkpoint: Path, source_manifest: dict[str, Any],
    cfg: ModelConfig, model: Any, specs: dict[str, Any], profiles: dict[str, Any], files: dict[str, dict[str, str]],
    parity: dict[str, Any], trt_info: dict[str, Any] | None, export_s: float,
) -> dict[str, Any]:
    components = describe_components(specs, profiles)
    for c, entry in components.items():
        entry["files"] = files[c]
        entry["parity"] = {  # the worst max|err| / scale per runtime (the bound is the tolerance)
            runtime: max((case["max_abs_err"] / case["scale"] for case in report["cases"] if case["component"] == c),
                         default=None)
            for runtime, report in parity.items()
        }
    return {
        "format": FORMAT,
        "name": name,
        "version": version,
        "artifact": fmt,
        "precision": precision,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {
            "checkpoint": str(checkpoint),
            "sha256": sha256_file(checkpoint / MODEL_FILE),
            "manifest_sha256": sha256_file(checkpoint / MANIFEST_FILE),
            "stage": source_manifest.get("stage"),
            "step": source_manifest.get("step"),
            "git_commit": source_manifest.get("git_commit"),
        },
        "model_config": cfg.model_dump(mode="json"),
        "controller_config": source_manifest.get("controller_config"),
        "controller_action_dim": controller_action_dim(model),
        "components": components,
        "onnx": {"opset": OPSET, "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
                 "export_seconds": round(export_s, 1)},
        "tensorrt": trt_info,
        "versions": runtime_versions(),
        "parity": parity,
    }
