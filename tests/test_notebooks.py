"""Notebook conventions, and notebooks' printed figures checked against independent computations.

nbmake executes every notebook in `make test`; here the metrics a notebook records are compared with what the
tests compute on their own.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path

import nbformat
import pytest

from helpers.course.suite import run_notebook
from tests.test_data import _independent_reason

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.ipynb"))


def _cells(path):
    return nbformat.read(path, as_version=4).cells


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path):
    cells = _cells(path)
    code = [c for c in cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "outputs must be stripped"
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] <= 2, "one cell tagged 'parameters' near the top"
    assert "google.colab" in code[0].source and "setup_course(ROOT)" in code[0].source, "first cell: Colab set-up"
    assert "banner(" in code[tagged[0] + 1].source, "the runtime banner comes right after the parameters"
    src = "\n".join(c.source for c in code)
    assert "/work/" not in src and "/home/" not in src, "relative paths only"
    for i, c in enumerate(code):  # a syntax error fails here, not minutes into an execution
        ast.parse("".join(line for line in c.source.splitlines(True) if not line.lstrip().startswith(("%", "!"))),
                  filename=f"{path.name} code cell {i}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_workshop_path_and_marked_appendices(path):
    """Every notebook names its workshop path; 01 and 03 keep their deep dives in marked appendices after the main
    sections; a "Predict, then run" question is answered by the code cell right after it, not by its own text."""
    cells = _cells(path)
    assert "**Workshop path" in cells[0].source
    heads = [(i, line) for i, c in enumerate(cells) if c.cell_type == "markdown"
             for line in c.source.splitlines() if line.startswith("## ")]
    appendix = [i for i, h in heads if h.startswith("## Appendix")]
    if path.stem[:2] in ("01", "03"):
        assert len(appendix) >= 2, heads
        main = [i for i, h in heads if not h.startswith("## Appendix")]
        assert max(main) < min(appendix), "appendices come after every main section"
        numbers = [int(h.split()[1].rstrip(".")) for i, h in heads if h.split()[1].rstrip(".").isdigit()]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    for i, c in enumerate(cells):
        if c.cell_type == "markdown" and "**Predict, then run.**" in c.source:
            question = c.source[c.source.index("**Predict, then run.**"):]
            assert "?" in question, f"cell {i}: a question"
            assert cells[i + 1].cell_type == "code", f"cell {i}: the answer must be the next code cell"
    assert any("**Predict, then run.**" in c.source for c in cells if c.cell_type == "markdown"), \
        "every notebook asks at least one question to predict before the cell that answers it"


MODE = re.compile(r"rt\.hub|offline|OFFLINE|RUN_AHEAD|quick\(|DPO_QUICK")


def _lines(source: str) -> list[str]:
    return [x for x in source.splitlines() if x.strip()]


def test_notebooks_read_like_lessons():
    """Issue 33's measures: a first cell of at most 12 lines, no code cell over 25, at most 1,150 code lines in all,
    at most 6 lines per notebook that name the mode, and no import of helpers.infra or of a helpers.course module
    (notebooks use the lesson modules and helpers.course's face)."""
    total = 0
    for p in NOTEBOOKS:
        code = [c for c in _cells(p) if c.cell_type == "code"]
        sizes = [len(_lines(c.source)) for c in code]
        total += sum(sizes)
        assert sizes[0] <= 12, f"{p.name}: first cell {sizes[0]} lines"
        assert max(sizes) <= 25, f"{p.name}: code cell {sizes.index(max(sizes))} has {max(sizes)} lines"
        mode = [x for c in code for x in _lines(c.source) if MODE.search(x)]
        assert len(mode) <= 6, (p.name, mode)
        inner = re.findall(r"(?:from|import)\s+(helpers\.infra\b[\w.]*|helpers\.course\.\w+)",
                           "\n".join(c.source for c in code))
        assert not inner, (p.name, inner)
    assert total <= 1150, total


def test_colab_cell_is_identical_everywhere():
    firsts = {next(c for c in _cells(p) if c.cell_type == "code").source for p in NOTEBOOKS}
    assert len(firsts) == 1


@pytest.mark.notebook
def test_notebook02_counts_equal_independent_counts(tmp_path, shared_hh_path, monkeypatch, real_rows_raw):
    monkeypatch.setenv("DPO_HH_SOURCE", str(shared_hh_path))
    nb = Path(__file__).resolve().parents[1] / "notebooks" / "02_hh_rlhf_formatting.ipynb"
    res = run_notebook(nb, tmp_path / "executed.ipynb", run_dir=tmp_path, timeout=300)
    assert res.ok, res.error
    m = json.loads((tmp_path / "metrics" / "02_hh_rlhf_formatting.json").read_text())
    reasons = Counter(r for r in map(_independent_reason, real_rows_raw) if r is not None)
    assert m["rows"] == len(real_rows_raw) == 1200
    assert m["kept"] == sum(_independent_reason(r) is None for r in real_rows_raw)
    assert m["dropped"] == dict(reasons)
    assert m["first_split_corrupted"] == m["multi_turn_rows"] == sum(r["chosen"].count("\n\nHuman:") > 1
                                                                     for r in real_rows_raw)
    # the reference (last-split) recipe, counted independently: raw transcripts as prompts, leading spaces
    assert m["last_split"]["raw_prompts"] == m["last_split"]["leading_space"] == 1200
    assert m["last_split"]["multi_turn"] == m["multi_turn_rows"]
    assert (tmp_path / "02_hh" / "train" / "dataset_info.json").exists()
    assert (tmp_path / "figures" / "02_token_lengths.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def real_rows_raw(shared_hh_path):
    return [json.loads(line) for line in shared_hh_path.read_text().splitlines() if line.strip()]


def test_every_title_states_its_main_paths_minutes_from_the_schedule():
    """The title cell's "Workshop path (about N minutes" is helpers.course.schedule's arithmetic for that notebook's
    main path, so a notebook whose main path grows must say so (or move the new part to an appendix)."""
    import re

    from helpers.course.schedule import MAIN_PATH, main_path_minutes, stated_minutes

    for name in MAIN_PATH:
        title = nbformat.read(NOTEBOOKS[0].parent / f"{name}.ipynb", as_version=4).cells[0].source
        m = re.search(r"Workshop path \(about (\d+) minutes", title)
        assert m and int(m.group(1)) == stated_minutes(name), (name, m and m.group(0), stated_minutes(name))
        assert main_path_minutes(name)["code_cells"] >= 3, name  # the parser found the sections
    with pytest.raises(ValueError, match="name"):
        main_path_minutes("06_missing")


def test_instructors_md_quotes_the_schedules_arithmetic():
    """INSTRUCTORS.md's main-path table and plan totals are helpers.course.schedule's numbers, not typed-in ones."""
    import re

    from helpers.course import schedule as sch

    text = (NOTEBOOKS[0].parents[1] / "INSTRUCTORS.md").read_text()
    for name in sch.MAIN_PATH:
        row = next(line for line in text.splitlines() if line.startswith(f"| {name[:2]} "))
        cells = [c.strip() for c in row.strip("|").split("|")]
        m = sch.main_path_minutes(name)
        assert (int(cells[2]), int(cells[3])) == (m["words"], m["code_cells"]), (name, cells)
        assert re.match(rf"{sch.stated_minutes(name)}\b", cells[4]), (name, cells[4])
        assert cells[5].startswith(f"{sch.RUNTIME[name]}, +{sch.colab_minutes(name)['total']:.1f}"), (name, cells[5])
    for plan, heading in (("3 hours", "## The 3-hour plan"), ("90 minutes", "## The 90-minute plan")):
        total = round(sum(x for _, x in sch.plan_minutes(plan)))
        slack = sch.PLAN_LENGTH[plan] - total
        assert f"{heading} ({total} min of arithmetic, {slack} min of slack" in text, (plan, total)
        table = text.split(heading, 1)[1].split("\n\n")[1]  # the plan's table: | start | minutes | what |
        quoted = [row.split("|")[2].strip() for row in table.splitlines()[2:]]
        assert quoted == [f"{m:g}" if m == int(m) else f"{m:.1f}" for _, m in sch.plan_minutes(plan)], (plan, quoted)
    assert set(sch.PLANS) == {"3 hours", "90 minutes"} and "RUN_AHEAD" in text
