"""Secrets are never shown: every URL in a message, log line, table or record has its password
masked, and files that hold URLs are readable by their owner only.

A store URL (``postgresql+psycopg2://user:PASSWORD@host/db``), a tracking URI
(``https://user:PASSWORD@mlflow.example``) or a tuning storage URL may carry a password. Code
that shows a URL passes it through :func:`mask_url`; text that may contain URLs it did not
build (a driver's or MLflow's error message, a traceback) goes through :func:`mask_text`,
which also removes every password seen by :func:`mask_url` or :func:`remember` in this
process, in case a library printed one without its URL. :func:`private_files` makes files
and folders created inside it owner-only (0600 / 0700): job pickles and the job folders
hold the URLs a job needs.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import Iterator

MASK = "***"
# scheme://user:password@ -- the password runs to the last '@' before the host (passwords with
# an unescaped '@' are masked whole); user and scheme are kept, they say which account it is.
_URL = re.compile(
    r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#\s]*):(?P<password>.*)@(?P<tail>[^@]*)$"
)
_IN_TEXT = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#\s'\"<>]*):(?P<password>[^\s'\"<>]*)@"
)
_SEEN: set[str] = set()  # passwords of URLs handled in this process (for mask_text)


def password_of(url: str) -> str | None:
    """The password in ``url``'s userinfo, if any (as written, percent-escapes included)."""
    match = _URL.match(url.strip())
    return match.group("password") if match and match.group("password") else None


def remember(url: str | None) -> None:
    """Mask this URL's password wherever :func:`mask_text` later finds it, URL or not."""
    match = _URL.match((url or "").strip())
    if match is None or not match.group("password"):
        return
    password = match.group("password")
    rest = match.group("head") + match.group("tail")
    for secret in {password, urllib.parse.unquote(password)}:
        # A password that is also the user or database name (activescale:activescale@.../
        # activescale) cannot be told apart in free text: its URLs are still masked.
        if secret not in rest:
            _SEEN.add(secret)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unchanged when it has none)."""
    match = _URL.match(url)
    if match is None or not match.group("password"):
        return url
    remember(url)
    return f"{match.group('head')}:{MASK}@{match.group('tail')}"


PLACEHOLDERS = frozenset({"PASS", "PASSWORD", MASK})  # what examples in messages write


def mask_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it masked, and every
    remembered password removed (placeholders such as ``USER:PASSWORD@HOST`` are kept)."""

    def masked_url(match: re.Match[str]) -> str:
        if match.group("password") in PLACEHOLDERS:
            return match.group(0)
        return f"{match.group('head')}:{MASK}@"

    masked = _IN_TEXT.sub(masked_url, text)
    for secret in sorted(_SEEN, key=len, reverse=True):
        if len(secret) >= 3:  # never mask "a" everywhere
            masked = masked.replace(secret, MASK)
    return masked


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files created inside are readable by their owner only (umask 077). The umask is the
    process's: use it around code that writes secrets (job pickles), not around threads."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)
