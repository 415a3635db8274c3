"""TensorRT engines are refused on another TensorRT version or GPU (checked without TensorRT)."""

from __future__ import annotations

import pytest

from exporters.errors import EngineMismatchError, RuntimeUnavailable
from exporters.tensorrt_runtime import check_engine_host, require_tensorrt

BUILT = {"version": "10.13.0.35", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def test_the_host_that_built_the_engines_may_load_them() -> None:
    check_engine_host(BUILT, "10.13.0.35", {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})


@pytest.mark.parametrize(
    ("version", "gpu", "cc", "named"),
    [
        ("10.14.1", "NVIDIA H100 80GB HBM3", "9.0", "TensorRT 10.14.1"),
        ("10.13.0.35", "NVIDIA A100-SXM4-80GB", "8.0", "NVIDIA A100-SXM4-80GB (compute 8.0)"),
        ("10.13.0.35", "NVIDIA H200", "9.0", "NVIDIA H200"),
    ],
)
def test_another_version_or_gpu_is_refused_with_both_named(version: str, gpu: str, cc: str, named: str) -> None:
    with pytest.raises(EngineMismatchError, match="built with TensorRT 10.13.0.35 on NVIDIA H100") as err:
        check_engine_host(BUILT, version, {"gpu": gpu, "compute_capability": cc})
    assert named in str(err.value) and "--format tensorrt --force" in str(err.value)


def test_without_tensorrt_or_cuda_the_refusal_says_what_to_install() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeUnavailable, match=r"tensorrt is not installed: .*lawm\[tensorrt\]"):
            require_tensorrt()
    else:  # pragma: no cover - only on a TensorRT host
        pytest.skip("tensorrt is installed here")


class _FakeTensorRT:
    """Just enough of the `tensorrt` module for `build_engine` to run on a host without it: records
    the optimization profile's shapes instead of building anything."""

    __version__ = "10.13.0.35"

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
        fake = self

        class ILogger:
            class Severity:
                INTERNAL_ERROR, ERROR, WARNING, INFO = range(4)

            def __init__(self) -> None:
                pass

        class Profile:
            def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
                fake.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

        class Config:
            def set_memory_pool_limit(self, *args: object) -> None:
                pass

            def add_optimization_profile(self, profile: Profile) -> None:
                pass

            def create_timing_cache(self, data: bytes) -> object:
                return self

            def set_timing_cache(self, cache: object, ignore_mismatch: bool) -> None:
                pass

            def get_timing_cache(self) -> object:
                return self

            def serialize(self) -> bytes:
                return b"cache"

        class Builder:
            def __init__(self, log: object) -> None:
                pass

            def create_network(self, flags: int) -> object:
                return object()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: object, config: Config) -> bytes:
                return b"engine"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network: object, log: object) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                return True

        self.ILogger, self.Builder, self.OnnxParser = ILogger, Builder, OnnxParser
        self.NetworkDefinitionCreationFlag = type("Flags", (), {"STRONGLY_TYPED": 0})
        self.MemoryPoolType = type("Pools", (), {"WORKSPACE": 0})


def test_engine_builds_give_the_key_value_inputs_profiles_from_one_frame_to_the_window(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import torch

    from exporters.components import component_specs, default_profiles
    from exporters.tensorrt_build import build_engine
    from tests.unit.exporters.tiny import tiny_model_config

    fake = _FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = tiny_model_config()
    wm, n = cfg.world_model, cfg.encoder.tokens
    dh = wm.dim // wm.heads
    profiles = default_profiles(cfg)
    for component in ("world_model_prefill", "world_model_kv_step"):
        fake.shapes.clear()
        inputs, _ = component_specs(cfg, 3)[component]
        build_engine(tmp_path / "in.onnx", tmp_path / f"{component}.plan", inputs, profiles[component], cfg, tmp_path / "cache")
        assert set(fake.shapes) == {s.name for s in inputs}
        (lo_b, opt_b, hi_b), (lo_t, opt_t, hi_t) = profiles[component].batch, profiles[component].time
        if component == "world_model_kv_step":
            assert fake.shapes["past_keys"] == (
                (lo_b, wm.depth, wm.heads, n * lo_t, dh), (opt_b, wm.depth, wm.heads, n * opt_t, dh),
                (hi_b, wm.depth, wm.heads, n * hi_t, dh),
            )
            assert fake.shapes["past_values"] == fake.shapes["past_keys"] and hi_t == wm.max_steps - 1 and lo_t == 1
            assert fake.shapes["states"] == ((lo_b, n, 32), (opt_b, n, 32), (hi_b, n, 32))
        else:
            assert fake.shapes["states"][2] == (hi_b, wm.max_steps, n, 32) and fake.shapes["states"][0][1] == 1
        assert (tmp_path / f"{component}.plan").read_bytes() == b"engine"
