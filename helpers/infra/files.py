"""Files the course writes and reads: written atomically, read with an error that names the file.

``write_text`` / ``write_json`` write to a temporary file in the same folder, then rename it over the target
(``os.replace``, atomic on one filesystem): a reader sees the old file or the new one, never half of one, and an
interrupt leaves no partial file under the real name. ``read_json`` raises a ``ValueError`` naming the file and
what is wrong with it (missing, unreadable, not JSON) instead of a bare ``JSONDecodeError``. ``building_dir`` does
the same for a folder (splits, converted models, exports, packs): it is built under a temporary name beside the target
and swapped in only when complete, so a reader sees the old folder or the new one, and two writers racing leave one
complete folder and no temporary copies. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["write_text", "write_bytes", "write_json", "read_json", "CorruptFileError", "building_dir", "MARKER"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MASK = _umask()
_MODE_FILE, _MODE_DIR = 0o666 & ~_MASK, 0o777 & ~_MASK  # what open() / mkdir() would give (mkstemp: 0600)


class CorruptFileError(ValueError):
    """A file the course made (or reads) is missing, unreadable or not what it should be; the message names it."""


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, then a rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _MODE_FILE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    return write_bytes(path, text.encode(encoding))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, **dumps_kw: Any) -> Path:
    """Write ``obj`` as JSON (plus a final newline) to ``path`` atomically; returns the path."""
    return write_text(path, json.dumps(obj, indent=indent, **dumps_kw) + "\n")


def read_json(path: str | os.PathLike, *, what: str = "file") -> Any:
    """The JSON in ``path``. ``what`` says what the file is in the error (e.g. "sweep cache entry"): a missing,
    unreadable or invalid file is a ``CorruptFileError`` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorruptFileError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{what} {path} cannot be read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{what} {path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}; "
                               f"{len(text)} characters): a write that was cut off?") from None


MARKER = ".dpo-course.json"  # written by building_dir into every folder it builds: what made it


@contextlib.contextmanager
def building_dir(out: str | os.PathLike, *, kind: str, also_ours: tuple[str, ...] = ()) -> Iterator[Path]:
    """Build the folder ``out`` atomically: ``with building_dir(out, kind="splits") as tmp:`` fill ``tmp`` (an empty
    folder beside ``out``); when the block ends without an exception, ``tmp`` takes the name ``out`` and the folder
    that had it is removed after the swap. An exception or an interrupt removes ``tmp`` and leaves ``out`` as it was.
    Two processes building the same ``out`` at once: each swap is whole, the last one stays, no temporary folder is
    left behind.

    Nothing the course did not make is deleted: an existing ``out`` is replaced only if it is empty, or holds this
    module's ``MARKER`` naming the same ``kind``, or one of the files ``also_ours`` names (what earlier versions of the
    course left in such a folder); otherwise ``ValueError`` naming it, before the block runs and again before the
    swap, and nothing is written or deleted."""
    out = Path(out)
    _check_ours(out, kind, also_ours)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, _MODE_DIR)
    try:
        yield tmp
        write_json(tmp / MARKER, {"kind": kind})
        _check_ours(out, kind, also_ours)  # again: something may have appeared there meanwhile
        _swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_ours(out: Path, kind: str, also_ours: tuple[str, ...]) -> None:
    """``ValueError`` unless ``out`` is absent, empty or the course's ``kind`` folder. Another writer may be swapping
    ``out`` meanwhile (it vanishes, or becomes another folder): then it is looked at again."""
    for _ in range(50):
        try:
            before = os.stat(out)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(before.st_mode):
            raise ValueError(f"out_dir {out} is a file, not a folder: give a folder for the {kind}")
        try:
            if not any(out.iterdir()) or any((out / name).exists() for name in also_ours):
                return
            if json.loads((out / MARKER).read_text(encoding="utf-8")).get("kind") == kind:
                return
        except (OSError, ValueError, AttributeError):
            pass
        try:
            if os.stat(out).st_ino != before.st_ino:
                continue  # replaced while we looked: look at the new one
        except FileNotFoundError:
            continue
        raise ValueError(f"out_dir {out} already holds files that are not an earlier {kind} of this course (no "
                         f"{MARKER} saying so): nothing was written or deleted. Choose another folder, or empty this "
                         "one yourself")


def _swap_in(tmp: Path, out: Path, tries: int = 20) -> None:
    """Rename ``tmp`` to ``out``, moving an existing ``out`` aside first (a folder cannot be renamed over a non-empty
    one) and removing it after. Another writer's swap between those two renames makes ours fail with ENOTEMPTY or
    EEXIST: try again."""
    for _ in range(tries):
        aside = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        try:
            os.rename(out, aside)
        except FileNotFoundError:
            aside = None
        try:
            os.rename(tmp, out)
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"could not put {out} in place: other writers kept replacing it ({tries} tries)")
