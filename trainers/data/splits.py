"""What a dataset gives a run: its splits, and the facts about them that planning needs.

Every dataset, built in or registered from a plugin (``trainers.data.registry``), builds a
:class:`Splits`: a (possibly corrupted) training pool with its corruption mask (None where the
data cannot say which examples are corrupted: then no run reports a corrupted fraction), a clean
curated split for the reference model and a clean test split. :class:`DatasetFacts` are the
shapes and sizes a planner needs without the data (to build models, price FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from activescale.errors import DataError

__all__ = ["DatasetFacts", "Splits", "splits_from_arrays"]


@dataclass(frozen=True)
class DatasetFacts:
    """A dataset's shapes and the size of its clean split, known (for generated data) without
    generating any. The first four are those of ``trainers.tasks.DataSpec``."""

    input_shape: tuple[int, ...]  # per example, e.g. (40,) for mnist1d, (3, 32, 32) for images
    num_classes: int
    target_shape: tuple[int, ...] = ()  # () for a class label; (length,) for a caption
    vocab_size: int = 0  # token ids of caption targets (padding included); 0 without captions
    clean_size: int = 0  # examples in the clean split (what a pretrained reference trains on)


@dataclass
class Splits:
    """All data a run needs besides the training stream. In the stream regime the train_*
    tensors are empty (0 examples) and training examples come from the dataset's stream
    source (``trainers.data.registry.make_source``)."""

    train_x: torch.Tensor
    train_y: torch.Tensor  # int64
    # bool: example was corrupted (label noise, noise input, duplicate); None: not known.
    train_corrupted: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor
    clean_x: torch.Tensor
    clean_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]  # per example, e.g. (40,) for mnist1d, (3, 32, 32) for images

    def facts(self) -> DatasetFacts:
        """The facts of these splits (what ``describe`` of a dataset must agree with)."""
        return DatasetFacts(
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            target_shape=tuple(self.test_y.shape[1:]),
            clean_size=len(self.clean_y),
        )


def splits_from_arrays(
    train: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    test: tuple[np.ndarray, np.ndarray],
    clean: tuple[np.ndarray, np.ndarray],
    num_classes: int,
) -> Splits:
    """Splits from numpy: train (inputs, targets, corrupted mask or None: not known), test and
    clean (inputs, targets). Tensors share memory with contiguous arrays of the right dtypes; inputs of
    another float dtype become float32 and integer labels int64 (what the models and losses
    take), a 0/1 mask becomes bool. Per-example shape from train. DataError for arrays that
    cannot be right: lengths that differ, non-integer labels, class labels outside
    ``[0, num_classes)``."""
    parts = {
        "train": train[:2],
        "test": test,
        "clean": clean,
    }
    converted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (x, y) in parts.items():
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y):
            raise DataError(f"the {split} split has {len(x)} inputs but {len(y)} targets")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"the {split} split's targets are {y.dtype}; class labels (or token ids) must "
                "be integers"
            )
        if y.ndim == 1 and len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(
                f"the {split} split has class labels from {y.min()} to {y.max()}, outside "
                f"[0, num_classes={num_classes})"
            )
        if np.issubdtype(x.dtype, np.floating) and x.dtype != np.float32:
            x = x.astype(np.float32)
        converted[split] = (x, y.astype(np.int64, copy=False))
    mask = None if train[2] is None else np.asarray(train[2]).astype(bool, copy=False)
    if mask is not None and len(mask) != len(converted["train"][1]):
        raise DataError(
            f"the train split has {len(converted['train'][1])} examples but a corrupted mask "
            f"of {len(mask)}"
        )
    train_x, train_y, test_x, test_y, clean_x, clean_y = (
        torch.from_numpy(np.ascontiguousarray(a))
        for a in (*converted["train"], *converted["test"], *converted["clean"])
    )
    train_corrupted = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))
    return Splits(
        train_x=train_x,
        train_y=train_y,
        train_corrupted=train_corrupted,
        test_x=test_x,
        test_y=test_y,
        clean_x=clean_x,
        clean_y=clean_y,
        num_classes=num_classes,
        input_shape=tuple(converted["train"][0].shape[1:]),
    )
