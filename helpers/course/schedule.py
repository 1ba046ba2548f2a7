"""The workshop's schedule: each notebook's main path, its minutes by a stated arithmetic, and INSTRUCTORS.md's plans.

A notebook's **main path** is its introduction (title and set-up cells) plus the sections in ``MAIN_PATH``; the rest
are appendices and deep dives. Its minutes are arithmetic, not a measured session. The **lesson** is

    words of its text / READ_WPM  +  per code cell CELL_MINUTES + CELL_LINE_MINUTES x its lines
                                  +  QUESTION_MINUTES per "Predict, then run." pause

and each title cell states it, rounded up to 5 (``stated_minutes``; ``tests/test_notebooks.py`` keeps them equal).
In a Colab workshop every notebook also opens on a fresh runtime of its own, and that costs minutes the lesson does
not show (``colab_minutes``): connecting, the first cell's clone and install (measured in the Colab-faithful
simulation, ``scripts/colab_faithful_check.sh``), the runtime restart that install can force, the downloads (at
an assumed ``COLAB["bandwidth_mb_s"]``), notebook 02's splits rebuilt in 03-05, the GPU work (03's training and 04's
sweep by the T4 arithmetic of ``helpers.course.estimate``, 0 with the instructor's run-ahead), and 05's generation
and judging.
``RUNTIME`` says which notebooks need a T4: 01 and 02 run on a CPU runtime.

    python -m helpers.course.schedule          # the table INSTRUCTORS.md quotes, and both plans, slot by slot
"""

from __future__ import annotations

import math
import re
from typing import Any

from helpers.infra.paths import ROOT

__all__ = ["READ_WPM", "CELL_MINUTES", "CELL_LINE_MINUTES", "QUESTION_MINUTES", "MAIN_PATH", "GPU_MINUTES",
           "RUNTIME", "COLAB", "PLANS", "CUTS", "PLAN_LENGTH", "main_path", "main_path_minutes", "stated_minutes",
           "colab_minutes", "plan_minutes", "main"]

READ_WPM = 130  # words a minute, read aloud
CELL_MINUTES = 0.5  # run a cell and look at what it prints (the offline cells run in seconds)
CELL_LINE_MINUTES = 0.05  # and read its code aloud or on screen: 20 lines a minute (a 25-line cell: 1.75 min)
QUESTION_MINUTES = 2.0  # each "Predict, then run." pause: attendees write a guess, then compare
QUESTION_MARK = "Predict, then run."
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
# The runtime each notebook needs on Colab: 01 and 02 run on a CPU runtime (a forward pass of SmolLM2, a tokenizer);
# 04 and 05 score with the 0.6B reward-model judge, which needs a GPU at their sizes even with the run-ahead.
RUNTIME: dict[str, str] = {"01_dpo_math_and_loss": "CPU", "02_hh_rlhf_formatting": "CPU",
                           "03_unsloth_lora_dpo": "T4", "04_beta_sensitivity": "T4",
                           "05_before_after_generation": "T4"}

