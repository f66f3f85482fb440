"""Cooldown branches: the honest intermediate points of a warmup-stable-decay (WSD) run.

Under ``optimizer.schedule: wsd`` the main branch trains at its stable rate, and every
evaluation point (a budget of ``n`` learner steps, log-spaced in FLOPs as for cosine) is the
end of a run sized for ``n``: the loop keeps the state after main step ``n - k``, trains ``k``
more steps through a 1-sqrt cooldown (``k``: the ``optimizer.cooldown`` fraction of ``n``,
``trainers.optim.cooldown_steps``), on the data the stream gives next, evaluates the cooled
model, and restores the kept state, so the main branch goes on bitwise as without the branch.

A point's logged ``flops`` is what that sized run spends (main branch to ``n - k`` plus the
cooldown's ``k`` steps): the same compute a cosine run's point at ``n`` steps logs, so the two
schedules' frontiers share an axis. ``run_flops`` (``activescale.schema.METRIC_RUN_FLOPS``)
is what the run itself has spent, every cooldown so far included; plans price it.

The last point is the main branch itself, which decays over its own last ``k`` steps: a plain
WSD run of the whole budget (Hägele et al. 2024, Sec. 4: one run, every budget by cooldowns).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from trainers.optim import OptimConfig, cooldown_steps


@dataclass(frozen=True)
class Branch:
    """A cooldown of ``steps`` steps off the main branch after its step ``at_step``, evaluated
    as a run of ``budget`` steps."""

    at_step: int
    steps: int

    @property
    def budget(self) -> int:
        return self.at_step + self.steps


def plan_branches(
    eval_steps: Iterable[int], total_steps: int, cfg: OptimConfig
) -> tuple[Branch, ...]:
    """The branches of a run evaluated at ``eval_steps`` (budgets in steps): one per budget
    short of the run's, none under cosine. A budget too short for a cooldown step (under half
    a step's fraction) is evaluated on the main branch, still at its stable rate."""
    if cfg.schedule != "wsd":
        return ()
    branches = []
    for budget in sorted(eval_steps):
        steps = cooldown_steps(budget, cfg.cooldown)
        if budget < total_steps and steps > 0:
            branches.append(Branch(budget - steps, steps))
    return tuple(branches)


def branch_steps(branches: Iterable[Branch]) -> int:
    """Learner steps the run spends in cooldown branches, beyond its main branch."""
    return sum(branch.steps for branch in branches)
