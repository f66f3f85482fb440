"""The one-variable families of error against compute, in the log-space form the fits use.

Each family is written as ``log err = logsumexp(terms)`` with every amplitude stored as its
logarithm, so an optimiser never sees numbers like 1e20. The internal parameters:

* ``power_law``:          A * C^-alpha             -> (a, alpha)
* ``power_law_offset``:   E + A * C^-alpha         -> (a, alpha, e)
* ``exponential``:        A * exp(-C / tau)        -> (a, t)
* ``exponential_offset``: E + A * exp(-C / tau)    -> (a, t, e)

In every family the decaying term is ``a - k * z`` in log space. Power laws use
``z = log C - mean(log C)`` and ``k = alpha``; exponentials use
``z = (C - mean C) / span`` with ``span = max C - min C`` and ``k = exp(-t)``,
``t = log(tau / span)``. Centring the compute coordinate decorrelates the amplitude
from the rate and makes the bounds independent of the units of compute. The offset
families add ``e = log E`` through ``logaddexp``. Natural parameters follow as
``A = exp(a + alpha * mean(log C))`` (power laws), ``A = exp(a + mean(C) / tau)`` and
``tau = span * exp(t)`` (exponentials), ``E = exp(e)``.

Everything here is a pure function of arrays; fitting is :mod:`analysis.fit`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from activescale.errors import FitError

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class CurveFamily:
    """One functional form of error against compute (see the module docstring)."""

    name: str
    formula: str
    decay: Literal["power", "exponential"]
    has_offset: bool

    @functools.cached_property
    def param_names(self) -> tuple[str, ...]:
        """Natural-scale parameter names, in the order of the internal vector."""
        rate = "alpha" if self.decay == "power" else "tau"
        return ("A", rate, "E") if self.has_offset else ("A", rate)

    @functools.cached_property
    def n_params(self) -> int:
        return len(self.param_names)


FAMILIES: dict[str, CurveFamily] = {
    family.name: family
    for family in (
        CurveFamily("power_law", "A * C^-alpha", "power", has_offset=False),
        CurveFamily("power_law_offset", "E + A * C^-alpha", "power", has_offset=True),
        CurveFamily("exponential", "A * exp(-C / tau)", "exponential", has_offset=False),
        CurveFamily("exponential_offset", "E + A * exp(-C / tau)", "exponential", has_offset=True),
    )
}
"""The one-variable families, by name."""


def curve_family(family: str | CurveFamily) -> CurveFamily:
    """The family of that name (FitError naming the known ones when there is none)."""
    if isinstance(family, CurveFamily):
        return family
    if family not in FAMILIES:
        raise FitError(f"unknown curve family {family!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[family]


@dataclass(frozen=True)
class ComputeCoordinate:
    """Maps compute to the centred internal coordinate z of a family (module docstring)."""

    decay: Literal["power", "exponential"]
    shift: float
    span: float

    @classmethod
    def for_data(cls, family: CurveFamily, compute: FloatArray) -> ComputeCoordinate:
        """Centre on the data (needs two distinct compute values for exponentials)."""
        if family.decay == "power":
            return cls("power", float(np.mean(np.log(compute))), 1.0)
        return cls("exponential", float(np.mean(compute)), float(compute.max() - compute.min()))

    def __call__(self, compute: FloatArray) -> FloatArray:
        if self.decay == "power":
            return np.log(compute) - self.shift
        return (compute - self.shift) / self.span


def decay_term(
    family: CurveFamily, theta: FloatArray, z: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The decaying term ``a - k z`` and its derivative in the rate parameter.

    Works for one parameter vector (P,) or a batch of them (G, P).
    """
    a = theta[..., 0, None]
    if family.decay == "power":
        rate = theta[..., 1, None]
        return a - rate * z, -z
    rate = np.exp(-theta[..., 1, None])
    return a - rate * z, rate * z


def log_curve(family: CurveFamily, theta: FloatArray, z: FloatArray) -> FloatArray:
    """Model log error at z for one parameter vector (P,) or a batch (G, P)."""
    core, _ = decay_term(family, theta, z)
    return np.logaddexp(core, theta[..., 2, None]) if family.has_offset else core


