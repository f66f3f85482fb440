"""Paired signal-caption data (``dataset.name: mnist1d_pairs``), generated locally.

The contrastive counterpart of MNIST-1D: each pair is an "image" (an MNIST-1D signal, from
:func:`trainers.data.mnist1d.generate_mnist1d`) and a "caption" (tokens describing its class,
from :mod:`trainers.captions`). The splits mirror the classification ones:

- a large noisy **training pool** (``train_size``, or a stream of fresh pairs): a fraction
  ``captions.mismatch`` of the pairs carry the caption of another class, a fraction
  ``captions.uninformative`` carry filler-only captions; ``noise_inputs`` and
  ``duplicate_easy`` corrupt the signals as for classification. Every noisy pair is flagged
  in the ``corrupted`` mask;
- a small clean **curated pool** (``clean_size``) for the reference model;
- clean held-out **test pairs** (``test_size``) with their classes, and the **class prompts**
  for zero-shot classification.

Signals and classes of the test and curated splits are exactly those of the ``mnist1d``
dataset with the same seed and sizes; captions are drawn after them from the same generator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from trainers.captions import CaptionConfig, caption_tables, sample_captions
from trainers.data.config import DataConfig
from trainers.data.mnist1d import MNIST1D_LENGTH, MNIST1D_NUM_CLASSES, generate_mnist1d
from trainers.data.pools import mnist1d_block, train_pool
from trainers.data.seeding import Purpose, derived_rng
from trainers.data.splits import DatasetFacts, Splits
from trainers.data.stream import StreamSource

__all__ = [
    "PairStreamSource",
    "PairedSplits",
    "captions_of",
    "describe_pairs",
    "load_pairs",
    "pair_block",
]


@dataclass
class PairedSplits(Splits):
    """Splits whose targets (``*_y``) are caption tokens (n, length) int64."""

    test_labels: torch.Tensor  # int64 (n,): the class of each test pair
    prompts: torch.Tensor  # int64 (classes, prompts per class, length): zero-shot prompts
    vocab_size: int

    def facts(self) -> DatasetFacts:
        return replace(super().facts(), vocab_size=self.vocab_size)


def captions_of(cfg: DataConfig) -> CaptionConfig:
    """The dataset's caption settings (DataConfig fills them in for mnist1d_pairs)."""
    return cfg.captions or CaptionConfig()


def pair_block(
    cfg: DataConfig,
    rng: np.random.Generator,
    n: int,
    prototypes: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n noisy training pairs: (signals, captions, corrupted mask)."""
    x, labels, corrupted = mnist1d_block(cfg, rng, n, prototypes)  # noise_inputs, duplicates
    captions, mismatched, uninformative = sample_captions(
        labels, captions_of(cfg), rng, MNIST1D_NUM_CLASSES
    )
    return x, captions, corrupted | mismatched | uninformative


def _clean_pairs(
    cfg: DataConfig, purpose: Purpose, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = derived_rng(purpose, cfg.seed)
    x, labels = generate_mnist1d(n, rng, label_balance="balanced", noise=cfg.signal_noise)
    captions, _, _ = sample_captions(labels, captions_of(cfg), rng, MNIST1D_NUM_CLASSES, clean=True)
    return x, captions, labels


def load_pairs(cfg: DataConfig) -> PairedSplits:
    """The training pool (empty in the stream regime), curated pool, test pairs and prompts."""
    caption_cfg = captions_of(cfg)
    test_x, test_y, test_labels = _clean_pairs(cfg, Purpose.TEST, cfg.test_size)
    clean_x, clean_y, _ = _clean_pairs(cfg, Purpose.CLEAN, cfg.clean_size)
    train_x, train_y, train_corrupted = train_pool(cfg, pair_block, (caption_cfg.length,))
    tables = caption_tables(caption_cfg.vocabulary, caption_cfg.length, MNIST1D_NUM_CLASSES)
    return PairedSplits(
        train_x=_tensor(train_x),
        train_y=_tensor(train_y),
        train_corrupted=_tensor(train_corrupted),
        test_x=_tensor(test_x),
        test_y=_tensor(test_y),
        clean_x=_tensor(clean_x),
        clean_y=_tensor(clean_y),
        num_classes=MNIST1D_NUM_CLASSES,
        input_shape=tuple(test_x.shape[1:]),
        test_labels=_tensor(test_labels),
        prompts=_tensor(tables.prompts),
        vocab_size=tables.vocab_size,
    )


def describe_pairs(cfg: DataConfig) -> DatasetFacts:
    """The facts of :func:`load_pairs` without generating anything."""
    caption_cfg = captions_of(cfg)
    tables = caption_tables(caption_cfg.vocabulary, caption_cfg.length, MNIST1D_NUM_CLASSES)
    return DatasetFacts(
        input_shape=(MNIST1D_LENGTH,),
        num_classes=MNIST1D_NUM_CLASSES,
        target_shape=(caption_cfg.length,),
        vocab_size=tables.vocab_size,
        clean_size=cfg.clean_size,
    )


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


class PairStreamSource(StreamSource):
    """A never-ending stream of fresh noisy pairs; resumes exactly like :class:`StreamSource`
    (chunk c is regenerated from a generator keyed by data seed, run seed and c)."""

    dataset_name = "mnist1d_pairs"

    def make_block(
        self, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return pair_block(self.cfg, rng, n, self.prototypes)
