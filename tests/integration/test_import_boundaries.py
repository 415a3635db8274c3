"""What importing a module pulls in, measured in a fresh interpreter (this session has imported
everything already): the service app stays clear of the simulators, the generator and the training
loops, and the batcher of torch."""

from __future__ import annotations

import json
import subprocess
import sys

# Simulators, the procedural generator and what trains models: the service never needs them to
# start (the console imports the environments when an episode is first asked for).
NOT_FOR_THE_SERVICE = (
    "training.envs",
    "training.data.generator",
    "training.data.corpus",
    "training.data.dataset",
    "training.loop",
    "training.controller_training",
    "training.action_world_model",
    "training.evaluation.common",
    "training.evaluation.planning",
    "training.evaluation.sweep",
    "training.evaluation.transfer",
    "training.bench",
    "training.bench_plan",
    "training.bundle",
    "training.sweep",
    "training.cli",
    "exporters.export",
    "exporters.onnx_export",
    "exporters.tensorrt_build",
    "onnx",
    "onnxscript",
)


def imported_by(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_service_app_imports_no_simulator_generator_or_training_loop() -> None:
    loaded = imported_by("import service.app; service.app.create_app")
    wrong = sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in NOT_FOR_THE_SERVICE))
    assert not wrong, f"`import service.app` pulls in {wrong}"
    assert "service.routes.console" in loaded and "training.planning" in loaded  # it did import the app


def test_batching_module_never_imports_torch() -> None:
    loaded = imported_by("import service.inference.batching, service.metrics")
    assert "service.inference.batching" in loaded and "torch" not in loaded