def log_curve_and_jacobian(
    family: CurveFamily, theta: FloatArray, z: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Model log error at z for one parameter vector, with its Jacobian (P, n)."""
    # Written out for one vector with Python floats: the least-squares solver calls it at
    # every iteration, where numpy's per-call overhead is most of the cost.
    a, rate_param, *offset = theta.tolist()
    jacobian = np.empty((len(theta), z.size))
    if family.decay == "power":
        core = a - rate_param * z
        d_core_d_rate = -z
    else:
        rate = math.exp(-rate_param)
        core = a - rate * z
        d_core_d_rate = rate * z
    if not offset:
        jacobian[0] = 1.0
        jacobian[1] = d_core_d_rate
        return core, jacobian
    log_pred = np.logaddexp(core, offset[0])
    weight = np.exp(core - log_pred, out=jacobian[0])
    np.multiply(weight, d_core_d_rate, out=jacobian[1])
    np.subtract(1.0, weight, out=jacobian[2])
    return log_pred, jacobian


def curve_bounds(family: CurveFamily, log_error: FloatArray) -> list[tuple[float, float]]:
    """Box in internal coordinates, wide enough to hold any sensible fit.

    a: within e^25 of the observed errors; alpha in [0, 10]; tau / span in
    [e^-5, e^7] (beyond those the curve is a step or a flat line over the data);
    E between 1e-6 x the smallest error and the largest error.
    """
    low, high = float(log_error.min()), float(log_error.max())
    bounds = [(low - 25.0, high + 25.0)]
    bounds.append((0.0, 10.0) if family.decay == "power" else (-5.0, 7.0))
    if family.has_offset:
        bounds.append((low + math.log(1e-6), high))
    return bounds


_POWER_RATES = np.array([0.03, 0.1, 0.3, 1.0, 3.0])
_LOG_TAU_OVER_SPAN = np.log([0.03, 0.1, 0.3, 1.0, 3.0, 10.0])
_OFFSET_FRACTIONS = np.array([1e-3, 0.3, 0.6, 0.9])


def curve_starts(family: CurveFamily, z: FloatArray, error: FloatArray) -> FloatArray:
    """Grid of starting points (G, P): rates x offset fractions of the smallest error, each
    with the amplitude that matches the data in the mean, built in one pass.

    With z centred (mean 0) the least-squares amplitude of ``a - k z`` does not depend on
    the rate: it is the mean of log(error - offset) over the points."""
    rate_params = _POWER_RATES if family.decay == "power" else _LOG_TAU_OVER_SPAN
    if not family.has_offset:
        starts = np.empty((rate_params.size, 2))
        starts[:, 0] = np.log(error).mean()
        starts[:, 1] = rate_params
        return starts
    offsets = _OFFSET_FRACTIONS * error.min()
    starts = np.empty((rate_params.size, offsets.size, 3))
    starts[..., 0] = np.log(error[None, :] - offsets[:, None]).mean(axis=-1)
    starts[..., 1] = rate_params[:, None]
    starts[..., 2] = np.log(offsets)
    return starts.reshape(-1, 3)


def to_natural(
    family: CurveFamily, theta: FloatArray, coordinate: ComputeCoordinate
) -> dict[str, float]:
    """Natural-scale parameters (A, alpha or tau, E) of an internal vector."""
    a, rate_param, *offset = theta.tolist()
    if family.decay == "power":
        params = {"A": _exp(a + rate_param * coordinate.shift), "alpha": rate_param}
    else:
        tau = coordinate.span * _exp(rate_param)
        params = {"A": _exp(a + coordinate.shift / tau), "tau": tau}
    if offset:
        params["E"] = _exp(offset[0])
    return params


def _exp(value: float) -> float:
    """exp, inf where it overflows (an amplitude far outside the data's units)."""
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def natural_in_log_space(
    family: CurveFamily, theta: FloatArray, coordinate: ComputeCoordinate
) -> tuple[FloatArray, FloatArray, tuple[bool, ...]]:
    """Each natural parameter as the fits see it, with its gradient in the internal vector.

    Returns (values, gradients (n_natural, P), logged): ``logged[i]`` says the value is
    the logarithm of parameter i (A, tau, E are positive and nearly log-normal in a fit;
    alpha is used as it is). Intervals built here are symmetric in these coordinates.
    """
    p = family.n_params
    grads = np.zeros((p, p))
    values = np.zeros(p)
    if family.decay == "power":
        values[0] = theta[0] + theta[1] * coordinate.shift  # log A
        grads[0, :2] = (1.0, coordinate.shift)
        values[1], grads[1, 1] = theta[1], 1.0  # alpha
        logged = [True, False]
    else:
        inverse_tau_scaled = math.exp(-theta[1]) * coordinate.shift / coordinate.span
        values[0] = theta[0] + inverse_tau_scaled  # log A = a + mean(C) / tau
        grads[0, :2] = (1.0, -inverse_tau_scaled)
        values[1], grads[1, 1] = math.log(coordinate.span) + theta[1], 1.0  # log tau
        logged = [True, True]
    if family.has_offset:
        values[2], grads[2, 2] = theta[2], 1.0  # log E
        logged.append(True)
    return values, grads, tuple(logged)


BOUND_ADVICE: dict[tuple[str, str, str], str] = {
    ("power", "A", "lower"): (
        "the decaying term vanishes; use a family without it or check the data"
    ),
    ("power", "A", "upper"): "the amplitude diverges; check the compute units and outliers",
    ("power", "alpha", "lower"): (
        "the error does not decrease with compute here; check the data or widen the compute range"
    ),
    ("power", "alpha", "upper"): (
        "the error falls faster than any plausible power law; try an exponential family"
    ),
    ("exponential", "A", "lower"): "the decaying term vanishes; check the data",
    ("exponential", "A", "upper"): "the amplitude diverges; try a power-law family",
    ("exponential", "tau", "lower"): (
        "the decay is faster than the points resolve; try a power-law family"
    ),
    ("exponential", "tau", "upper"): (
        "the curve is flat over this range; add larger budgets or use a power law"
    ),
}
"""What to do when a one-variable fit ends on a bound, by (decay, parameter, side)."""
