"""Where a registered sweep lives, from its YAML file or its name: the CLI's commands that
read a sweep (`status`, `cancel`, `report`) find its store, MLflow data and grid here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from activescale.errors import ActivescaleError, SweepSpecError
from activescale.secrets import mask_url
from orchestrator.store import RunStore

if TYPE_CHECKING:
    from orchestrator.spec import Sweep


@dataclass(frozen=True)
class SweepLocation:
    """Where a registered sweep's store and MLflow data live, and the run ids of its grid as
    configured now (None: not known, e.g. a sweep registered by an older version)."""

    name: str
    store_url: str
    tracking_uri: str
    workdir: Path
    grid: frozenset[str] | None = None


def locate(ref: str, overrides: Sequence[str] = (), store: str | None = None) -> SweepLocation:
    """A sweep from its YAML file (its grid after the overrides), or by name from its default
    work directory runs/NAME (the grid of its last registration)."""
    if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
        from orchestrator.spec import load_sweep  # imports torch: only when there is YAML

        sweep = load_sweep(ref, tuple(overrides))
        return SweepLocation(
            sweep.name,
            store or sweep.store_url,
            sweep.tracking_uri,
            sweep.workdir,
            _grid_of(sweep, store or sweep.store_url),
        )
    workdir = (Path("runs") / ref).resolve()
    url = store or f"sqlite:///{workdir / 'store.db'}"
    if store is None and not (workdir / "store.db").exists():
        raise SweepSpecError(
            f"no sweep named {ref!r} under {workdir.parent}; pass the sweep's YAML file, "
            "or --store URL for a store elsewhere"
        )
    row = RunStore(url).sweep(ref)
    if row is None:
        raise SweepSpecError(f"the store {mask_url(url)} has no sweep named {ref!r}; run it first")
    spec = json.loads(row.spec)
    return SweepLocation(ref, url, spec["tracking_uri"], Path(spec["workdir"]), row.grid_run_ids())


def _grid_of(sweep: Sweep, store_url: str) -> frozenset[str] | None:
    """The run ids of a loaded sweep; with from_tuning, after its tuned values (when the
    studies are not there yet, those of its last registration)."""
    if not sweep.settings.from_tuning:
        return frozenset(r.run_id for r in sweep.runs)
    from orchestrator.tune.studies import apply_best_params

    try:
        return frozenset(r.run_id for r in apply_best_params(sweep))
    except ActivescaleError:
        row = RunStore(store_url).sweep(sweep.name)
        return row.grid_run_ids() if row is not None else None
