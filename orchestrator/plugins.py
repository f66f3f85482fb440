"""Plugins: researchers' own model ladders, datasets and tasks, imported before any run config
is validated (docs/plugins.md).

A plugin is a Python module that registers entries when it is imported (the register
functions of ``activescale.plugins``). It is named in one of two ways:

- in a sweep, ``plugins: [my_models.py, my_pkg/, some.module]``: a path to a ``.py`` file or
  a package folder (relative to the sweep file), or an importable module name;
- installed, with an entry point in the group ``activescale.plugins``: loaded by every
  command and every job, once per process (:func:`load_entry_points`).

A loaded plugin is a :class:`PluginRef`: the module it is imported as, the file or folder it
is imported from when it is not installed, a digest of those files, and the version of the
distribution that installed it, if one did. Jobs carry the sweep's refs and load them before
they validate their config (:func:`load_job_plugins`); SLURM jobs load copies of the files
taken at submission (:func:`snapshot_plugins`), so editing a plugin after ``submit`` changes
no queued job. A path plugin is imported under a name made from its resolved path, so two
sweeps naming two different ``models.py`` load both, and one file is imported once however
often it is named.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Final, TypeVar

from activescale import schema
from activescale.errors import PluginError

ENTRY_POINT_GROUP: Final = "activescale.plugins"
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
PATH_MODULE_PREFIX: Final = "activescale_plugin_"
T = TypeVar("T")


@dataclass(frozen=True)
class PluginRef:
    """One loaded plugin, as a job needs it to load the same code again (picklable)."""

    name: str  # as the sweep writes it (a module name or a path), or the entry point's name
    module: str  # the module it is imported as
    path: str | None = None  # the file or package folder it is imported from; None: installed
    digest: str = ""  # sha256 of the files it was loaded from ("sha256:" + 16 hex digits)
    version: str | None = None  # the installing distribution's version (installed plugins)
    entry_point: bool = False  # installed with an entry point (loaded by every process)

    @property
    def package(self) -> str:
        """The top-level module that ``path`` holds (a path plugin's own module)."""
        return self.module.split(".")[0]

    @property
    def fingerprint(self) -> str:
        """What runs record: the digest, after the version for an installed plugin."""
        return f"{self.version} {self.digest}" if self.version else self.digest

    def describe(self) -> str:
        where = f"from {self.path}" if self.path else "installed"
        return f"plugin {self.name!r} (module {self.module}, {where})"


# Every plugin loaded in this process, by module name: importing one again is a no-op.
LOADED: dict[str, PluginRef] = {}
_entry_points: tuple[PluginRef, ...] | None = None


# ---------------------------------------------------------------------------------------------
# Loading: a sweep's list, the installed entry points, a job's refs


def load_sweep_plugins(entries: Any, base: Path, where: str) -> tuple[PluginRef, ...]:
    """Import the installed plugins and every plugin of a sweep's ``plugins:`` list (paths
    relative to ``base``, the sweep file's folder); ``where`` (``file:line``) heads errors."""
    load_entry_points()
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise PluginError(
            f"{where}: plugins = {entries!r}: a list of module names or paths is expected; "
            "write e.g. `plugins: [my_models.py]`"
        )
    refs: list[PluginRef] = []
    for index, entry in enumerate(entries):
        label = f"{where}: plugins[{index}] = {entry!r}"
        if not isinstance(entry, str) or not entry.strip():
            raise PluginError(
                f"{label}: a plugin is an importable module name or a path to a .py file or a "
                "package folder; write e.g. `plugins: [my_models.py, my_package.models]`"
            )
        refs.append(_load_named(entry.strip(), base, label))
    return tuple(refs)


def load_entry_points() -> tuple[PluginRef, ...]:
    """Import every plugin installed with an entry point in ``activescale.plugins``, once per
    process. An entry point names a module (imported), or ``module:function`` (called once,
    with no arguments, after the import)."""
    global _entry_points
    if _entry_points is not None:
        return _entry_points
    refs = []
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for entry in sorted(found, key=lambda e: (e.name, e.value)):
        dist = getattr(entry, "dist", None)
        owner = f"{dist.name} {dist.version}" if dist is not None else "an installed package"
        label = f"the installed plugin {entry.name!r} (entry point {entry.value!r} of {owner})"
        try:
            loaded = entry.load()
            if entry.attr and callable(loaded):
                loaded()
        except Exception as err:
            fix = f"pip uninstall {dist.name}" if dist is not None else "uninstall it"
            if isinstance(err, PluginError):
                raise PluginError(f"{label} cannot register: {err}. Fix it, or {fix}") from None
            raise _failure(f"{label} failed to import", err, None, f"Fix it, or {fix}") from None
        module = sys.modules[entry.module]
        ref = PluginRef(
            name=entry.name,
            module=entry.module,
            digest=digest_of(_origin(module)),
            version=dist.version if dist is not None else None,
            entry_point=True,
        )
        LOADED[entry.module] = ref
        refs.append(ref)
    _entry_points = tuple(refs)
    return _entry_points


def load_job_plugins(refs: Sequence[PluginRef]) -> tuple[PluginRef, ...]:
    """In a job, before its config is validated: the installed plugins, then the sweep's
    ``refs``; returns every plugin loaded, with the digests of the files actually imported.
    A plugin that cannot be loaded is a PluginError naming it (recorded in the store)."""
    loaded = list(load_entry_points())
    for ref in refs:
        if any(ref.module == done.module for done in loaded):  # installed and named, too
            continue
        cached = LOADED.get(ref.module)
        if cached is not None and ref.module in sys.modules:  # this process has it already
            loaded.append(cached)
            continue
        label = f"{ref.describe()}, validated with the sweep,"
        fix = (
            "Restore or fix the plugin, then run the sweep again (`activescale run` or "
            "`activescale retry`)"
        )
        try:
            if ref.path is not None:
                if not Path(ref.path).exists():
                    raise FileNotFoundError(f"{ref.path} no longer exists")
                _import_from(ref.package, Path(ref.path))
                importlib.import_module(ref.module)
                fresh = replace(ref, digest=digest_of(Path(ref.path)))
            else:
                fresh = _installed(ref.name, importlib.import_module(ref.module))
        except PluginError as err:
            raise PluginError(f"{label} cannot register in this job: {err}. {fix}") from None
        except Exception as err:
            raise _failure(f"{label} cannot be loaded in this job", err, ref.path, fix) from None
        LOADED[ref.module] = fresh
        loaded.append(fresh)
    return tuple(loaded)


def _load_named(entry: str, base: Path, label: str) -> PluginRef:
    """Import one entry of a sweep's list: a path, or a module name."""
    if MODULE_NAME.fullmatch(entry) and not entry.endswith(".py"):
        return _load_module(entry, base, label)
    path = (base / Path(entry).expanduser()).resolve()
    if path.is_dir() and not (path / "__init__.py").is_file():
        raise PluginError(
            f"{label}: the folder {path} has no __init__.py; a plugin folder is a package: add "
            "an __init__.py that imports its modules, or name the .py file"
        )
    if not path.is_file() and not path.is_dir():
        raise PluginError(
            f"{label}: {path} does not exist (paths are relative to the sweep file's folder "
            f"{base}); fix the path, or name an importable module"
        )
    if path.is_file() and path.suffix != ".py":
        raise PluginError(f"{label}: {path} is not a .py file; name a Python file or a package")
    module = path_module_name(path)
    ref = LOADED.get(module)
    if ref is not None and module in sys.modules:
        return ref
    for other in list(LOADED.values()):  # the same files, installed editable (entry point)
        loaded = sys.modules.get(other.module)
        if other.path is None and loaded is not None and _origin(loaded) == path:
            return other
    ref = PluginRef(name=entry, module=module, path=str(path), digest=digest_of(path))
    _import_or_fail(ref, label, lambda: _import_from(module, path))
    LOADED[module] = ref
    return ref


def _load_module(name: str, base: Path, label: str) -> PluginRef:
    cached = LOADED.get(name)
    if cached is not None and name in sys.modules:
        return cached
    probe = PluginRef(name=name, module=name)
    found = _import_or_fail(probe, label, lambda: _find_spec(name))
    if found is None:
        beside = base / name.replace(".", "/")
        hint = (
            f"; {beside}.py exists: write `./{name}.py` to load it as a path"
            if beside.with_suffix(".py").is_file()
            else f"; {beside} is a folder: write `./{name.replace('.', '/')}/` to load it"
            if beside.is_dir()
            else ""
        )
        raise PluginError(
            f"{label}: no module named {name!r} can be imported{hint}. Install it (pip install "
            "-e PATH), put its folder on PYTHONPATH, or give a path to its .py file or package "
            "folder relative to the sweep file"
        )
    module = _import_or_fail(probe, label, lambda: importlib.import_module(name))
    ref = _installed(name, module)
    LOADED[name] = ref
    return ref


def _find_spec(name: str) -> Any:
    try:  # importing a dotted name's parent packages runs them: their errors are the plugin's
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None


def _import_or_fail(ref: PluginRef, label: str, load: Callable[[], T]) -> T:
    try:
        return load()
    except PluginError as err:  # a register function refused (a name taken, a bad ladder)
        raise PluginError(
            f"{label}: the plugin cannot register: {_annotated(str(err), ref)}"
        ) from None
    except Exception as err:
        fix = "Fix the plugin, or remove it from `plugins:`"
        raise _failure(f"{label}: the plugin failed to import", err, ref.path, fix) from None


def _installed(name: str, module: ModuleType) -> PluginRef:
    """The ref of a plugin imported by module name: installed (a distribution's version, no
    path: jobs import it by name) or on ``sys.path`` in a user's folder (the top-level file or
    package is the path jobs import, and SLURM snapshots)."""
    top = module.__name__.split(".")[0]
    dists = _distributions().get(top)
    if dists:
        version = importlib.metadata.version(dists[0])
        return PluginRef(name, module.__name__, None, digest_of(_origin(module)), version)
    root = _origin(sys.modules[top])
    return PluginRef(name, module.__name__, str(root), digest_of(root))


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _origin(module: ModuleType) -> Path:
    """The file of a module, or the folder of a package."""
    file = getattr(module, "__file__", None)
    if not file:
        raise PluginError(
            f"the plugin module {module.__name__} has no file (a namespace package?); "
            "give it an __init__.py"
        )
    path = Path(file).resolve()
    return path.parent if path.name == "__init__.py" else path


def _import_from(module: str, path: Path) -> ModuleType:
    """Import the file or package folder ``path`` as ``module`` (once per process)."""
    if module in sys.modules:
        return sys.modules[module]
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            module, path / "__init__.py", submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} as a module")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded  # before running it: a package's modules import it
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[name]  # a failed import leaves nothing half-imported behind
        raise
    return loaded


