"""Captions for paired signal-text data: vocabularies, templates and noisy caption sampling.

A caption is a short sequence of word tokens describing a pair's class with varied wording
("a noisy signal of the digit three", "the number 3", "seven"), padded with token 0 to a fixed
length. A web-like pool also holds captions that describe *another* class (``mismatch``) and
captions made of filler words only (``uninformative``: "a signal", "click here").

Two vocabularies, chosen by ``CaptionConfig.vocabulary``:

- ``basic``: number words and a few plain templates;
- ``rich``: numerals too, synonyms, optional adjectives, filler words and more templates.

Token ids are shared: the basic words come first, so a basic caption has the same tokens in
both vocabularies, but the rich vocabulary is larger. Models embed tokens of one vocabulary
and one caption length; data and a transferred reference must agree on both
(``RunConfig._consistent``).

Templates use ``{a|b|}`` for alternatives (an empty one makes the part optional) and ``N``
for the class's number in one of the vocabulary's number forms. Sampling draws a template
uniformly, then one of its expansions uniformly, so short templates are not drowned out by
templates with many alternatives.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "PAD",
    "VOCABULARIES",
    "CaptionConfig",
    "CaptionTables",
    "Vocabulary",
    "caption_tables",
    "decode",
    "sample_captions",
]

PAD = 0  # token id of padding; never a word

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NUMERALS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class Vocabulary:
    """Templates of one vocabulary; the word list is derived (see :func:`_word_ids`)."""

    name: str
    number_forms: tuple[tuple[str, ...], ...]  # each: the 10 class names in one form
    templates: tuple[str, ...]  # informative: contain N
    fillers: tuple[str, ...]  # uninformative: no class information
    prompts: tuple[str, ...]  # zero-shot class prompts (averaged per class)


VOCABULARIES: dict[str, Vocabulary] = {
    v.name: v
    for v in [
        Vocabulary(
            name="basic",
            number_forms=(NUMBER_WORDS,),
            templates=("N", "digit N", "the number N", "a signal of {the|} digit N"),
            fillers=("a signal", "the signal", "a signal of a digit", "a number"),
            prompts=("N", "a signal of digit N", "the number N"),
        ),
        Vocabulary(
            name="rich",
            number_forms=(NUMBER_WORDS, NUMERALS),
            templates=(
                "N",
                "digit N",
                "the number N",
                "a signal of {the|} digit N",
                "{a|the|this} {noisy|clean|wavy|smooth|} {signal|curve|waveform|trace|plot} of "
                "{a|the|} {digit|number} N",
                "{this|it} {is|looks like|shows} {a|the} N",
                "N {as a|written as a|drawn as a} {signal|curve|waveform}",
                "an {example|instance} of {the|} {digit|number|} N",
                "{noisy|clean|} N {signal|curve}",
            ),
            fillers=(
                "a signal",
                "the signal",
                "a signal of a digit",
                "a number",
                "{a|the|this} {noisy|clean|wavy|smooth|} {signal|curve|waveform|trace|plot}",
                "{this|it} {is|looks like|shows} a {signal|curve|plot}",
                "{click here|see more|untitled|image|photo|download now}",
                "an {example|instance} of a {digit|number}",
            ),
            prompts=("N", "a signal of digit N", "the number N"),
        ),
    ]
}


def _expand(template: str) -> list[list[str]]:
    """All word sequences of a template: ``"{a|the} N"`` -> [["a", "N"], ["the", "N"]]."""
    parts = re.split(r"(\{[^}]*\})", template)
    options = [p[1:-1].split("|") if p.startswith("{") else [p] for p in parts]
    return [" ".join(choice).split() for choice in itertools.product(*options)]


def _words_of(vocab: Vocabulary) -> list[str]:
    """The vocabulary's words in order of first appearance (deterministic)."""
    texts = [*vocab.templates, *vocab.fillers, *vocab.prompts]
    words = [w for t in texts for seq in _expand(t) for w in seq if w != "N"]
    words += [w for form in vocab.number_forms for w in form]
    return list(dict.fromkeys(words))


@functools.cache
def _word_ids() -> dict[str, int]:
    """One id per word over all vocabularies, basic words first (so ids are shared)."""
    words: list[str] = []
    for vocab in VOCABULARIES.values():
        words += [w for w in _words_of(vocab) if w not in words]
    return {w: i + 1 for i, w in enumerate(words)}  # 0 is PAD


def vocab_size(name: str) -> int:
    """Number of token ids a model needs for this vocabulary (padding included)."""
    ids = _word_ids()
    return 1 + max(ids[w] for w in _words_of(VOCABULARIES[name]))


def decode(tokens: np.ndarray | list[int]) -> str:
    """Tokens back to text (padding dropped), for tests and debugging."""
    words = {i: w for w, i in _word_ids().items()}
    return " ".join(words[int(t)] for t in tokens if int(t) != PAD)


@dataclass(frozen=True)
class CaptionTables:
    """Every caption of a vocabulary, tokenised and padded, for vectorised sampling.

    ``informative[c, k]`` is expansion ``k`` of class ``c`` (same order for every class);
    ``template_start/template_count`` locate each template's expansions (number forms
    included); ``uninformative`` and ``filler_start/filler_count`` likewise for fillers;
    ``prompts[c, p]`` are the zero-shot prompts of class ``c``.
    """

    informative: np.ndarray  # (classes, expansions, length) int64
    template_start: np.ndarray
    template_count: np.ndarray
    uninformative: np.ndarray  # (filler expansions, length) int64
    filler_start: np.ndarray
    filler_count: np.ndarray
    prompts: np.ndarray  # (classes, prompts, length) int64
    vocab_size: int
    longest: int  # words in the longest caption or prompt


