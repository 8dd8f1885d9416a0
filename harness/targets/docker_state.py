"""Backups of a docker SUT's state (the ``snapshot``, ``restore`` and ``wipe`` actions of the docker target):
``state_path``, a file or directory inside the container, copied out and back in through the docker API.

- ``snapshot``: ``get_archive`` of the path (``docker cp`` out: owners and modes kept in the tar) into
  ``<run>/snapshots/<name>/state.tar``. A running container is paused for the copy, so the copy is what
  a power cut would have left on disk at that instant: a crash-consistent copy, which a database that
  survives a crash (SQLite, Postfix's queue) survives too.
- ``wipe``: the path's contents deleted (a directory is kept empty, a file removed), as a dead disk.
- ``restore``: a wipe, then ``put_archive`` of the snapshot's tar in the path's parent.

The docker API copies in and out but cannot delete, and an image need not hold a shell or ``rm``, so
deleting is done from this host (the docker target runs its containers on this host's dockerd, as
root): a path on a mount (a bind mount or a local volume, the way a container's state is kept in
production) at the mount's source, running or stopped; a path in the container's own writable layer
through ``/proc/<its pid>/root``, so only while it runs. A stopped container with its state in its
writable layer cannot be wiped (its files there are the image's layers plus a diff): the action says
so and names the fix.
"""

from __future__ import annotations

import posixpath
import shutil
import tarfile
from pathlib import Path

from mailstorm.errors import HarnessError
from mailstorm.harness.snapshots import fresh_dir, taken

ARCHIVE = "state.tar"


def snapshot(container, state_path: str, run_dir: Path, name: str) -> str:
    """Copy ``state_path`` out of ``container`` into the snapshot ``name``; the action's detail."""
    where = fresh_dir(run_dir, name) / ARCHIVE
    paused = _status(container) == "running"
    if paused:
        container.pause()
    try:
        stream, _stat = _docker(lambda: container.get_archive(state_path), f"copy {state_path} out")
        with where.open("wb") as fh:
            for chunk in stream:
                fh.write(chunk)
    finally:
        if paused:
            container.unpause()
    with tarfile.open(where) as tar:
        files = sum(1 for m in tar.getmembers() if m.isfile())
    how = " (paused for the copy)" if paused else ""
    return f"snapshot {name!r} of {state_path}: {files} file(s), {where.stat().st_size} bytes{how}"


def wipe(container, state_path: str) -> str:
    """Delete what ``state_path`` holds; the action's detail."""
    host = host_path(container, state_path)
    where = f"on its mount {host}"
    if host is None:
        pid = container.attrs.get("State", {}).get("Pid") if _status(container) == "running" else 0
        if not pid:
            raise HarnessError(
                f"docker target: wipe of {state_path}: the container is stopped and the path is in its own "
                "writable layer, which only a running container can be wiped in; keep the state on a volume"
            )
        host, where = Path(f"/proc/{pid}/root") / state_path.lstrip("/"), "inside the running container"
    removed = _wipe_on_host(host)
    return f"wiped {state_path} ({removed} entr{'y' if removed == 1 else 'ies'}, {where})"


def restore(container, state_path: str, run_dir: Path, name: str) -> str:
    """Put the snapshot ``name`` back in place of what ``state_path`` holds; the action's detail."""
    archive = taken(run_dir, "docker", name) / ARCHIVE
    if not archive.is_file():
        raise HarnessError(f"docker target: snapshot {name!r} has no copy of {state_path}")
    wipe(container, state_path)
    parent = posixpath.dirname(state_path.rstrip("/")) or "/"
    ok = _docker(lambda: container.put_archive(parent, archive.read_bytes()), f"copy into {parent}")
    if not ok:
        raise HarnessError(f"docker target: restore of snapshot {name!r}: docker refused the copy")
    return f"restored snapshot {name!r} to {state_path}"


def host_path(container, state_path: str) -> Path | None:
    """Where ``state_path`` is on this host, when it is on a bind mount or a local volume; else None."""
    container.reload()
    best = None
    for mount in container.attrs.get("Mounts") or []:
        dest = (mount.get("Destination") or "").rstrip("/") or "/"
        inside = state_path == dest or state_path.startswith(dest.rstrip("/") + "/")
        if inside and mount.get("Source") and (best is None or len(dest) > len(best[0])):
            best = (dest, mount["Source"])
    if best is None:
        return None
    dest, source = best
    rest = state_path[len(dest) :].lstrip("/")
    return Path(source) / rest if rest else Path(source)


def _wipe_on_host(path: Path) -> int:
    """Delete ``path``'s contents (a directory stays, empty) or the file itself; entries removed."""
    if path.is_dir() and not path.is_symlink():
        entries = list(path.iterdir())
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return len(entries)
    if path.exists() or path.is_symlink():
        path.unlink()
        return 1
    return 0


def _status(container) -> str:
    container.reload()
    return container.status


def _docker(call, what: str):
    """``call()``, with docker's errors as one line naming what was done."""
    try:
        return call()
    except Exception as exc:  # docker.errors.NotFound / APIError: the path, the container
        why = getattr(exc, "explanation", None) or str(exc)
        raise HarnessError(f"docker target: {what}: {why}") from None
