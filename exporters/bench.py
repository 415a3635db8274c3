"""`lawm bench export`: rows/s per component, exported runtimes vs torch eager, side by side.

For every component and batch size the runtimes are timed in alternation within one run (so a
noisy neighbour hits all of them alike), each call a full `Component.run` with numpy in and out,
and the median of `repeats` calls is reported with the ratio to torch eager. On a CUDA host the
same table adds torch CUDA eager, onnxruntime's CUDA / TensorRT execution providers and TensorRT
engines, each when it can be loaded; what cannot is recorded as skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from exporters.components import random_inputs
from exporters.runtime import LoadedModel, load_model
from training.cli_kit import machine

BAR = 1.3  # onnxruntime (CPU) vs torch eager on the world model at batch 32
BENCH_STEPS = 4  # context length for the components with a time axis (8 frames: the held-out clip length)


def _time(run: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def _engine_version(repo: Path, name: str) -> int | None:
    """The newest version of `name` that holds TensorRT engines, if any."""
    from exporters.repository import read_version_manifest, version_dir, versions

    found = [v for v in versions(repo, name) if read_version_manifest(version_dir(repo, name, v)).get("tensorrt")]
    return found[-1] if found else None


def _candidates(repo: Path, name: str, version: int | None, device: str, threads: int | None,
                skipped: dict[str, str]) -> dict[str, LoadedModel]:
    """The runtimes to time on this host, keyed by column name; what cannot load goes to `skipped`."""
    import onnxruntime as ort

    from exporters.errors import ExportError

    if threads is not None:
        torch.set_num_threads(threads)
        os.environ["LAWM_ORT_THREADS"] = str(threads)
    out = {"torch": load_model(repo, name, version, runtime="torch", device="cpu"),
           "onnxruntime": load_model(repo, name, version, runtime="onnxruntime", device="cpu")}
    if not device.startswith("cuda"):
        return out
    if not torch.cuda.is_available():
        skipped["torch_cuda"] = "skipped: this torch sees no CUDA device"
        return out
    out["torch_cuda"] = load_model(repo, name, version, runtime="torch", device=device)
    available = ort.get_available_providers()
    for column, providers in (
        ("ort_cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        ("ort_tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]),
    ):
        if providers[0] not in available:
            skipped[column] = f"skipped: onnxruntime {ort.__version__} has no {providers[0]} (install onnxruntime-gpu)"
            continue
        out[column] = load_model(repo, name, version, runtime="onnxruntime", device=device, providers=providers)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        skipped["tensorrt"] = "skipped: tensorrt not installed"
        return out
    engines = _engine_version(repo, name)
    if engines is None:
        skipped["tensorrt"] = f"skipped: no version of {name} holds engines (lawm export ... --format tensorrt)"
        return out
    try:
        out["tensorrt"] = load_model(repo, name, engines, runtime="tensorrt", device=device)
    except ExportError as e:
        skipped["tensorrt"] = f"skipped: {str(e).splitlines()[0]}"
    return out


def bench_component(models: dict[str, LoadedModel], component: str, batch: int, repeats: int) -> dict[str, Any]:
    reference = models["torch"]
    comp = reference.components[component]
    steps = BENCH_STEPS if any("steps" in str(a) for s in comp.inputs for a in s.shape) else None
    gen = torch.Generator().manual_seed(batch)
    inputs = {k: v.numpy() for k, v in random_inputs(comp.inputs, batch, steps or 1, reference.config, gen).items()}
    runners = {col: (lambda m=m: m.components[component].run(inputs)) for col, m in models.items()}
    for run in runners.values():  # warm-up (first-call allocations, ORT's arena)
        run()
    times: dict[str, list[float]] = {col: [] for col in runners}
    for _ in range(repeats):
        for col, run in runners.items():  # interleaved: every runtime sees the same machine state
            times[col].append(_time(run))
    row: dict[str, Any] = {"component": component, "batch": batch, "steps": steps}
    rates = {col: batch / statistics.median(ts) for col, ts in times.items()}
    for col, rate in rates.items():
        row[f"{col}_rows_s"] = rate
    row["ort_vs_torch"] = rates["onnxruntime"] / rates["torch"]
    for col in ("ort_cuda", "ort_tensorrt", "tensorrt"):
        if col in rates:
            row[f"{col}_vs_torch_cuda"] = rates[col] / rates["torch_cuda"]
    return row

@contextlib.contextmanager
def bench_repository(
    checkpoint: Path | None, repo: Path | None, name: str, command: str, say: Callable[[str], None]
) -> Iterator[tuple[Path, str]]:
    """The model repository a bench runs on, with the command that reproduces the run: `repo` as
    given, or `checkpoint` exported to a temporary repository that lives as long as the block."""
    with tempfile.TemporaryDirectory(prefix="lawm-bench-") as tmp:
        if repo is not None:
            yield repo, f"lawm export CHECKPOINT --to REPO --name {name} && {command} --repo REPO --name {name}"
            return
        from exporters.export import export_model

        say(f"exporting {checkpoint} to a temporary repository")
        export_model(checkpoint, Path(tmp), name=name, real_inputs=False, progress=say)
        yield Path(tmp), f"{command} --checkpoint {checkpoint}"


def repository_source(model: Any) -> str:
    """One line naming what a loaded repository model was exported from, for a bench's report."""
    m = model.manifest
    return (f"{m['source']['checkpoint']} (sha256 {m['source']['sha256'][:12]}…), {model.name} v{model.version}, "
            f"{m['precision']} ONNX opset {m['onnx']['opset']}")


