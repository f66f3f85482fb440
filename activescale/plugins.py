"""The plugin API: register model ladders, datasets and tasks of your own (docs/plugins.md).

A plugin is a Python module that calls these functions when it is imported; a sweep names it
under ``plugins:`` (a module name, or a path to a ``.py`` file or package folder relative to
the sweep file), or a package installs it with an entry point in the group
``activescale.plugins``. The built-in ladders (mlp, cnn1d, vit), datasets (mnist1d,
mnist1d_pairs, npz, cifar10, imagefolder) and tasks (classification, contrastive) register
through these same functions::

    from activescale.plugins import register_model

    register_model("tiny", ["s", "m"], lambda cfg, input_shape, num_outputs: ...)

- :func:`register_model` ``(arch, sizes, build)``: ``build(cfg, input_shape, num_outputs)``
  returns a fresh ``torch.nn.Module`` of size ``cfg.size``, under a seeded RNG;
- :func:`register_dataset` ``(name, config=, splits=, stream=, describe=, path=, per_rank=)``:
  ``config`` is a subclass of :class:`DatasetConfig` (the dataset's own, validated fields);
  ``splits(cfg)`` returns :class:`Splits` (build them with :func:`splits_from_arrays`);
- :func:`register_task` ``(name, make)``: ``make(run_config)`` returns an object of the
  :class:`Task` protocol (subclass :class:`Classification` to change only part of it).
"""

from __future__ import annotations

from activescale.errors import ConfigError, DataError, PluginError
from trainers.data.corruptions import (
    corrupt,
    easy_prototypes,
    inject_duplicates,
    inject_label_noise,
    inject_noise_inputs,
)
from trainers.data.registry import (
    DatasetConfig,
    DatasetEntry,
    dataset_entry,
    register_dataset,
    registered_datasets,
)
from trainers.data.sources import BatchSource, FixedSource, check_state
from trainers.data.splits import DatasetFacts, Splits, splits_from_arrays
from trainers.models import LADDERS, ModelBuilder, ModelConfig, ModelLadder, ladder, register_model
from trainers.tasks import (
    TASKS,
    Classification,
    DataSpec,
    Task,
    TaskEntry,
    register_task,
    task_entry,
)

__all__ = [
    "LADDERS",
    "TASKS",
    "BatchSource",
    "Classification",
    "ConfigError",
    "DataError",
    "DataSpec",
    "DatasetConfig",
    "DatasetEntry",
    "DatasetFacts",
    "FixedSource",
    "ModelBuilder",
    "ModelConfig",
    "ModelLadder",
    "PluginError",
    "Splits",
    "Task",
    "TaskEntry",
    "check_state",
    "corrupt",
    "dataset_entry",
    "easy_prototypes",
    "inject_duplicates",
    "inject_label_noise",
    "inject_noise_inputs",
    "ladder",
    "register_dataset",
    "register_model",
    "register_task",
    "registered_datasets",
    "splits_from_arrays",
    "task_entry",
]