# What a fresh Colab runtime costs before and around the lesson. Each figure says where it comes from.
_SMOLLM2_MB, _JUDGE_MB, _HH_MB = 269, 1192, 14  # hub file sizes: SmolLM2-135M-Instruct's and Skywork-Reward-V2-
#                                               Qwen3-0.6B's model.safetensors (bf16), HH's helpful-base .jsonl.gz
COLAB: dict[str, Any] = {
    "connect": (1.0, "open the notebook, set the runtime type, wait for it to connect (assumed, not measured)"),
    "restart": (1.0, "the restart the install forces when Colab imported a module it replaces, and running the cell "
                     "again (the simulation's case B); counted every time, since whether Colab has imported one is "
                     "not known"),
    "bandwidth_mb_s": (25.0, "download rate from the hub to a runtime, assumed (a shared workshop network may be "
                             "slower): the downloads below are arithmetic at this rate"),
    "downloads_mb": {"01_dpo_math_and_loss": _SMOLLM2_MB, "02_hh_rlhf_formatting": _HH_MB + 3,
                     "03_unsloth_lora_dpo": _SMOLLM2_MB + _HH_MB,
                     "04_beta_sensitivity": _SMOLLM2_MB + _JUDGE_MB + _HH_MB,
                     "05_before_after_generation": _SMOLLM2_MB + _JUDGE_MB + _HH_MB},
    "splits": (1.0, "notebook 02's splits rebuilt on the runtime (03-05): 10.2 s per 1,000 rows measured on 2 cores "
                    "(benchmarks/results/split_rebuild.json), and Colab reads up to 5,500 rows"),
    "drive": (1.0, "mounting Google Drive (PERSIST = True: 03 saves the adapter there, 05 finds it): one consent "
                   "dialog (assumed)"),
}
# The first cell's install, measured: scripts/colab_faithful_check.sh, case A (Python 3.13 with Colab's packages,
# the course's clone and pip install from PyPI on this project's 2-core machine; Colab's network and disks differ).
INSTALL_MEASURED = (0.5, "30 s measured (clone + pip install, case A of scripts/colab_faithful_check.sh, 2026-12-07)")
# 05 online: 200 prompts x 2 sides x 128 new tokens (helpers.compare.expected_generation's T4 arithmetic: 2 x 7
# batches x 128 steps x 0.03 s = 54 s), then the judge on 400 answers and its trust check on 200 labelled pairs (800
# sequences of ~300 tokens: 2 x 0.6e9 x 240k FLOPs at 5 TFLOP/s in fp32, helpers.judge.expected_seconds' T4 figure,
# 58 s); 04 online: its trust check on 100 pairs and the judge on the KL samples (64 prompts x 2 samples), ~40 s.
# Arithmetic, not measured on a T4.
SCORING_MINUTES: dict[str, float] = {"04_beta_sensitivity": 0.7, "05_before_after_generation": 1.9}

# Each plan slot: (what, notebook name or fixed minutes, sections or None for the whole main path, options):
# "train": attendees do the GPU work in the session; "drive": the slot mounts Drive; "fresh": attendees open it on a
# new runtime (connect, install, restart, downloads, splits, scoring); "projected": the instructor shows an executed
# copy from the run-ahead (no runtime, nothing runs).
WELCOME, BREAK, QUESTIONS = "welcome; open 01 on Colab (a CPU runtime: 01 needs no GPU)", "break", "questions"
PLANS: dict[str, list[tuple[str, str | float, tuple[str, ...] | None, dict[str, bool]]]] = {
    "3 hours": [
        (WELCOME, 10, None, {}),
        ("01 the math", "01_dpo_math_and_loss", None, {"fresh": True}),
        ("03 training (attendees train; PERSIST = True)", "03_unsloth_lora_dpo", None,
         {"fresh": True, "train": True, "drive": True}),
        (BREAK, 10, None, {}),
        ("04 beta (RUN_AHEAD: the instructor's sweep)", "04_beta_sensitivity", None, {"fresh": True}),
        ("05 before/after (the attendee's adapter from Drive)", "05_before_after_generation", None,
         {"fresh": True, "drive": True}),
        (QUESTIONS, 10, None, {}),
    ],
    "90 minutes": [
        (WELCOME, 5, None, {}),
        ("01 the math, §1-§3", "01_dpo_math_and_loss", ("1", "2", "3"), {"fresh": True}),
        ("03 training (attendees train)", "03_unsloth_lora_dpo", None, {"fresh": True, "train": True}),
        ("05 §3 projected: the instructor's run-ahead, scored", "05_before_after_generation", ("3",),
         {"projected": True}),
    ],
}
# What a plan leaves out to fit its time (INSTRUCTORS.md lists it under the plan), and the slack it keeps.
CUTS: dict[str, list[str]] = {
    "3 hours": ["02 (the data): pre-work or homework on a CPU runtime",
                "the second break", "every appendix and deep dive"],
    "90 minutes": ["01 §4-§6 (masked log-probs on real tokens, the from-scratch loop, DPO vs RLHF)",
                   "02 (the data) and 04 (beta): homework", "05 §1-§2 and §4: the instructor projects §3 from "
                   "the run-ahead instead of attendees running 05", "every appendix"],
}
PLAN_LENGTH = {"3 hours": 180, "90 minutes": 90}


