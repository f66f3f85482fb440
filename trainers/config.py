"""One run's configuration, composed from the configs each component owns.

A sweep (``orchestrator/spec.py``) is a base ``RunConfig`` plus a grid; every grid point is one
``RunConfig``, and its hash is the run's identity. Cross-field rules that no single component
can check live in :meth:`RunConfig._consistent`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from trainers.contrastive import ContrastiveConfig
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


# Optional sections added after run ids existed: left out of the dump when unset, so the ids of
# runs that do not use them stay what they were.
OMITTED_WHEN_NONE = frozenset({"contrastive"})


class RunConfig(BaseModel):
    """Everything that determines one training run (its hash is the run id)."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["classification", "contrastive"] = Field(
        "classification",
        description="What the models learn: classification, or contrastive (signal-caption pairs).",
    )
    contrastive: ContrastiveConfig | None = Field(
        None, description="Settings of task contrastive (null: the defaults)."
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
        self._paired_data_consistent()
        if self.budget.steps is None and self.budget.flops is None:
            raise ValueError("budget: needs `steps` or `flops`; set one of them")
        super_batch = self.selection.super_batch_size(self.batch_size)
        if self.dataset.regime == "fixed" and super_batch > self.dataset.train_size:
            raise ValueError(
                f"selection.keep: the super-batch ({super_batch} = batch_size {self.batch_size} / selection.keep "
                f"{self.selection.keep}) is larger than dataset.train_size "
                f"{self.dataset.train_size}; lower batch_size or raise selection.keep"
            )
        chunk = self.contrastive.chunk if self.contrastive else None
        if chunk is not None and self.selection.policy != "iid" and chunk > super_batch:
            raise ValueError(
                f"contrastive.chunk: {chunk} pairs per scoring chunk is larger than the "
                f"super-batch ({super_batch} = batch_size {self.batch_size} / selection.keep "
                f"{self.selection.keep}); lower contrastive.chunk to at most {super_batch}"
            )
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_task_settings(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Runs without contrastive settings dump (and hash) exactly as before they existed.
        data: dict[str, Any] = handler(self)
        for name in OMITTED_WHEN_NONE:
            if data.get(name, 0) is None:
                del data[name]
        return data

    def _paired_data_consistent(self) -> None:
        """Contrastive runs learn from caption pairs, classifiers from labels; a transferred
        reference must read the same captions (vocabulary and length) as the run."""
        paired = self.dataset.name == "mnist1d_pairs"
        if self.task == "contrastive" and not paired:
            raise ValueError(
                f"task: 'contrastive' learns from signal-caption pairs, but dataset.name is "
                f"{self.dataset.name!r}; set dataset.name: mnist1d_pairs"
            )
        if self.task != "contrastive" and paired:
            raise ValueError(
                f"dataset.name: 'mnist1d_pairs' gives captions, not class labels, but task is "
                f"{self.task!r}; set task: contrastive"
            )
        if self.contrastive is not None and self.task != "contrastive":
            raise ValueError(
                f"contrastive: settings of task 'contrastive', but task is {self.task!r}; "
                "remove them or set task: contrastive"
            )
        transferred = self.reference.dataset if self.reference else None
        if not self.uses_reference or transferred is None:
            return
        if (transferred.name == "mnist1d_pairs") != paired:
            raise ValueError(
                f"reference.dataset.name: {transferred.name!r} cannot train a reference for "
                f"task {self.task!r} on dataset {self.dataset.name!r}; use "
                + ("mnist1d_pairs" if paired else "a labelled dataset")
            )
        if paired and transferred.captions and self.dataset.captions:
            ours, theirs = self.dataset.captions, transferred.captions
            for key in ("vocabulary", "length"):
                if getattr(ours, key) != getattr(theirs, key):
                    raise ValueError(
                        f"reference.dataset.captions.{key}: {getattr(theirs, key)!r} differs "
                        f"from dataset.captions.{key} {getattr(ours, key)!r}; the reference "
                        "reads the run's captions, so set the same caption "
                        "vocabulary and length"
                    )

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
        if self.task == "contrastive":  # chunk: explicit default; unused (batch size) for iid
            chunk = self.contrastive.chunk if self.contrastive else None
            if chunk is None or self.selection.policy == "iid":
                chunk = self.batch_size
            update["contrastive"] = ContrastiveConfig(chunk=chunk)
        return self.model_copy(update=update)

    def run_id(self) -> str:
        """Stable id: a hash of the resolved config (defaults included, key order irrelevant)."""
        return config_hash(self.model_dump(mode="json"))


def config_hash(data: object, length: int = 16) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
