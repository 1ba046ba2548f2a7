"""Every setting the course reads from the environment, parsed in one place (standard library only).

``setting(name, default)`` parses ``$name`` by the type of ``default``: an empty or unset variable means the default;
a value that does not parse, or is out of range, is a ``ValueError`` naming the variable, its value and what it
accepts. Booleans accept the usual spellings (1/true/yes/on/y, 0/false/no/off/n, any case) and reject the rest, so
``DPO_QUICK=ture`` fails instead of silently meaning "off". Numbers must be finite (``inf`` is refused).

``SETTINGS`` lists the course's own variables and what each does. The Hugging Face variables (``HF_HUB_OFFLINE``,
``HF_ENDPOINT``, ``HF_TOKEN``) keep huggingface_hub's own reading (``helpers.infra.runtime``), since the libraries
read them too and must agree with the course.
"""

from __future__ import annotations

import math
import os
from typing import TypeVar

__all__ = ["SETTINGS", "TRUE", "FALSE", "setting"]

TRUE = frozenset({"1", "true", "yes", "on", "y"})
FALSE = frozenset({"0", "false", "no", "off", "n"})

SETTINGS: dict[str, str] = {
    "DPO_QUICK": "a smoke-test size of every notebook (CI's make run-online): a boolean",
    "DPO_RUN_DIR": "where a notebook writes its artifacts (the runner sets it; default ../runs/notebooks)",
    "DPO_CACHE_DIR": "the converted SmolLM2, the toy SFT model, llama.cpp's converter (default .cache/)",
    "DPO_HUB_TIMEOUT": "seconds the hub probe waits (default 2; finite, > 0)",
    "DPO_RUN_AHEAD": "the instructor's run-ahead, a hub id or folder (notebooks 04, 05; INSTRUCTORS.md)",
    "DPO_HH_SOURCE": "notebook 02's rows: a hub id, a local .jsonl[.gz] file, or 'toy'",
    "DPO_HH_LIMIT": "rows notebook 02 reads for training (an integer >= 1)",
    "DPO_MODEL": "notebook 01's real model (hub id or folder)",
    "DPO_NB01_STEPS": "steps of notebook 01's from-scratch loop (an integer >= 1)",
    "DPO_COURSE_REPO": "the course's git URL the first cell clones on Colab (overrides the stamped one)",
    "DPO_JUDGE_URL": "an OpenAI-compatible endpoint for notebook 05's optional LLM judge",
    "DPO_JUDGE_KEY": "its API key (or the Colab secret of that name)",
    "DPO_JUDGE_MODEL": "its model name",
    "DPO_HUB_NOTE": "set by make run-online: which local hub serves the run (shown in the banner)",
    "DPO_HUB_PYTHON": "the Python of the local hub's venv (default .venv-hub/bin/python)",
    "DPO_HUB_ROWS": "the HH-RLHF rows the local hub serves (default ../shared/data/hh-rlhf)",
    "DPO_CHROMIUM": "the Chromium/Chrome executable the browser test drives (default: chromium on the PATH)",
}

T = TypeVar("T", bool, int, float, str)


def setting(name: str, default: T, *, minimum: float | None = None) -> T:
    """``$name`` parsed as the type of ``default`` (bool, int, float or str); unset or blank: ``default``.
    ``minimum``: the smallest number accepted (ints and floats). Raises ``ValueError`` naming the variable."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be an environment variable's name, got {name!r}")
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if isinstance(default, bool):
        low = raw.lower()
        if low in TRUE:
            return True
        if low in FALSE:
            return False
        raise ValueError(f"{name}={raw!r} is not a boolean: use one of {sorted(TRUE)} or {sorted(FALSE)}")
    if isinstance(default, int | float):
        kind = "an integer" if isinstance(default, int) else "a number"
        try:
            value = int(raw) if isinstance(default, int) else float(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not {kind}") from None
        if not math.isfinite(value):
            raise ValueError(f"{name}={raw!r}: {kind} must be finite")
        if minimum is not None and value < minimum:
            raise ValueError(f"{name}={raw!r}: {kind} >= {minimum:g} is needed")
        return value
    if isinstance(default, str):
        return raw
    raise ValueError(f"default must be a bool, int, float or str, got {type(default).__name__}")