def path_module_name(path: Path) -> str:
    """The module a path plugin is imported as: its name, and a hash of where it is (two
    ``models.py`` in two folders are two plugins; one file is one plugin however named)."""
    stem = re.sub(r"\W", "_", path.stem if path.is_file() else path.name)
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{PATH_MODULE_PREFIX}{stem}_{where}"


# ---------------------------------------------------------------------------------------------
# Messages


def _failure(label: str, err: BaseException, path: str | None, fix: str) -> PluginError:
    """One line: who failed, the exception type and message, where in the plugin, what to do."""
    message = (err.msg if isinstance(err, SyntaxError) else str(err)).strip().splitlines()
    text = message[0] if message else ""
    at = _plugin_line(err, path)
    at_text = f" (at {at})" if at else ""
    return PluginError(f"{label}: {type(err).__name__}: {text}{at_text}. {fix}")


def _plugin_line(err: BaseException, path: str | None) -> str | None:
    """``file:line`` of the innermost frame of the traceback inside the plugin's files."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}"
    frames: list[traceback.FrameSummary] = list(traceback.extract_tb(err.__traceback__))
    if path is not None:  # a plugin in a folder: its own frames only
        frames = [f for f in frames if f.filename.startswith(path)]
    else:  # installed: the innermost frame that is neither the import system nor this module
        frames = [f for f in frames if "importlib" not in f.filename and f.filename != __file__]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


def _annotated(message: str, current: PluginRef) -> str:
    """A registry's message, with each module it names said to be which plugin."""
    known = {**LOADED, current.module: current}
    named = [
        ref for module, ref in known.items() if re.search(rf"\b{re.escape(module)}\b", message)
    ]
    notes = [f"{ref.module} is {ref.describe()}" for ref in named if ref.path]
    return message + (f" ({'; '.join(notes)})" if notes else "")


