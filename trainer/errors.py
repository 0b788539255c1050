"""The trainer's errors: each message names the value at fault and how to fix it."""

from __future__ import annotations


class TrainerError(Exception):
    """Base of every error the trainer raises on purpose."""


class DataError(TrainerError):
    """A labelled folder is missing, empty, or its classes do not match."""


class WeightsError(TrainerError):
    """The backbone's base weights cannot be obtained or do not fit the backbone."""


class ConfigError(TrainerError):
    """A training option is out of range or inconsistent with the backbone."""


class RegistryError(TrainerError):
    """A model version is unknown, its artifact is missing, or its checksum differs."""


class NoActiveModelError(RegistryError):
    """There is no active model where one is needed."""
