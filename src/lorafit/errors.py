"""lorafit's exception types.

Every error raised on bad user input is a :class:`LorafitError`; its message says what was wrong,
what was received and how to fix it. The CLI prints the message and exits 1.
"""
from __future__ import annotations


class LorafitError(Exception):
    """Base class of every error lorafit raises on purpose."""


class DataError(LorafitError, ValueError):
    """A data file is missing, unreadable, malformed or unsuitable for training."""


class ConfigError(LorafitError, ValueError):
    """A configuration value is out of range or inconsistent with another one."""


class RunDirError(LorafitError):
    """A run directory is missing, incomplete, from a newer format, or already exists."""


class ModelError(LorafitError):
    """A base model cannot be found or loaded."""
