"""Loading and running TensorRT engines (TensorRT 10 Python API): the runtime half.

- An engine only runs on the TensorRT version and GPU it was built for: the manifest records both,
  and loading elsewhere is refused with a clear message (`check_engine_host`).
- One execution context per engine; calls are serialised by a lock (a context is not thread-safe).

`tensorrt` is imported lazily, so everything else works where it is not installed. Buffers are
torch CUDA tensors, so no pycuda / cuda-python is needed. Building engines (and checking their
parity) is `exporters.tensorrt_build`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exporters.components import Profile, TensorSpec, check_inputs
from exporters.errors import EngineMismatchError, ExportError, RepositoryError, RuntimeUnavailable


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


def collecting_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps warnings and errors, so a failed build or load can say why."""

    class CollectingLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR, trt.ILogger.Severity.WARNING):
                self.messages.append(str(msg))

    return CollectingLogger()


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
        self._log = collecting_logger(trt)
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
