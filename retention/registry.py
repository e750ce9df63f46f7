"""The model registry: which immutable model version is the `champion` (what the service serves) and which the
`challenger` (scored beside it, never shown), with the history of every promotion and rollback.

MLflow's alias idea on a plain folder: the versions under the models folder stay as `retention train` wrote
them (checksummed, never edited); `registry.json` beside them maps each alias to a version id and keeps an
append-only history of who moved which alias, when, from what, to what and why. `retention train` writes a
candidate that no restart serves until `retention models promote` points the champion at it; `retention
models rollback` points it back at the version it replaced.

Writes take an exclusive lock on `registry.lock` (fcntl.flock: one machine's processes, which is where a
models folder lives) and replace the file atomically, so a reader (a reloading service) sees the old or the
new registry, never half of one. Why not MLflow itself: its registry needs a tracking server and database
beside the service, for two aliases and a history that fit in one small file.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from retention.files import write_atomic

REGISTRY_FILE = "registry.json"
LOCK_FILE = "registry.lock"
ALIASES = ("champion", "challenger")


class RegistryError(ValueError):
    """An alias that is not set, a version that does not exist, a rollback with nothing to roll back to."""


@dataclass(frozen=True)
class Registry:
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> version id
    history: tuple[dict, ...] = ()  # oldest first

    def version_of(self, alias: str) -> str | None:
        return self.aliases.get(alias)

    def previous(self, alias: str) -> str | None:
        """The version `alias` pointed at before its current one (what a rollback returns to)."""
        current = self.aliases.get(alias)
        moves = [h for h in self.history if h["alias"] == alias and h.get("previous") != current]
        return moves[-1].get("previous") if moves else None

    def as_dict(self) -> dict:
        return {"aliases": dict(self.aliases), "history": list(self.history)}


def read_registry(models_root: str | Path) -> Registry:
    """The registry of `models_root` (empty if it has none yet); RegistryError if the file is unreadable."""
    path = Path(models_root) / REGISTRY_FILE
    if not path.is_file():
        return Registry()
    try:
        raw = json.loads(path.read_text())
        aliases = {str(a): str(v) for a, v in raw.get("aliases", {}).items() if v}
        history = tuple(dict(h) for h in raw.get("history", []))
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise RegistryError(f"{path}: not a readable model registry ({exc}); restore it from the history of "
                            "your deployment, or remove it and promote a version again") from exc
    return Registry(aliases, history)


@contextmanager
def _locked(models_root: Path):
    models_root.mkdir(parents=True, exist_ok=True)
    with open(models_root / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def move_alias(models_root: str | Path, alias: str, version: str | None, *, action: str, reason: str,
               by: str | None = None, forced: bool = False, checks: dict | None = None,
               now: datetime | None = None) -> Registry:
    """Point `alias` at `version` (None: unset it), appending the move to the history; returns the registry.
    `version` must be a version folder under `models_root` (the caller verified it)."""
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r}; the aliases are {', '.join(ALIASES)}")
    root = Path(models_root)
    if version is not None and not (root / version).is_dir():
        raise RegistryError(f"{root}: no model version {version!r}")
    with _locked(root):
        current = read_registry(root)
        previous = current.aliases.get(alias)
        aliases = {**current.aliases}
        if version is None:
            aliases.pop(alias, None)
        else:
            aliases[alias] = version
        entry = {"at": (now or datetime.now(UTC)).isoformat(), "action": action, "alias": alias,
                 "version": version, "previous": previous, "by": by or _who(), "reason": reason,
                 "forced": forced, "checks": checks or {}}
        updated = Registry(aliases, (*current.history, entry))
        write_atomic(root / REGISTRY_FILE, json.dumps(updated.as_dict(), indent=2) + "\n")
    return updated


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
