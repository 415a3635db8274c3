"""The `lawm` command line: train, eval, bench, data, build-demo (the shared kit is `training.cli_kit`).

Known errors (bad config, bad data, bad checkpoint) print one clear message and exit with
status 2, never a traceback; anything unexpected keeps its traceback (set LAWM_DEBUG=1 to see
tracebacks for known errors too).
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from training.cli_kit import console, friendly_errors, print_table, setup_logging, write_json

app = typer.Typer(help="Train, evaluate and benchmark latent action world models.", no_args_is_help=True, pretty_exceptions_enable=False)
train_app = typer.Typer(
    help="Train one stage: encoder, lam or decoder from a config; controller on recorded episodes.", no_args_is_help=True
)
eval_app = typer.Typer(help="Evaluate a checkpoint (prints a table; --json writes the figures).", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (prints a table; --json writes the figures).", no_args_is_help=True)
data_app = typer.Typer(help="Data utilities.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")
app.add_typer(data_app, name="data")


ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="config name in configs/ or a path to a .yaml")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="also write the figures to this JSON file")]


# ----------------------------------------------------------------------------- train
OverridesArg = Annotated[list[str] | None, typer.Argument(help="dotted overrides, e.g. train.lam.steps=100")]
InitOpt = Annotated[Path | None, typer.Option(help="start from this checkpoint instead of the previous stage's")]
ResumeOpt = Annotated[bool, typer.Option(help="resume from this stage's checkpoint when it exists")]
FinetuneOpt = Annotated[
    bool, typer.Option(help="with --init: also start the trained parts from it (adapt a model to new video)")
]


def _train_stage(
    stage: str, config: str, overrides: list[str] | None, init: Path | None, resume: bool, finetune: bool, verbose: bool
) -> None:
    from training.config import load_config

    setup_logging(verbose)
    cfg = load_config(config, overrides or [])
    path = _run_with_progress(cfg, stage, resume=resume, init_from=init, finetune=finetune)
    console.print(f"checkpoint: {path}")


STAGES = {
    "encoder": "The tiny encoder, with its decoder (skipped for a frozen V-JEPA 2 encoder).",
    "lam": "The latent action model: IDM + world model + regularizer on the frozen encoder's states.",
    "decoder": "The pixel decoder on the frozen encoder's states (renders and pixel metrics only).",
}


def _stage_command(stage: str) -> None:
    """`lawm train STAGE [--config C] [OVERRIDES...]` for one stage trained from a config."""

    def command(
        config: ConfigOpt = "demo", overrides: OverridesArg = None, init: InitOpt = None, resume: ResumeOpt = True,
        finetune: FinetuneOpt = False, verbose: bool = False,
    ) -> None:
        _train_stage(stage, config, overrides, init, resume, finetune, verbose)

    command.__doc__ = STAGES[stage]
    train_app.command(stage)(friendly_errors(command))


for _stage in STAGES:
    _stage_command(_stage)


@train_app.command("controller")
@friendly_errors
def train_controller_command(
    checkpoint: Annotated[Path, typer.Option(help="the trained LAM to control")] = Path("models/demo"),
    env: Annotated[str, typer.Option(help="manipulation or navigation episodes")] = "manipulation",
    kind: Annotated[str, typer.Option(help="state (actions + state) or mlp")] = "state",
    episodes: Annotated[int, typer.Option(help="labelled episodes to record")] = 48,
    steps: Annotated[int, typer.Option(help="optimisation steps")] = 600,
    out: Annotated[Path | None, typer.Option(help="output checkpoint (default runs/controller-ENV)")] = None,
    verbose: bool = False,
) -> None:
    """The controller (real action -> latent action), trained on environment episodes and saved with its LAM."""
    setup_logging(verbose)
    _train_controller(checkpoint, env, kind, episodes, steps, out)


def _train_controller(checkpoint: Path, env: str, kind: str, episodes: int, steps: int, out: Path | None) -> None:
    from training.checkpoint import read_checkpoint_manifest, save_checkpoint
    from training.controller_training import ControllerTraining, labelled_set, train_controller
    from training.envs.episodes import record_episode
    from training.evaluation.common import load_lam
    from training.models.controller import ControllerConfig

    if env not in ("manipulation", "navigation"):
        raise typer.BadParameter(f"--env must be manipulation or navigation, got {env!r}")
    if kind not in ("state", "mlp"):
        raise typer.BadParameter(f"--kind must be state or mlp, got {kind!r}")
    model = load_lam(checkpoint)
    size = model.cfg.encoder.image_size
    data = labelled_set(model, [record_episode(env, seed, steps=8, image_size=size) for seed in range(episodes)])
    cfg = ControllerConfig(kind=kind, action_dim=data.actions.shape[-1])
    controller, metrics = train_controller(model, data, cfg, ControllerTraining(steps=steps))
    model.attach_controller(controller)
    out = out or Path("runs") / f"controller-{env}"
    source = read_checkpoint_manifest(Path(checkpoint))  # the LAM's run config and data summary travel with it
    save_checkpoint(
        out, model, components=model.saved_components(), stage="controller", step=steps, model_config=model.cfg,
        run_config=source.get("run_config"), data=source.get("data"),
        trained=["encoder", "decoder", "idm", "regularizer", "world_model", "controller"], metrics=metrics,
        extra={"controller_config": cfg.model_dump(mode="json"), "controller_env": env, "source_checkpoint": str(checkpoint)},
    )
    console.print(f"controller ({kind}, {env}): L2 {metrics['first_l2']:.3f} -> {metrics['final_l2']:.3f}; checkpoint: {out}")


def _run_with_progress(cfg: Any, stage: str, **kwargs: Any) -> Path:
    from training.loop import run_stage

    columns = [
        TextColumn(f"[bold]{stage}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    quiet = int(os.environ.get("RANK", "0")) != 0
    with Progress(*columns, console=console, disable=quiet) as progress:
        steps = getattr(cfg.train, stage).steps if hasattr(cfg.train, stage) else 0
        task = progress.add_task(stage, total=steps, info="")

        def report(step: int, total: int, metrics: dict[str, float]) -> None:
            info = f"loss {metrics['loss']:.4f}  {metrics['clips_per_s']:.1f} clips/s"
            progress.update(task, completed=step, total=total, info=info)

        return run_stage(cfg, stage, progress=report, **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- data
@data_app.command("generate")
@friendly_errors
def data_generate(
    out: Annotated[Path, typer.Argument(help="output folder")],
    clips: int = 96,
    seed: int = 0,
) -> None:
    """Write procedural in-the-wild clips (MP4) and their true motion (motion.jsonl)."""
    from training.data.generator import GeneratorConfig, generate_corpus

    paths = generate_corpus(out, clips, GeneratorConfig(), seed=seed)
    console.print(f"wrote {len(paths)} clips and {out / 'motion.jsonl'}")


@data_app.command("episodes")
@friendly_errors
def data_episodes(
    out: Annotated[Path, typer.Argument(help="output folder")],
    env: Annotated[str, typer.Option(help="navigation or manipulation")] = "navigation",
    episodes: int = 48,
    steps: int = 16,
    seed: int = 7_000_000,
    size: int = 128,
) -> None:
    """Write unlabelled environment episodes as videos, to mix into LAM training (`data.sources`).

    The default seed keeps them apart from the episodes the planning evaluation records."""
    from training.envs.episodes import ENVS, write_unlabelled_videos

    if env not in ENVS:
        raise typer.BadParameter(f"--env must be one of {sorted(ENVS)}, got {env!r}")
    paths = write_unlabelled_videos(out, env, episodes, steps, seed, image_size=size)
    console.print(f"wrote {len(paths)} {env} videos to {out}")


# ----------------------------------------------------------------------------- eval
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", help="checkpoint or bundled model directory")]


def _evaluate(protocol: str, checkpoint: Path, json_path: Path | None, title: str, **kwargs: Any) -> None:
    from training.evaluation.common import load_lam
    from training.evaluation.leak import idm_prediction_error, scene_cut_test
    from training.evaluation.transfer import cycle_consistency

    run = {"idm": idm_prediction_error, "leak": scene_cut_test, "transfer": cycle_consistency}[protocol]
    result = run(load_lam(checkpoint), **kwargs)
    result["command"] = f"lawm eval {protocol} --checkpoint {checkpoint}" + "".join(
        f" --{k} {getattr(v, 'source', v)}" for k, v in kwargs.items()
    )
    print_table(title, result["rows"])
    write_json(json_path, result)


@eval_app.command("idm")
@friendly_errors
def eval_idm(
    checkpoint: CheckpointOpt = Path("models/demo"),
    unconstrained: Annotated[Path | None, typer.Option(help="a LAM trained with model.regularizer.kind=none on the same encoder")] = None,
    json_path: JsonOpt = None,
) -> None:
    """One-step prediction error on held-out generated and real clips: IDM latents vs another clip's
    latents (the headline), zero latents and the unconstrained LAM."""
    from training.evaluation.common import load_lam

    extra = {"unconstrained": load_lam(unconstrained)} if unconstrained else {}
    _evaluate("idm", checkpoint, json_path, "IDM one-step prediction error (held-out clips, representation L1)", **extra)


@eval_app.command("renders")
@friendly_errors
def eval_renders(
    checkpoint: CheckpointOpt = Path("models/demo"),
    strip: Annotated[Path | None, typer.Option(help="also write a PNG strip: real / autoencoded / one-step / transfer")] = None,
    json_path: JsonOpt = None,
) -> None:
    """PSNR / SSIM of decoded frames on held-out real clips: autoencoded, one-step predicted and
    transferred, against holding the previous frame and the clip's mean frame."""
    from training.evaluation.common import load_lam
    from training.evaluation.renders import render_quality

    result = render_quality(load_lam(checkpoint), strip=strip)
    result["command"] = f"lawm eval renders --checkpoint {checkpoint}" + (f" --strip {strip}" if strip else "")
    if strip is not None:
        result["images"] = [strip.as_posix()]
    print_table(result["title"], result["rows"])
    console.print(result["verdict"], highlight=False)
    write_json(json_path, result)


