"""`lawm bench precision`: the planner's components in bf16 vs fp32 on the torch runtime, and the choice.

One run, on one exported repository version loaded twice on the torch runtime:

1. The choice (`training.precision.choose_precisions`): RECON-preset plans (DROID with `--env
   manipulation`) of episodes recorded in the simulator, the world model's components lowered to
   bf16 first, then the controller, each kept only where every problem's plan passes `plan_parity`
   against the all-fp32 plan (first action within 1% of the action box, cost within 1%).
2. The speed: the same problems planned at fp32 and at the chosen precisions (all planner components
   in bf16 where nothing passed, to show what it would have bought), alternating within each repeat
   and the order reversed every problem, so drifting load falls on both alike; medians and the ratio.

The CPU's bf16 support (AMX, AVX-512 BF16 or none) is detected and named: the bar of 2x applies where
AMX is present; AVX-512 BF16 alone offers less, and without either bf16 is emulated through fp32.
`--record` writes the choice beside the version's manifest (`exporters.precision_choice`), where the
server reads it under LAWM_PRECISION=auto.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from exporters.bench import bench_repository, machine, repository_source
from exporters.precision_choice import PLANNER_PARTS, expand_parts
from exporters.runtime import LoadedModel, load_model, planner_step
from training.precision import COST_RTOL, FIRST_ACTION_TOL, cpu_bf16_support, plan_parity

AMX_BAR = 2.0  # bf16 vs fp32 plan time, where the CPU has AMX tiles


SEED0 = 1001  # episode seed of the first problem


class Problems:
    """Start and goal states of recorded episodes, planned on loaded models by precision assignment."""

    def __init__(self, repo: Path, name: str, version: int, env: str, count: int, overrides: dict[str, Any]) -> None:
        from exporters.errors import ExportError
        from exporters.repository import CHECKPOINT_DIR, read_version_manifest, version_dir
        from exporters.torch_runtime import build_model
        from training.envs.episodes import record_episode
        from training.evaluation.planning import encode_observation
        from training.planning import PRESET_FOR_ENV, PRESETS, get_cost, preset

        self.repo, self.name, self.version = repo, name, version
        folder = version_dir(repo, name, version)
        manifest = read_version_manifest(folder)
        self.components = list(manifest["components"])
        if "samples" in overrides and "elites" not in overrides:  # fewer samples keep at most that many elites
            overrides = {**overrides, "elites": min(PRESETS[PRESET_FOR_ENV[env]].elites, overrides["samples"])}
        self.cfg = preset(PRESET_FOR_ENV[env], **overrides)
        action_dim = manifest.get("controller_action_dim")
        if "controller" not in self.components or action_dim is None:
            raise ExportError(f"{name} v{version} has no controller: export a checkpoint with one to plan with it")
        if action_dim != self.cfg.action_dim:
            raise ExportError(
                f"{name} v{version}'s controller takes {action_dim}-d actions but the {env} preset plans "
                f"{self.cfg.action_dim}-d ones: pick the --env its controller was trained in"
            )
        self.cost = get_cost(self.cfg.cost)
        model, _ = build_model(folder / CHECKPOINT_DIR)  # the encoder, for the states
        self.states: list[tuple[torch.Tensor, torch.Tensor]] = []
        for seed in range(SEED0, SEED0 + count):
            episode = record_episode(env, seed, steps=self.cfg.horizon, image_size=model.cfg.encoder.image_size)
            start = encode_observation(model, episode.action_frames[0])
            goal = encode_observation(model, episode.action_frames[self.cfg.horizon])
            self.states.append((start, goal))
        self._models: dict[tuple[tuple[str, str], ...], LoadedModel] = {}

    def loaded(self, parts: dict[str, str]) -> bool:
        return tuple(sorted(parts.items())) in self._models

    def model(self, parts: dict[str, str]) -> LoadedModel:
        """The repository version on torch with `parts` (world_model / controller -> precision), loaded once."""
        key = tuple(sorted(parts.items()))
        if key not in self._models:
            precision = expand_parts(parts, self.components) if "bf16" in parts.values() else None
            self._models[key] = load_model(self.repo, self.name, self.version, runtime="torch", precision=precision)
        return self._models[key]

    def plan(self, parts: dict[str, str], problem: int) -> Any:
        from training.planning import plan

        start, goal = self.states[problem]
        return plan(planner_step(self.model(parts), self.cfg.context), self.cost, start, goal, self.cfg)


def _describe(parts: dict[str, str]) -> str:
    return ", ".join(f"{part} {p}" for part, p in parts.items())


def time_plans(
    problems: Problems, variants: dict[str, dict[str, str]], repeats: int, say: Callable[[str], None]
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Seconds per plan and the plans (of the first repeat) of each variant, per problem, the
    variants alternating and their order reversed every problem. A variant whose model has not
    planned yet is warmed up first (first-call allocations), untimed."""
    for key, parts in variants.items():
        if not problems.loaded(parts):
            say(f"warm-up plan: {key}")
            problems.plan(parts, 0)
    keys = list(variants)
    times: dict[str, list[float]] = {k: [] for k in keys}
    plans: dict[str, list[Any]] = {k: [] for k in keys}
    for r in range(repeats):
        for i in range(len(problems.states)):
            for key in keys if (r * len(problems.states) + i) % 2 else keys[::-1]:
                say(f"timing: repeat {r + 1}/{repeats}, problem {i + 1}/{len(problems.states)}, {key}")
                t0 = time.perf_counter()
                result = problems.plan(variants[key], i)
                times[key].append(time.perf_counter() - t0)
                if not r:
                    plans[key].append(result)
    return times, plans


