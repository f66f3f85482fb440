"""Studies: one per grid cell of the ``per`` axes, in one Optuna storage; where they stand,
and the sweep's runs with their study's best values (``from_tuning``)."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activescale.errors import TuneError
from activescale.secrets import mask_text, mask_url
from orchestrator.keys import deep_copy, set_dotted
from orchestrator.tune.config import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    TuneConfig,
)

if TYPE_CHECKING:
    import optuna

    from orchestrator.spec import PlannedRun, Sweep


@dataclass(frozen=True)
class StudySpec:
    """One study: its name, the grid values it stands for, the run config it tunes, and the
    ``tune.space`` keys it searches: those its run config reads (``dropped``: the others,
    with why; :func:`searched_keys`)."""

    name: str
    axes: dict[str, Any]
    config: dict[str, Any]  # the run config (JSON) the trials start from
    learner_size: str
    space: tuple[str, ...] = ()
    dropped: dict[str, str] = field(default_factory=dict)


def _distinct_values(dist: Any) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def searched_keys(
    config: dict[str, Any], tune: TuneConfig
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The ``tune.space`` keys a run config reads, and why the others are left out.

    A key is read when two of its values give different resolved configs
    (``RunConfig.resolved()`` clears what a policy ignores: the scorer and reference of
    ``iid``, the temperature of ``topk``, ...) for some choice of the other categorical keys
    (tuning ``selection.method`` makes the temperature matter). Trials on the others would
    only repeat themselves.
    """
    categorical = {
        k: list(d.choices) for k, d in tune.space.items() if isinstance(d, CategoricalDistribution)
    }
    kept: list[str] = []
    dropped: dict[str, str] = {}
    for key, dist in tune.space.items():
        others = {k: v for k, v in categorical.items() if k != key}
        values = _distinct_values(dist)
        reads = False
        for combination in itertools.product(*others.values()):
            base = dict(zip(others, combination, strict=True))
            try:
                resolved = {repr(with_params(config, base | {key: v})) for v in values}
            except (ValueError, TypeError):  # a combination the config rejects: no evidence
                continue
            if len(resolved) > 1:
                reads = True
                break
        if reads:
            kept.append(key)
        else:
            selection = config.get("selection", {})
            dropped[key] = (
                f"policy {selection.get('policy')!r} (method {selection.get('method')!r}) does "
                "not read it"
            )
    return tuple(kept), dropped


def study_name(sweep_name: str, axes: dict[str, Any]) -> str:
    return "/".join([sweep_name, *(f"{key}={value}" for key, value in axes.items())])


def plan_studies(sweep: Sweep) -> list[StudySpec]:
    """One study per distinct combination of the ``per`` axes, in grid order."""
    tune = sweep.settings.tune
    assert tune is not None  # callers check: a programming error otherwise
    studies: dict[str, StudySpec] = {}
    for run in sweep.runs:
        axes = {axis: run.label[axis] for axis in tune.per}
        name = study_name(sweep.name, axes)
        if name not in studies:
            config = run.config.model_dump(mode="json")
            space, dropped = searched_keys(config, tune)
            studies[name] = StudySpec(
                name, axes, config, str(run.config.learner.size), space, dropped
            )
    return list(studies.values())


def storage_location(sweep: Sweep) -> str:
    tune = sweep.settings.tune
    assert tune is not None
    return tune.storage or str(sweep.workdir / "tune" / "optuna.journal")


def is_url(location: str) -> bool:
    return "://" in location


def open_storage(
    location: str, tune: TuneConfig, create: bool = True
) -> optuna.storages.BaseStorage:
    """A journal file storage for a path, an RDBStorage (with heartbeats) for a URL."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    if not is_url(location):
        path = Path(location)
        if not create and not path.exists():
            raise TuneError(f"no tuning journal at {path}: run `activescale tune SWEEP.yaml` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if location.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                location,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=tune.heartbeat_interval,
                grace_period=tune.grace_period or 2 * tune.heartbeat_interval,
                # Optuna >= 4.9's name for failed_trial_callback=RetryFailedTrialCallback.
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(tune.max_retry),
            )
    except (optuna.exceptions.StorageInternalError, ImportError, ValueError) as err:
        raise TuneError(
            f"cannot open the tuning storage {mask_url(location)}: {mask_text(str(err))}"
        ) from None


def finished_trials(study: optuna.Study) -> tuple[int, int]:
    """(completed, pruned) trials of a study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    complete = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    return complete, len(trials) - complete


def target_trials(tune: TuneConfig, keys: Collection[str] | None = None) -> int:
    """Trials per study: ``trials``, or fewer when a grid (of ``keys``) has fewer points."""
    if tune.sampler.kind != "grid":
        return tune.trials
    return min(tune.trials, math.prod(len(v) for v in grid_space(tune, keys).values()))


