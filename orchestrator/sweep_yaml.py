"""Reading a sweep's YAML safely: what the text may be, and what its values mean.

PyYAML's ``safe_load`` reads YAML 1.1, which surprises people and lets careless or hostile
files through: ``1e-3`` is a string (no dot), ``yes``/``no``/``on``/``off`` are booleans,
``1:30`` is the integer 90, ``010`` is 8; a key written twice silently keeps the last value;
50,000 nested brackets overflow the stack; a few lines of aliases expand to billions of nodes
(`billion laughs`). This loader reads the same syntax with these rules instead:

- scalars resolve as in YAML 1.2's core schema: ``true``/``false``, ``null``/``~``/empty,
  decimal integers (``1_000`` allowed, leading zeros are decimal), ``0x``/``0o`` integers,
  floats with or without a dot (``1e-3``, ``.5``, ``.inf``, ``.nan``); everything else is a
  string. No timestamps, binary, sets or other tags;
- every mapping key is a string and appears once (both lines are named otherwise);
- limits: :data:`MAX_BYTES` of text, :data:`MAX_DEPTH` levels of nesting and
  :data:`MAX_NODES` values once aliases are expanded; aliases may not refer to themselves;
- the file must be UTF-8 (the byte offset, line and column of the first bad byte are named);
- aliases are expanded into independent copies, so an override of one place never changes
  another that shared its anchor.

Every problem is a :class:`SweepSpecError` with ``file:line``. CLI overrides (``-o KEY=VALUE``)
parse their values with :func:`load_value`, the same rules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from activescale.errors import SweepSpecError
from activescale.visible import shown_key

MAX_BYTES = 1_000_000  # a sweep is a page or two; a megabyte is a mistake or an attack
MAX_DEPTH = 40  # a sweep nests ~6 levels (tune.space.KEY.choices); deeper is a mistake
MAX_NODES = 200_000  # values after alias expansion (the largest shipped sweep has ~200)

STR, INT, FLOAT, BOOL, NULL = (
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")
)
SEQ, MAP, MERGE = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map", "tag:yaml.org,2002:merge"
ALLOWED_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL, SEQ, MAP})


class Core12Resolver(BaseResolver):
    """Plain scalars resolved by YAML 1.2's core schema (plus ``_`` digit separators and the
    ``<<`` merge key, which PyYAML users rely on)."""


_RESOLVERS = [
    (BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (NULL, r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    (INT, r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$", "-+0123456789"),
    (
        FLOAT,
        r"^(?:[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    (MERGE, r"^(?:<<)$", "<"),
]
for _tag, _pattern, _first in _RESOLVERS:
    Core12Resolver.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


class Core12Constructor(SafeConstructor):
    """Numbers as the resolver reads them (PyYAML's own constructors read YAML 1.1)."""

    def construct_core_int(self, node: ScalarNode) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        if text.startswith(("0x", "0o")):
            return int(text[2:], 16 if text[1] == "x" else 8)
        return int(text)

    def construct_core_float(self, node: ScalarNode) -> float:
        text = str(self.construct_scalar(node)).replace("_", "").lower()
        if text.endswith(".inf"):
            return -math.inf if text.startswith("-") else math.inf
        if text == ".nan":
            return math.nan
        return float(text)


Core12Constructor.add_constructor(INT, Core12Constructor.construct_core_int)  # type: ignore[type-var]
Core12Constructor.add_constructor(FLOAT, Core12Constructor.construct_core_float)  # type: ignore[type-var]


class SweepLoader(Reader, Scanner, Parser, Composer, Core12Constructor, Core12Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        Core12Constructor.__init__(self)
        Core12Resolver.__init__(self)


@dataclass(frozen=True)
class Document:
    """A YAML document read by :func:`load_text`: its data and its composed node tree."""

    data: Any
    node: Node | None


def decode(data: bytes, source: str) -> str:
    """UTF-8 text of a sweep file (a UTF-8 byte-order mark is dropped)."""
    if len(data) > MAX_BYTES:
        raise SweepSpecError(
            f"{source}: {len(data):,} bytes, more than the {MAX_BYTES:,} a sweep file may have; "
            "a sweep is a page of settings: move data to files and values to a grid"
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SweepSpecError(
            f"{source}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); "
            "save it as UTF-8"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise SweepSpecError(
            f"{source}:{line}:{column}: not valid UTF-8 (byte 0x{data[err.start]:02x} at byte "
            f"offset {err.start}); save the file as UTF-8"
        ) from None


def load_text(text: str, source: str) -> Document:
    """The data of one YAML document, read with this module's rules (see the docstring)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise SweepSpecError(f"{source}: more than {MAX_BYTES:,} bytes of YAML")
    _check_nesting(text, source)
    loader = None
    try:
        loader = SweepLoader(text)  # the reader refuses control characters here already
        node = loader.get_single_node()
        if node is None:
            return Document(None, None)
        _Checker(source).check(node)
        data = loader.construct_document(node)
    except yaml.YAMLError as err:
        raise SweepSpecError(syntax_message(err, source, text)) from None
    finally:
        if loader is not None:
            loader.dispose()
    return Document(_unshared(data), node)


def load_value(text: str, source: str) -> Any:
    """One value (a CLI override's), read with the same rules as a file."""
    return load_text(text, source).data


def syntax_message(err: yaml.YAMLError, source: str, text: str) -> str:
    """One line: where, and what PyYAML found wrong."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if isinstance(err, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text[: err.position].count("\n") + 1
        char = err.character if isinstance(err.character, str) else chr(err.character)
        return (
            f"{source}:{line}: not valid YAML: the character U+{ord(char):04X} is not allowed "
            "in YAML text (control characters other than tab and newline); remove it, or write "
            "it as an escape inside double quotes"
        )
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    parts = [getattr(err, "context", None), getattr(err, "problem", None)]
    what = "; ".join(str(p) for p in parts if p) or str(err).splitlines()[0]
    return f"{where}: not valid YAML: {what}. Fix the syntax."


def _check_nesting(text: str, source: str) -> None:
    """Nesting depth from the event stream, before composing (which recurses per level)."""
    depth = 0
    loader = None
    try:
        loader = SweepLoader(text)
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else 0
                    raise SweepSpecError(
                        f"{source}:{line}: values nested more than {MAX_DEPTH} levels deep; "
                        "a sweep nests a few levels (section, key, list): flatten it"
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as err:
        raise SweepSpecError(syntax_message(err, source, text)) from None
    finally:
        if loader is not None:
            loader.dispose()


class _Checker:
    """Walks the composed nodes once (aliases followed, each node visited once): tags, keys,
    duplicates, depth and size after alias expansion, self-referring aliases."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, depth)
        self.open: set[int] = set()  # nodes being walked: an alias to one of them is a cycle

    def where(self, node: Node) -> str:
        return f"{self.source}:{node.start_mark.line + 1}"

    def check(self, node: Node) -> None:
        self.walk(node, (), 1)

    def walk(self, node: Node, path: tuple[str, ...], depth: int) -> tuple[int, int]:
        key = id(node)
        if key in self.open:
            raise SweepSpecError(
                f"{self.where(node)}: {shown_key(path)}: an alias refers to a value that contains "
                "it (a recursive structure); a sweep holds plain trees of values: remove the alias"
            )
        if key in self.sizes:
            size, height = self.sizes[key]
        else:
            self.open.add(key)
            size, height = self._children(node, path, depth)
            self.open.discard(key)
            self.sizes[key] = (size, height)
        if depth + height - 1 > MAX_DEPTH:
            raise SweepSpecError(
                f"{self.where(node)}: {shown_key(path)}: values nested more than {MAX_DEPTH} "
                "levels deep once aliases are expanded; flatten them"
            )
        if size > MAX_NODES:
            raise SweepSpecError(
                f"{self.where(node)}: {shown_key(path) or '(document)'}: more than "
                f"{MAX_NODES:,} values once aliases are expanded; aliases that repeat aliases "
                "multiply (a YAML bomb): write the values out, or use a grid"
            )
        return size, height

    def _children(self, node: Node, path: tuple[str, ...], depth: int) -> tuple[int, int]:
        if node.tag not in ALLOWED_TAGS:
            raise SweepSpecError(
                f"{self.where(node)}: {shown_key(path) or '(document)'}: the tag {node.tag!r} "
                "is not allowed; a sweep holds strings, numbers, booleans, null, lists and "
                "mappings: remove the tag"
            )
        if isinstance(node, ScalarNode):
            return 1, 1
        size, height = 1, 0
        if isinstance(node, SequenceNode):
            for i, child in enumerate(node.value):
                s, h = self.walk(child, (*path, str(i)), depth + 1)
                size, height = size + s, max(height, h)
            return size, height + 1
        assert isinstance(node, MappingNode)
        seen: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE:  # `<<: *defaults`: merged keys may be overridden
                s, h = self.walk(value_node, path, depth + 1)
                size, height = size + s, max(height, h)
                continue
            name = self._key(key_node, path)
            if name in seen:
                first = seen[name].start_mark.line + 1
                raise SweepSpecError(
                    f"{self.where(key_node)}: {shown_key((*path, name))}: duplicate key, also at "
                    f"line {first}; YAML would silently keep only the last one. Keep one of them"
                )
            seen[name] = key_node
            s, h = self.walk(value_node, (*path, name), depth + 1)
            size, height = size + s + 1, max(height, h)
        return size, height + 1

    def _key(self, node: Node, path: tuple[str, ...]) -> str:
        if isinstance(node, ScalarNode) and node.tag == STR:
            return str(node.value)
        kind = type(node).__name__.removesuffix("Node").lower()
        shown = node.value if isinstance(node, ScalarNode) else f"a {kind}"
        raise SweepSpecError(
            f"{self.where(node)}: {shown_key(path) or '(top level)'}: the key {shown!r} is not a "
            "string (YAML reads it as a number, boolean, null or collection); keys are names: "
            "quote it, e.g. 'x': ..."
        )


def _unshared(data: Any) -> Any:
    """A copy in which no two places share a list or mapping (aliases share them)."""
    if isinstance(data, dict):
        return {k: _unshared(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_unshared(v) for v in data]
    return data
