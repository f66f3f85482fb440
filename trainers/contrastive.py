"""Contrastive signal-caption learning (ActiveCLIP; Evans et al. 2023, Sec. 5): the task.

A two-tower model embeds a signal with any ladder model (``mlp``, ``cnn1d``; its head outputs
an :data:`EMBED_DIM`-dimensional embedding) and a caption with the text ladder of the same size
name, both L2-normalised, and compares them with a learnable temperature (CLIP, Radford et al.
2021: logit scale initialised to 1/0.07 and clamped to at most 100).

**Training loss**: the symmetric InfoNCE loss of the batch (van den Oord et al. 2018; CLIP):
the mean over pairs of ``(CE(row i of S, i) + CE(column i of S, i)) / 2`` with
``S = scale * signals @ captions.T``; each pair's negatives are the other pairs of the batch.

**Per-example loss for scoring** (what the selection policies rank): a contrastive loss needs
negatives, so the super-batch of ``n`` pairs is cut into ``ceil(n / chunk)`` consecutive
chunks of nearly equal size (sizes differ by at most one, all ``<= chunk``), and each pair's
loss is its symmetric InfoNCE term against the other pairs of its chunk. The super-batch
comes from a shuffled pool or a stream, so chunks are random subsets; ``chunk`` defaults to the
learner batch size B, so a pair is scored against as many negatives as it is trained with.
The mean of the per-example losses of one chunk equals that chunk's InfoNCE loss. The towers
run once over the super-batch; the chunk similarity matrices add ``2 * n * chunk * EMBED_DIM``
FLOPs, which the ledger measures with the towers (``FlopMeter.scoring``).

**Evaluation** on clean held-out pairs: zero-shot classification (each class's prompts through
the text tower, embeddings averaged and renormalised; a signal gets the class of its nearest
class embedding), reported as ``accuracy``/``error``, the zero-shot cross-entropy as ``loss``,
and retrieval recall@1 in both directions over the whole test set. Captions describe only a
pair's class, so pairs of one class are interchangeable: a retrieval counts as correct when
the retrieved caption (signal) belongs to a pair of the query's class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from activescale.errors import ConfigError, DataError
from trainers.captions import PAD
from trainers.data import PairedSplits, Splits
from trainers.models import ModelConfig, build_model

if TYPE_CHECKING:
    from trainers.config import RunConfig
    from trainers.tasks import DataSpec

__all__ = [
    "EMBED_DIM",
    "TEXT_LADDER",
    "Contrastive",
    "ContrastiveConfig",
    "TextEncoder",
    "TwoTower",
    "info_nce",
    "pair_losses",
]

EMBED_DIM = 32  # shared embedding width of both towers, every size
INIT_TEMPERATURE = 0.07  # CLIP (Radford et al. 2021, Sec. 2.5)
MAX_LOGIT_SCALE = 100.0  # CLIP clips the logit scale at 100
TEXT_SEED_OFFSET = 7_919  # text tower weights differ from the signal tower's


class ContrastiveConfig(BaseModel):
    """Settings of the contrastive task (``task: contrastive``)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    chunk: int | None = Field(
        None,
        ge=2,
        description=(
            "Scoring: each pair's loss is taken against the other pairs of its chunk of the "
            "super-batch, of at most this many pairs; null: the batch size."
        ),
    )


@dataclass(frozen=True)
class TextSize:
    width: int
    depth: int  # hidden layers after mean pooling


# Same size names as the signal ladders (trainers/models.py), so `size: m` picks both towers.
TEXT_LADDER: dict[str, TextSize] = {
    "xxs": TextSize(8, 1),
    "xs": TextSize(16, 1),
    "s": TextSize(32, 1),
    "m": TextSize(64, 2),
    "l": TextSize(128, 2),
    "xl": TextSize(256, 3),
    "xxl": TextSize(512, 3),
}


