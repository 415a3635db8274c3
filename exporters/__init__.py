"""lawm exporters: ONNX export, TensorRT engines, parity checks, the model repository and its loader.

Layout of one repository version (Triton-like): `REPO/<name>/<version>/`
    <component>.onnx (and .plan)   encoder, idm, world_model, world_model_step, decoder, controller
    checkpoint/                    the source weights, for the torch runtime
    manifest.json                  specs, profiles, files + sha256, source, versions, parity
    precision.json                 (optional) the planner's precisions chosen by `lawm bench precision --record`

Two sides, and the build side imports the runtime side, never the other way round:
- build: `export` (the `lawm export` pipeline), `onnx_export`, `tensorrt_build`, `parity`,
  `real_inputs`, `bench`, `bench_rollout`, `bench_precision` (bf16 vs fp32 plans, the recorded choice);
- load and run: `runtime` (`load_model`, `load_checkpoint_model`, `controller_step`,
  `planner_step`), `ort_runtime`, `torch_runtime`, `tensorrt_runtime`, `precision_choice` (per-component
  precision asked for or recorded in `precision.json`).
Both use `components` (names, specs, profiles, graphs), `repository` and `errors`.
"""
