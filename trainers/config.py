"""One run's configuration, composed from the configs each component owns.

A sweep (``orchestrator/spec.py``) is a base ``RunConfig`` plus a grid; every grid point is one
``RunConfig``, and its hash is the run's identity. Cross-field rules that no single component
can check live in :meth:`RunConfig._consistent`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainers.data import DataConfig
from trainers.flops import ReferenceCost
from trainers.models import ModelConfig
from trainers.optim import OptimConfig
from trainers.selection import POLICIES, SelectionConfig


class ReferenceConfig(ModelConfig):
    """The reference model: ``pretrained`` once on a clean split (cached), or ``parallel``."""

    mode: Literal["pretrained", "parallel"] = Field(
        "pretrained",
        description=(
            "pretrained: trained once on the clean split before the run, cached on disk and "
            "shared by every run with the same reference; parallel: trained alongside the "
            "learner on IID batches of the clean split."
        ),
    )
    steps: int = Field(400, ge=1, description="Pretraining steps (mode=pretrained).")
    batch_size: int = Field(64, ge=1, description="Reference training batch size.")
    dataset: DataConfig | None = Field(
        None,
        description=(
            "Policy transfer: pretrain the reference on this dataset's clean split instead of "
            "the run's (another noise level, task or template set)."
        ),
    )


class BudgetConfig(BaseModel):
    """How long the learner trains: a number of learner steps, or a total-FLOP budget."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(1000, ge=1, description="Learner steps (null when flops is set).")
    flops: float | None = Field(
        None, gt=0, description="Total FLOPs (ledger total, scoring included); overrides steps."
    )


class EvalConfig(BaseModel):
    """When and how the learner is evaluated on the clean test split."""

    model_config = ConfigDict(extra="forbid")

    points: int = Field(12, ge=2, description="Number of evaluations, log-spaced in total FLOPs.")
    first: float = Field(
        0.02, gt=0, le=1, description="First evaluation at this fraction of the learner steps."
    )
    batch_size: int = Field(2000, ge=1, description="Evaluation batch size.")


class RunConfig(BaseModel):
    """Everything that determines one training run (its hash is the run id)."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["classification"] = Field(
        "classification", description="What the models learn (trainers/tasks.py)."
    )
    seed: int = Field(0, description="Seed for model init, data order and selection sampling.")
    batch_size: int = Field(64, ge=1, description="Learner batch size B (examples kept per step).")
    dataset: DataConfig = Field(default_factory=DataConfig, description="Training data.")
    learner: ModelConfig = Field(default_factory=ModelConfig, description="The learner.")
    scorer: ModelConfig | None = Field(
        None, description="Online scorer (hard_scorer, learnability); trained on selected data."
    )
    reference: ReferenceConfig | None = Field(
        None, description="Reference model (easy_reference, learnability, rho_loss)."
    )
    selection: SelectionConfig = Field(default_factory=SelectionConfig, description="Policy.")
    optimizer: OptimConfig = Field(default_factory=OptimConfig, description="AdamW schedule.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Training length.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation cadence.")
    reference_cost: ReferenceCost = Field(
        "include",
        description="How reference pretraining FLOPs count: include, amortize or exclude.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA with bf16 autocast when available, else CPU."
    )
    checkpoint_every: int = Field(
        0, ge=0, description="Extra checkpoint every N steps (0: only at evaluations)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        needs = POLICIES[self.selection.policy].needs
        if "scorer" in needs and self.scorer is None:
            raise ValueError(
                f"scorer: selection.policy {self.selection.policy!r} scores with an online scorer, but "
                "`scorer` is not set; add e.g. `scorer: {arch: mlp, size: xxs}`"
            )
        if "reference" in needs and self.reference is None:
            raise ValueError(
                f"reference: selection.policy {self.selection.policy!r} needs a reference model, but "
                "`reference` is not set; add e.g. `reference: {arch: mlp, size: xxs}`"
            )
        if self.budget.steps is None and self.budget.flops is None:
            raise ValueError("budget: needs `steps` or `flops`; set one of them")
        super_batch = self.selection.super_batch_size(self.batch_size)
        if self.dataset.regime == "fixed" and super_batch > self.dataset.train_size:
            raise ValueError(
                f"selection.keep: the super-batch ({super_batch} = batch_size {self.batch_size} / selection.keep "
                f"{self.selection.keep}) is larger than dataset.train_size "
                f"{self.dataset.train_size}; lower batch_size or raise selection.keep"
            )
        return self

    @property
    def uses_scorer(self) -> bool:
        return "scorer" in POLICIES[self.selection.policy].needs

    @property
    def uses_reference(self) -> bool:
        return "reference" in POLICIES[self.selection.policy].needs

    def resolved(self) -> RunConfig:
        """The config with settings the policy ignores cleared, so equal runs hash equally.

        An ``iid`` run trains no scorer and reads no reference: two grid points that differ
        only in scorer size are then the same run, and a sweep runs it once.
        """
        update: dict[str, object] = {}
        if not self.uses_scorer:
            update["scorer"] = None
        if not self.uses_reference:
            update["reference"] = None
        if self.selection.policy == "iid":
            update["selection"] = SelectionConfig(policy="iid", keep=1.0)
        return self.model_copy(update=update)

    def run_id(self) -> str:
        """Stable id: a hash of the resolved config (defaults included, key order irrelevant)."""
        return config_hash(self.model_dump(mode="json"))


def config_hash(data: object, length: int = 16) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
