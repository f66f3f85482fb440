"""One run's configuration, composed from the configs each component owns.

A sweep (``orchestrator/spec.py``) is a base ``RunConfig`` plus a grid; every grid point is one
``RunConfig``, and its hash is the run's identity. Cross-field rules that no single component
can check live in :meth:`RunConfig._consistent`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from activescale.errors import ConfigError
from trainers.contrastive import ContrastiveConfig
from trainers.data import DataConfig, DatasetField, dataset_entry, registered_datasets
from trainers.data.seeding import Seed
from trainers.flops import ReferenceCost
from trainers.models import ModelConfig
from trainers.optim import OptimConfig
from trainers.selection import POLICIES, SelectionConfig
from trainers.tasks import TASKS, task_entry

DEFAULT_TASK = "classification"
# The validation context of a config as a user wrote it (a sweep file, an override), for the
# rules about how it is written; a stored dump (a job's config) is validated without it.
USER_INPUT: dict[str, Any] = {"user_input": True}


def is_user_input(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("user_input"))


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
    dataset: DatasetField | None = Field(
        None,
        description=(
            "Policy transfer: pretrain the reference on this dataset's clean split instead of "
            "the run's (another noise level, task or template set)."
        ),
    )


class BudgetConfig(BaseModel):
    """How long the learner trains: a number of learner steps, or a total-FLOP budget."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    steps: int | None = Field(1000, ge=1, description="Learner steps (not with flops).")
    flops: float | None = Field(
        None, gt=0, description="Total FLOPs (ledger total, scoring included); not with steps."
    )

    @model_validator(mode="after")
    def _exactly_one(self, info: ValidationInfo) -> BudgetConfig:
        # A flops budget dumps the unused default `steps: 1000` (run ids predate this rule), so
        # only a config as written is held to it: `steps` given explicitly next to `flops`.
        given = "steps" in self.model_fields_set and self.steps is not None
        if self.flops is not None and given and is_user_input(info):
            raise ValueError(
                f"give exactly one of steps and flops, not both (steps={self.steps}, "
                f"flops={self.flops:g}); remove one of them"
            )
        return self


class EvalConfig(BaseModel):
    """When and how the learner is evaluated on the clean test split."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    points: int = Field(
        12, ge=2, le=1000, description="Number of evaluations, log-spaced in total FLOPs."
    )
    first: float = Field(
        0.02, gt=0, le=1, description="First evaluation at this fraction of the learner steps."
    )
    batch_size: int = Field(2000, ge=1, description="Evaluation batch size.")


# Optional sections added after run ids existed: left out of the dump when unset, so the ids of
# runs that do not use them stay what they were.
OMITTED_WHEN_NONE = frozenset({"contrastive"})


class RunConfig(BaseModel):
    """Everything that determines one training run (its hash is the run id)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    task: str = Field(
        DEFAULT_TASK,
        description=(
            "What the models learn: classification, contrastive (signal-caption pairs), or a "
            "task a plugin registers."
        ),
    )
    contrastive: ContrastiveConfig | None = Field(
        None, description="Settings of task contrastive (null: the defaults)."
    )
    seed: Seed = Field(
        0, description="Seed for model init, data order and selection sampling, in [0, 2**32)."
    )
    batch_size: int = Field(64, ge=1, description="Learner batch size B (examples kept per step).")
    dataset: DatasetField = Field(default_factory=DataConfig, description="Training data.")
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

    @field_validator("task")
    @classmethod
    def _registered_task(cls, task: str) -> str:
        try:
            task_entry(task)
        except ConfigError as err:  # reported at the key, with file:line
            raise ValueError(str(err)) from None
        return task

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
        self._targets_consistent()
        if self.budget.steps is None and self.budget.flops is None:
            raise ValueError("budget: needs `steps` or `flops`; set one of them")
        super_batch = self.selection.super_batch_size(self.batch_size)
        pool = getattr(self.dataset, "train_size", None)  # the built-in datasets' pool size
        if self.dataset.regime == "fixed" and pool is not None and super_batch > pool:
            raise ValueError(
                f"selection.keep: the super-batch ({super_batch} = batch_size {self.batch_size} / selection.keep "
                f"{self.selection.keep}) is larger than dataset.train_size "
                f"{pool}; lower batch_size or raise selection.keep"
            )
        check = task_entry(self.task).check
        if check is not None:
            check(self)
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_task_settings(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Runs without contrastive settings dump (and hash) exactly as before they existed.
        data: dict[str, Any] = handler(self)
        for name in OMITTED_WHEN_NONE:
            if data.get(name, 0) is None:
                del data[name]
        return data

    def _targets_consistent(self) -> None:
        """A task learns from one kind of target (class labels, signal-caption pairs, ...), and
        the run's dataset, and a transferred reference's, must give it."""
        wanted = task_entry(self.task).targets
        given = dataset_entry(self.dataset.name).targets
        if wanted != given:
            if self.task == DEFAULT_TASK:  # the dataset is what was set: name it
                fits = _names(t.name for t in TASKS.values() if t.targets == given)
                raise ValueError(
                    f"dataset.name: {self.dataset.name!r} gives {given}, not {wanted}, but task "
                    f"is {self.task!r}; set task to one that learns from {given}: {fits}"
                )
            fits = _names(n for n, e in registered_datasets().items() if e.targets == wanted)
            raise ValueError(
                f"task: {self.task!r} learns from {wanted}, but dataset.name is "
                f"{self.dataset.name!r} ({given}); set dataset.name to one of {fits}"
            )
        if self.contrastive is not None and self.task != "contrastive":
            raise ValueError(
                f"contrastive: settings of task 'contrastive', but task is {self.task!r}; "
                "remove them or set task: contrastive"
            )
        transferred = self.reference.dataset if self.reference else None
        if not self.uses_reference or transferred is None:
            return
        if dataset_entry(transferred.name).targets != given:
            fits = _names(n for n, e in registered_datasets().items() if e.targets == given)
            raise ValueError(
                f"reference.dataset.name: {transferred.name!r} cannot train a reference for "
                f"task {self.task!r} on dataset {self.dataset.name!r}; use a dataset of "
                f"{given}: {fits}"
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
        only in scorer size are then the same run, and a sweep runs it once. Likewise
        ``reference_cost`` (how a pretrained reference's FLOPs are charged) is reset to its
        default for runs that pretrain no reference (no reference, or a parallel one), so
        trying ``amortize`` does not rerun the IID baseline.
        """
        update: dict[str, object] = {}
        if not self.uses_scorer:
            update["scorer"] = None
        if not self.uses_reference:
            update["reference"] = None
        if not (self.uses_reference and self.reference and self.reference.mode == "pretrained"):
            update["reference_cost"] = type(self).model_fields["reference_cost"].default
        if self.selection.policy == "iid":
            update["selection"] = SelectionConfig(policy="iid", keep=1.0)
        elif self.selection.method == "topk":  # the softmax temperature of method=sample
            default = SelectionConfig.model_fields["temperature"].default
            update["selection"] = self.selection.model_copy(update={"temperature": default})
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


def _names(names: Iterable[str]) -> str:
    return ", ".join(names) or "(none registered)"
