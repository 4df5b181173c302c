"""The key file: API keys kept as hashes, in a TOML file of their own, managed by ``relay keys``.

Keeping keys out of the main configuration means the configuration can be shared, versioned and
read by anyone, and a key can be added or revoked without touching it; keeping only hashes means
the file gives nothing away (docs/security.md). Writes are atomic (a temporary file in the same
directory, then a rename), so a relay watching the file never reads half of it, and the file is
made readable by its owner only.

A file looks like::

    [[keys]]
    name = "alice"
    tier = "pro"
    hash = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    created = 2026-11-30 15:51:18+00:00
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import attrs
import tomli_w

from relay.core.credentials import StoredKey, hash_secret
from relay.issues import UNKNOWN_KEY, ConfigError, Issue, raise_issues

__all__ = ["SECRET_PREFIX", "KeyEntry", "add_key", "new_secret", "read_key_file", "revoke_key"]

SECRET_PREFIX: Final = "rk_"
"""Makes a relay key recognisable (to people, and to secret scanners)."""

NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
"""Key names appear in logs and in channel patterns (``{key}``): no spaces, no ``:``."""

_HASH: Final = re.compile(r"sha256:[0-9a-f]{64}")
_FIELDS: Final = ("name", "tier", "hash", "created")

HEADER: Final = (
    "# API keys of the relay, managed with `relay keys add|list|revoke`.\n"
    "# Only a hash of each secret is stored; a lost secret cannot be recovered, only replaced.\n\n"
)


@attrs.frozen
class KeyEntry:
    """One key in the file."""

    name: str
    tier: str
    hash: str = attrs.field(repr=False)
    created: datetime

    def stored(self) -> StoredKey:
        return StoredKey(self.name, self.tier, self.hash)


def new_secret() -> str:
    """256 random bits, URL-safe (it travels in headers and query strings)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str | None:
    """Why ``name`` cannot name a key, or None."""
    if NAME.fullmatch(name):
        return None
    return "a key name is 1 to 64 letters, digits and _ . @ -, starting with a letter or digit"


def read_key_file(path: str) -> list[KeyEntry]:
    """The keys in ``path``; :class:`ConfigError` naming the file and each bad entry.
    OSError (a missing file) propagates."""
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([Issue(path, f"invalid TOML: {exc}")]) from None
    issues: list[Issue] = [Issue(f"{path}: {k}", UNKNOWN_KEY) for k in data if k != "keys"]
    raw = data.get("keys", [])
    if not isinstance(raw, list):
        raise_issues([*issues, Issue(f"{path}: keys", "must be an array of tables")])
    entries: list[KeyEntry] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{path}: keys[{i}]"
        entry = _entry(item, where, issues)
        if entry is None:
            continue
        if entry.name in names:
            issues.append(Issue(f"{where}.name", f"duplicate name {entry.name!r}"))
        if entry.hash in hashes:
            issues.append(Issue(f"{where}.hash", "the same secret as another key"))
        names.add(entry.name)
        hashes.add(entry.hash)
        entries.append(entry)
    raise_issues(issues)
    return entries


def _entry(item: Any, where: str, issues: list[Issue]) -> KeyEntry | None:
    if not isinstance(item, dict):
        issues.append(Issue(where, "must be a table"))
        return None
    found = len(issues)
    issues.extend(Issue(f"{where}.{k}", UNKNOWN_KEY) for k in item if k not in _FIELDS)
    issues.extend(Issue(f"{where}.{f}", "required key missing") for f in _FIELDS if f not in item)
    name, tier, digest, created = (item.get(f) for f in _FIELDS)
    fields: dict[str, Any] = dict(item)
    if isinstance(name, str):
        problem = check_name(name)
        if problem is not None:
            issues.append(Issue(f"{where}.name", problem))
    elif name is not None:
        issues.append(Issue(f"{where}.name", "must be a string"))
    if tier is not None and (not isinstance(tier, str) or not tier):
        issues.append(Issue(f"{where}.tier", "must be a non-empty string"))
    if digest is not None and not (isinstance(digest, str) and _HASH.fullmatch(digest)):
        issues.append(Issue(f"{where}.hash", "must be sha256: and 64 lower-case hex digits"))
    if created is not None and not isinstance(created, datetime):
        issues.append(Issue(f"{where}.created", "must be a TOML date-time"))
    if len(issues) > found:
        return None
    return KeyEntry(fields["name"], fields["tier"], fields["hash"], fields["created"])


def write_key_file(path: str, entries: Sequence[KeyEntry]) -> None:
    """Replace ``path`` atomically with ``entries``, readable by its owner only."""
    document = {
        "keys": [
            {"name": e.name, "tier": e.tier, "hash": e.hash, "created": e.created} for e in entries
        ]
    }
    text = HEADER + tomli_w.dumps(document)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".relay-keys-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _existing(path: str) -> list[KeyEntry]:
    try:
        return read_key_file(path)
    except FileNotFoundError:
        return []


def add_key(path: str, name: str, tier: str, now: datetime) -> str:
    """Add a key (creating the file if need be); answers its secret, which is stored nowhere.
    ValueError for a bad or taken name."""
    problem = check_name(name)
    if problem is not None:
        raise ValueError(problem)
    if not tier:
        raise ValueError("the tier must not be empty")
    entries = _existing(path)
    if any(e.name == name for e in entries):
        raise ValueError(f"a key named {name!r} exists already; revoke it first or pick another")
    secret = new_secret()
    created = now.replace(microsecond=0)
    write_key_file(path, [*entries, KeyEntry(name, tier, hash_secret(secret), created)])
    return secret


def revoke_key(path: str, name: str) -> KeyEntry:
    """Remove the key named ``name``; KeyError when there is none."""
    entries = read_key_file(path)
    kept = [e for e in entries if e.name != name]
    if len(kept) == len(entries):
        raise KeyError(name)
    write_key_file(path, kept)
    return next(e for e in entries if e.name == name)
