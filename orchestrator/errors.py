"""The project's error hierarchy.

Every error a user can cause derives from :class:`ActivescaleError`; the CLI turns
those into a one-paragraph message and exit code 2. Each package defines its own
named subclasses next to the code that raises them.
"""

from __future__ import annotations


class ActivescaleError(Exception):
    """Base class for errors caused by user input or the environment (exit code 2)."""


class SweepSpecError(ActivescaleError):
    """A sweep YAML file or a CLI override is invalid."""


class ConfigError(ActivescaleError):
    """A resolved run configuration is inconsistent (raised before any training starts)."""


class DataError(ActivescaleError):
    """A dataset file or dataset setting cannot be used."""


class StoreError(ActivescaleError):
    """The run store cannot be opened or is inconsistent."""


class SubmissionError(ActivescaleError):
    """Jobs could not be submitted to the executor (nothing was recorded as submitted)."""


class FitError(ActivescaleError):
    """A scaling-law fit failed or is not trustworthy (e.g. the optimum sits on a bound)."""