@eval_app.command("leak")
@friendly_errors
def eval_leak(checkpoint: CheckpointOpt = Path("models/demo"), json_path: JsonOpt = None) -> None:
    """Scene-cut test (paper Table 1): ends of two clips swapped; does the error spike at the cut?"""
    _evaluate("leak", checkpoint, json_path, "Scene-cut leak test (error at the cut step, representation L1)")


@eval_app.command("transfer")
@friendly_errors
def eval_transfer(checkpoint: CheckpointOpt = Path("models/demo"), json_path: JsonOpt = None) -> None:
    """Cycle-consistent transfer between held-out clips (paper Table 2), in representation space and pixels."""
    _evaluate("transfer", checkpoint, json_path, "Cycle-consistent transfer (held-out real clips)")


def _planner_settings(planner: list[str] | None) -> dict[str, Any]:
    import yaml

    settings = {}
    for item in planner or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--planner takes KEY=VALUE, got {item!r}")
        settings[key] = yaml.safe_load(value)
    return settings


PlannerOpt = Annotated[list[str] | None, typer.Option(help="planner setting KEY=VALUE over the preset, e.g. init_std=0.1 (repeatable)")]
EpisodesOpt = Annotated[int | None, typer.Option(help="held-out episodes (default: 32 navigation, 16 manipulation)")]


