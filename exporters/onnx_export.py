"""ONNX export of one component through `torch.onnx.export(..., dynamo=True)`.

Batch is dynamic everywhere; time ("steps") is dynamic where a component takes a context, bounded
by the world model's `max_steps` (the RoPE tables are precomputed up to it and sliced by the
symbolic length). The key/value components' token axis is `N * steps`, a derived dimension. The encoder's frame axis is exported as `tubelet * steps`, so an odd clip
length cannot even be expressed. Reduced-precision variants cast the weights in the graph and
keep float32 inputs and outputs (a strongly typed graph: what TensorRT >= 10.12 prefers).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import Dim

from exporters.components import Profile, TensorSpec, random_inputs
from exporters.errors import ExportError
from training.config import ModelConfig

OPSET = 18
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
log = logging.getLogger("lawm.export")


class CastGraph(nn.Module):
    """Runs `graph` in `dtype` with float32 inputs and outputs (the casts live in the graph).

    Pixels stay float32 on the way in: the encoder normalises them in float32 and casts after,
    since rounding [0, 1] pixels to 8 or 11 bits costs more than every block after it."""

    def __init__(self, graph: nn.Module, dtype: torch.dtype, cast: tuple[bool, ...]) -> None:
        super().__init__()
        self.inner, self.dtype, self.cast = graph.to(dtype), dtype, cast

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.inner(*(x.to(self.dtype) if c else x for x, c in zip(inputs, self.cast, strict=True)))
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def cast_graph(graph: nn.Module, precision: str, inputs: tuple[TensorSpec, ...]) -> nn.Module:
    """`graph` itself for fp32, else a deep copy cast to fp16/bf16 (the source model is left as it is)."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return graph
    import copy

    cast = tuple(s.name != "video" for s in inputs)
    return CastGraph(copy.deepcopy(graph), PRECISIONS[precision], cast).eval()


def dynamic_shapes(specs: tuple[TensorSpec, ...], profile: Profile, cfg: ModelConfig) -> tuple[dict[int, Any], ...]:
    """torch.export `Dim`s for every named axis of the inputs (positional, in spec order)."""
    batch = Dim("batch", min=1, max=max(profile.max_batch, 4096))
    axes: dict[str, Any] = {"batch": batch}
    if profile.time is not None:
        lo, _, hi = profile.time
        steps = Dim("steps", min=lo, max=hi)
        tb, n = cfg.encoder.tubelet, cfg.encoder.tokens
        # the key/value token axis is derived from the frame count, so it can only hold whole frames
        axes.update({"steps": steps, f"{tb}*steps": tb * steps if tb != 1 else steps, f"{n}*steps": n * steps})
    return tuple({i: axes[a] for i, a in enumerate(s.shape) if isinstance(a, str)} for s in specs)


def example_inputs(specs: tuple[TensorSpec, ...], profile: Profile, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    # Neither batch nor steps may be 0 or 1 in the example: torch.export would specialise them.
    steps = 3 if profile.time is None else max(profile.time[0] + 1, min(3, profile.time[2]))
    return random_inputs(specs, 2, steps, cfg, torch.Generator().manual_seed(0))


def export_component(
    graph: nn.Module, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], profile: Profile,
    cfg: ModelConfig, path: Path,
) -> Path:
    """Export one component graph to `path` and check it with `onnx.checker` (full check)."""
    import onnx

    example = example_inputs(inputs, profile, cfg)
    # The exporter prints progress to stdout and warns about optional torchvision ops: keep it quiet.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    shapes: Any = dynamic_shapes(inputs, profile, cfg)
    if isinstance(graph, CastGraph):  # forward(*inputs): the varargs are one tuple to torch.export
        shapes = (shapes,)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), torch.no_grad(), warnings.catch_warnings():
            # torch's own deprecation notices (pytree LeafSpec, axis renames) say nothing about this model
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
            program = torch.onnx.export(
                graph, tuple(example[s.name] for s in inputs), dynamic_shapes=shapes, dynamo=True,
                opset_version=OPSET, input_names=[s.name for s in inputs], output_names=[s.name for s in outputs],
                optimize=True, verbose=False,
            )
    except Exception as e:
        log.debug("exporter output:\n%s", buffer.getvalue())
        raise ExportError(f"ONNX export of {path.stem} failed: {type(e).__name__}: {str(e)[:2000]}") from e
    if program is None:  # pragma: no cover - dynamo export always returns a program
        raise ExportError(f"ONNX export of {path.stem} returned nothing")
    program.save(str(path))
    model = onnx.load(str(path))
    name_axes(model, inputs, outputs)
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path} fails onnx.checker: {e}") from None
    return path


def name_axes(model: Any, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
    """Give the graph's inputs and outputs the specs' axis names ("batch", "steps", ...), so the
    file documents itself the way the manifest does (the exporter's own names are s0, s1, ...)."""
    specs = {s.name: s for s in (*inputs, *outputs)}
    for value in (*model.graph.input, *model.graph.output):
        spec = specs.get(value.name)
        if spec is None:
            continue
        for dim, axis in zip(value.type.tensor_type.shape.dim, spec.shape, strict=True):
            if isinstance(axis, str):
                dim.dim_param = axis
            elif dim.HasField("dim_value") and dim.dim_value != axis:
                raise ExportError(f"{value.name}: exported axis {dim.dim_value} differs from the spec's {axis}")


def opset_of(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
