"""One exception tree for EdgeGLM, each class mapped to a process exit code.

Libraries raise these; only the CLI catches them, prints the message to
stderr and exits with ``ExitCode``. Catch the narrowest class that you can
act on::

    EdgeGLMError                  anything EdgeGLM reports on purpose
    ├── UsageError                bad flags or arguments         (exit 2)
    ├── ModelNotFoundError        no such file, folder or cache  (exit 3)
    ├── CheckpointError           unreadable/inconsistent input  (exit 4)
    │   ├── UnsafeFormatError     pickle checkpoints, refused
    │   └── UnsupportedArchitectureError
    ├── ConversionError           a conversion step failed       (exit 5)
    │   ├── QuantizationError
    │   └── InsufficientDiskError
    ├── BackendError              the runtime failed to load/run (exit 6)
    └── HardwareError             probing or planning failed     (exit 7)
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # unexpected: a bug, reported with a traceback
    USAGE = 2
    MODEL_NOT_FOUND = 3
    BAD_CHECKPOINT = 4
    CONVERSION_FAILED = 5
    BACKEND_FAILED = 6
    HARDWARE = 7
    INTERRUPTED = 130


class EdgeGLMError(Exception):
    """Base of every error EdgeGLM raises on purpose."""

    exit_code: ExitCode = ExitCode.ERROR


class UsageError(EdgeGLMError):
    """The user asked for something that cannot be done as asked."""

    exit_code = ExitCode.USAGE


class ModelNotFoundError(EdgeGLMError):
    """A model path, repo id or artifact does not exist locally."""

    exit_code = ExitCode.MODEL_NOT_FOUND


class CheckpointError(EdgeGLMError):
    """A checkpoint exists but cannot be read or does not agree with itself."""

    exit_code = ExitCode.BAD_CHECKPOINT


class UnsafeFormatError(CheckpointError):
    """A pickle-based checkpoint (.bin, .pt, .pth): loading one can run code."""


class UnsupportedArchitectureError(CheckpointError):
    """config.json names an architecture no converter is registered for."""


class ConversionError(EdgeGLMError):
    """Converting or quantizing failed; nothing was written at the target."""

    exit_code = ExitCode.CONVERSION_FAILED


class QuantizationError(ConversionError):
    """ggml refused to quantize a tensor, or a required imatrix is missing."""


class InsufficientDiskError(ConversionError):
    """Not enough free space beside the output for the converted file."""


class BackendError(EdgeGLMError):
    """A backend failed to load or run a model."""

    exit_code = ExitCode.BACKEND_FAILED


class HardwareError(EdgeGLMError):
    """Hardware probing or planning failed."""

    exit_code = ExitCode.HARDWARE
