"""Building TensorRT engines from the repository's ONNX files, and their parity: the build half.

- Strongly typed networks: the precision is the ONNX graph's own (casts in the graph, see
  `exporters.onnx_export.CastGraph`), which TensorRT >= 10.12 prefers to builder precision flags.
- One optimization profile per engine: min/opt/max batch from the serving batch sizes, and the
  time axis from 1 (or 2) to the world model's `max_steps`.
- A timing cache shared by builds on the same GPU and TensorRT version (`LAWM_TRT_TIMING_CACHE`).
- The manifest records the TensorRT version, GPU name and compute capability, which
  `exporters.tensorrt_runtime` checks before it loads an engine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from exporters.components import Profile, TensorSpec, profile_shapes
from exporters.errors import ExportError
from exporters.parity import RealInputs, check_components
from exporters.tensorrt_runtime import TrtComponent, collecting_logger, device_identity, require_tensorrt
from training.config import ModelConfig
from training.models.lam import LatentActionModel

WORKSPACE_BYTES = 4 << 30


def timing_cache_path(trt_version: str) -> Path:
    """One cache per TensorRT version and GPU model: timings from another would not apply."""
    gpu = "".join(ch if ch.isalnum() else "-" for ch in device_identity()["gpu"])
    default = Path.home() / ".cache" / "lawm" / f"tensorrt-{trt_version}-{gpu}-timing.cache"
    return Path(os.environ.get("LAWM_TRT_TIMING_CACHE", default))


def _profile_shapes(spec: TensorSpec, profile: Profile, cfg: ModelConfig) -> tuple[tuple[int, ...], ...]:
    return profile_shapes(spec, profile, cfg)  # every input, the key/value caches' token axes included


def build_engine(
    onnx_path: Path, plan_path: Path, inputs: tuple[TensorSpec, ...], profile: Profile, cfg: ModelConfig,
    cache_path: Path | None = None,
) -> dict[str, Any]:
    """Build one strongly typed engine from `onnx_path` into `plan_path`."""
    trt = require_tensorrt()
    log = collecting_logger(trt)
    builder = trt.Builder(log)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT cannot parse {onnx_path}: " + "; ".join(errors[:5]))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    opt_profile = builder.create_optimization_profile()
    for spec in inputs:
        lo, opt, hi = _profile_shapes(spec, profile, cfg)
        opt_profile.set_shape(spec.name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    cache_path = cache_path or timing_cache_path(trt.__version__)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}: " + "; ".join(log.messages[-5:]))
    plan_path.write_bytes(bytes(serialized))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"build_seconds": round(time.perf_counter() - t0, 1), "profile": [list(s) for s in _profile_shapes(inputs[0], profile, cfg)]}


def build_engines(
    folder: Path, names: tuple[str, ...], specs: dict[str, Any], profiles: dict[str, Profile], precision: str,
    cfg: ModelConfig,
) -> dict[str, Any]:
    """Engines for every component (`<c>.plan` beside `<c>.onnx`); the manifest's `tensorrt` entry."""
    trt = require_tensorrt()
    engines = {c: build_engine(folder / f"{c}.onnx", folder / f"{c}.plan", specs[c][0], profiles[c], cfg) for c in names}
    return {
        "version": trt.__version__, **device_identity(), "precision": precision, "strongly_typed": True,
        "timing_cache": str(timing_cache_path(trt.__version__)), "engines": engines,
    }


def engine_parity(model: LatentActionModel, folder: Path, info: dict[str, Any], specs: dict[str, Any],
                  profiles: dict[str, Profile], precision: str, real: RealInputs | None) -> dict[str, Any]:
    """Every engine against the torch model (`exporters.parity`), with TF32 off for the reference."""
    candidates = {c: TrtComponent(c, folder / f"{c}.plan", ins, outs, profiles[c]) for c, (ins, outs) in specs.items()}
    with fp32_reference():
        report = check_components(model, candidates, profiles, precision, real, device="cuda")  # type: ignore[arg-type]
    report["runtime"] = f"TensorRT {info['version']} on {info['gpu']}"
    return report


class fp32_reference:  # noqa: N801  # used as a context manager
    """True float32 torch on CUDA: TF32 off for matmuls and convolutions while a reference runs."""

    def __enter__(self) -> None:
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved
