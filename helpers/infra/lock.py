"""One writer per output directory: a lock file beside it, naming the process that holds it.

``acquire(output_dir)`` creates ``<parent>/.<name>.lock`` atomically (``O_CREAT | O_EXCL``) holding the holder's
pid, its process start time and host. The lock sits beside the directory, not in it, because a run with other
settings moves the directory aside. A second process asking for the same directory gets ``OutputDirLocked`` naming
the holder; a lock whose process is gone (killed, crashed; or a pid reused by another process, told apart by its
start time) is taken over with a note. The holding process may acquire again (a notebook cell rerun); the lock is
released by ``release`` or when the process exits.

Races (issue 35): deciding and taking happen under a kernel lock (``flock`` on ``<lock>.guard``, released by the
kernel when its process dies), so two runs starting together, or two takeovers of one stale lock, leave exactly one
holder; and the lock file is written complete before it gets its name (a temporary file, then ``os.link``), so no
reader ever sees it empty.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputDirLocked", "acquire", "release", "lock_path"]

_HELD: set[Path] = set()


class OutputDirLocked(RuntimeError):
    """Another live process is writing into this output directory."""


def lock_path(output_dir: str | os.PathLike) -> Path:
    out = Path(output_dir).resolve()
    return out.parent / f".{out.name}.lock"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process (a shared disk): cannot check it, so assume it is running
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = _start_time(pid)
    return started is None or holder.get("start_time") in (None, started)


def _me() -> dict:
    return {"pid": os.getpid(), "start_time": _start_time(os.getpid()), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


@contextmanager
def _guard(path: Path) -> Iterator[None]:
    """Hold the kernel lock beside ``path`` while deciding and taking (or releasing) it."""
    fd = os.open(path.with_name(path.name + ".guard"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # the flock goes with the descriptor


def _create(path: Path, me: dict) -> None:
    """Create ``path`` holding ``me``, complete before it is visible; ``FileExistsError`` if it exists."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(me))
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def acquire(output_dir: str | os.PathLike) -> Path:
    """Take the lock of ``output_dir`` for this process (re-entrant); returns the lock file's path.

    Raises ``OutputDirLocked`` when a live process holds it; takes over a stale lock with a printed note."""
    path = lock_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _guard(path):
        return _acquire(path, output_dir)


def _acquire(path: Path, output_dir) -> Path:
    me = _me()
    for _ in range(3):
        try:
            _create(path, me)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if holder.get("pid") == me["pid"] and holder.get("start_time") == me["start_time"] \
                    and holder.get("host") == me["host"]:
                _HELD.add(path)
                return path
            if _alive(holder):
                raise OutputDirLocked(
                    f"{Path(output_dir)} is in use by another run: pid {holder.get('pid')} on "
                    f"{holder.get('host')}, started {holder.get('since')} (lock {path}). Wait for it, stop it, or "
                    f"use another output directory.") from None
            print(f"NOTE: taking over the stale lock of {Path(output_dir)} (pid {holder.get('pid')}, started "
                  f"{holder.get('since')}, is no longer running)")
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        _HELD.add(path)
        return path
    raise OutputDirLocked(f"could not take the lock {path}: another process keeps taking it")


def _unlink_if_mine(path: Path) -> None:
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def release(output_dir: str | os.PathLike) -> None:
    """Give the lock back (only if this process holds it)."""
    path = lock_path(output_dir)
    if path in _HELD:
        _HELD.discard(path)
        with _guard(path):
            _unlink_if_mine(path)


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        try:
            with _guard(path):
                _unlink_if_mine(path)
        except OSError:  # the folder is gone: nothing to release
            pass
    _HELD.clear()
