"""Backups of a SUT's state on the chaos timeline: the ``snapshot``, ``restore`` and ``wipe`` actions.

``snapshot`` copies the SUT's state (its queue) aside under a name, ``restore`` puts a named copy back in
place of whatever the SUT holds, ``wipe`` throws the state away as a dead disk does. Each target kind
that can do them says how (the reference pipeline: SQLite's online backup API; postfix: its queue
directory; docker: a path in the container; process: the user's commands); this module holds what they
share: the names, where a snapshot lives in the run directory (``<run>/snapshots/<name>/``) and the
check, before anything starts, that every ``restore`` names a snapshot an earlier step takes.

The restore itself only replaces state: a timeline restores a stopped SUT and starts it in a step of its
own (``kill + wipe at 25s; restore + start at 28s``), as an operator does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from mailstorm.errors import UserError

SNAPSHOT, RESTORE, WIPE = "snapshot", "restore", "wipe"
BACKUP_ACTIONS = frozenset({SNAPSHOT, RESTORE, WIPE})
DEFAULT_NAME = "default"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # it names a directory


def snapshot_name(kind: str, action: str, params: dict[str, Any]) -> str:
    """The snapshot ``name`` of a snapshot/restore step's params (``default`` when not given)."""
    name = params.get("name", DEFAULT_NAME)
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise UserError(
            f"{kind} target: action {action!r}: name must be 1-64 of A-Z a-z 0-9 _ . -, got {name!r}"
        )
    return name


def snapshot_dir(run_dir: Path, name: str) -> Path:
    """Where the snapshot ``name`` of a run lives (made by the snapshot, replaced by a later one)."""
    return Path(run_dir) / "snapshots" / name


def taken(run_dir: Path, kind: str, name: str) -> Path:
    """The directory of a snapshot that was taken; UserError naming it when it never was."""
    where = snapshot_dir(run_dir, name)
    if not where.is_dir():
        raise UserError(f"{kind} target: restore: no snapshot named {name!r} was taken")
    return where


def fresh_dir(run_dir: Path, name: str) -> Path:
    """An empty directory for the snapshot ``name`` (a later snapshot of the same name replaces it)."""
    where = snapshot_dir(run_dir, name)
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    return where


def check_snapshots(steps: list[tuple[float, int, str, dict[str, Any]]]) -> tuple[int, str] | None:
    """(step index, message) for the first ``restore`` whose snapshot no earlier step takes, else None.

    ``steps``: (at, index, action, params) of the timeline's target steps; at equal times file order
    decides, as the timeline runs them."""
    names: set[str] = set()
    for _at, index, action, params in sorted(steps, key=lambda s: (s[0], s[1])):
        if action not in (SNAPSHOT, RESTORE):
            continue
        try:
            name = snapshot_name("the", action, params)
        except UserError as exc:
            return index, str(exc).removeprefix("the target: ")
        if action == SNAPSHOT:
            names.add(name)
        elif name not in names:
            known = ", ".join(sorted(names)) or "none"
            return (
                index,
                f"restore of snapshot {name!r}, which no earlier step takes (taken before it: {known})",
            )
    return None