def grid_space(tune: TuneConfig, keys: Collection[str] | None = None) -> dict[str, list[Any]]:
    space: dict[str, list[Any]] = {}
    for key, dist in tune.space.items():
        if keys is not None and key not in keys:
            continue
        if isinstance(dist, CategoricalDistribution):
            space[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution):
            space[key] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            step = dist.step or 1.0
            n = math.floor((dist.high - dist.low) / step + 1e-9) + 1
            space[key] = [dist.low + i * step for i in range(n)]
    return space


def make_sampler(
    tune: TuneConfig, worker: int, study: int = 0, keys: Collection[str] | None = None
) -> optuna.samplers.BaseSampler:
    import optuna

    # The same seed in every worker (or study) would repeat the same suggestions.
    seed = tune.sampler.seed + worker + 1000 * study
    if tune.sampler.kind == "grid":
        return optuna.samplers.GridSampler(grid_space(tune, keys), seed=seed)
    if tune.sampler.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    import optuna

    if tune.pruner.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tune.pruner.startup_trials, n_warmup_steps=tune.pruner.warmup_evals
        )
    if tune.pruner.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, key: str, dist: Any) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(key, dist.choices)


def with_params(config: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The run config (JSON) with dotted ``params`` applied, validated and resolved."""
    from trainers.config import RunConfig

    data = deep_copy(config)
    for key, value in params.items():
        set_dotted(data, key, value)
    return RunConfig.model_validate(data).resolved().model_dump(mode="json")


def prepare(sweep: Sweep) -> tuple[list[StudySpec], str, Any]:
    """Create the studies (idempotent) and the MLflow parent; returns (studies, storage, tune)."""
    import optuna

    tune = sweep.settings.tune
    if tune is None:
        raise TuneError(f"{sweep.source}: the sweep has no tune: section; add one to tune it")
    studies = plan_studies(sweep)
    location = storage_location(sweep)
    storage = open_storage(location, tune)
    for spec in studies:
        study = optuna.create_study(
            study_name=spec.name, storage=storage, direction="maximize", load_if_exists=True
        )
        if not study.user_attrs:
            study.set_user_attr("axes", spec.axes)
            study.set_user_attr("sweep", sweep.name)
        if not is_url(location):
            requeue_orphans(study, tune)
    return studies, location, tune


def requeue_orphans(study: optuna.Study, tune: TuneConfig) -> list[int]:
    """A journal file has no heartbeats: trials an earlier `tune` left running (its workers
    died) are failed and queued again, as a URL storage does for a silent trial. Call this only
    when no worker of the study is alive (before starting them)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    retry = RetryHeartbeatStaleTrialCallback(tune.max_retry)
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                retry(study, study._storage.get_trial(trial._trial_id))
                failed.append(trial.number)
    return failed


@dataclass(frozen=True)
class StudyResult:
    name: str
    complete: int
    pruned: int
    failed: int
    best_value: float | None
    best_params: dict[str, Any]


def results(sweep: Sweep) -> list[StudyResult]:
    """Where each of the sweep's studies stands."""
    import optuna
    from optuna.trial import TrialState

    tune = sweep.settings.tune
    assert tune is not None
    storage = open_storage(storage_location(sweep), tune, create=False)
    out = []
    for spec in plan_studies(sweep):
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage)
        except KeyError:
            raise TuneError(
                f"no study {spec.name!r} in {storage_location(sweep)}: run "
                f"`activescale tune {sweep.source}` first"
            ) from None
        complete, pruned = finished_trials(study)
        failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        best = study.best_trial if complete else None
        out.append(
            StudyResult(
                spec.name,
                complete,
                pruned,
                failed,
                best.value if best else None,
                dict(best.params) if best else {},
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# from_tuning: the main sweep takes each study's best values


def apply_best_params(sweep: Sweep) -> list[PlannedRun]:
    """The sweep's runs with their study's best values applied (before hashing)."""
    from orchestrator.spec import PlannedRun, canonical_json, config_hash_text
    from trainers.config import RunConfig

    tune = sweep.settings.tune
    assert tune is not None
    keys = {spec.name: spec.space for spec in plan_studies(sweep)}
    best: dict[str, dict[str, Any]] = {}
    for result in results(sweep):
        target = target_trials(tune, keys.get(result.name))
        if result.complete + result.pruned < target or not result.complete:
            raise TuneError(
                f"study {result.name!r} is unfinished ({result.complete} completed and "
                f"{result.pruned} pruned of {target} trials): run `activescale tune "
                f"{sweep.source}` first, or remove from_tuning"
            )
        best[result.name] = result.best_params
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    for run in sweep.runs:
        params = best[study_name(sweep.name, {a: run.label[a] for a in tune.per})]
        data = with_params(run.config.model_dump(mode="json"), params)
        text = canonical_json(data)
        run_id = config_hash_text(text)
        if run_id in seen:
            continue
        seen.add(run_id)
        runs.append(PlannedRun(run_id, RunConfig.model_validate(data), run.label, text, params))
    return runs
