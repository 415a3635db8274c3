"""`lawm export` and `lawm bench export|rollout|precision`, registered on the main CLI by `service.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from training.cli_kit import console, errors_as_exit, print_table, write_json


def _exporter_errors() -> tuple[type[BaseException], ...]:
    from exporters.errors import ExportError, InvalidInputs
    from training.checkpoint import CheckpointError
    from training.config import ConfigError

    return (ExportError, InvalidInputs, CheckpointError, ConfigError, FileNotFoundError)


# Like `friendly_errors`, but without its import of the video stack, so these commands also run on a
# GPU host that has no PyAV.
exporter_errors = errors_as_exit(_exporter_errors)


def export(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint or bundled model directory (e.g. models/demo)")],
    to: Annotated[Path, typer.Option("--to", help="model repository root (created if missing)")],
    fmt: Annotated[str, typer.Option("--format", help="onnx, or tensorrt (ONNX + engines; needs a CUDA host)")] = "onnx",
    name: Annotated[str, typer.Option(help="model name: REPO/NAME/VERSION")] = "demo",
    version: Annotated[int | None, typer.Option(help="version number (default: the next free one)")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 | fp16 | bf16 (default: fp32 for onnx, fp16 for tensorrt)")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", help="refuse the checkpoint unless it was trained with this config")] = None,
    force: Annotated[bool, typer.Option(help="replace the version if it exists")] = False,
    real_inputs: Annotated[bool, typer.Option(help="parity on real clips too (sample videos or photographs)")] = True,
    device: Annotated[str, typer.Option(help="where the torch reference of the parity checks runs: cpu or cuda")] = "cpu",
) -> None:
    """Export every component of a checkpoint to REPO/NAME/VERSION (ONNX or TensorRT), checked for parity."""
    from exporters.export import export_model

    expected = None
    if config is not None:
        from training.config import load_config

        expected = load_config(config).model
    folder = export_model(
        checkpoint, to, name=name, version=version, fmt=fmt, precision=precision, force=force, expected=expected,
        real_inputs=real_inputs, device=device, progress=lambda msg: console.print(f"[dim]{msg}[/]"),
    )
    _print_export(folder)


def _print_export(folder: Path) -> None:
    import json

    from rich.markup import escape

    manifest = json.loads((folder / "manifest.json").read_text())
    rows = []
    for comp, entry in manifest["components"].items():
        row: dict[str, Any] = {"component": comp, "files": ", ".join(entry["files"].values())}
        shapes = "; ".join(f"{s['name']}[{', '.join(map(str, s['shape']))}]" for s in entry["inputs"])
        row["inputs"] = escape(shapes)  # rich would read "[batch, ...]" as markup
        for runtime, worst in entry["parity"].items():
            row[f"{runtime} max|err|/scale"] = worst
        rows.append(row)
    tol = next(iter(manifest["parity"].values()))["tolerance"]
    print_table(f"{folder} ({manifest['precision']}; parity bound {tol:g} x scale, all passed)", rows)


def bench_export(
    repo: Annotated[Path | None, typer.Option(help="an exported repository (default: export --checkpoint to a temporary one)")] = None,
    checkpoint: Annotated[Path, typer.Option(help="checkpoint to export when no --repo is given")] = Path("models/demo"),
    name: Annotated[str, typer.Option(help="model name in the repository")] = "demo",
    version: Annotated[int | None, typer.Option(help="version for torch / onnxruntime (default: the latest)")] = None,
    batches: Annotated[str, typer.Option(help="batch sizes, comma-separated")] = "1,8,32",
    components: Annotated[str | None, typer.Option(help="components to time, comma-separated (default: all)")] = None,
    repeats: Annotated[int, typer.Option(help="timed repeats per cell (the median is reported)")] = 7,
    threads: Annotated[int | None, typer.Option(help="intra-op threads for both runtimes (default: all cores)")] = None,
    device: Annotated[str, typer.Option(help="cpu, or cuda (adds torch CUDA, onnxruntime CUDA/TensorRT EPs, TensorRT)")] = "cpu",
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures to this JSON file")] = None,
) -> None:
    """Rows/s per component: onnxruntime (and TensorRT on a GPU host) vs torch eager, side by side, as ratios."""
    from exporters.bench import bench_export as run

    sizes = tuple(int(b) for b in batches.split(","))
    wanted = tuple(components.split(",")) if components else None
    result = run(repo=repo, checkpoint=checkpoint, name=name, version=version, batches=sizes, components=wanted, repeats=repeats,
                 threads=threads, device=device, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    print_table(result["title"], result["rows"])
    console.print(result["verdict"])
    write_json(json_path, result)


def bench_rollout(
    repo: Annotated[Path | None, typer.Option(help="an exported repository (default: export --checkpoint to a temporary one)")] = None,
    checkpoint: Annotated[Path, typer.Option(help="checkpoint (with a controller) to export when no --repo is given")] = Path("models/demo"),
    name: Annotated[str, typer.Option(help="model name in the repository")] = "demo",
    version: Annotated[int | None, typer.Option(help="version (default: the latest)")] = None,
    context: Annotated[int, typer.Option(help="observed states before the rollout")] = 8,
    steps: Annotated[int, typer.Option(help="predicted states")] = 8,
    batches: Annotated[str, typer.Option(help="rollout batch sizes, comma-separated")] = "1,8",
    repeats: Annotated[int, typer.Option(help="timed repeats per rollout variant (the median is reported)")] = 5,
    plans: Annotated[int, typer.Option(help="timed plans per planner variant (0: skip the planning table)")] = 3,
    env: Annotated[str, typer.Option(help="world for the planning table: navigation (RECON) or manipulation (DROID)")] = "navigation",
    threads: Annotated[int | None, typer.Option(help="intra-op threads for both runtimes (default: all cores)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures to this JSON file")] = None,
) -> None:
    """KV-cached rollouts and context-keeping plans vs re-running the context, torch and onnxruntime side by side."""
    from exporters.bench_rollout import bench_rollout as run

    sizes = tuple(int(b) for b in batches.split(","))
    result = run(repo=repo, checkpoint=checkpoint, name=name, version=version, context=context, steps=steps, batches=sizes,
                 repeats=repeats, plans=plans, env=env, threads=threads, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    print_table(result["title"], result["rows"])
    for table in result.get("tables", []):
        print_table(table["title"], table["rows"])
    console.print(result["verdict"])
    write_json(json_path, result)


def bench_precision(
    repo: Annotated[Path | None, typer.Option(help="an exported repository (default: export --checkpoint to a temporary one)")] = None,
    checkpoint: Annotated[Path, typer.Option(help="checkpoint (with a controller) to export when no --repo is given")] = Path("models/demo"),
    name: Annotated[str, typer.Option(help="model name in the repository")] = "demo",
    version: Annotated[int | None, typer.Option(help="version (default: the latest)")] = None,
    env: Annotated[str, typer.Option(help="world of the check problems: navigation (RECON preset) or manipulation (DROID)")] = "navigation",
    plans: Annotated[int, typer.Option(help="check problems (episodes), each planned at every precision tried")] = 3,
    repeats: Annotated[int, typer.Option(help="timed plans per problem and precision (the median is reported)")] = 1,
    samples: Annotated[int | None, typer.Option(help="override the preset's candidates per iteration")] = None,
    horizon: Annotated[int | None, typer.Option(help="override the preset's horizon")] = None,
    iterations: Annotated[int | None, typer.Option(help="override the preset's iterations")] = None,
    threads: Annotated[int | None, typer.Option(help="torch intra-op threads (default: all cores)")] = None,
    record: Annotated[bool, typer.Option("--record", help="write the choice beside the version's manifest (needs --repo); "
                                         "served under LAWM_PRECISION=auto")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures to this JSON file")] = None,
) -> None:
    """The planner's components in bf16 vs fp32 on torch: plan time side by side, plan parity, the per-component choice."""
    from exporters.bench_precision import bench_precision as run

    planner = {k: v for k, v in {"samples": samples, "horizon": horizon, "iterations": iterations}.items() if v is not None}
    result = run(repo=repo, checkpoint=checkpoint, name=name, version=version, env=env, plans=plans, repeats=repeats,
                 threads=threads, record=record, planner=planner, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    print_table(result["title"], result["rows"])
    for table in result.get("tables", []):
        print_table(table["title"], table["rows"])
    console.print(result["verdict"])
    if result.get("recorded"):
        console.print(f"recorded the choice in {result['recorded']}")
    write_json(json_path, result)


def register(root: typer.Typer, bench: typer.Typer) -> None:
    """Add the exporter commands to the `lawm` CLI (called once by `service.cli`)."""
    root.command("export")(exporter_errors(export))
    bench.command("export")(exporter_errors(bench_export))
    bench.command("rollout")(exporter_errors(bench_rollout))
    bench.command("precision")(exporter_errors(bench_precision))


def main() -> None:
    """`python -m exporters.cli export ...` / `... bench export ...`: the exporter commands alone, for
    hosts that only carry the export stack (scripts/gpu-check.sh)."""
    app = typer.Typer(help="lawm exporters", no_args_is_help=True, pretty_exceptions_enable=False)
    bench = typer.Typer(help="Benchmarks", no_args_is_help=True)
    app.add_typer(bench, name="bench")
    register(app, bench)
    app()


if __name__ == "__main__":
    main()
