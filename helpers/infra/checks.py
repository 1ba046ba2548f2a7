"""Validation at the boundary: numbers as users pass them (Python, numpy or torch scalars), checked once.

``number(value, name, ...)`` returns a plain ``float``/``int`` or raises ``ValueError`` naming the argument and
the allowed range; a bool is never a number here.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["number"]


def _scalar(value: Any) -> Any:
    """numpy scalars and one-element torch/numpy arrays -> the Python number they hold; anything else unchanged."""
    if isinstance(value, (bool, int, float)) or not callable(getattr(value, "item", None)):
        return value
    n = value.numel() if callable(getattr(value, "numel", None)) else getattr(value, "size", None)
    return value.item() if n == 1 else value


def number(value: Any, name: str, *, integer: bool = False, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, allowed: str | None = None) -> int | float:
    """``value`` as a finite Python ``int`` (``integer=True``) or ``float``, within [low, high] (open ends with
    ``low_open``/``high_open``). numpy scalars and one-element tensors are accepted; bools and NaN/inf are not."""
    v = _scalar(value)
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
    if ok and integer:
        ok = isinstance(v, numbers.Integral)
    if ok:
        v = int(v) if integer else float(v)
        ok = math.isfinite(v)
        if ok and low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
    if not ok:
        if allowed is None:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            allowed = f"a finite {'int' if integer else 'number'}" + (f" {lo}" if lo else "") + \
                (f"{' and' if lo else ''} {hi}" if hi else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return v
