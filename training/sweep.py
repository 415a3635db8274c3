"""The capacity sweep (PAPER-NOTES §1.4): each regularizer at low / mid / high capacity.

The paper never maps Low/Mid/High to coefficients; we pick from its sweep ranges: the loosest
sparse setting it uses by default (λ_l1 = 0.01) as High, the noisy default (β = 5e-5) as Mid,
and points a few steps along each sweep for the others; the VQ codebook sizes are its first three
(16, 1024, 4096). Beside them the sweep trains the paper's upper reference, the same LAM with no
regularizer on its latents (`none:unconstrained`). Every variant trains its LAM on the same frozen
encoder and data, so the variants differ only in their regularizer.
"""

from __future__ import annotations

CAPACITY: dict[str, dict[str, dict[str, float | int]]] = {
    "sparse": {"low": {"l1": 0.1}, "mid": {"l1": 0.04}, "high": {"l1": 0.01}},
    "noisy": {"low": {"beta": 1e-3}, "mid": {"beta": 5e-5}, "high": {"beta": 5e-6}},
    "discrete": {"low": {"codebook_size": 16}, "mid": {"codebook_size": 1024}, "high": {"codebook_size": 4096}},
}

UNCONSTRAINED = ("none", "unconstrained")  # the reference every capacity is measured against


def variant_overrides(kind: str, level: str) -> list[str]:
    """Config overrides that select one variant (to append to a base config's overrides)."""
    if (kind, level) == UNCONSTRAINED:
        return [f"name=sweep-{kind}-{level}", "model.regularizer.kind=none"]
    if kind not in CAPACITY or level not in CAPACITY[kind]:
        known = ", ".join(f"{k}:{'/'.join(v)}" for k, v in CAPACITY.items())
        raise ValueError(f"unknown sweep variant {kind}:{level}; known: {known}, {':'.join(UNCONSTRAINED)}")
    knobs = [f"model.regularizer.{key}={value}" for key, value in CAPACITY[kind][level].items()]
    return [f"name=sweep-{kind}-{level}", f"model.regularizer.kind={kind}", *knobs]


def variants() -> list[tuple[str, str]]:
    """The nine capacity variants, then the unconstrained reference."""
    return [*((kind, level) for kind, levels in CAPACITY.items() for level in levels), UNCONSTRAINED]