def _cells(name: str) -> list:
    import nbformat

    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells


def main_path(name: str, sections: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """``[(cell type, text)]`` of ``name``'s main path (or of ``sections``): the introduction before the first
    ``## `` heading, then every section whose heading is ``## <number>.`` with a number in the list. A markdown cell
    holding a heading after some text is split there (01's §3 starts inside a §2 cell)."""
    if name not in MAIN_PATH:
        raise ValueError(f"name must be one of {sorted(MAIN_PATH)}, got {name!r}")
    keep, current, out = set(sections or MAIN_PATH[name]), "intro", []
    for c in _cells(name):
        parts = re.split(r"(?m)^(?=#{1,2} )", c.source) if c.cell_type == "markdown" else [c.source]
        for part in parts:
            if c.cell_type == "markdown" and part.startswith("#"):
                m = re.match(r"##\s+([0-9]+[a-z]?)\.", part)
                current = m.group(1) if m else ("intro" if part.startswith("# 0") else "other")
            if part.strip() and (current == "intro" or current in keep):
                out.append((c.cell_type, part))
    return out


def main_path_minutes(name: str, sections: tuple[str, ...] | None = None, *, gpu: bool = True) -> dict[str, Any]:
    """``{"words", "code_cells", "code_lines", "questions", "reading", "cells", "pauses", "lesson", "gpu",
    "minutes"}`` of ``name``'s main path (or ``sections``): the lesson's arithmetic of the module docstring, plus the
    T4 minutes of its GPU work unless ``gpu=False`` (run ahead). Colab's own costs are ``colab_minutes``."""
    cells = main_path(name, sections)
    md = [text for kind, text in cells if kind == "markdown"]
    code = [text for kind, text in cells if kind == "code"]
    words = sum(len(s.split()) for s in md)
    lines = sum(sum(1 for x in s.splitlines() if x.strip()) for s in code)
    questions = sum(s.count(QUESTION_MARK) for s in md)
    reading, running = words / READ_WPM, len(code) * CELL_MINUTES + lines * CELL_LINE_MINUTES
    pauses = questions * QUESTION_MINUTES
    g = GPU_MINUTES.get(name, 0.0) if gpu else 0.0
    lesson = reading + running + pauses
    return {"words": words, "code_cells": len(code), "code_lines": lines, "questions": questions,
            "reading": reading, "cells": running, "pauses": pauses, "lesson": lesson, "gpu": g,
            "minutes": lesson + g}


def stated_minutes(name: str) -> int:
    """What the title cell states: the main path's lesson (no GPU work, no Colab set-up), rounded up to 5."""
    return 5 * math.ceil(main_path_minutes(name, gpu=False)["lesson"] / 5)


def colab_minutes(name: str, *, fresh: bool = True, drive: bool = False, projected: bool = False) -> dict[str, float]:
    """Colab's own minutes for ``name`` in a workshop: ``{"connect", "install", "restart", "downloads", "splits",
    "drive", "scoring", "total"}``. ``fresh``: the notebook opens on a new runtime (every notebook does on Colab,
    unless the slot continues on one already open); ``drive``: the slot mounts Google Drive; ``projected``: the
    instructor shows an executed copy (nothing runs: 0)."""
    if name not in MAIN_PATH:
        raise ValueError(f"name must be one of {sorted(MAIN_PATH)}, got {name!r}")
    out = {"connect": COLAB["connect"][0] if fresh else 0.0,
           "install": INSTALL_MEASURED[0] if fresh else 0.0,
           "restart": COLAB["restart"][0] if fresh else 0.0,
           "downloads": COLAB["downloads_mb"][name] / COLAB["bandwidth_mb_s"][0] / 60 if fresh else 0.0,
           "splits": COLAB["splits"][0] if fresh and name[:2] in ("03", "04", "05") else 0.0,
           "drive": COLAB["drive"][0] if drive else 0.0,
           "scoring": SCORING_MINUTES.get(name, 0.0)}
    if projected:
        out = dict.fromkeys(out, 0.0)
    out["total"] = sum(out.values())
    return out


def _slot(slot: str | float, sections: tuple[str, ...] | None, opts: dict[str, bool]) -> dict[str, float]:
    if isinstance(slot, (int, float)):
        return {"lesson": float(slot), "gpu": 0.0, "colab": 0.0, "minutes": float(slot)}
    m = main_path_minutes(slot, sections, gpu=opts.get("train", False))
    c = colab_minutes(slot, fresh=opts.get("fresh", False), drive=opts.get("drive", False),
                      projected=opts.get("projected", False))["total"]
    return {"lesson": m["lesson"], "gpu": m["gpu"], "colab": c, "minutes": m["minutes"] + c}


def plan_minutes(plan: str) -> list[tuple[str, float]]:
    """``[(what, minutes)]`` of one of ``PLANS``: each notebook slot its lesson, its GPU work when attendees do it,
    and Colab's own minutes (``colab_minutes``)."""
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {sorted(PLANS)}, got {plan!r}")
    return [(what, _slot(slot, sections, opts)["minutes"]) for what, slot, sections, opts in PLANS[plan]]


def main() -> int:
    print(f"main paths (arithmetic: {READ_WPM} words a minute read aloud + {CELL_MINUTES:g} min per code cell and "
          f"{CELL_LINE_MINUTES:g} per line + {QUESTION_MINUTES:g} min per '{QUESTION_MARK}'; GPU: T4 arithmetic, "
          "not measured)")
    print(f"{'notebook':<28}{'words':>7}{'cells':>7}{'lines':>7}{'asks':>6}{'reading':>9}{'running':>9}"
          f"{'pauses':>8}{'title':>7}{'GPU':>6}{'Colab':>7}{'runtime':>9}")
    for name in MAIN_PATH:
        m, c = main_path_minutes(name), colab_minutes(name)["total"]
        print(f"{name:<28}{m['words']:>7}{m['code_cells']:>7}{m['code_lines']:>7}{m['questions']:>6}"
              f"{m['reading']:>9.1f}{m['cells']:>9.1f}{m['pauses']:>8.1f}{stated_minutes(name):>7}{m['gpu']:>6.1f}"
              f"{c:>7.1f}{RUNTIME[name]:>9}")
    print(f"\nColab's own minutes per fresh runtime: install {INSTALL_MEASURED[1]}; downloads at "
          f"{COLAB['bandwidth_mb_s'][0]:g} MB/s (assumed)")
    for name in MAIN_PATH:
        c = colab_minutes(name)
        print(f"  {name:<28}" + "  ".join(f"{k} {v:.1f}" for k, v in c.items() if v))
    for plan in PLANS:
        rows = [(what, _slot(slot, sections, opts)) for what, slot, sections, opts in PLANS[plan]]
        total = sum(r["minutes"] for _, r in rows)
        print(f"\n{plan}: {total:.0f} min of {PLAN_LENGTH[plan]} ({PLAN_LENGTH[plan] - total:.0f} min of slack)")
        t = 0.0
        for what, r in rows:
            parts = f"(lesson {r['lesson']:.1f}, GPU {r['gpu']:.1f}, Colab {r['colab']:.1f})" if r["colab"] or \
                r["gpu"] else ""
            print(f"  {int(t) // 60}:{int(t) % 60:02d}  {r['minutes']:5.1f} min  {what} {parts}")
            t += r["minutes"]
        print("  cut: " + "; ".join(CUTS[plan]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
