"""Planning costs: distance of the final predicted states to the goal state.

Every cost has the signature `cost(final_states: Tensor[B, ...], goal: Tensor[...]) -> Tensor[B]`;
`goal` has no batch dim and broadcasts against each row. The DROID protocol (PAPER-NOTES §3.5)
scores with ‖s_g − ŝ‖₂ in representation space; L1 is the usual alternative; `pixel_cost` decodes
states with a caller-supplied decoder (torch, onnxruntime, TensorRT — anything returning a tensor)
and scores in pixel space, as NWM scores decoded frames.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

CostFn = Callable[[Tensor, Tensor], Tensor]
Decoder = Callable[[Tensor], Tensor]


def _diff(states: Tensor, goal: Tensor) -> Tensor:
    # [B, ...] - [...] -> [B, -1]; float32 so half-precision latents do not overflow the sum.
    return (states.float() - goal.to(states.device).float()).flatten(1)


def l1_cost(states: Tensor, goal: Tensor) -> Tensor:
    """Mean absolute difference over all non-batch dims. [B, ...], [...] -> [B]"""
    return _diff(states, goal).abs().mean(dim=1)


def l2_cost(states: Tensor, goal: Tensor) -> Tensor:
    """Euclidean norm of the difference over all non-batch dims (‖s_g − ŝ‖₂). [B, ...], [...] -> [B]"""
    return torch.linalg.vector_norm(_diff(states, goal), ord=2, dim=1)


def pixel_cost(decode: Decoder) -> CostFn:
    """A cost that decodes states to pixels with `decode` ([B, ...] -> [B, C, H, W] or any [B, ...])
    and takes the mean absolute pixel difference to the decoded goal.

    The decoded goal is cached per goal tensor (same object, unmodified), so a planning call decodes
    it once rather than once per iteration.
    """
    cache: dict[str, object] = {}

    def cost(states: Tensor, goal: Tensor) -> Tensor:
        key = (id(goal), goal._version)
        if cache.get("key") != key or cache.get("goal") is not goal:
            cache["goal"] = goal  # held so that id(goal) cannot be reused while cached
            cache["key"] = key
            cache["pixels"] = decode(goal.unsqueeze(0))[0]  # [...] -> [1, ...] -> pixels [C, H, W]
        pixels = decode(states)  # [B, C, H, W]
        return l1_cost(pixels, cache["pixels"])  # type: ignore[arg-type]

    return cost


def get_cost(name: str, decode: Decoder | None = None) -> CostFn:
    """The cost named by `PlannerConfig.cost`: "l1", "l2", or "pixel" (needs `decode`)."""
    if name == "l1":
        return l1_cost
    if name == "l2":
        return l2_cost
    if name == "pixel":
        if decode is None:
            raise ValueError("cost 'pixel' needs a decode callable (states [B, ...] -> pixels [B, ...])")
        return pixel_cost(decode)
    raise ValueError(f"cost must be one of ('l1', 'l2', 'pixel'), got {name!r}")
