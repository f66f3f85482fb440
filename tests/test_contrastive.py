"""Contrastive task (ActiveCLIP): captions, InfoNCE, chunked scoring, zero-shot evaluation,
every policy through the shared loop, exact resume, and one test per validation rule."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from activescale.errors import ConfigError, DataError, SweepSpecError
from orchestrator.spec import parse_sweep
from tests.test_loop import _Stop, _StoppingLogger
from trainers.captions import (
    NUMBER_WORDS,
    NUMERALS,
    PAD,
    CaptionConfig,
    _word_ids,
    caption_tables,
    sample_captions,
    vocab_size,
)
from trainers.config import RunConfig
from trainers.contrastive import (
    EMBED_DIM,
    Contrastive,
    ContrastiveConfig,
    TextEncoder,
    TextSize,
    TwoTower,
    chunk_bounds,
    info_nce,
    pair_losses,
)
from trainers.data import DataConfig, generate_mnist1d, load_splits, make_source
from trainers.data.pairs import PairedSplits, PairStreamSource
from trainers.data.pairs import pair_block as _pair_block
from trainers.loop import RunContext, train
from trainers.models import ModelConfig, count_params, ladder
from trainers.tasks import DataSpec, data_spec
from trainers.tracking import MemoryLogger

PAIRS = {"name": "mnist1d_pairs", "train_size": 256, "test_size": 100, "clean_size": 64}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models: a second intra-op thread only adds contention on a shared CPU (30x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _class_of_token() -> dict[int, int]:
    ids = _word_ids()
    return {ids[form[c]]: c for form in (NUMBER_WORDS, NUMERALS) for c in range(10)}


def described_class(caption: np.ndarray) -> int | None:
    """The class a caption names (None: filler words only)."""
    named = {_class_of_token()[int(t)] for t in caption if int(t) in _class_of_token()}
    assert len(named) <= 1
    return named.pop() if named else None


# ------------------------------------------------------------------------------------- captions


@pytest.mark.parametrize("vocabulary", ["basic", "rich"])
def test_captions_fit_the_vocabulary_and_length(vocabulary: str) -> None:
    cfg = CaptionConfig(vocabulary=vocabulary, length=9)  # type: ignore[arg-type]
    labels = np.arange(2000) % 10
    captions, _, _ = sample_captions(labels, cfg, np.random.default_rng(0), 10, clean=True)
    assert captions.shape == (2000, 9) and captions.dtype == np.int64
    assert captions.min() >= 0 and captions.max() < vocab_size(vocabulary)
    words = (captions != PAD).sum(1)
    assert words.min() >= 1
    assert all((row[n:] == PAD).all() for row, n in zip(captions, words, strict=True))
    assert [described_class(c) for c in captions] == list(labels)
    assert len({tuple(c) for c in captions}) > (20 if vocabulary == "rich" else 10)  # varied


def test_basic_ids_are_shared_and_rich_is_larger() -> None:
    basic, rich = caption_tables("basic", 10), caption_tables("rich", 10)
    assert basic.vocab_size < rich.vocab_size
    assert basic.informative.max() < basic.vocab_size
    assert basic.prompts.shape[:2] == (10, 3) and rich.prompts.shape[:2] == (10, 6)


def test_noise_rates_are_hit_and_flagged() -> None:
    n, mismatch, uninformative = 20000, 0.3, 0.2
    cfg = CaptionConfig(mismatch=mismatch, uninformative=uninformative)
    labels = np.random.default_rng(1).integers(0, 10, n)
    captions, mismatched, blank = sample_captions(labels, cfg, np.random.default_rng(2), 10)
    for rate, mask in ((mismatch, mismatched), (uninformative, blank)):
        assert abs(mask.mean() - rate) < 4 * math.sqrt(rate * (1 - rate) / n)
    assert not (mismatched & blank).any()
    named = [described_class(c) for c in captions]
    assert all((k is None) == b for k, b in zip(named, blank, strict=True))
    assert all((k != y) == m for k, y, m in zip(named, labels, mismatched, strict=True) if k)


def test_pool_corrupted_mask_marks_exactly_the_noisy_pairs() -> None:
    cfg = DataConfig.model_validate(PAIRS | {"captions": {"mismatch": 0.25, "uninformative": 0.15}})
    _, captions, corrupted = _pair_block(cfg, np.random.default_rng(5), 3000, None)
    _, labels = generate_mnist1d(3000, np.random.default_rng(5))  # the same first draws
    noisy = [described_class(c) != y for c, y in zip(captions, labels, strict=True)]
    assert corrupted.tolist() == noisy
    assert abs(corrupted.mean() - 0.4) < 0.04


def test_paired_splits_and_sources() -> None:
    splits = load_splits(DataConfig.model_validate(PAIRS))
    assert isinstance(splits, PairedSplits)
    assert data_spec(splits) == DataSpec((40,), 10, (10,), vocab_size("rich"))
    assert [described_class(c) for c in splits.test_y] == splits.test_labels.tolist()
    assert not splits.train_corrupted.any()
    stream_cfg = DataConfig.model_validate(PAIRS | {"regime": "stream"})
    a = make_source(stream_cfg, load_splits(stream_cfg), seed=3)
    assert isinstance(a, PairStreamSource)
    a.next(50)
    b = make_source(stream_cfg, load_splits(stream_cfg), seed=3)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(a.next(40), b.next(40), strict=True))


def test_unpaired_dataset_dump_is_unchanged() -> None:
    assert "captions" not in DataConfig().model_dump()  # classification run ids are stable
    assert DataConfig.model_validate(PAIRS).captions == CaptionConfig()


# ----------------------------------------------------------------------------- loss and scoring


def test_info_nce_on_hand_made_embeddings() -> None:
    eye = torch.eye(2)
    expected = math.log(1 + math.exp(-1))  # each row and column: softmax([1, 0]) at the 1
    assert float(info_nce(eye, eye, torch.tensor(1.0))) == pytest.approx(expected)
    swapped = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # each signal matches the other caption
    assert float(info_nce(eye, swapped, torch.tensor(1.0))) == pytest.approx(expected + 1)
    # Three pairs, pair 2 unaligned: only its own terms (and its column/row) change.
    signal = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]])
    losses = pair_losses(signal, text, torch.tensor(1.0))
    assert losses.shape == (3,) and losses[2] > losses[1]


def _tiny_model(size: str = "xs", vocab: int | None = None, length: int = 10) -> nn.Module:
    spec = DataSpec((40,), 10, (length,), vocab or vocab_size("rich"))
    return Contrastive().build(ModelConfig(size=size), spec, seed=0)


def test_per_example_loss_is_chunked() -> None:
    model = _tiny_model()
    x = torch.randn(10, 40)
    y = torch.from_numpy(
        sample_captions(np.arange(10), CaptionConfig(), np.random.default_rng(0), 10)[0]
    )
    assert chunk_bounds(10, 4) == [(0, 4), (4, 7), (7, 10)]
    losses = Contrastive(chunk=4).per_example_loss(model, x, y)
    assert losses.shape == (10,)
    signal, text, scale = model(x, y)
    for a, b in chunk_bounds(10, 4):
        assert torch.allclose(losses[a:b], pair_losses(signal[a:b], text[a:b], scale))
        assert torch.allclose(losses[a:b].mean(), info_nce(signal[a:b], text[a:b], scale))
    whole = Contrastive().per_example_loss(model, x, y)
    assert torch.allclose(whole.mean(), Contrastive().loss(model, x, y))


class _Onehot(nn.Module):
    """Signal tower reading the class off the first 10 features."""

    def __init__(self, permutation: list[int]) -> None:
        super().__init__()
        self.proj = nn.Linear(40, EMBED_DIM, bias=False)
        with torch.no_grad():
            self.proj.weight.zero_()
            for c in range(10):
                self.proj.weight[permutation[c], c] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _perfect_text_tower(length: int) -> TextEncoder:
    text = TextEncoder(vocab_size("rich"), length, TextSize(EMBED_DIM, 0), EMBED_DIM)
    with torch.no_grad():
        text.embed.weight.zero_()
        for token, c in _class_of_token().items():
            text.embed.weight[token, c] = 1.0
        text.mlp[0].weight.copy_(torch.eye(EMBED_DIM))
        text.mlp[0].bias.zero_()
    return text


def _hand_splits(n: int = 200) -> PairedSplits:
    labels = np.arange(n) % 10
    x = np.zeros((n, 40), dtype=np.float32)
    x[np.arange(n), labels] = 1.0
    captions, _, _ = sample_captions(
        labels, CaptionConfig(), np.random.default_rng(0), 10, clean=True
    )
    empty = torch.empty(0)
    return PairedSplits(
        train_x=empty,
        train_y=empty,
        train_corrupted=empty,
        test_x=torch.from_numpy(x),
        test_y=torch.from_numpy(captions),
        clean_x=empty,
        clean_y=empty,
        num_classes=10,
        input_shape=(40,),
        test_labels=torch.from_numpy(labels),
        prompts=torch.from_numpy(caption_tables("rich", 10).prompts),
        vocab_size=vocab_size("rich"),
    )


def test_zero_shot_and_recall_of_hand_built_models() -> None:
    splits = _hand_splits()
    perfect = TwoTower(_Onehot(list(range(10))), _perfect_text_tower(10))
    metrics = Contrastive().evaluate(perfect, splits, 64, contextlib.nullcontext)
    assert metrics["accuracy"] == 1.0 and metrics["error"] == 0.0
    assert metrics["recall_at_1_i2t"] == metrics["recall_at_1_t2i"] == 1.0
    shifted = TwoTower(_Onehot([(c + 1) % 10 for c in range(10)]), _perfect_text_tower(10))
    wrong = Contrastive().evaluate(shifted, splits, 64, contextlib.nullcontext)
    assert wrong["accuracy"] == 0.0 and wrong["loss"] > metrics["loss"]


@pytest.mark.parametrize("arch", ["mlp", "cnn1d"])
def test_two_tower_ladder_spans_two_orders_of_magnitude(arch: str) -> None:
    spec = DataSpec((40,), 10, (10,), vocab_size("rich"))
    params = [
        count_params(Contrastive().build(ModelConfig(arch=arch, size=size), spec, 0))  # type: ignore[arg-type]
        for size in ladder(arch).sizes
    ]
    assert len(params) >= 6 and params == sorted(params)
    assert params[-1] / params[0] >= 100


# --------------------------------------------------------------------------- through the loop


def tiny_contrastive(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "task": "contrastive",
        "dataset": PAIRS | {"captions": {"mismatch": 0.3, "uninformative": 0.2}},
        "learner": {"size": "xs"},
        "scorer": {"size": "xxs"},
        "reference": {"size": "xxs", "steps": 4, "batch_size": 16},
        "selection": {"policy": "learnability", "keep": 0.5},
        "batch_size": 16,
        "budget": {"steps": 8},
        "eval": {"points": 2, "batch_size": 100},
    }
    return config | overrides


def run(tmp_path: Path, checkpoint: bool = False, **overrides: Any) -> MemoryLogger:
    cfg = RunConfig.model_validate(tiny_contrastive(**overrides)).resolved()
    logger = MemoryLogger()
    ckpt = tmp_path / "ckpt.pt" if checkpoint else None
    train(cfg, RunContext(workdir=tmp_path, checkpoint_path=ckpt), logger)
    return logger


@pytest.mark.parametrize("policy", ["iid", "hard_scorer", "easy_reference", "learnability"])
def test_every_policy_trains_and_charges_its_passes(tmp_path: Path, policy: str) -> None:
    final = run(tmp_path, selection={"policy": policy, "keep": 0.5}).history[-1][1]
    assert final["step"] == 8
    assert {"accuracy", "error", "loss", "recall_at_1_i2t", "recall_at_1_t2i"} <= set(final)
    charged = {k.removeprefix("flops/") for k, v in final.items() if k.startswith("flops/") and v}
    expected = {
        "iid": {"learner_train"},
        "hard_scorer": {"learner_train", "scorer_forward", "scorer_train"},
        "easy_reference": {"learner_train", "reference_forward", "reference_pretrain"},
        "learnability": {
            "learner_train",
            "scorer_forward",
            "scorer_train",
            "reference_forward",
            "reference_pretrain",
        },
    }[policy]
    assert charged - {"scoring"} == expected


def test_resume_equals_uninterrupted_bitwise(tmp_path: Path) -> None:
    overrides = {
        "dataset": PAIRS | {"regime": "stream", "captions": {"mismatch": 0.3}},
        "selection": {"policy": "learnability", "keep": 0.5, "method": "sample"},
        "budget": {"steps": 12},
        "eval": {"points": 3, "batch_size": 100},
        "checkpoint_every": 5,
    }
    full = run(tmp_path / "full", checkpoint=True, **overrides)
    part_dir, cfg = tmp_path / "part", RunConfig.model_validate(tiny_contrastive(**overrides))
    ckpt, first = part_dir / "ckpt.pt", MemoryLogger()
    with pytest.raises(_Stop):
        train(cfg, RunContext(part_dir, ckpt), _StoppingLogger(first, ckpt, 5))
    saved_step = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < saved_step < 12
    resumed = MemoryLogger()
    train(cfg, RunContext(part_dir, ckpt), resumed)
    assert [h for h in first.history if h[0] <= saved_step] + resumed.history == full.history


def test_chunk_defaults_to_the_batch_size_and_is_ignored_by_iid() -> None:
    from trainers.tasks import task_for

    cfg = RunConfig.model_validate(tiny_contrastive())
    assert cfg.resolved().contrastive == ContrastiveConfig(chunk=16)
    assert getattr(task_for(cfg), "chunk", None) == 16
    iid = tiny_contrastive(selection={"policy": "iid"}, contrastive={"chunk": 8})
    assert RunConfig.model_validate(iid).resolved().run_id() == (
        RunConfig.model_validate(tiny_contrastive(selection={"policy": "iid"})).resolved().run_id()
    )


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": {"name": "mnist1d"}}, r"^task: 'contrastive' learns from signal-caption"),
        (
            {"task": "classification"},
            r"^dataset\.name: 'mnist1d_pairs' gives signal-caption pairs, not class labels",
        ),
        (
            {"task": "classification", "dataset": {}, "contrastive": {"chunk": 8}},
            r"^contrastive: settings of task 'contrastive'",
        ),
        ({"contrastive": {"chunk": 64}}, r"^contrastive\.chunk: 64 pairs .* super-batch \(32"),
        (
            {
                "reference": {
                    "size": "xxs",
                    "dataset": PAIRS | {"captions": {"vocabulary": "basic"}},
                }
            },
            r"^reference\.dataset\.captions\.vocabulary: 'basic' differs",
        ),
        (
            {"reference": {"size": "xxs", "dataset": PAIRS | {"captions": {"length": 12}}}},
            r"^reference\.dataset\.captions\.length: 12 differs",
        ),
        (
            {"reference": {"size": "xxs", "dataset": {"name": "mnist1d"}}},
            r"^reference\.dataset\.name: 'mnist1d' cannot train a reference",
        ),
    ],
)
def test_run_config_rules(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        RunConfig.model_validate(tiny_contrastive(**overrides))
    errors = info.value.errors()
    assert len(errors) == 1
    assert re.search(message, str(errors[0]["msg"]).removeprefix("Value error, "))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"captions": {"vocabulary": "rich", "length": 5}}, r"length=5 is not allowed.*>= 7"),
        ({"captions": {"mismatch": 0.6, "uninformative": 0.4}}, r"mismatch \+ uninformative"),
        ({"captions": {"mismatch": 1.2}}, r"mismatch=1\.2 is not allowed"),
        ({"label_noise": 0.2}, r"label_noise=0\.2 is not allowed with name='mnist1d_pairs'"),
        ({"name": "mnist1d", "captions": {}}, r"captions is not allowed with name='mnist1d'"),
    ],
)
def test_data_config_rules(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DataConfig.model_validate(PAIRS | data)


def test_chunk_larger_than_scored_batch_is_a_named_error() -> None:
    x, y = Contrastive().dummy_batch(
        8, DataSpec((40,), 10, (10,), vocab_size("rich")), torch.device("cpu")
    )
    with pytest.raises(ConfigError, match=r"contrastive\.chunk: 16 pairs"):
        Contrastive(chunk=16).per_example_loss(_tiny_model(), x, y)


def test_caption_length_mismatch_is_a_named_error() -> None:
    model = _tiny_model(length=12)  # e.g. a reference built for 12-token captions
    x, y = torch.zeros(4, 40), torch.ones(4, 10, dtype=torch.long)
    with pytest.raises(DataError, match=r"captions of 10 tokens.*built for captions of 12"):
        Contrastive().loss(model, x, y)


def test_unpaired_data_cannot_build_a_two_tower_model() -> None:
    with pytest.raises(ConfigError, match="mnist1d_pairs"):
        Contrastive().build(ModelConfig(size="xs"), DataSpec((40,), 10), 0)


def test_sweep_names_the_key_and_line_of_a_vocabulary_mismatch() -> None:
    text = (
        "name: t\ntask: contrastive\n"
        "dataset: {name: mnist1d_pairs}\n"
        "scorer: {size: xxs}\n"
        "reference: {size: xxs, dataset: {name: mnist1d_pairs, captions: {vocabulary: basic}}}\n"
        "selection: {policy: learnability}\n"
    )
    with pytest.raises(SweepSpecError, match=r"sweep\.yaml:5: reference\.dataset\.captions\.vocab"):
        parse_sweep(text, "sweep.yaml")