def bench_export(
    repo: Path | None = None,
    checkpoint: Path = Path("models/demo"),
    name: str = "demo",
    version: int | None = None,
    batches: tuple[int, ...] = (1, 8, 32),
    components: tuple[str, ...] | None = None,
    repeats: int = 7,
    threads: int | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = progress or (lambda msg: None)
    command = f"lawm bench export --device {device} --repeats {repeats}" + (f" --threads {threads}" if threads else "")
    with bench_repository(checkpoint, repo, name, command, say) as (repo, command):
        skipped: dict[str, str] = {}
        models = _candidates(repo, name, version, device, threads, skipped)
        m = models["onnxruntime"]
        source = repository_source(m)
        wanted = components or tuple(models["torch"].components)
        rows = []
        for component in wanted:
            for batch in batches:
                say(f"timing {component} at batch {batch}")
                rows.append(bench_component(models, component, batch, repeats))
    report = _report(rows, models, skipped, source, repeats, command)
    if threads is not None:
        report["title"] += f", {threads} intra-op thread{'s' if threads > 1 else ''} each"
    return report


def _report(rows: list[dict[str, Any]], models: dict[str, LoadedModel], skipped: dict[str, str], source: str,
            repeats: int, command: str) -> dict[str, Any]:
    import onnxruntime as ort

    wm = next((r for r in rows if r["component"] == "world_model" and r["batch"] == 32), None)
    if wm is None:
        verdict = "bar not checked: world_model at batch 32 was not timed"
    else:
        met = "met" if wm["ort_vs_torch"] >= BAR else "missed"
        verdict = f"onnxruntime vs torch eager, world_model at batch 32: {wm['ort_vs_torch']:.2f}x (bar {BAR}x): {met}"
    return {
        "title": "Exported runtimes vs torch eager (rows/s per component)",
        "machine": machine(),
        "command": command,
        "checkpoint": source,
        "statistic": (
            f"median of {repeats} calls after one warm-up, runtimes interleaved in one run; a call is Component.run "
            f"(numpy in/out); components with a time axis at {BENCH_STEPS} steps; rows/s = batch / median seconds"
        ),
        "verdict": verdict,
        "runtimes": {col: m.runtime for col, m in models.items()},
        "onnxruntime": ort.__version__,
        "skipped": skipped,
        "rows": rows,
    }