def bench_precision(
    repo: Path | None = None,
    checkpoint: Path = Path("models/demo"),
    name: str = "demo",
    version: int | None = None,
    env: str = "navigation",
    plans: int = 3,
    repeats: int = 1,
    threads: int | None = None,
    record: bool = False,
    planner: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Plan-parity choice and bf16 vs fp32 plan time; `planner` overrides the preset's settings
    (e.g. {"samples": 8, "iterations": 1} for a quick check). `record` needs `repo`."""
    from exporters.errors import ExportError
    from exporters.precision_choice import write_record
    from exporters.repository import resolve_version
    from training.planning import PRESET_FOR_ENV
    from training.precision import choose_precisions

    if plans < 1 or repeats < 1:
        raise ExportError(f"plans and repeats must be >= 1, got plans={plans}, repeats={repeats}")
    if record and repo is None:
        raise ExportError("--record writes the choice beside a repository version: give that repository with --repo")
    if env not in PRESET_FOR_ENV:
        raise ExportError(f"env must be one of {sorted(PRESET_FOR_ENV)}, got {env!r}")
    say = progress or (lambda msg: None)
    if threads is not None:
        torch.set_num_threads(threads)
    overrides = dict(planner or {})
    command = (
        f"lawm bench precision --env {env} --plans {plans} --repeats {repeats}"
        + "".join(f" --{k} {v}" for k, v in overrides.items()) + (f" --threads {threads}" if threads else "")
        + (" --record" if record else "")
    )
    load_before = os.getloadavg()
    with bench_repository(checkpoint, repo, name, command, say) as (repo, command):
        version = int(resolve_version(repo, name, version).name)
        say(f"recording {plans} {env} episodes and encoding their start and goal")
        problems = Problems(repo, name, version, env, plans, overrides)
        parts = list(PLANNER_PARTS)
        fp32 = problems.model(dict.fromkeys(parts, "fp32"))
        low, high = problems.cfg.action_low, problems.cfg.action_high

        def plan_with(assignment: dict[str, str], problem: int) -> Any:
            say(f"choice: problem {problem + 1}/{plans} with {_describe(assignment)}")
            return problems.plan(assignment, problem)

        choice = choose_precisions(plan_with, list(range(plans)), low, high, components=parts)
        chosen = choice.precisions
        timed = chosen if "bf16" in chosen.values() else dict.fromkeys(parts, "bf16")
        times, planned = time_plans(problems, {"fp32": dict.fromkeys(parts, "fp32"), "bf16": timed}, repeats, say)
        source = repository_source(fp32)
        check = _check_json(problems, env, plans, choice.to_json())
        recorded = str(write_record(resolve_version(repo, name, version), chosen, list(fp32.components), check)) if record else None
    load_after = os.getloadavg()
    return _report(problems, env, plans, repeats, chosen, timed, choice.trials, times, planned, source, command,
                   recorded, load_before, load_after)


def _check_json(problems: Problems, env: str, plans: int, choice: dict[str, Any]) -> dict[str, Any]:
    """What the record keeps of the check: the problems, the planner, the tolerances and every trial."""
    cfg = problems.cfg
    return {
        "env": env, "problems": plans, "episode_seeds": list(range(SEED0, SEED0 + plans)),
        "planner": {"method": cfg.method, "samples": cfg.samples, "horizon": cfg.horizon, "iterations": cfg.iterations,
                    "context": cfg.context, "seed": cfg.seed},
        "first_action_tol": FIRST_ACTION_TOL, "cost_rtol": COST_RTOL,
        "cpu_bf16": cpu_bf16_support().kind, "machine": machine(), "torch": torch.__version__,
        "trials": choice["trials"],
    }


def _bar(ratio: float) -> str:
    kind = cpu_bf16_support().kind
    if kind == "amx":
        return f"bar >= {AMX_BAR:g}x where AMX is present: {'met' if ratio >= AMX_BAR else 'missed'}"
    if kind == "avx512_bf16":
        return (f"bar >= {AMX_BAR:g}x where AMX is present: not applicable, this CPU has avx512_bf16 but no AMX "
                f"({'would be met' if ratio >= AMX_BAR else 'would be missed'})")
    return f"bar >= {AMX_BAR:g}x where AMX is present: not applicable, this CPU has no native bf16 (emulated through fp32)"


def _report(
    problems: Problems, env: str, plans: int, repeats: int, chosen: dict[str, str], timed: dict[str, str],
    trials: list[dict[str, Any]], times: dict[str, list[float]], planned: dict[str, list[Any]], source: str,
    command: str, recorded: str | None, load_before: tuple[float, ...], load_after: tuple[float, ...],
) -> dict[str, Any]:
    cfg = problems.cfg
    low, high = cfg.action_low, cfg.action_high
    checks = [plan_parity(a, b, low, high) for a, b in zip(planned["fp32"], planned["bf16"], strict=True)]
    per_problem = [
        {"problem": i + 1, "episode_seed": SEED0 + i, "fp32_s": times["fp32"][i], "bf16_s": times["bf16"][i],
         "fp32_vs_bf16": times["fp32"][i] / times["bf16"][i],
         "first_action_err": c.first_action_err, "cost_rel_err": c.cost_rel_err, "passed": c.passed,
         "fp32_cost": float(planned["fp32"][i].cost), "bf16_cost": float(planned["bf16"][i].cost)}
        for i, c in enumerate(checks)
    ]
    fp32_s, bf16_s = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    # the median of the paired ratios (each pair ran back to back): steadier than a ratio of medians
    # where other work comes and goes on the machine
    ratio = statistics.median(f / b for f, b in zip(times["fp32"], times["bf16"], strict=True))
    passed = all(c.passed for c in checks)
    kind = cpu_bf16_support().kind
    lowered = [p for p, v in chosen.items() if v == "bf16"]
    chosen_text = f"kept in bf16: {', '.join(lowered)}" if lowered else "nothing kept in bf16 (timed: every part in bf16)"
    verdict = (
        f"bf16 planning x{ratio:.2f} vs fp32 ({fp32_s * 1e3:.0f} -> {bf16_s * 1e3:.0f} ms per plan, {_describe(timed)}), "
        f"parity {'passed' if passed else f'failed on {sum(not c.passed for c in checks)} of'} {len(checks)} "
        f"problem{'s' if len(checks) != 1 else ''} (worst first action {max(c.first_action_err for c in checks):.2g} of "
        f"the range, worst cost {max(c.cost_rel_err for c in checks):.2%}); "
        f"{chosen_text}; {_bar(ratio)}"
    )
    rows = [{
        "preset": {"navigation": "recon", "manipulation": "droid"}[env], "samples": cfg.samples, "horizon": cfg.horizon,
        "iterations": cfg.iterations, "context": cfg.context, "cpu_bf16": kind, "bf16_parts": _describe(timed),
        "fp32_ms": fp32_s * 1e3, "bf16_ms": bf16_s * 1e3, "fp32_vs_bf16": ratio, "ratio_of_medians": fp32_s / bf16_s,
        "parity": "passed" if passed else "failed",
    }]
    trial_rows = [
        {"precisions": _describe(t["precisions"]), "passed": t["passed"], "worst_first_action_err": t["first_action_err"],
         "worst_cost_rel_err": t["cost_rel_err"]}
        for t in trials
    ]
    report: dict[str, Any] = {
        "title": "bf16 planner components vs fp32 (torch runtime, CPU)",
        "machine": machine(),
        "command": command,
        "checkpoint": source,
        "statistic": (
            f"median seconds per plan over {plans} problems x {repeats} repeat(s), timed after the choice's plans warmed "
            "both models up, fp32 and bf16 alternating (order reversed every problem), each plan a full planner_step plan on the torch runtime "
            "(numpy round trip per component call); fp32_vs_bf16 = median over problems and repeats of the paired ratio fp32 / bf16 "
            "(each pair back to back), ratio_of_medians = fp32_ms / bf16_ms. Parity per problem: the bf16 plan "
            f"against the fp32 plan of the same start, goal and seed: first action within {FIRST_ACTION_TOL:g} of each "
            f"action dimension's range, cost within {COST_RTOL:g} relative. bf16 = torch autocast over fp32 weights"
        ),
        "verdict": verdict,
        "load_average": f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (1-min)",
        "cpu_bf16": kind,
        "chosen": chosen,
        "recorded": recorded,
        "rows": rows,
        "tables": [
            {"title": f"Plan parity per problem ({_describe(timed)} vs fp32)", "rows": per_problem},
            {"title": "Choice: parts lowered one at a time, kept where every plan passes", "rows": trial_rows},
        ],
    }
    return report
