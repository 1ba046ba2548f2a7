"""The workshop's schedule: each notebook's main path, its minutes by a stated arithmetic, and INSTRUCTORS.md's plans.

A notebook's **main path** is its introduction (title and set-up cells) plus the sections in ``MAIN_PATH``; the rest
are appendices and deep dives. Its minutes are arithmetic, not a measured session:

    minutes = words of its text / READ_WPM  +  CELL_MINUTES per code cell  +  the GPU minutes of its long work

``READ_WPM`` is the pace of a talk read aloud; ``CELL_MINUTES`` is running a cell and reading what it prints (the
offline cells run in seconds; the GPU work is counted apart, from ``GPU_MINUTES``: the course's T4 arithmetic of
``helpers.course.estimate``, labelled so, since nobody has timed these notebooks on a T4). Each title cell states its
main path's minutes rounded up to 5 (``stated_minutes``; ``tests/test_notebooks.py`` keeps them equal).

    python -m helpers.course.schedule          # the table INSTRUCTORS.md quotes, and both plans' totals
"""

from __future__ import annotations

import math
import re
from typing import Any

from helpers.infra.paths import ROOT

__all__ = ["READ_WPM", "CELL_MINUTES", "MAIN_PATH", "GPU_MINUTES", "PLANS", "main_path", "main_path_minutes",
           "stated_minutes", "plan_minutes", "main"]

READ_WPM = 130  # words a minute, read aloud
CELL_MINUTES = 1.0  # run a cell, read its output
MAIN_PATH: dict[str, tuple[str, ...]] = {
    "01_dpo_math_and_loss": ("1", "2", "3", "4", "5", "6"),
    "02_hh_rlhf_formatting": ("1", "2", "3", "4", "5", "6", "7", "9"),
    "03_unsloth_lora_dpo": ("1", "2", "3", "4", "5", "6", "7", "7b", "8"),
    "04_beta_sensitivity": ("1", "2", "2a", "3", "3b", "4"),
    "05_before_after_generation": ("1", "2", "3", "4"),
}
# GPU minutes on a free Colab T4 when the notebook trains in the session (T4 arithmetic, not measured; printed by the
# notebooks before they train): 03's 250 steps of 16 pairs; 04's 3 betas + the over-optimised run + ipo, 100 steps
# each. With RUN_AHEAD set, 04 reads the instructor's sweep and 05 the instructor's adapter: 0 here.
GPU_MINUTES: dict[str, float] = {"03_unsloth_lora_dpo": 7.5, "04_beta_sensitivity": 15.1}

# Each plan: (what, notebook name or fixed minutes, sections or None for the whole main path, in-session GPU work?)
WELCOME, BREAK, QUESTIONS = "welcome; open the notebooks on Colab; T4 runtime", "break", "questions"
PLANS: dict[str, list[tuple[str, str | float, tuple[str, ...] | None, bool]]] = {
    "3 hours": [
        (WELCOME, 10, None, False),
        ("01 the math", "01_dpo_math_and_loss", None, False),
        (BREAK, 10, None, False),
        ("02 the data", "02_hh_rlhf_formatting", None, False),
        ("03 training (attendees train; PERSIST = True)", "03_unsloth_lora_dpo", None, True),
        (BREAK, 10, None, False),
        ("04 beta (RUN_AHEAD: the instructor's sweep)", "04_beta_sensitivity", None, False),
        ("05 before/after (the attendee's adapter from Drive)", "05_before_after_generation", None, False),
        (QUESTIONS, 10, None, False),
    ],
    "90 minutes": [
        (WELCOME, 10, None, False),
        ("01 the math, §1-§3", "01_dpo_math_and_loss", ("1", "2", "3"), False),
        ("03 training (attendees train)", "03_unsloth_lora_dpo", None, True),
        ("04 beta (RUN_AHEAD), §1-§3b", "04_beta_sensitivity", ("1", "2", "3", "3b"), False),
        ("05 before/after (RUN_AHEAD: the instructor's adapter)", "05_before_after_generation", None, False),
    ],
}


def _cells(name: str) -> list:
    import nbformat

    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells


def main_path(name: str, sections: tuple[str, ...] | None = None) -> list:
    """The cells of ``name``'s main path (or of ``sections``): the introduction before the first ``## `` heading,
    then every section whose heading is ``## <number>.`` with a number in the list."""
    if name not in MAIN_PATH:
        raise ValueError(f"name must be one of {sorted(MAIN_PATH)}, got {name!r}")
    keep, current, out = set(sections or MAIN_PATH[name]), "intro", []
    for c in _cells(name):
        if c.cell_type == "markdown" and c.source.startswith("#"):
            m = re.match(r"##\s+([0-9]+[a-z]?)\.", c.source)
            current = m.group(1) if m else ("intro" if c.source.startswith("# 0") else "other")
        if current == "intro" or current in keep:
            out.append(c)
    return out


def main_path_minutes(name: str, sections: tuple[str, ...] | None = None, *, gpu: bool = True) -> dict[str, Any]:
    """``{"words", "code_cells", "reading", "cells", "gpu", "minutes"}`` of ``name``'s main path (or ``sections``):
    the arithmetic of the module docstring; ``gpu=False`` leaves the GPU work out (run ahead)."""
    cells = main_path(name, sections)
    words = sum(len(c.source.split()) for c in cells if c.cell_type == "markdown")
    code = sum(1 for c in cells if c.cell_type == "code")
    reading, running = words / READ_WPM, code * CELL_MINUTES
    g = GPU_MINUTES.get(name, 0.0) if gpu else 0.0
    return {"words": words, "code_cells": code, "reading": reading, "cells": running, "gpu": g,
            "minutes": reading + running + g}


def stated_minutes(name: str) -> int:
    """What the title cell states: the main path without the GPU work (the notebook prints that before it
    trains), rounded up to 5 minutes."""
    return 5 * math.ceil(main_path_minutes(name, gpu=False)["minutes"] / 5)


def plan_minutes(plan: str) -> list[tuple[str, float]]:
    """``[(what, minutes)]`` of one of ``PLANS``, each notebook slot by ``main_path_minutes``."""
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {sorted(PLANS)}, got {plan!r}")
    return [(what, float(slot) if isinstance(slot, (int, float)) else
             main_path_minutes(slot, sections, gpu=gpu)["minutes"]) for what, slot, sections, gpu in PLANS[plan]]


def main() -> int:
    print(f"main paths (arithmetic: {READ_WPM} words a minute read aloud + {CELL_MINUTES:g} min per code cell; "
          "GPU: T4 arithmetic, not measured)")
    print(f"{'notebook':<28}{'words':>7}{'cells':>7}{'reading':>9}{'running':>9}{'GPU':>6}{'title says':>12}")
    for name in MAIN_PATH:
        m = main_path_minutes(name)
        print(f"{name:<28}{m['words']:>7}{m['code_cells']:>7}{m['reading']:>9.1f}{m['cells']:>9.1f}{m['gpu']:>6.1f}"
              f"{stated_minutes(name):>12}")
    for plan in PLANS:
        rows = plan_minutes(plan)
        print(f"\n{plan}: {sum(m for _, m in rows):.0f} min")
        t = 0.0
        for what, m in rows:
            print(f"  {int(t) // 60}:{int(t) % 60:02d}  {m:5.1f} min  {what}")
            t += m
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
