"""Keys and values in messages, shown so that what a user reads is what the file holds.

A zero-width space in a key prints as nothing (``learner: unknown key`` next to an allowed-keys
list containing ``learner``), and a Cyrillic ``а`` prints like a Latin ``a``. Messages show
such text escaped (``'lear\\u200bner'``) and say which characters they are (:func:`note`).
Plain printable ASCII is shown as it is.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

# Categories of characters that print as nothing or as blank: format (zero-width, direction
# marks), control, private use, unassigned, and separators other than the ASCII space.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"})


def plain(text: str) -> bool:
    """Printable ASCII only (nothing to escape)."""
    return text.isascii() and text.isprintable()


def shown(value: Any) -> str:
    """``repr`` of a value for a message, non-ASCII characters escaped in strings."""
    if isinstance(value, str):
        return repr(value) if plain(value) else ascii(value)
    return repr(value)


def shown_key(key: str | Iterable[str]) -> str:
    """A dotted key as written, or escaped and quoted if it holds anything but printable ASCII
    or has spaces (``'learner '`` would print like ``learner``)."""
    text = key if isinstance(key, str) else ".".join(key)
    return text if plain(text) and " " not in text else ascii(text)


def unusual(text: str) -> list[str]:
    """The distinct characters of ``text`` that are not printable ASCII, in order."""
    return list(dict.fromkeys(c for c in text if not plain(c)))


def describe(char: str) -> str:
    """``U+200B ZERO WIDTH SPACE (invisible)`` and the like."""
    name = unicodedata.name(char, "unnamed character")
    kind = (
        "invisible"
        if unicodedata.category(char) in INVISIBLE_CATEGORIES
        else "not ASCII; it may look like an ASCII character"
    )
    return f"U+{ord(char):04X} {name} ({kind})"


def note(*texts: Any) -> str:
    """`` Note: 'x' contains U+200B ZERO WIDTH SPACE (invisible).`` for every string given
    that holds characters other than printable ASCII; empty when none does."""
    parts = []
    for text in texts:
        if isinstance(text, str) and (chars := unusual(text)):
            listed = ", ".join(describe(c) for c in chars[:3])
            more = f" and {len(chars) - 3} more" if len(chars) > 3 else ""
            parts.append(f"{text!a} contains {listed}{more}")
    return f" Note: {'; '.join(parts)}." if parts else ""


def one_line(value: str | None) -> str | None:
    """A path or URL (for a config validator): no control characters (NUL, newline, escape
    sequences), which no path or URL holds on purpose and which break files and shells."""
    for char in value or "":
        if unicodedata.category(char) == "Cc":
            raise ValueError(
                f"{value!a} contains the control character U+{ord(char):04X}; paths and "
                "URLs are one line of printable characters: remove it"
            )
    return value
