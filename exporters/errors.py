"""Errors of the exporters and the loader; each message names what is wrong and how to fix it."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export or a model repository cannot be used as asked."""


class RepositoryError(ExportError):
    """A repository path, version or file is missing, unsafe or tampered with."""


class ParityError(ExportError):
    """An exported component does not reproduce the torch model within its tolerance."""


class EngineMismatchError(ExportError):
    """A TensorRT engine was built for another TensorRT version or GPU."""


class RuntimeUnavailable(ExportError):
    """The runtime asked for (tensorrt, a CUDA provider) is not installed or has no device."""


class InvalidInputs(ValueError):
    """Tensors given to a component do not match its inputs (names, dtype, shape)."""