@eval_app.command("planning")
@friendly_errors
def eval_planning(
    env: Annotated[str, typer.Option(help="manipulation (DROID protocol) or navigation (RECON protocol)")] = "manipulation",
    checkpoint: CheckpointOpt = Path("models/demo"),
    episodes: EpisodesOpt = None,
    seed: int = 0,
    oracles: Annotated[bool, typer.Option(help="also plan with the true simulator (pose, pixel and encoder-state costs)")] = True,
    planner: PlannerOpt = None,
    context: Annotated[list[str] | None, typer.Option(help="world-model context: full or one-frame; repeat to compare both in one run")] = None,
    json_path: JsonOpt = None,
) -> None:
    """Plan on recorded episodes: latent-action WM + controller vs action-labelled WM, oracles over the
    true simulator, prior mean, random straight line, random and zero; normalised scores."""
    from training.evaluation.common import load_lam
    from training.evaluation.planning import (
        DEFAULT_EPISODES,
        PRESET_FOR_ENV,
        PlanningSuite,
        run_planning_suite,
    )

    if env not in PRESET_FOR_ENV:
        raise typer.BadParameter(f"--env must be one of {sorted(PRESET_FOR_ENV)}")
    episodes = episodes or DEFAULT_EPISODES[env]
    settings = _planner_settings(planner)
    try:
        result = run_planning_suite(
            load_lam(checkpoint), env, PlanningSuite(eval_episodes=episodes, seed=seed),
            contexts=tuple(context) if context else None, oracles=oracles, **settings,
        )
    except ValueError as e:  # a planner setting out of range: PlannerConfig names the field
        raise typer.BadParameter(str(e)) from None
    result["command"] = f"lawm eval planning --env {env} --checkpoint {checkpoint} --episodes {episodes} --seed {seed}" + (
        "" if oracles else " --no-oracles"
    ) + "".join(f" --planner {item}" for item in planner or []) + "".join(f" --context {c}" for c in context or [])
    print_table(result["title"], result["rows"])
    write_json(json_path, result)


