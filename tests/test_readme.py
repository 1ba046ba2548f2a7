"""README.md is a front page (issue 33): short, a figure from a run, the five DPO files with true line counts, the
notebooks' main-path minutes as the schedule computes them, links that resolve, nothing claimed to reproduce exactly."""

from __future__ import annotations

import re
from pathlib import Path

from helpers.course.schedule import main_path_minutes

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_front_page_is_short_and_links_resolve():
    assert len(README.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#]+)\)", README)
    local = [x for x in links if not x.startswith("http")]
    assert "INSTRUCTORS.md" in local and any(x.startswith("docs/") for x in local)
    for x in local:
        assert (ROOT / x).exists(), f"README links {x}, which is not in the repository"
    assert "docs/figures/04_beta_sweep.png" in local  # the figure, saved by `make figure` from a run
    assert "reproduce exactly" not in README.lower()


def test_the_five_dpo_files_and_their_line_counts_are_true():
    rows = re.findall(r"\| \[`(helpers/\w+\.py)`\]\([^)]*\) \| (\d+) \| (.*) \|", README)
    assert len(rows) == 5, rows
    for path, lines, functions in rows:
        text = (ROOT / path).read_text()
        assert len(text.splitlines()) == int(lines), f"{path}: README says {lines} lines"
        for name in re.findall(r"`(\w+)`", functions):
            if name[0].isalpha() and name not in ("sigmoid",):
                assert re.search(rf"^(def|class) {name}\b", text, re.M), f"{path} defines no {name}"


def test_main_path_minutes_are_the_schedules():
    rows = re.findall(r"\| \[(\d\d) · [^]]+\]\(notebooks/(\w+)\.ipynb\) \| .* \| (\d+) min", README)
    assert len(rows) == 5, rows
    for _, name, minutes in rows:
        assert round(main_path_minutes(name, gpu=False)["minutes"]) == int(minutes), name
