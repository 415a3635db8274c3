"""The capacity sweep's table: every variant evaluated by protocols 1-5 (PAPER-NOTES §3.1-3.6).

One row per LAM: its regularizer and coefficient, (1) IDM one-step error vs the zero latent and
vs another clip's latents, (2) the scene-cut ratio, (3) the cycle-consistency ratio, (4) controller
vs IDM rollouts and (5) planning error on the navigation world (RECON protocol); when the
unconstrained reference was trained, also each IDM error relative to its. The action-labelled,
random and zero-action planners do not depend on the LAM (the encoder is shared), so they run once,
on the first variant, and fill the reference rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.checkpoint import read_checkpoint_manifest
from training.evaluation.common import load_lam
from training.evaluation.leak import idm_prediction_error, scene_cut_test
from training.evaluation.planning import PlanningSuite, run_planning_suite
from training.evaluation.transfer import cycle_consistency


def _mean_row(result: dict[str, Any]) -> dict[str, Any]:
    return result["rows"][-1]  # every protocol appends its mean row last


def variant_row(checkpoint: Path, suite: PlanningSuite, *, baselines: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the variant's row, the reference planners' rows when `baselines`)."""
    model = load_lam(checkpoint)
    reg = model.cfg.regularizer
    coefficient = {"sparse": f"l1={reg.l1:g}", "noisy": f"beta={reg.beta:g}", "discrete": f"|C|={reg.codebook_size}"}
    idm, leak, transfer = _mean_row(idm_prediction_error(model)), _mean_row(scene_cut_test(model)), _mean_row(cycle_consistency(model))
    planning = run_planning_suite(model, "navigation", suite, baselines=baselines)
    lam = planning["rows"][0]
    row = {
        "variant": _variant_name(checkpoint),
        "regularizer": f"{reg.kind} {coefficient.get(reg.kind, '')}".strip(),
        "idm_l1": idm["idm_l1"],
        "zero_l1": idm["zero_l1"],
        "reduction": idm["reduction"],
        "reduction_vs_shuffled": idm["reduction_vs_shuffled"],  # the clip-specific part of what the latent carries
        # spread of the latents over the last training batch: near 0 means the IDM collapsed to one latent
        "z_batch_std": (read_checkpoint_manifest(checkpoint).get("metrics") or {}).get("z_batch_std"),
        "cut_ratio": leak["ratio"],
        "transfer_ratio": transfer["ratio_l1"],
        "rollout_ratio": planning["rollouts"]["ratio"],
        "nav_ate": lam["ate"],
        "nav_rpe": lam["rpe"],
    }
    return row, planning["rows"][1:]


def training_curves(checkpoints: list[Path], key: str = "z_batch_std", every: int = 10) -> dict[str, Any]:
    """One logged training metric per variant over its steps, from each run's `metrics.jsonl` (beside
    its checkpoint): the latents' batch spread shows when and how far each IDM collapsed."""
    series: dict[str, list[list[float]]] = {}
    for checkpoint in checkpoints:
        log = Path(checkpoint).parent / "metrics.jsonl"
        if not log.exists():
            continue
        points = []
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if key in entry and entry["step"] % every == 0:
                points.append([entry["step"], entry[key]])
        if points:
            series[_variant_name(checkpoint)] = points
    return {"title": f"{key} while training", "x": "step", "y": key, "log_y": True, "series": series}


def is_finished(checkpoint: Path) -> bool:
    """Whether a LAM run's checkpoint exists and reached the steps its run config asked for (a run
    still training has a checkpoint and manifest too)."""
    if not (Path(checkpoint) / "manifest.json").exists():
        return False
    manifest = read_checkpoint_manifest(checkpoint)
    steps = ((manifest.get("run_config") or {}).get("train") or {}).get("lam", {}).get("steps")
    return steps is None or manifest["step"] >= steps


def _variant_name(checkpoint: Path) -> str:
    return Path(checkpoint).parent.parent.name.removeprefix("sweep-")


def capacity_table(
    checkpoints: list[Path], suite: PlanningSuite, on_row: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """The table over `checkpoints`; `on_row` gets the table so far after each variant (an hour-long
    evaluation keeps what it measured if it is stopped)."""
    rows: list[dict[str, Any]] = []
    reference: list[dict[str, Any]] = []
    for i, checkpoint in enumerate(checkpoints):
        row, ref = variant_row(checkpoint, suite, baselines=i == 0)
        rows.append(row)
        reference = reference or ref
        if on_row is not None and i + 1 < len(checkpoints):
            on_row(_table(rows, reference, suite))
    return _table(rows, reference, suite)


def _table(rows: list[dict[str, Any]], reference: list[dict[str, Any]], suite: PlanningSuite) -> dict[str, Any]:
    rows = [dict(r) for r in rows]  # the partial tables already handed out stay as they were
    unconstrained = next((r for r in rows if r["regularizer"] == "none"), None)
    if unconstrained is not None:  # protocol 1's upper reference: how far each regularizer is from it
        for row in rows:
            row["idm_vs_unconstrained"] = row["idm_l1"] / unconstrained["idm_l1"]
    return {
        "title": "Capacity sweep: sparse, noisy and discrete latents at low / mid / high capacity",
        "protocol": "each LAM trained on the same frozen encoder and data; (1) one-step L1 with IDM vs zero latents and "
        "(2) scene-cut ratio and (3) cycle-consistency ratio on held-out real clips; (4) controller/IDM rollout L1 "
        f"ratio and (5) planning on {suite.eval_episodes} held-out navigation episodes (RECON protocol, ATE/RPE)",
        "rows": rows,
        "tables": [{"title": "Reference planners on the same navigation episodes (they do not depend on the LAM)", "rows": reference}],
        "suite": {"train_episodes": suite.train_episodes, "eval_episodes": suite.eval_episodes, "seed": suite.seed},
    }