class TextEncoder(nn.Module):
    """Token embedding, mean over the caption's words (padding excluded), then a ReLU MLP."""

    def __init__(self, vocab_size: int, length: int, size: TextSize, embed_dim: int) -> None:
        super().__init__()
        self.length = length
        self.embed = nn.Embedding(vocab_size, size.width, padding_idx=PAD)
        layers: list[nn.Module] = []
        for _ in range(size.depth):
            layers += [nn.Linear(size.width, size.width), nn.ReLU()]
        layers.append(nn.Linear(size.width, embed_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] != self.length:
            raise DataError(
                f"captions of {tokens.shape[-1]} tokens, but this text tower was built for "
                f"captions of {self.length}; data and models (a transferred reference too) "
                "must share dataset.captions.length"
            )
        words = self.embed(tokens)
        mask = (tokens != PAD).unsqueeze(-1).to(words.dtype)
        pooled = (words * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.mlp(pooled)


class TwoTower(nn.Module):
    """Signal tower + text tower + learnable temperature (stored as a log logit scale)."""

    def __init__(self, signal: nn.Module, text: TextEncoder) -> None:
        super().__init__()
        self.signal = signal
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / INIT_TEMPERATURE)))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(0.0, math.log(MAX_LOGIT_SCALE)).exp()

    def encode_signal(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.signal(x), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens), dim=-1)

    def forward(
        self, x: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encode_signal(x), self.encode_text(tokens), self.scale()


def pair_losses(signal: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Each pair's symmetric InfoNCE term against the other pairs given: shape (n,)."""
    logits = scale * signal @ text.T
    target = torch.arange(len(logits), device=logits.device)
    signal_to_text = F.cross_entropy(logits, target, reduction="none")
    text_to_signal = F.cross_entropy(logits.T, target, reduction="none")
    return (signal_to_text + text_to_signal) / 2


def info_nce(signal: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE loss of a batch of normalised embeddings (CLIP's training loss)."""
    return pair_losses(signal, text, scale).mean()


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """``ceil(n / chunk)`` consecutive slices of sizes differing by at most one."""
    count = math.ceil(n / chunk)
    base, extra = divmod(n, count)
    bounds, start = [], 0
    for i in range(count):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _two_tower(model: nn.Module) -> TwoTower:
    if not isinstance(model, TwoTower):
        raise ConfigError(
            f"task 'contrastive' needs a two-tower model, got {type(model).__name__}; "
            "build models with the task (TASKS['contrastive'].build)"
        )
    return model


class Contrastive:
    """Two-tower contrastive learning of signals and captions (see the module docstring)."""

    name = "contrastive"
    independent_rows = False  # a pair's loss has the other pairs of its chunk as negatives

    def __init__(self, chunk: int | None = None) -> None:
        self.chunk = chunk  # None: the whole super-batch is one chunk

    def build(self, cfg: ModelConfig, spec: DataSpec, seed: int) -> nn.Module:
        if spec.vocab_size < 1 or len(spec.target_shape) != 1:
            raise ConfigError(
                "task 'contrastive' needs signal-caption pairs (dataset.name: mnist1d_pairs); "
                f"the dataset gives targets of shape {spec.target_shape}"
            )
        signal = build_model(cfg, spec.input_shape, EMBED_DIM, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + TEXT_SEED_OFFSET)
            text = TextEncoder(
                spec.vocab_size, spec.target_shape[0], TEXT_LADDER[cfg.size], EMBED_DIM
            )
        return TwoTower(signal, text)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return info_nce(*model(x, y))

    def per_example_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = len(x)
        chunk = self.chunk or n
        if chunk > n:
            raise ConfigError(
                f"contrastive.chunk: {chunk} pairs per chunk is larger than the {n} pairs "
                "scored; lower contrastive.chunk to at most the super-batch size"
            )
        signal, text, scale = model(x, y)
        return torch.cat(
            [pair_losses(signal[a:b], text[a:b], scale) for a, b in chunk_bounds(n, chunk)]
        )

    def dummy_batch(
        self, n: int, spec: DataSpec, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.zeros((n, *spec.input_shape), device=device)
        return x, torch.ones((n, *spec.target_shape), dtype=torch.long, device=device)

    def evaluate(
        self, model: nn.Module, splits: Splits, batch_size: int, autocast: Any
    ) -> dict[str, float]:
        if not isinstance(splits, PairedSplits):
            raise ConfigError(
                "task 'contrastive' evaluates on signal-caption pairs; set dataset.name: "
                "mnist1d_pairs"
            )
        tower = _two_tower(model)
        device = next(tower.parameters()).device
        classes, prompts_per_class, length = splits.prompts.shape

        def embed(encode: Any, data: torch.Tensor) -> torch.Tensor:
            parts = [
                encode(data[i : i + batch_size].to(device)).float()
                for i in range(0, len(data), batch_size)
            ]
            return torch.cat(parts)

        with torch.no_grad(), autocast():
            signals = embed(tower.encode_signal, splits.test_x)
            captions = embed(tower.encode_text, splits.test_y)
            prompts = embed(tower.encode_text, splits.prompts.reshape(-1, length))
            scale = tower.scale().float()
        class_embeddings = F.normalize(prompts.view(classes, prompts_per_class, -1).mean(1), dim=-1)
        labels = splits.test_labels.to(device)
        logits = scale * signals @ class_embeddings.T
        accuracy = float((logits.argmax(1) == labels).float().mean())
        loss = float(F.cross_entropy(logits, labels))
        return {
            "accuracy": accuracy,
            "error": 1 - accuracy,
            "loss": loss,
            "recall_at_1_i2t": _recall_at_1(signals, captions, labels, batch_size),
            "recall_at_1_t2i": _recall_at_1(captions, signals, labels, batch_size),
        }


def _recall_at_1(
    queries: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> float:
    """Fraction of queries whose most similar gallery item is of the query's class."""
    hits = 0
    for i in range(0, len(queries), batch_size):
        best = (queries[i : i + batch_size] @ gallery.T).argmax(1)
        hits += int((labels[best] == labels[i : i + batch_size]).sum())
    return hits / len(queries)


def contrastive_task(cfg: RunConfig) -> Contrastive:
    """The run's contrastive task: its scoring chunk is ``contrastive.chunk`` (default: the
    learner batch size, so a pair is scored against as many negatives as it is trained with)."""
    chunk = cfg.contrastive.chunk if cfg.contrastive else None
    return Contrastive(chunk=chunk or cfg.batch_size)


def check_contrastive(cfg: RunConfig) -> None:
    """A transferred reference reads the run's captions, so both datasets must share the
    caption vocabulary and length; the scoring chunk fits in the super-batch."""
    super_batch = cfg.selection.super_batch_size(cfg.batch_size)
    chunk = cfg.contrastive.chunk if cfg.contrastive else None
    if chunk is not None and cfg.selection.policy != "iid" and chunk > super_batch:
        raise ValueError(
            f"contrastive.chunk: {chunk} pairs per scoring chunk is larger than the "
            f"super-batch ({super_batch} = batch_size {cfg.batch_size} / selection.keep "
            f"{cfg.selection.keep}); lower contrastive.chunk to at most {super_batch}"
        )
    transferred = cfg.reference.dataset if cfg.uses_reference and cfg.reference else None
    ours = getattr(cfg.dataset, "captions", None)
    theirs = getattr(transferred, "captions", None)
    if ours is None or theirs is None:
        return
    for key in ("vocabulary", "length"):
        if getattr(ours, key) != getattr(theirs, key):
            raise ValueError(
                f"reference.dataset.captions.{key}: {getattr(theirs, key)!r} differs "
                f"from dataset.captions.{key} {getattr(ours, key)!r}; the reference "
                "reads the run's captions, so set the same caption "
                "vocabulary and length"
            )
