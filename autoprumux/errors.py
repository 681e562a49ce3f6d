"""Error types. Every message states the rule, the offending value and the fix."""

from __future__ import annotations


class AutoPruMuxError(Exception):
    """Base class of all errors autoprumux raises on purpose."""


class ConfigError(AutoPruMuxError, ValueError):
    """A user-supplied value is invalid (CLI exit code 2)."""


class DataNotFoundError(AutoPruMuxError, FileNotFoundError):
    """The task's data could not be found where we looked."""


class ModelNotFoundError(AutoPruMuxError, FileNotFoundError):
    """The base model path or hub name could not be resolved."""
