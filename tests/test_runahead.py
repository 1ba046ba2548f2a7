"""The workshop's run-ahead inside the notebooks: with RUN_AHEAD set, notebook 05 loads the instructor's adapter and
never trains; notebook 04 reads the instructor's sweep and trains nothing (the hub side: tests/test_hub.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _output(path: Path) -> str:
    return "".join(o.get("text", "") for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
                   for o in c.outputs)


@pytest.mark.notebook
def test_notebook_05_reads_the_run_ahead_adapter_and_never_trains(tmp_path, monkeypatch, toy_sft_dir):
    from helpers.course.runahead import pack_run_ahead
    from helpers.course.suite import run_notebook
    from helpers.recipe import OFFLINE, DPORecipe, run_recipe

    # the instructor's adapter: notebook 03's offline recipe in full (05 checks that the policy beats the reference)
    run_recipe(DPORecipe(**{**OFFLINE, "output_dir": str(tmp_path / "teacher"), "backend": "transformers"}),
               verbose=False)
    packed = pack_run_ahead(tmp_path / "run-ahead", train_dir=tmp_path / "teacher")
    monkeypatch.setenv("DPO_RUN_AHEAD", str(packed))
    res = run_notebook(ROOT / "notebooks" / "05_before_after_generation.ipynb", tmp_path / "05.ipynb",
                       run_dir=tmp_path / "attendee", timeout=600)
    assert res.ok, res.error
    out = _output(tmp_path / "05.ipynb")
    assert f"run-ahead: the adapter comes from {packed}" in out and f"{OFFLINE['max_steps']} steps" in out
    assert "no trained adapter" not in out and not (tmp_path / "attendee" / "03_dpo").exists()  # nothing trained


@pytest.mark.notebook
def test_notebook_04_with_the_instructors_sweep_trains_nothing(tmp_path, monkeypatch):
    from helpers.course.runahead import pack_run_ahead
    from helpers.course.suite import run_notebook

    nb = ROOT / "notebooks" / "04_beta_sensitivity.ipynb"
    teacher = run_notebook(nb, tmp_path / "teacher.ipynb", run_dir=tmp_path / "teacher", timeout=900)
    assert teacher.ok, teacher.error
    packed = pack_run_ahead(tmp_path / "run-ahead", sweep_dir=tmp_path / "teacher" / "04_sweep")
    monkeypatch.setenv("DPO_RUN_AHEAD", str(packed))
    res = run_notebook(nb, tmp_path / "attendee.ipynb", run_dir=tmp_path / "attendee", timeout=900)
    assert res.ok, res.error
    out = _output(tmp_path / "attendee.ipynb")
    n = len(list((tmp_path / "teacher" / "04_sweep").glob("*.json")))
    assert f"run-ahead: {n} sweep results copied from {packed}" in out
    assert "trained by the scratch loop (helpers.scratch, checked in §2a): all cached" in out  # no run trained
