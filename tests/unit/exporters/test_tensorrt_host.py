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
