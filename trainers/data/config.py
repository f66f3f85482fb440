"""The configuration of a run's data: which dataset, its sizes, and how it is corrupted.

Its JSON dump is part of every run id (``RunConfig.run_id``): a field added later must dump
nothing at its default (see ``_omit_absent_captions``) so that existing ids do not change.
Checks that depend on the dataset (does it need ``path``, can it stream) come from the
dataset's registry entry (``trainers.data.registry``) through :class:`DatasetConfig`, the base
of every dataset's config model; the built-in datasets share this one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from trainers.captions import CaptionConfig, check_fraction
from trainers.data.registry import DatasetConfig, registered_datasets
from trainers.data.seeding import Seed

__all__ = ["DataConfig"]


class DataConfig(DatasetConfig):
    """Which data a run trains and evaluates on, and how the training data are corrupted."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str = Field(
        default="mnist1d",
        description=(
            "Dataset: generated MNIST-1D, MNIST-1D signal-caption pairs (task: contrastive), "
            "an .npz file, CIFAR-10 or a folder."
        ),
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        description="The .npz file, or the root folder for cifar10/imagefolder.",
    )
    regime: Literal["fixed", "stream"] = Field(
        default="fixed",
        description="fixed: one pool reused over epochs; stream: fresh examples (mnist1d*).",
    )
    train_size: int = Field(
        default=4000, description="Training-pool size (mnist1d fixed regime only)."
    )
    test_size: int = Field(default=1000, description="Test-split size (mnist1d only).")
    clean_size: int = Field(
        default=500,
        description="Curated clean split for the reference model (carved if not given).",
    )
    label_noise: float = Field(
        default=0.0, description="Fraction of training labels replaced by a random different class."
    )
    noise_inputs: float = Field(
        default=0.0,
        description="Fraction of training examples replaced by pure noise, random labels.",
    )
    duplicate_easy: float = Field(
        default=0.0,
        description="Fraction of training examples replaced by copies of a few easy ones.",
    )
    seed: Seed = Field(
        default=0, description="Data seed: runs with the same data config see the same data."
    )
    captions: CaptionConfig | None = Field(
        default=None,
        description="Caption wording and noise (mnist1d_pairs only; null there: the defaults).",
    )
    signal_noise: float = Field(
        default=1.0,
        ge=0.0,
        description=(
            "Multiplier of MNIST-1D's correlated and iid signal noise (1: the standard task); "
            "another value makes a related task, e.g. to pretrain a transferred reference."
        ),
    )

    @field_validator("train_size", "test_size", "clean_size")
    @classmethod
    def _positive_size(cls, value: int, info: Any) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name}={value!r} is not allowed: must be an integer >= 1")
        return value

    @field_validator("label_noise", "noise_inputs", "duplicate_easy")
    @classmethod
    def _fraction(cls, value: float, info: Any) -> float:
        return check_fraction(value, info.field_name)

    @model_serializer(mode="wrap")
    def _omit_absent_captions(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Datasets without captions dump (and hash) exactly as before captions existed.
        data: dict[str, Any] = handler(self)
        if self.captions is None:
            data.pop("captions", None)
        if self.signal_noise == 1.0:  # likewise for the standard signal noise
            data.pop("signal_noise", None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        paired = self.name == "mnist1d_pairs"
        if self.captions is not None and not paired:
            raise ValueError(
                f"captions is not allowed with name={self.name!r}: only mnist1d_pairs has "
                "captions; remove dataset.captions or set dataset.name: mnist1d_pairs"
            )
        if paired and self.label_noise > 0:
            raise ValueError(
                f"label_noise={self.label_noise!r} is not allowed with name='mnist1d_pairs': "
                "a pair's target is its caption; use dataset.captions.mismatch"
            )
        if paired and self.captions is None:
            self.captions = CaptionConfig()  # explicit defaults hash like omitted ones
        if self.noise_inputs + self.duplicate_easy >= 1.0:
            raise ValueError(
                f"noise_inputs + duplicate_easy = {self.noise_inputs!r} + {self.duplicate_easy!r}"
                " is not allowed: they replace disjoint examples, so the sum must be < 1"
            )
        return self

    @field_validator("name")
    @classmethod
    def _one_of_ours(cls, name: str) -> str:
        entry = registered_datasets().get(name)
        if entry is not None and entry.config is not cls:
            raise ValueError(
                f"dataset {name!r} is configured by {entry.config.__name__}, not DataConfig"
            )
        return name
