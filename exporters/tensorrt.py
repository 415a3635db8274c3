"""TensorRT engines built from the repository's ONNX files (TensorRT 10 Python API).

- Strongly typed networks: the precision is the ONNX graph's own (casts in the graph, see
  `exporters.onnx_export.CastGraph`), which TensorRT >= 10.12 prefers to builder precision flags.
- One optimization profile per engine: min/opt/max batch from the serving batch sizes, and the
  time axis from 1 (or 2) to the world model's `max_steps`.
- A timing cache shared by builds on the same GPU and TensorRT version (`LAWM_TRT_TIMING_CACHE`).
- The manifest records the TensorRT version, GPU name and compute capability; loading on another
  version or GPU is refused with a clear message (a plan is not portable across them).

`tensorrt` is imported lazily, so everything else works where it is not installed. Buffers are
torch CUDA tensors, so no pycuda / cuda-python is needed.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exporters.components import Profile, TensorSpec, check_inputs, profile_shapes
from exporters.errors import EngineMismatchError, ExportError, RepositoryError, RuntimeUnavailable
from training.config import ModelConfig

WORKSPACE_BYTES = 4 << 30


def require_tensorrt() -> Any:
    """The `tensorrt` module and a CUDA device, or a `RuntimeUnavailable` saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeUnavailable(
            "tensorrt is not installed: on a CUDA host, pip install 'lawm[tensorrt]' (TensorRT >= 10), "
            "or export --format onnx and serve with onnxruntime"
        ) from None
    if not torch.cuda.is_available():
        raise RuntimeUnavailable(f"TensorRT {trt.__version__} needs a CUDA device and this torch sees none")
    return trt


def device_identity(device: int = 0) -> dict[str, str]:
    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


def timing_cache_path(trt_version: str) -> Path:
    """One cache per TensorRT version and GPU model: timings from another would not apply."""
    gpu = "".join(ch if ch.isalnum() else "-" for ch in device_identity()["gpu"])
    default = Path.home() / ".cache" / "lawm" / f"tensorrt-{trt_version}-{gpu}-timing.cache"
    return Path(os.environ.get("LAWM_TRT_TIMING_CACHE", default))


def _logger(trt: Any) -> Any:
    """A TensorRT logger that keeps warnings and errors, so a failed build or load can say why."""

    class CollectingLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR, trt.ILogger.Severity.WARNING):
                self.messages.append(str(msg))

    return CollectingLogger()


def _profile_shapes(spec: TensorSpec, profile: Profile, cfg: ModelConfig) -> tuple[tuple[int, ...], ...]:
    return profile_shapes(spec, profile, cfg)  # every input, the key/value caches' token axes included


def build_engine(
    onnx_path: Path, plan_path: Path, inputs: tuple[TensorSpec, ...], profile: Profile, cfg: ModelConfig,
    cache_path: Path | None = None,
) -> dict[str, Any]:
    """Build one strongly typed engine from `onnx_path` into `plan_path`."""
    trt = require_tensorrt()
    log = _logger(trt)
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


def check_engine_host(info: dict[str, Any], trt_version: str, identity: dict[str, str]) -> None:
    """Refuse engines built for another TensorRT version or GPU (a plan only runs where it was built)."""
    built = f"TensorRT {info.get('version')} on {info.get('gpu')} (compute {info.get('compute_capability')})"
    here = f"TensorRT {trt_version} on {identity['gpu']} (compute {identity['compute_capability']})"
    if (info.get("version"), info.get("gpu"), info.get("compute_capability")) != (
        trt_version, identity["gpu"], identity["compute_capability"]
    ):
        raise EngineMismatchError(
            f"these TensorRT engines were built with {built}; this host has {here}. Rebuild them here "
            "(lawm export CHECKPOINT --to REPO --format tensorrt --force) or serve the ONNX files with onnxruntime"
        )


class TrtComponent:
    """One engine with one execution context; calls are serialised by a lock (a context is not thread-safe)."""

    def __init__(self, name: str, plan: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                 profile: Profile, device: str = "cuda") -> None:
        trt = require_tensorrt()
        self.name, self.inputs, self.outputs, self.profile = name, inputs, outputs, profile
        self.max_batch = profile.max_batch
        self.device = torch.device(device if device.startswith("cuda") else "cuda")
        self._log = _logger(trt)
        self._runtime = trt.Runtime(self._log)
        self.engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(f"TensorRT {trt.__version__} cannot load {plan}: " + "; ".join(self._log.messages[-3:]))
        self.context = self.engine.create_execution_context()
        self._lock = threading.Lock()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.name, self.inputs, inputs, self.profile, limit_batch=True)
        with self._lock, torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            keep = {}
            for spec in self.inputs:
                x = torch.from_numpy(np.ascontiguousarray(inputs[spec.name])).to(self.device, non_blocking=False)
                keep[spec.name] = x
                self.context.set_input_shape(spec.name, tuple(x.shape))
                self.context.set_tensor_address(spec.name, x.data_ptr())
            outs = {}
            for spec in self.outputs:
                shape = tuple(self.context.get_tensor_shape(spec.name))
                out = torch.empty(shape, dtype=torch.float32, device=self.device)
                self.context.set_tensor_address(spec.name, out.data_ptr())
                outs[spec.name] = out
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise ExportError(f"TensorRT failed to run {self.name}: " + "; ".join(self._log.messages[-3:]))
            stream.synchronize()
            return {k: v.cpu().numpy() for k, v in outs.items()}


def load_engines(folder: Path, manifest: dict[str, Any], specs: dict[str, Any], profiles: dict[str, Profile],
                 device: str = "cuda") -> dict[str, TrtComponent]:
    info = manifest.get("tensorrt")
    if not info:
        raise RepositoryError(
            f"{folder} holds no TensorRT engines (exported as {manifest.get('artifact')}): "
            "export with --format tensorrt, or load it with runtime='onnxruntime'"
        )
    trt = require_tensorrt()
    index = torch.device(device).index or 0 if device.startswith("cuda") else 0
    check_engine_host(info, trt.__version__, device_identity(index))
    return {
        c: TrtComponent(c, folder / manifest["components"][c]["files"]["tensorrt"], ins, outs, profiles[c], device)
        for c, (ins, outs) in specs.items()
    }


def engine_parity(model: Any, folder: Path, info: dict[str, Any], specs: dict[str, Any], profiles: dict[str, Profile],
                  precision: str, real: Any) -> dict[str, Any]:
    from exporters.parity import check_components

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