# ---------------------------------------------------------------------------------------------
# Digests, snapshots, records


def plugin_files(path: Path) -> list[Path]:
    """The files of a plugin: the file itself, or every file of its folder (no caches)."""
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def digest_of(path: Path) -> str:
    """sha256 over a plugin's files (relative names and contents): equal code, equal digest."""
    digest = hashlib.sha256()
    for file in plugin_files(path):
        digest.update(str(file.relative_to(path.parent)).encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()[:16]


def snapshot_plugins(refs: Sequence[PluginRef], workdir: Path) -> tuple[PluginRef, ...]:
    """Copies of the plugins kept in folders (not installed), for jobs that start later (SLURM):
    ``WORKDIR/snapshots/plugins/<digest>/<file or folder>``, content-addressed like the
    project's own snapshot. Installed plugins are returned as they are."""
    copies = []
    for ref in refs:
        if ref.path is None:
            copies.append(ref)
            continue
        source = Path(ref.path)
        try:
            digest = digest_of(source)
        except OSError as err:
            raise PluginError(
                f"{ref.describe()} cannot be copied for the jobs: {err}; restore it, or remove "
                "it from `plugins:`"
            ) from None
        folder = workdir / "snapshots" / "plugins" / digest.removeprefix("sha256:")
        if not folder.is_dir():
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
            for file in plugin_files(source):
                target = staging / file.relative_to(source.parent)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)
            try:
                os.rename(staging, folder)  # atomic: a concurrent submit sees all or nothing
            except OSError:  # another submit made the same copy first
                shutil.rmtree(staging, ignore_errors=True)
        copies.append(replace(ref, path=str(folder / source.name), digest=digest))
    return tuple(copies)


def plugin_params(refs: Sequence[PluginRef]) -> dict[str, str]:
    """MLflow parameters of a run: ``plugin.<name>`` -> digest (and version when installed)."""
    return {schema.plugin_param(_param_name(ref)): ref.fingerprint for ref in refs}


def _param_name(ref: PluginRef) -> str:
    # MLflow keys allow letters, digits, '_', '-', '.', ' ' and '/'.
    name = (
        ref.module
        if ref.path is None or not ref.module.startswith(PATH_MODULE_PREFIX)
        else ref.name
    )
    return re.sub(r"[^\w\-. /]", "_", name.rstrip("/"))


def plugin_record(refs: Sequence[PluginRef]) -> list[dict[str, Any]]:
    """What the run store keeps of the plugins a run loaded (its ``plugins`` column)."""
    return [asdict(ref) for ref in refs]
