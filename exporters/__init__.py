"""lawm exporters: ONNX export, TensorRT engines, parity checks, the model repository and its loader.

Layout of one repository version (Triton-like): `REPO/<name>/<version>/`
    <component>.onnx (and .plan)   encoder, idm, world_model, world_model_step, decoder, controller
    checkpoint/                    the source weights, for the torch runtime
    manifest.json                  specs, profiles, files + sha256, source, versions, parity

    from exporters.runtime import load_model, load_checkpoint_model, planner_step
"""
