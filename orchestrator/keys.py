"""Dotted keys into a sweep's YAML: where each one is written, how to set one, how to say
what is wrong with one.

Every user-facing check of a sweep (``orchestrator/spec.py``, ``orchestrator/tune/``) reports
a problem the same way: ``file:line: dotted.key = value: problem. What to do.`` This module
holds the pieces those messages are made of, so the wording is the same everywhere:

- :class:`Lines` maps a key path of the document to its line;
- :func:`fail` builds the error, :func:`explain` turns a pydantic error into its parts;
- :func:`set_dotted`, :func:`deep_copy`, :func:`parse_override` and :func:`override_path`
  apply ``-o KEY=VALUE`` overrides to the raw document.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import BaseModel

from activescale.errors import ActivescaleError, SweepSpecError
from activescale.visible import note, plain, shown, shown_key

ANY_FIX = "Fix it in the YAML, or override it with -o KEY=VALUE."


class Lines:
    """Maps a key path in the YAML document to its line number."""

    def __init__(self, source: str, text: str, node: yaml.Node | None = None) -> None:
        """``node``: the document ``text`` composes to, if already composed (it is read with
        ``orchestrator.sweep_yaml``'s limits, so only text that passed them should be given)."""
        self.source = source
        self.lines: dict[tuple[str, ...], int] = {}
        if node is None:
            from orchestrator.sweep_yaml import SweepLoader

            try:
                node = yaml.compose(text, Loader=SweepLoader)  # type: ignore[arg-type]
            except (yaml.YAMLError, RecursionError):
                node = None
        if node is not None:
            self._walk(node, (), set())

    def _walk(self, node: yaml.Node, path: tuple[str, ...], seen: set[int]) -> None:
        # Each node once: an aliased mapping's keys get the lines of its first place only
        # (the others fall back to the alias's own line), and alias chains stay linear.
        if isinstance(node, yaml.MappingNode) and id(node) not in seen:
            seen.add(id(node))
            for key_node, value_node in node.value:
                key = (*path, str(key_node.value))
                self.lines.setdefault(key, key_node.start_mark.line + 1)
                self._walk(value_node, key, seen)

    def where(self, path: tuple[str, ...]) -> str:
        """``file:line`` of the deepest known prefix of ``path``."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return f"{self.source}:{self.lines[path[:n]]}"
        return self.source


def fail(
    where: str,
    key: str,
    value: Any,
    problem: str,
    fix: str,
    error: type[ActivescaleError] = SweepSpecError,
) -> ActivescaleError:
    """The error for one bad key: ``where: key = value: problem. fix``. Keys and values that
    hold invisible or non-ASCII characters are shown escaped, and a note names them.
    ``error``: the class to raise (default: a sweep-file problem)."""
    text = shown(value) if not isinstance(value, dict | list) or len(repr(value)) < 80 else "..."
    if len(text) > 120:  # a 400-digit number, a page of text: its start is enough
        text = f"{text[:60]}... ({len(text)} characters)"
    if isinstance(value, str) and not plain(value):  # the problem may quote the value raw
        problem = problem.replace(repr(value), shown(value)).replace(value, shown(value)[1:-1])
    return error(f"{where}: {shown_key(key)} = {text}: {problem}. {fix}{note(key, value)}")


def allowed_keys(model: type[BaseModel], loc: Iterable[str | int], data: Any = None) -> list[str]:
    """Field names of the model found by following ``loc`` (for 'unknown key' messages).

    ``data``: the raw document, for sections whose model depends on their contents (a
    dataset section is validated by the model its ``name`` registered: ``model_for``)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        data = data.get(part) if isinstance(data, dict) else None
        annotation = fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if hasattr(c, "model_fields")), None)
        if hasattr(current, "model_for"):
            current = current.model_for(data) or current
    return sorted(getattr(current, "model_fields", {}))