@eval_app.command("oracle")
@friendly_errors
def eval_oracle(
    env: Annotated[str, typer.Option(help="manipulation (DROID protocol) or navigation (RECON protocol)")] = "navigation",
    checkpoint: CheckpointOpt = Path("models/demo"),
    episodes: EpisodesOpt = None,
    seed: int = 0,
    planner: PlannerOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Only the oracle rows (true simulator; pose, pixel and this checkpoint's encoder-state costs) and
    random, with normalised scores: how good a planning cost the encoder is, with nothing trained on it."""
    from training.evaluation.common import load_lam
    from training.evaluation.oracle import model_encoder
    from training.evaluation.planning import DEFAULT_EPISODES, PRESET_FOR_ENV, oracle_rows

    if env not in PRESET_FOR_ENV:
        raise typer.BadParameter(f"--env must be one of {sorted(PRESET_FOR_ENV)}")
    episodes = episodes or DEFAULT_EPISODES[env]
    model = load_lam(checkpoint)
    try:
        result = oracle_rows(env, model_encoder(model), episodes, seed=seed, image_size=model.cfg.encoder.image_size,
                             **_planner_settings(planner))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    result["checkpoint"] = str(checkpoint)
    result["command"] = f"lawm eval oracle --env {env} --checkpoint {checkpoint} --episodes {episodes} --seed {seed}" + "".join(
        f" --planner {item}" for item in planner or []
    )
    print_table(result["title"], result["rows"])
    write_json(json_path, result)


@eval_app.command("probe")
@friendly_errors
def eval_probe(
    checkpoint: CheckpointOpt = Path("models/demo"),
    clips: Annotated[int, typer.Option(help="held-out generated clips")] = 96,
    episodes: Annotated[int, typer.Option(help="navigation and manipulation episodes (16 actions each)")] = 48,
    seed: int = 0,
    url: Annotated[str | None, typer.Option(help="also probe latents from a running service, e.g. http://127.0.0.1:8000")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="LAWM_API_KEY", help="the service's API key, if it asks for one")] = None,
    json_path: JsonOpt = None,
) -> None:
    """Held-out ridge probe R² from latents (and reference features) to the true motion: generated camera
    motion, navigation actions, manipulation displacement + gripper."""
    from training.evaluation.common import load_lam
    from training.evaluation.probe import probe_table, service_latents

    model = load_lam(checkpoint)
    served = service_latents(url, fps=4.0, api_key=api_key) if url else None
    result = probe_table(model, clips=clips, episodes=episodes, seed=seed, served=served)
    result["command"] = f"lawm eval probe --checkpoint {checkpoint} --clips {clips} --episodes {episodes} --seed {seed}" + (
        f" --url {url}" if url else ""
    )
    print_table(result["title"], result["rows"])
    for table in result["tables"]:
        print_table(table["title"], table["rows"])
    write_json(json_path, result)


@eval_app.command("motion-transfer")
@friendly_errors
def eval_motion_transfer(
    checkpoint: CheckpointOpt = Path("models/demo"),
    clips: Annotated[int, typer.Option(help="held-out generated clips (half fit the probe, half form pairs)")] = 96,
    json_path: JsonOpt = None,
) -> None:
    """A's latents on B's first state: does the decoded render (and its re-inferred latents) move like A?"""
    from training.evaluation.common import load_lam
    from training.evaluation.transfer import motion_transfer

    result = motion_transfer(load_lam(checkpoint), clips=clips)
    result["command"] = f"lawm eval motion-transfer --checkpoint {checkpoint} --clips {clips}"
    print_table(result["title"], result["rows"])
    write_json(json_path, result)


@eval_app.command("sweep")
@friendly_errors
def eval_sweep(
    runs: Annotated[Path, typer.Option(help="folder holding the sweep's runs (sweep-KIND-LEVEL/lam/checkpoint)")] = Path("runs"),
    episodes: Annotated[int, typer.Option(help="held-out navigation episodes per variant")] = 8,
    seed: int = 0,
    json_path: JsonOpt = None,
) -> None:
    """Evaluate every trained sweep variant by protocols 1-5 into one table."""
    from training.evaluation.planning import PlanningSuite
    from training.evaluation.sweep import capacity_table, is_finished, training_curves
    from training.sweep import variants

    checkpoints = [runs / f"sweep-{k}-{lvl}" / "lam" / "checkpoint" for k, lvl in variants()]
    found = [c for c in checkpoints if is_finished(c)]
    if not found:
        raise FileNotFoundError(f"no finished sweep checkpoints under {runs}: run `lawm sweep --config demo` first")
    missing = [c.parent.parent.name for c in checkpoints if c not in found]
    command = f"lawm eval sweep --runs {runs} --episodes {episodes} --seed {seed}"

    def save(table: dict[str, Any], partial: bool = True) -> None:
        notes = [f"{len(found)} of {len(checkpoints)} variants trained; missing: {', '.join(missing)}"] if missing else []
        if partial:
            notes.append(f"partial: {len(table['rows'])} of {len(found)} trained variants evaluated so far")
        payload = {**table, "curves": [training_curves(found)], "command": command}
        if notes:
            payload["verdict"] = "; ".join(notes)
        write_json(json_path, payload)

    result = capacity_table(found, PlanningSuite(eval_episodes=episodes, seed=seed), on_row=save)
    print_table(result["title"], result["rows"])
    save(result, partial=False)


# ----------------------------------------------------------------------------- bench
@bench_app.command("train")
@friendly_errors
def bench_train(
    config: ConfigOpt = "demo",
    steps: int = 5,
    repeats: int = 5,
    json_path: JsonOpt = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted overrides")] = None,
) -> None:
    """Clips/s and step time of a config's LAM and encoder stages; decoding vs compute share."""
    from training.bench import bench_training
    from training.config import load_config

    result = bench_training(load_config(config, overrides or []), steps=steps, repeats=repeats)
    print_table(f"Training throughput ({result['machine']})", result["rows"])
    write_json(json_path, result)


@bench_app.command("plan")
@friendly_errors
def bench_plan_command(
    checkpoint: Annotated[Path, typer.Option(help="a model with a controller (lawm train controller)")],
    env: Annotated[str, typer.Option(help="manipulation (DROID preset) or navigation (RECON preset)")] = "manipulation",
    plans: int = 3,
    context: Annotated[str | None, typer.Option(help="world-model context: full or one-frame (default: the preset's)")] = None,
    json_path: JsonOpt = None,
) -> None:
    """Time per plan, split into encoder / controller / world model; planner vs offline world-model throughput."""
    from training.bench_plan import bench_plan
    from training.evaluation.common import load_lam
    from training.planning import PRESET_FOR_ENV

    if env not in PRESET_FOR_ENV:
        raise typer.BadParameter(f"--env must be one of {sorted(PRESET_FOR_ENV)}")
    try:
        result = bench_plan(load_lam(checkpoint), env, plans=plans, context=context)
    except ValueError as e:  # an unknown context: PlannerConfig names it
        raise typer.BadParameter(str(e)) from None
    result["command"] = f"lawm bench plan --checkpoint {checkpoint} --env {env} --plans {plans}" + (
        f" --context {context}" if context else ""
    )
    print_table(result["title"], result["rows"])
    write_json(json_path, result)


@bench_app.command("decode")
@friendly_errors
def bench_decode_command(
    video: Annotated[
        Path | None, typer.Option(help="a video file (default: the bikes sample, 10 s of 640x272 H.264)")
    ] = None,
    fps: Annotated[float, typer.Option(help="sampling rate (the model's fps)")] = 4.0,
    size: Annotated[int, typer.Option(help="square crop size (the model's image size)")] = 128,
    repeats: int = 5,
    json_path: JsonOpt = None,
) -> None:
    """CPU per uploaded video in decode_video_bytes: every frame decoded (reference) vs only the frames needed."""
    from training.bench_decode import bench_decode

    result = bench_decode(video, fps=fps, size=size, repeats=repeats)
    print_table(result["title"], result["rows"])
    console.print(f"{result['verdict']}; {result['cpu']}, load {result['load_average']}")
    write_json(json_path, result)


# ----------------------------------------------------------------------------- demo model
@app.command("build-demo")
@friendly_errors
def build_demo(
    out: Annotated[Path, typer.Option(help="where to write the bundled model")] = Path("models/demo"),
    config: ConfigOpt = "demo",
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted overrides")] = None,
    reuse_encoder: Annotated[bool, typer.Option(
        help="continue (or keep) runs/<name>/encoder/checkpoint when it was trained under this same config")] = False,
) -> None:
    """Train every stage of a config from scratch, fine-tune with environment video, train the
    navigation controller, evaluate, and write the bundled model (training/bundle.py has the recipe)."""
    from training.bundle import (
        BUNDLED_CONTROLLER_ENV,
        ENV_FINETUNE,
        ENV_VIDEO,
        check_reusable_encoder,
        write_bundle,
    )
    from training.config import load_config
    from training.envs.episodes import write_unlabelled_videos
    from training.loop import stage_dir

    setup_logging(False)
    cfg = load_config(config, overrides or [])
    if reuse_encoder:
        check_reusable_encoder(cfg, stage_dir(cfg, "encoder") / "checkpoint")
    # From scratch (never resume a run made under another config), unless the check above passed.
    _run_with_progress(cfg, "encoder", resume=reuse_encoder)
    _run_with_progress(cfg, "lam", resume=False)
    for env, (folder, seed) in ENV_VIDEO.items():
        write_unlabelled_videos(folder, env, 48, 16, seed, image_size=cfg.model.encoder.image_size)
    env_cfg = load_config(config, [*(overrides or []), *ENV_FINETUNE, f"name={cfg.name}-env"])
    adapted = _run_with_progress(env_cfg, "lam", resume=False, init_from=stage_dir(cfg, "lam") / "checkpoint", finetune=True)
    controlled = Path(cfg.run_dir) / f"{cfg.name}-controller-{BUNDLED_CONTROLLER_ENV}"
    _train_controller(adapted, BUNDLED_CONTROLLER_ENV, "state", 48, 600, controlled)
    logs = {
        "encoder": stage_dir(cfg, "encoder") / "metrics.jsonl",
        "lam": stage_dir(cfg, "lam") / "metrics.jsonl",
        "lam-env": stage_dir(env_cfg, "lam") / "metrics.jsonl",
    }
    rebuild = " ".join([f"lawm build-demo --config {config} --out {out}", *(shlex.quote(o) for o in overrides or [])])
    path = write_bundle(controlled, out, logs, rebuild=rebuild)
    console.print(f"bundled model: {path}")


@app.command("bundle")
@friendly_errors
def bundle(
    source: Annotated[Path, typer.Argument(help="checkpoint to bundle (with its controller, if any)")],
    out: Annotated[Path, typer.Option(help="where to write the bundled model")] = Path("models/demo"),
    log: Annotated[list[str] | None, typer.Option(help="NAME=metrics.jsonl to keep beside it (repeatable)")] = None,
) -> None:
    """Write a checkpoint as a bundled model: fp16 weights, evaluation figures, training logs."""
    from training.bundle import write_bundle

    logs = {name: Path(path) for name, _, path in (item.partition("=") for item in log or [])}
    path = write_bundle(source, out, logs, rebuild=f"lawm bundle {source} --out {out}")
    console.print(f"bundled model: {path}")


@app.command()
@friendly_errors
def sweep(
    config: ConfigOpt = "demo",
    encoder: Annotated[Path, typer.Option(help="frozen encoder checkpoint every variant shares")] = Path("runs/demo/encoder/checkpoint"),
    only: Annotated[list[str] | None, typer.Option(help="kind:level, e.g. sparse:low (repeatable)")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted overrides every variant shares, e.g. train.lam.steps=300")] = None,
) -> None:
    """Train the capacity sweep's LAMs (sparse/noisy/discrete at low/mid/high) on one frozen encoder;
    `lawm eval sweep` then evaluates them."""
    from training.config import load_config
    from training.sweep import variant_overrides, variants

    chosen = [tuple(v.split(":", 1)) for v in only] if only else variants()
    for kind, level in chosen:
        cfg = load_config(config, [*(overrides or []), *variant_overrides(kind, level)])
        path = _run_with_progress(cfg, "lam", init_from=encoder)
        console.print(f"{kind}:{level} -> {path}")


@app.command()
def docs(folder: Annotated[Path, typer.Option(help="docs folder")] = Path("docs")) -> None:
    """Regenerate docs/results.md and docs/benchmarks.md from their committed JSON."""
    from training.reports import write_docs

    for path in write_docs(folder):
        console.print(f"wrote {path}")


@app.command()
@friendly_errors
def info(checkpoint: Annotated[Path, typer.Argument(help="checkpoint directory")]) -> None:
    """Verify a checkpoint and print its manifest summary."""
    from training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    m = ckpt.manifest
    rows = [{"field": k, "value": json.dumps(m.get(k))} for k in ("stage", "step", "trained", "weights_dtype", "git_commit", "metrics")]
    print_table(f"{checkpoint} (all {len(m['files'])} files verified)", rows)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
