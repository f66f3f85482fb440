"""The project's error hierarchy.

Every error a user can cause derives from :class:`ActivescaleError`; the CLI turns
those into a one-line message and exit code 2. The named subclasses say which part of the
project refused the input; this module sits below every package, so each of them raises the
same classes.
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


class TuneError(ActivescaleError):
    """A study is missing or unfinished, or tuning workers failed."""


class LoadError(ActivescaleError):
    """A sweep cannot be found in, or read from, its MLflow tracking store."""


class PluginError(ActivescaleError):
    """A plugin cannot be loaded, or registers something it may not (a name twice, a bad ladder)."""
