"""The export's progress as /readyz and the log say it: components done, elapsed, an estimate."""

from __future__ import annotations

from service.exporting import ExportProgress


def test_progress_counts_components_and_estimates_from_those_done() -> None:
    p = ExportProgress(started=0.0)
    assert p.describe(now=5.0) == "export (loading the checkpoint, 5 s elapsed)"
    p.component(0, 8, "encoder", now=10.0)
    assert p.seconds_left(now=20.0) is None  # nothing finished: no estimate yet
    assert p.describe(now=20.0) == "export (0/8 components, 20 s elapsed)"
    p.component(2, 8, "world_model", now=50.0)  # 2 components in 40 s: 20 s each
    assert p.seconds_left(now=50.0) == 120.0
    assert p.seconds_left(now=60.0) == 110.0  # less what the current one has already taken
    assert p.describe(now=60.0) == "export (2/8 components, 1m00s elapsed, ~1m50s left)"
    assert p.seconds_left(now=500.0) == 0.0  # a slow component never makes the estimate negative
