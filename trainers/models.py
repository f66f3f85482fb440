"""Model ladders: named sizes of one architecture, spanning orders of magnitude in parameters.

Learner, online scorer and reference model are each built from a :class:`ModelConfig`, so their
sizes are chosen independently. Each ladder has at least six sizes spanning more than 100x in
parameters (``tests/test_models.py`` checks it), which is what a scaling sweep needs.

- ``mlp``: a ReLU MLP over a flattened input (MNIST-1D signals, or any vector).
- ``cnn1d``: a 1-D CNN for signals shaped ``(length,)`` or ``(channels, length)``.
- ``vit``: a small Vision Transformer for images ``(channels, height, width)``: patch embedding,
  pre-norm blocks, mean pooling (Dosovitskiy et al. 2021, with the pre-norm layout of
  Xiong et al. 2020).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from torch import nn

from activescale.errors import ConfigError, PluginError


@dataclass(frozen=True)
class MLPSize:
    width: int
    depth: int  # number of hidden layers


@dataclass(frozen=True)
class CNNSize:
    channels: int
    blocks: int  # conv blocks; each halves the length after the first


@dataclass(frozen=True)
class ViTSize:
    dim: int
    depth: int
    heads: int


MLP_LADDER: dict[str, MLPSize] = {
    "xxs": MLPSize(8, 1),
    "xs": MLPSize(16, 2),
    "s": MLPSize(32, 2),
    "m": MLPSize(64, 2),
    "l": MLPSize(128, 2),
    "xl": MLPSize(256, 3),
    "xxl": MLPSize(512, 3),
}

CNN_LADDER: dict[str, CNNSize] = {
    "xxs": CNNSize(4, 2),
    "xs": CNNSize(8, 2),
    "s": CNNSize(16, 3),
    "m": CNNSize(32, 3),
    "l": CNNSize(64, 3),
    "xl": CNNSize(128, 4),
    "xxl": CNNSize(256, 4),
}

VIT_LADDER: dict[str, ViTSize] = {
    "xxs": ViTSize(16, 1, 2),
    "xs": ViTSize(32, 2, 2),
    "s": ViTSize(64, 2, 4),
    "m": ViTSize(96, 4, 4),
    "l": ViTSize(192, 4, 6),
    "xl": ViTSize(256, 6, 8),
    "xxl": ViTSize(384, 8, 8),
}


class ModelConfig(BaseModel):
    """One model of a ladder: the learner, the online scorer or the reference model."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    arch: str = Field(
        "mlp", description="Architecture ladder: mlp, cnn1d, vit, or one a plugin registers."
    )
    size: str = Field("s", description="Named size in the ladder (xxs, xs, s, m, l, xl, xxl).")
    lr: float | None = Field(
        None, gt=0, description="Peak learning rate for this model; null uses optimizer.lr."
    )
    patch: int = Field(4, ge=1, description="ViT patch size in pixels (vit only).")

    @field_validator("arch")
    @classmethod
    def _registered_arch(cls, arch: str) -> str:
        try:
            ladder(arch)
        except ConfigError as err:  # pydantic reports it at the key, with file:line
            raise ValueError(str(err)) from None
        return arch

    @field_validator("size")
    @classmethod
    def _known_size(cls, size: str, info: ValidationInfo) -> str:
        arch = info.data.get("arch")
        if arch is None:  # the arch failed its own check: that is the error to show
            return size
        sizes = ladder(arch).sizes
        if size not in sizes:
            raise ValueError(
                f"size {size!r} is not in the {arch} ladder; allowed: {', '.join(sizes)}"
            )
        return size


# Builds one model of a ladder: (its config, the shape of one input example, the number of
# outputs: classes, or the embedding width of a contrastive tower) -> the module.
ModelBuilder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]


@dataclass(frozen=True)
class ModelLadder:
    """A family of models of one architecture in named sizes, smallest first (a scaling
    sweep varies the size). ``source``: ``built-in``, or the module that registered it."""

    arch: str
    sizes: tuple[str, ...]
    build: ModelBuilder
    description: str = ""
    source: str = "built-in"


LADDERS: dict[str, ModelLadder] = {}


