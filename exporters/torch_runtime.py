"""The torch runtime: the eager component graphs of a checkpoint, behind the `Component` interface.

It is also the reference every exported graph is checked against (`exporters.parity`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exporters.components import Profile, TensorSpec, build_graph, check_inputs
from exporters.errors import ExportError
from training.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from training.config import ModelConfig
from training.models.lam import LatentActionModel
from training.precision import PRECISIONS, autocast


def build_model(checkpoint: Path | str, expected: ModelConfig | None = None) -> tuple[LatentActionModel, LoadedCheckpoint]:
    """A verified checkpoint as an eval-mode float32 model on the CPU (with its controller, if any).

    `expected` refuses a checkpoint trained under another config, naming the fields that differ.
    Weights that do not fit the config in the manifest are refused too (`CheckpointError`)."""
    ckpt = load_checkpoint(checkpoint, expected=expected)
    model = LatentActionModel(ckpt.model_config)
    if "controller_config" in ckpt.manifest:
        from training.models.controller import ControllerConfig, build_controller

        cfg = ControllerConfig.model_validate(ckpt.manifest["controller_config"])
        model.attach_controller(build_controller(cfg, model.latent_dim, model.encoder.dim, model.encoder.grid))
    required = set(model.saved_components())
    if not model.regularizer.state_dict():  # sparse / noisy regularizers hold no weights
        required.discard("regularizer")
    missing = sorted(required - set(ckpt.manifest.get("components", [])))
    if missing:
        raise CheckpointError(
            f"checkpoint {checkpoint} lacks the components {missing} every export needs; "
            "export a bundled model or a LAM checkpoint whose encoder and decoder are trained (lawm build-demo)"
        )
    try:
        ckpt.load_into(model, [c for c in model.saved_components() if c in ckpt.manifest["components"]])
    except RuntimeError as e:  # size mismatches from load_state_dict
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(
            f"checkpoint {checkpoint}: its weights do not fit the model config in its manifest ({str(e).splitlines()[0]}); "
            "the manifest was edited or belongs to another checkpoint — restore it or retrain"
        ) from None
    return model.float().eval(), ckpt


class TorchComponent:
    """One component graph run eagerly; numpy float32 in and out.

    `precision="bf16"` runs the module under `training.precision.autocast` (matmuls in bf16, norms
    and softmax in fp32) on the same fp32 weights; outputs are fp32 either way, so callers never see
    the difference in dtype, only in the last bits.

    Thread-safe: the module is read-only under `inference_mode` and autocast state is per thread;
    on CUDA a lock serialises calls so concurrent batches do not interleave on the default stream."""

    def __init__(
        self, name: str, module: torch.nn.Module, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
        profile: Profile, device: str = "cpu", precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ExportError(f"{name}: precision must be one of {PRECISIONS}, got {precision!r}")
        self.name, self.inputs, self.outputs, self.profile = name, inputs, outputs, profile
        self.precision = precision
        self.max_batch = profile.max_batch
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        if self.device.type == "cuda":
            # cuDNN convolutions default to TF32 (10-bit mantissa): the patch embedding alone then
            # misses the fp32 parity bound (~7e-4 of the scale on an H200). Exact fp32 here; ask
            # for fp16/bf16 graphs for speed.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._lock = threading.Lock() if self.device.type == "cuda" else None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.name, self.inputs, inputs, self.profile)
        with torch.inference_mode():
            # positional, in the spec's order: graphs wrapped for reduced precision take `*inputs`
            tensors = [torch.from_numpy(np.ascontiguousarray(inputs[s.name])).to(self.device) for s in self.inputs]
            if self._lock is None:
                out = self._call(tensors)
            else:
                with self._lock:
                    out = self._call(tensors)
                    torch.cuda.synchronize(self.device)
            outs = out if isinstance(out, tuple) else (out,)  # the key/value components return several
            return {spec.name: o.float().cpu().numpy() for spec, o in zip(self.outputs, outs, strict=True)}

    def run_torch(self, **tensors: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Torch in, torch out (the parity reference and the bench use it without a numpy round trip);
        a tuple in the outputs' order for components with several outputs. Float32 out at any precision."""
        with torch.inference_mode():
            out = self._call([tensors[s.name].to(self.device) for s in self.inputs])
            return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()

    def _call(self, tensors: list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        with autocast(self.precision, self.device):
            return self.module(*tensors)


def torch_components(
    model: LatentActionModel, specs: dict[str, Any], profiles: dict[str, Profile], device: str = "cpu",
    precisions: dict[str, str] | None = None,
) -> dict[str, TorchComponent]:
    """One `TorchComponent` per spec; `precisions` maps component names to "fp32" (the default) or "bf16"."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ExportError(f"device {device!r} asked for, but this torch ({torch.__version__}) sees no CUDA device; use device='cpu'")
    precisions = precisions or {}
    return {
        name: TorchComponent(name, build_graph(model, name), ins, outs, profiles[name], device, precisions.get(name, "fp32"))
        for name, (ins, outs) in specs.items()
    }
