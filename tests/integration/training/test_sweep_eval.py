"""`lawm eval sweep`'s table on tiny checkpoints: one row per trained variant by protocols 1-5, the
reference planners once, and the page `lawm docs` renders from it (table, reference table, panels)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.unit.exporters.tiny import tiny_checkpoint
from training.evaluation.planning import PlanningSuite
from training.evaluation.sweep import capacity_table, is_finished, training_curves
from training.reports import write_docs

TINY_SUITE = PlanningSuite(train_episodes=2, eval_episodes=2, controller_steps=3, baseline_steps=3, seed=0)


def test_capacity_table_has_a_row_per_variant_and_the_reference_planners_once(tmp_path: Path) -> None:
    sparse = tiny_checkpoint(tmp_path / "runs" / "sweep-sparse-low" / "lam" / "checkpoint", controller=None, seed=1)
    noisy = tiny_checkpoint(
        tmp_path / "runs" / "sweep-noisy-mid" / "lam" / "checkpoint", controller=None, seed=2,
        **{"model.regularizer.kind": "noisy", "model.regularizer.beta": 5e-5},
    )
    free = tiny_checkpoint(
        tmp_path / "runs" / "sweep-none-unconstrained" / "lam" / "checkpoint", controller=None, seed=3,
        **{"model.regularizer.kind": "none"},
    )
    partial: list[dict] = []
    table = capacity_table([sparse, noisy, free], TINY_SUITE, on_row=partial.append)
    assert [len(t["rows"]) for t in partial] == [1, 2]  # kept after each variant but the last
    assert partial[1]["rows"][0] == {k: v for k, v in table["rows"][0].items() if k != "idm_vs_unconstrained"}

    rows = table["rows"]
    assert [r["variant"] for r in rows] == ["sparse-low", "noisy-mid", "none-unconstrained"]
    assert rows[2]["regularizer"] == "none" and rows[2]["idm_vs_unconstrained"] == 1.0
    assert rows[0]["regularizer"].startswith("sparse l1=") and rows[1]["regularizer"] == "noisy beta=5e-05"
    for row in rows:  # every protocol filled every column with a number
        numbers = {k: v for k, v in row.items() if k not in ("variant", "regularizer", "z_batch_std")}
        assert row["z_batch_std"] is None  # tiny checkpoints were never trained: no batch statistics
        assert set(numbers) == {
            "idm_l1", "zero_l1", "reduction", "reduction_vs_shuffled", "cut_ratio", "transfer_ratio", "rollout_ratio", "nav_ate", "nav_rpe",
            "idm_vs_unconstrained",
        }
        assert all(math.isfinite(v) for v in numbers.values())
        assert math.isclose(row["reduction"], 1 - row["idm_l1"] / row["zero_l1"], rel_tol=1e-6)
        assert math.isclose(row["idm_vs_unconstrained"], row["idm_l1"] / rows[2]["idm_l1"], rel_tol=1e-9)
    (reference,) = table["tables"]
    assert [r["planner"] for r in reference["rows"]] == [
        "action-labelled WM", "oracle: pose cost", "oracle: pixel L2", "oracle: encoder-state L2", "prior mean held constant",
        "random straight line (initial Gaussian)", "random actions (uniform per step)", "zero action",
    ]
    assert table["suite"]["eval_episodes"] == 2

    log = sparse.parent / "metrics.jsonl"  # as a training run leaves it beside its checkpoint
    log.write_text("".join(json.dumps({"step": s, "z_batch_std": 0.5 / s, "loss": 1.0}) + "\n" for s in range(5, 45, 5)))
    curves = training_curves([sparse, noisy, free])
    assert curves["series"] == {"sparse-low": [[s, 0.5 / s] for s in (10, 20, 30, 40)]}  # runs without a log are left out
    table["curves"] = [curves]

    docs = tmp_path / "docs"
    (docs / "results").mkdir(parents=True)
    (docs / "results" / "sweep.json").write_text(json.dumps(table))
    (page,) = write_docs(docs)
    text = page.read_text()
    assert "| sparse-low |" in text and "| noisy-mid |" in text
    assert "### Reference planners" in text and "| random actions (uniform per step) |" in text
    assert "![sweep](img/sweep.png)" in text and (docs / "img" / "sweep.png").stat().st_size > 1000
    assert "![sweep-curves0](img/sweep-curves0.png)" in text and (docs / "img" / "sweep-curves0.png").stat().st_size > 1000


def test_only_finished_runs_count_as_trained(tmp_path: Path) -> None:
    """A run still training has a checkpoint (and manifest) too; `lawm eval sweep` must not take it."""
    from tests.unit.exporters.tiny import tiny_model
    from training.checkpoint import save_checkpoint

    model = tiny_model()
    for step, name in ((200, "running"), (600, "done")):
        save_checkpoint(
            tmp_path / name, model, components=model.saved_components(), stage="lam", step=step, model_config=model.cfg,
            run_config={"train": {"lam": {"steps": 600}}},
        )
    assert not is_finished(tmp_path / "running") and is_finished(tmp_path / "done")
    assert not is_finished(tmp_path / "absent")