def register_model(
    arch: str,
    sizes: Iterable[str],
    build: ModelBuilder,
    *,
    description: str = "",
    source: str | None = None,
) -> ModelLadder:
    """Register a model ladder under ``arch`` (docs/plugins.md).

    ``sizes``: the size names, smallest first (any iterable of strings). ``build(cfg,
    input_shape, num_outputs)`` returns a fresh ``nn.Module`` of size ``cfg.size``; it runs
    under a seeded RNG, so it draws its initial weights from torch's default generator.
    Registering a name again from the module that registered it replaces the entry (a module
    imported again, or reloaded); from another module it is a PluginError, as is a malformed
    ladder.
    """
    source = source or caller_module()
    if not isinstance(arch, str) or not arch.isidentifier():
        raise PluginError(
            f"model arch {arch!r} is not a plain name; use letters, digits and '_' (e.g. resnet1d)"
        )
    taken = LADDERS.get(arch)
    if taken is not None and taken.source != source:
        raise PluginError(
            f"model arch {arch!r} is already registered (by {taken.source}); {source} registers "
            "it again: register it once, or choose another name"
        )
    if isinstance(sizes, str):
        raise PluginError(
            f"model arch {arch!r}: sizes must be a list of size names, got the string {sizes!r}; "
            f"write e.g. sizes=[{sizes!r}]"
        )
    names = tuple(sizes)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        raise PluginError(
            f"model arch {arch!r}: sizes {list(names)!r} must be distinct names, at least one"
        )
    if not callable(build):
        raise PluginError(f"model arch {arch!r}: build must be a function, got {build!r}")
    check_arity(build, 3, f"model arch {arch!r}: build", "(cfg, input_shape, num_outputs)")
    entry = ModelLadder(arch, names, build, description, source)
    LADDERS[arch] = entry
    return entry


def check_arity(function: Callable[..., Any], count: int, what: str, signature: str) -> None:
    """PluginError unless ``function`` can be called with ``count`` positional arguments (a
    registered function with the wrong signature fails at registration, not in a job)."""
    try:
        parameters = inspect.signature(function)
    except (TypeError, ValueError):  # no signature to read (some builtins): trust the caller
        return
    try:
        parameters.bind(*range(count))
    except TypeError:
        raise PluginError(
            f"{what} must take {signature}; its signature is {function.__name__}{parameters}"
        ) from None


def ladder(arch: str) -> ModelLadder:
    """The registered ladder ``arch``; a named error listing every ladder otherwise."""
    entry = LADDERS.get(arch)
    if entry is None:
        builtin = [a for a, e in LADDERS.items() if e.source == "built-in"]
        plugins = [a for a, e in LADDERS.items() if e.source != "built-in"]
        raise ConfigError(
            f"arch {arch!r} is not a registered model ladder; built-in: {', '.join(builtin)}; "
            f"from plugins: {', '.join(plugins) or '(none loaded)'}. Fix the name, or list the "
            "plugin that registers it under `plugins:` in the sweep (docs/plugins.md)"
        )
    return entry


def all_sizes() -> set[str]:
    """Every size name of every registered ladder."""
    return {size for entry in LADDERS.values() for size in entry.sizes}


