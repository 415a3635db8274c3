"""The onnxruntime runtime: one `InferenceSession` per component (CPU, CUDA or TensorRT providers).

`InferenceSession.run` is thread-safe, so a component can serve concurrent batches as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from exporters.components import Profile, TensorSpec, check_inputs
from exporters.errors import RepositoryError, RuntimeUnavailable

# What `device` means when no providers are given. The TensorRT EP is opt-in (providers=[...]):
# its first run builds engines, which takes minutes.
DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def default_providers(device: str) -> list[str]:
    kind = device.split(":", 1)[0]
    if kind not in DEVICE_PROVIDERS:
        raise RuntimeUnavailable(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return list(DEVICE_PROVIDERS[kind])


def check_providers(providers: list[str]) -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise RuntimeUnavailable(
            f"onnxruntime {ort.__version__} lacks the execution providers {missing} (it has {available}); "
            "install onnxruntime-gpu (pip install 'lawm[tensorrt]') on a CUDA host, or use device='cpu'"
        )


# Where a session's CPU memory for activations comes from:
# - "session": onnxruntime's default, an arena per session that grows to its largest call and keeps it,
#   so a model of 8 components holds the sum of 8 peaks;
# - "shared": one arena for every session of the process that asks for it, holding about the
#   largest concurrent need instead (measured on the demo model: ~0.5 GB less after warm-up, no slower);
# - "off": no arena (allocated per call: the least memory, large calls pay for it in page faults).
ARENAS = ("session", "shared", "off")
_shared_arena_registered = False


def register_shared_arena() -> None:
    """Register the process-wide CPU arena the "shared" sessions use (once per process)."""
    global _shared_arena_registered
    if _shared_arena_registered:
        return
    import onnxruntime as ort

    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 0}))  # kNextPowerOfTwo
    _shared_arena_registered = True


def session_options(intra_op_threads: int | None = None, arena: str = "session") -> object:
    import onnxruntime as ort

    if arena not in ARENAS:
        raise ValueError(f"arena must be one of {ARENAS}, got {arena!r}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = intra_op_threads if intra_op_threads is not None else int(os.environ.get("LAWM_ORT_THREADS", "0"))
    opts.intra_op_num_threads = threads  # 0: one per physical core
    # Idle pool threads sleep instead of spinning: a serving process shares its cores with the
    # batcher, the HTTP server and other components, which spinning threads would starve.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: the TensorRT EP warns about every unsupported node
    if arena == "shared":
        register_shared_arena()
        opts.add_session_config_entry("session.use_env_allocators", "1")
    elif arena == "off":
        opts.enable_cpu_mem_arena = False
    return opts


class OrtComponent:
    def __init__(
        self, name: str, path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], profile: Profile,
        providers: list[str], intra_op_threads: int | None = None, arena: str = "session",
    ) -> None:
        import onnxruntime as ort

        self.name, self.inputs, self.outputs, self.profile = name, inputs, outputs, profile
        self.max_batch = profile.max_batch
        self.path = Path(path)
        options = session_options(intra_op_threads, arena)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for damaged models
            raise RepositoryError(
                f"{path} cannot be loaded by onnxruntime ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                "the file is damaged or not an ONNX model — re-export this version (lawm export ... --force)"
            ) from None
        self.providers = self.session.get_providers()
        got = [i.name for i in self.session.get_inputs()]
        if sorted(got) != sorted(s.name for s in inputs):
            raise RepositoryError(f"{path} takes inputs {got}, the manifest says {[s.name for s in inputs]}; re-export it")
        self._output_names = [s.name for s in outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(self.name, self.inputs, inputs, self.profile)
        feeds = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        values = self.session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values, strict=True))