def explain(
    error: Any,
    model: type[BaseModel],
    prefix: tuple[str, ...] = (),
    hidden: frozenset[str] = frozenset(),
    top_level_keys: Iterable[str] = (),
    data: Any = None,
) -> tuple[tuple[str, ...], str, str]:
    """(key path, problem, fix) for one pydantic error of ``model``.

    ``hidden``: names pydantic puts into error locations that are not keys (tagged-union
    tags, model names of a union); ``top_level_keys``: keys also allowed at the top level of
    the document, listed in an 'unknown key' message there; ``data``: the document that was
    validated (see :func:`allowed_keys`).
    """
    loc = tuple(str(p) for p in error["loc"] if not str(p).startswith("function-"))
    loc = tuple(p for p in loc if p not in hidden)
    path = prefix + loc
    if error["type"] == "extra_forbidden":
        allowed = allowed_keys(model, loc[:-1], data)
        if not loc[:-1]:
            allowed = sorted(set(allowed) | set(top_level_keys))
        return path, "unknown key", f"Allowed keys here: {', '.join(allowed)}."
    message = str(error["msg"]).removeprefix("Value error, ")
    hint = _type_hint(error["type"], error.get("input"))
    if hint:
        message = f"{message} ({hint})"
    # Cross-field rules (e.g. RunConfig._consistent) name their key first: "scorer: ...".
    head, sep, rest = message.partition(": ")
    if sep and " " not in head and head.split(".")[0] in model.model_fields:
        path, message = (*prefix, *loc, *head.split(".")), rest
    return path, message, ANY_FIX


_NUMBER_TYPES = frozenset({"int_type", "float_type", "int_from_float"})


def _type_hint(kind: str, value: Any) -> str:
    """Why a strict type check refused a value that lax parsing would have turned into one."""
    if kind in _NUMBER_TYPES and isinstance(value, bool):
        return "true/false is a boolean, not a number; write the number"
    if kind in _NUMBER_TYPES and isinstance(value, str):
        return "a string is not a number; write it unquoted, e.g. 3e-4 or 1000"
    if kind in _NUMBER_TYPES and isinstance(value, float):
        return "a whole number is needed; write it without a fraction or exponent, e.g. 1000"
    if kind == "finite_number":
        return "infinity and NaN are not allowed; give a finite number"
    if kind == "bool_type":
        return "write true or false"
    if kind == "string_type" and value is not None:
        return "quote it to make it a string, e.g. '1'"
    return ""


def set_dotted(data: dict[str, Any], key: str | list[str], value: Any) -> None:
    """``data[a][b][c] = value`` for the key ``a.b.c`` (or its parts), making mappings."""
    parts = key.split(".") if isinstance(key, str) else key
    for part in parts[:-1]:
        child = data.get(part)
        if not isinstance(child, dict):
            child = data[part] = {}
        data = child
    data[parts[-1]] = value


def deep_copy(data: Any) -> Any:
    """A copy of plain YAML data (mappings, lists, scalars)."""
    if isinstance(data, dict):
        return {k: deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [deep_copy(v) for v in data]
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``learner.lr=3e-4`` -> ("learner.lr", 0.0003); values are parsed as YAML, with the
    rules of a sweep file (``orchestrator.sweep_yaml``)."""
    from orchestrator.sweep_yaml import load_value

    if any("\udc80" <= c <= "\udcff" for c in text):  # undecodable bytes on the command line
        raise SweepSpecError(
            f"override {text!a} is not valid UTF-8; write it in UTF-8 (check the terminal's "
            "encoding)"
        )
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SweepSpecError(
            f"override {shown(text)} is not KEY=VALUE; write e.g. -o learner.lr=3e-4 or "
            "-o grid.seed=[0,1]"
        )
    if any(not part for part in key.split(".")) or not plain(key):
        raise SweepSpecError(
            f"override {shown(text)}: the key {shown_key(key)} is not a dotted name (parts of "
            f"printable ASCII separated by single dots), e.g. learner.lr.{note(key)}"
        )
    return key, load_value(value, f"override {shown(text)}")


# Fields of a tune.space distribution (orchestrator/tune/config.py), which an override may set
# alone.
_DISTRIBUTION_FIELDS = frozenset({"type", "low", "high", "log", "step", "choices"})


def override_path(key: str) -> list[str]:
    """Where ``-o key=value`` goes. Keys split at dots, except in ``tune.space``, whose keys
    are dotted run-config keys themselves: ``tune.space.optimizer.lr.high`` sets ``high`` of
    the ``optimizer.lr`` entry, ``tune.space.optimizer.lr`` the whole entry."""
    parts = key.split(".")
    if parts[:2] != ["tune", "space"] or len(parts) < 3:
        return parts
    rest = parts[2:]
    if len(rest) > 1 and rest[-1] in _DISTRIBUTION_FIELDS:
        return ["tune", "space", ".".join(rest[:-1]), rest[-1]]
    return ["tune", "space", ".".join(rest)]