def caller_module() -> str:
    """The first module outside ``trainers`` and ``activescale`` on the call stack: the plugin
    that called a register function (named in error messages)."""
    frame = inspect.currentframe()
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
        ("trainers.", "activescale.")
    ):
        frame = frame.f_back
    return str(frame.f_globals.get("__name__", "?")) if frame is not None else "?"


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, size: MLPSize) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = in_features
        for _ in range(size.depth):
            layers += [nn.Linear(width_in, size.width), nn.ReLU()]
            width_in = size.width
        layers.append(nn.Linear(width_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN1d(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, size: CNNSize) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(size.blocks):
            c_out = size.channels * (2 ** min(i, 2))
            layers += [
                nn.Conv1d(c_in, c_out, kernel_size=5, padding=2, stride=1 if i == 0 else 2),
                nn.ReLU(),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (batch, length) -> one channel
            x = x.unsqueeze(1)
        return self.head(self.features(x).mean(dim=-1))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(
        self, image_shape: tuple[int, ...], num_classes: int, size: ViTSize, patch: int
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        num_patches = (height // patch) * (width // patch)
        self.embed = nn.Conv2d(channels, size.dim, kernel_size=patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, num_patches, size.dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(size.dim, size.heads) for _ in range(size.depth)])
        self.norm = nn.LayerNorm(size.dim)
        self.head = nn.Linear(size.dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


def _build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return MLP(math.prod(input_shape), num_outputs, MLP_LADDER[cfg.size])


def _build_cnn1d(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    if len(input_shape) > 2:
        raise ConfigError(
            f"arch 'cnn1d' needs signals shaped (length,) or (channels, length); "
            f"the dataset gives {input_shape}. Use arch 'mlp' or 'vit' for images."
        )
    channels = 1 if len(input_shape) == 1 else input_shape[0]
    return CNN1d(channels, num_outputs, CNN_LADDER[cfg.size])


def _build_vit(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ConfigError(
            f"arch 'vit' needs images shaped (channels, height, width); the dataset gives "
            f"{input_shape}. Use arch 'mlp' or 'cnn1d' for signals."
        )
    if input_shape[1] % cfg.patch or input_shape[2] % cfg.patch:
        raise ConfigError(
            f"vit patch {cfg.patch} does not divide the image size {input_shape[1:]}; "
            "choose a patch that divides both height and width."
        )
    return ViT(input_shape, num_outputs, VIT_LADDER[cfg.size], cfg.patch)


register_model("mlp", tuple(MLP_LADDER), _build_mlp, description="ReLU MLP", source="built-in")
register_model("cnn1d", tuple(CNN_LADDER), _build_cnn1d, description="1-D CNN", source="built-in")
register_model(
    "vit", tuple(VIT_LADDER), _build_vit, description="Vision Transformer", source="built-in"
)


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int, seed: int
) -> nn.Module:
    """A model of ``cfg``'s ladder with weights drawn from ``seed`` alone, so runs are
    reproducible. Every ladder, built-in or from a plugin, is built and checked here
    (:func:`check_model`)."""
    entry = ladder(cfg.arch)
    input_shape = tuple(int(n) for n in input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.build(cfg, input_shape, num_outputs)
    if not isinstance(model, nn.Module):
        raise PluginError(
            f"the builder of model arch {cfg.arch!r} ({entry.source}) returned "
            f"{type(model).__name__}, not a torch.nn.Module; return the model itself"
        )
    check_model(model, f"model arch {cfg.arch!r} size {cfg.size!r} ({entry.source})", num_outputs)
    return model


# Batch normalisation trains on the kept batch's statistics (training mode) and scores and
# evaluates with its running statistics (evaluation mode, :func:`evaluating`), so an example's
# score never depends on the rest of its super-batch. Dropout stays refused: its masks would
# come from torch's global generator, which runs do not seed per step nor checkpoint, so
# resumed and data-parallel runs would no longer equal uninterrupted single-process ones.
_BATCH_STATISTICS = (nn.modules.batchnorm._BatchNorm,)
_WITH_STATISTICS: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def has_batch_statistics(model: nn.Module) -> bool:
    """Whether the model normalises with batch statistics (batch norm); cached per model."""
    known = _WITH_STATISTICS.get(model)
    if known is None:
        known = any(isinstance(m, _BATCH_STATISTICS) for m in model.modules())
        _WITH_STATISTICS[model] = known
    return known


def check_batch_norm(models: dict[str, nn.Module | None], world_size: int) -> None:
    """Batch norm on several processes would normalise by each process's own share of the
    batch, so the run would differ from one process: a named error."""
    for role, model in models.items():
        if world_size > 1 and model is not None and has_batch_statistics(model):
            raise PluginError(
                f"the {role} uses batch norm, whose statistics would be each process's own "
                f"batch on {world_size} processes, so the run would differ from one process; "
                "run it on one process per run, or use nn.LayerNorm or nn.GroupNorm"
            )


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in evaluation mode for scoring or evaluation (batch norm with its running
    statistics), then back in the mode it was in. Models without batch statistics are left
    alone: they behave the same in both modes, and the loop never switches them."""
    if not model.training or not has_batch_statistics(model):
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train()


_DROPOUT = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def check_model(model: nn.Module, what: str, num_outputs: int) -> None:
    """What every built model must be: trainable, with its weights drawn (no lazy modules),
    free of dropout (batch norm is fine: see :func:`evaluating`); and (checked at its first forward pass, which costs
    nothing extra) mapping a batch to one row of ``num_outputs`` values per example."""
    if not any(p.requires_grad for p in model.parameters()):
        raise PluginError(f"{what} has no trainable parameters; the learner must have some")
    for name, module in model.named_modules():
        where = f"at {name!r}" if name else "(the model itself)"
        lazy = nn.parameter.UninitializedParameter
        if any(isinstance(p, lazy) for p in module.parameters(recurse=False)):
            raise PluginError(
                f"{what} has a lazy {type(module).__name__} {where}: its weights would be drawn "
                "at the first forward pass, not from the model's seed; give the layer its "
                "input size (the builder gets input_shape)"
            )
        dropout = getattr(module, "p", 0.0) if isinstance(module, _DROPOUT) else 0.0
        if isinstance(module, nn.MultiheadAttention):
            dropout = module.dropout
        if dropout:
            raise PluginError(
                f"{what} has dropout {dropout} {where}: dropout masks come from torch's global "
                "generator, which would make resumed and data-parallel runs differ from "
                "uninterrupted ones (and scores random); set the dropout probability to 0"
            )
    check = OutputCheck(what, num_outputs)
    check.handle = model.register_forward_hook(check)


class OutputCheck:
    """A forward hook that checks the first output of a model (the FLOP measurement's, before
    any training, so it costs no extra pass): one row of ``num_outputs`` floats per example.
    It removes itself after that pass, so training calls take torch's hook-free fast path. A
    class, not a closure: models stay picklable, and a deep copy (the FLOP meter's) gets its
    own check and handle, which removes the copy's hook."""

    def __init__(self, what: str, num_outputs: int) -> None:
        self.what, self.num_outputs = what, num_outputs
        self.handle: Any = None

    def __call__(self, model: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self.handle is not None:
            self.handle.remove()
        rows = len(args[0]) if args and isinstance(args[0], torch.Tensor) else None
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
        if shape != (rows, self.num_outputs) or not output.is_floating_point():
            got = f"shape {shape}" if shape is not None else type(output).__name__
            raise PluginError(
                f"{self.what} maps a batch of {rows} examples to {got}; it must return a float "
                f"tensor of shape (batch, {self.num_outputs}): one row of num_outputs values "
                "per example (class logits, or a contrastive tower's embedding)"
            )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
