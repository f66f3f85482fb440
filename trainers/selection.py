"""Selection policies: score every example of a super-batch, keep a batch of them.

A policy is a small pure function of per-example losses (Evans et al. 2023, "Bad Students Make
Great Teachers", Sec. 3; Mindermann et al. 2022, RHO-LOSS, Eq. 3). Which losses a policy needs
decides which forward passes the training step pays for:

=============== ========================================= =========================
policy          score                                     forward passes needed
=============== ========================================= =========================
iid             none: the super-batch *is* the batch      none
hard_learner    learner loss                              learner
hard_scorer     online-scorer loss                        scorer
easy_reference  - reference loss                          reference
learnability    online-scorer loss - reference loss       scorer, reference
rho_loss        learner loss - reference loss             learner, reference
=============== ========================================= =========================

Selection is ``topk`` (keep the B highest scores) or ``sample``: B examples without
replacement with probability proportional to softmax(score / temperature), drawn with the
Gumbel-top-k trick (Kool et al. 2019), which is exact for sampling without replacement.

A run on several processes (``trainers/distributed.py``) selects from the whole super-batch
(``scope: global``, the default: the batch one process would keep) or per process
(``scope: local``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

Role = Literal["learner", "scorer", "reference"]
Losses = dict[Role, torch.Tensor]


@dataclass(frozen=True)
class Policy:
    name: str
    needs: tuple[Role, ...]
    score: Callable[[Losses], torch.Tensor]


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in [
        Policy("iid", (), lambda losses: torch.zeros(0)),
        Policy("hard_learner", ("learner",), lambda losses: losses["learner"]),
        Policy("hard_scorer", ("scorer",), lambda losses: losses["scorer"]),
        Policy("easy_reference", ("reference",), lambda losses: -losses["reference"]),
        Policy(
            "learnability",
            ("scorer", "reference"),
            lambda losses: losses["scorer"] - losses["reference"],
        ),
        Policy(
            "rho_loss",
            ("learner", "reference"),
            lambda losses: losses["learner"] - losses["reference"],
        ),
    ]
}

PolicyName = Literal[
    "iid", "hard_learner", "hard_scorer", "easy_reference", "learnability", "rho_loss"
]


class SelectionConfig(BaseModel):
    """How the learner's batch is chosen from each super-batch."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    policy: PolicyName = Field("iid", description="Scoring policy (see trainers/selection.py).")
    keep: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Filter ratio rho: fraction of the super-batch kept; super-batch = B / rho.",
    )
    method: Literal["topk", "sample"] = Field(
        "topk", description="topk, or sample without replacement ~ softmax(score / temperature)."
    )
    temperature: float = Field(1.0, gt=0, description="Softmax temperature for method=sample.")
    scope: Literal["global", "local"] = Field(
        "global",
        description=(
            "Runs on several processes: global selects from the whole super-batch (scores "
            "all-gathered; the batch one process would keep); local: each process keeps "
            "its share's best (cheaper; what the JEST papers do per device)."
        ),
    )

    @model_serializer(mode="wrap")
    def _omit_default_scope(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Added after run ids existed: configs at the default dump (and hash) as before.
        data: dict[str, Any] = handler(self)
        if data.get("scope") == "global":
            del data["scope"]
        return data

    def super_batch_size(self, batch_size: int) -> int:
        """B / rho, rounded to the nearest integer; iid draws exactly B."""
        if self.policy == "iid":
            return batch_size
        return max(batch_size, round(batch_size / self.keep))


def select(
    scores: torch.Tensor,
    k: int,
    method: Literal["topk", "sample"],
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    uniform: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices of the ``k`` examples to keep from a super-batch of ``len(scores)``.
    ``uniform``: method sample's U(0, 1) draws, one per score (default: from ``generator``)."""
    if method == "topk":
        return torch.topk(scores, k, sorted=False).indices
    # Gumbel-top-k: argtop-k of (s/T + Gumbel noise) samples without replacement from softmax(s/T).
    # Drawn where the generator lives (the run's CPU generator), then moved: a CUDA tensor
    # cannot be filled from a CPU generator. On CPU the move is a no-op.
    if uniform is None:
        uniform = torch.rand(scores.shape, generator=generator)
    uniform = uniform.to(scores.device)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
    return torch.topk(scores / temperature + gumbel, k, sorted=False).indices