def _encode(sequences: list[list[str]], length: int) -> np.ndarray:
    ids = _word_ids()
    out = np.full((len(sequences), length), PAD, dtype=np.int64)
    for row, words in enumerate(sequences):
        out[row, : len(words)] = [ids[w] for w in words]
    return out


def _with_number(template: str, vocab: Vocabulary, label: int) -> list[list[str]]:
    return [
        [form[label] if w == "N" else w for w in seq]
        for seq in _expand(template)
        for form in vocab.number_forms
    ]


def longest_caption(name: str) -> int:
    vocab = VOCABULARIES[name]
    texts = [*vocab.templates, *vocab.fillers, *vocab.prompts]
    return max(len(seq) for t in texts for seq in _expand(t))


@functools.cache
def caption_tables(name: str, length: int, num_classes: int = 10) -> CaptionTables:
    vocab = VOCABULARIES[name]
    if length < longest_caption(name):
        raise ValueError(
            f"length={length} is not allowed: the {name!r} vocabulary has captions of "
            f"{longest_caption(name)} words; use length >= {longest_caption(name)}"
        )

    def located(groups: list[list[list[str]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = np.array([len(g) for g in groups])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return _encode([seq for g in groups for seq in g], length), starts, counts

    per_class = [
        located([_with_number(t, vocab, label) for t in vocab.templates])
        for label in range(num_classes)
    ]
    _, starts, counts = per_class[0]  # templates are class-agnostic: same layout per class
    fillers, filler_starts, filler_counts = located([_expand(t) for t in vocab.fillers])
    prompts = np.stack(
        [
            _encode([s for p in vocab.prompts for s in _with_number(p, vocab, c)], length)
            for c in range(num_classes)
        ]
    )
    return CaptionTables(
        informative=np.stack([table for table, _, _ in per_class]),
        template_start=starts,
        template_count=counts,
        uninformative=fillers,
        filler_start=filler_starts,
        filler_count=filler_counts,
        prompts=prompts,
        vocab_size=vocab_size(name),
        longest=longest_caption(name),
    )


def check_fraction(value: float, name: str | None) -> float:
    """Validator body shared by every noise rate: a fraction in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value!r} is not allowed: must be a fraction in [0, 1)")
    return value


class CaptionConfig(BaseModel):
    """How captions are worded and how noisy the training pairs are (mnist1d_pairs only)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    vocabulary: Literal["basic", "rich"] = Field(
        "rich", description="Word set and templates: basic (number words) or rich (varied)."
    )
    length: int = Field(10, description="Caption length in tokens (padded); fixed per model.")
    mismatch: float = Field(
        0.0, description="Fraction of training pairs whose caption describes another class."
    )
    uninformative: float = Field(
        0.0, description="Fraction of training pairs whose caption holds filler words only."
    )

    @field_validator("length")
    @classmethod
    def _fits(cls, value: int, info: Any) -> int:
        name = info.data.get("vocabulary", "rich")
        if value < longest_caption(name):
            raise ValueError(
                f"length={value!r} is not allowed: the {name!r} vocabulary has captions of "
                f"{longest_caption(name)} words; use length >= {longest_caption(name)}"
            )
        return value

    @field_validator("mismatch", "uninformative")
    @classmethod
    def _fraction(cls, value: float, info: Any) -> float:
        return check_fraction(value, info.field_name)

    @model_validator(mode="after")
    def _disjoint(self) -> CaptionConfig:
        if self.mismatch + self.uninformative >= 1.0:
            raise ValueError(
                f"mismatch + uninformative = {self.mismatch!r} + {self.uninformative!r} is not "
                "allowed: they affect disjoint pairs, so the sum must be < 1"
            )
        return self

    @property
    def vocab_size(self) -> int:
        return vocab_size(self.vocabulary)


def _pick(start: np.ndarray, count: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices: a uniform group (template), then a uniform row of that group."""
    group = rng.integers(0, len(count), n)
    return start[group] + (rng.random(n) * count[group]).astype(np.int64)


def sample_captions(
    labels: np.ndarray,
    cfg: CaptionConfig,
    rng: np.random.Generator,
    num_classes: int,
    *,
    clean: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Captions (n, length) int64 for pairs of class ``labels``, with the noise of ``cfg``.

    Each pair independently: with probability ``uninformative`` its caption is filler words
    only; else with probability ``mismatch`` (of all pairs; the two are disjoint) it describes
    a uniformly drawn *other* class; else it describes its own class. ``clean=True`` ignores
    both rates (test, curated and stream-free splits). Returns (captions, mismatched mask,
    uninformative mask).
    """
    tables = caption_tables(cfg.vocabulary, cfg.length, num_classes)
    n = len(labels)
    draw = rng.random(n)
    uninformative = np.zeros(n, dtype=bool) if clean else draw < cfg.uninformative
    mismatched = (
        np.zeros(n, dtype=bool)
        if clean
        else (draw >= cfg.uninformative) & (draw < cfg.uninformative + cfg.mismatch)
    )
    described = labels.copy()
    described[mismatched] = (
        labels[mismatched] + rng.integers(1, num_classes, int(mismatched.sum()))
    ) % num_classes
    rows = _pick(tables.template_start, tables.template_count, n, rng)
    captions = tables.informative[described, rows]
    fillers = _pick(tables.filler_start, tables.filler_count, int(uninformative.sum()), rng)
    captions[uninformative] = tables.uninformative[fillers]
    return captions, mismatched, uninformative
