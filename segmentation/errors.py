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
