"""Errors a user can act on. The job prints their message as one line and exits non-zero."""

from __future__ import annotations


class SegmentationError(Exception):
    """Base class: something about the input, config or output that the user can fix."""


class ConfigError(SegmentationError):
    """The configuration (YAML or command line) is invalid."""


class InputError(SegmentationError):
    """The input is missing, empty or unreadable."""


class SchemaError(InputError):
    """The input lacks columns the configuration maps."""


class ModelError(SegmentationError):
    """The data cannot be clustered as configured (e.g. more k than customers)."""


class OutputError(SegmentationError):
    """The output location cannot be written."""


def root_cause(exc: BaseException) -> str:
    """One line for any exception: for a Py4J/JVM error, the innermost Java cause's class and message."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            cause = java
            while cause.getCause() is not None and cause.getCause() != cause:
                cause = cause.getCause()
            return str(cause.toString()).strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - the JVM may be gone; fall back to the Python text
            pass
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
