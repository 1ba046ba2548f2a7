"""Files the course writes and reads: written atomically, read with an error that names the file.

``write_text`` / ``write_json`` write to a temporary file in the same folder, then rename it over the target
(``os.replace``, atomic on one filesystem): a reader sees the old file or the new one, never half of one, and an
interrupt leaves no partial file under the real name. ``read_json`` raises a ``ValueError`` naming the file and
what is wrong with it (missing, unreadable, not JSON) instead of a bare ``JSONDecodeError``. Standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_text", "write_bytes", "write_json", "read_json", "CorruptFileError"]


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
