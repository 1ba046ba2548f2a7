"""The `make run` runner (helpers.course.suite) on small generated notebooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from helpers.course import suite


def _write(path, *sources):
    nb = new_notebook(cells=[new_markdown_cell("# t")] + [new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def notebooks(tmp_path):
    good = _write(
        tmp_path / "01_good.ipynb",
        "import json, os, pathlib\nx = 6 * 7",
        "d = pathlib.Path(os.environ['DPO_RUN_DIR']) / 'metrics'\n"
        "(d / '01_good.json').write_text(json.dumps({'answer': x, 'cwd': os.getcwd()}))",
    )
    bad = _write(tmp_path / "02_bad.ipynb", "y = 1", "raise RuntimeError('boom at the second code cell')")
    return good, bad


def test_runner_records_results_metrics_and_latest(tmp_path, notebooks, capsys):
    good, _ = notebooks
    rc = suite.main(["--notebooks", str(good), "--runs-dir", str(tmp_path / "runs")])
    assert rc == 0
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink()
    summary = json.loads((latest / "summary.json").read_text())
    assert summary["mode"] == "offline"
    r = summary["notebooks"]["01_good"]
    assert r["ok"] is True and isinstance(r["seconds"], float) and r["seconds"] > 0
    assert summary["01_good"]["answer"] == 42  # computed by the notebook, read back from its metrics file
    assert summary["01_good"]["cwd"] == str(good.parent)  # notebooks run from their own folder
    assert (latest / "01_good.ipynb").exists()
    assert "01_good" in capsys.readouterr().out


def test_failing_notebook_exits_nonzero_and_names_the_cell(tmp_path, notebooks, capsys):
    good, bad = notebooks
    rc = suite.main(["--notebooks", str(bad), str(good), "--runs-dir", str(tmp_path / "runs")])
    assert rc == 1
    summary = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    r = summary["notebooks"]["02_bad"]
    assert r["ok"] is False and r["failed_cell"] == 2
    assert "RuntimeError" in r["error"] and "boom" in r["error"]
    assert summary["notebooks"]["01_good"]["ok"] is True  # later notebooks still run and are recorded
    assert "FAILED" in capsys.readouterr().out
    assert "DPO_RUN_DIR" not in os.environ or os.environ["DPO_RUN_DIR"] != str(tmp_path)


def test_missing_notebook_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        suite.main(["--notebooks", str(tmp_path / "nope.ipynb"), "--runs-dir", str(tmp_path / "runs")])


def test_digest_holds_the_summary_keys_make_run_promises():
    summary = {"mode": "offline",
               "01_dpo_math_and_loss": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "model_source": "packaged",
                                        "model_parameters": 134_515_008, "tokenizer_vocab": 49152},
               "03_unsloth_lora_dpo": {"mode": "offline", "heldout_reward_accuracy": 1.0, "heldout_margin": 0.4},
               "04_beta_sensitivity": {"beta_sweep": [{"beta": 0.1, "heldout_accuracy": 1.0, "kl": 9.7, "kl_sem": 0.3,
                                                       "reward": 0.4, "reward_sem": 0.05, "margin": 0.6}]},
               "05_before_after_generation": {"mode": "offline", "win_rate": 0.7, "chosen_style_rate_before": 0.5,
                                              "chosen_style_rate_after": 0.9, "score": "toy_reward",
                                              "strict_win_rate": 0.65, "malformed_rate_before": 0.0,
                                              "malformed_rate_after": 0.04}}
    d = suite.digest(summary)
    assert d["mode"] == "offline"
    assert d["dpo"] == {"heldout_reward_accuracy": 1.0, "heldout_margin": 0.4}
    assert d["generation"]["win_rate"] == 0.7 and d["generation"]["chosen_style_rate_after"] == 0.9
    assert d["beta_sweep"] == [{"beta": 0.1, "heldout_accuracy": 1.0, "kl": 9.7, "kl_sem": 0.3, "reward": 0.4,
                                "reward_sem": 0.05, "malformed_rate": None}]
    assert d["generation"]["judge"] is None and d["generation"]["win_interval"] is None  # online fields: absent here
    assert d["generation"]["strict_win_rate"] == 0.65 and d["generation"]["malformed_rate_after"] == 0.04
    assert d["models"] == {"01_dpo_math_and_loss": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                                    "model_source": "packaged", "model_parameters": 134_515_008,
                                                    "tokenizer_vocab": 49152}}
    assert suite.digest({"mode": "online"})["dpo"]["heldout_reward_accuracy"] is None  # absent, not invented


def test_a_cell_that_runs_into_the_timeout_fails_the_notebook_naming_the_cell(tmp_path):
    nb = _write(tmp_path / "01_waits.ipynb", "x = 1", "import time\ntime.sleep(60)", "y = 2")
    res = suite.run_notebook(nb, tmp_path / "out.ipynb", run_dir=tmp_path, timeout=3)
    assert res.ok is False and res.failed_cell == 2, res
    assert "cell 2" in res.error and "3 s timeout" in res.error and "time.sleep" not in res.error.split("timeout")[0]


def test_executed_notebooks_carry_per_cell_times_and_the_runner_wait(tmp_path):
    nb = _write(tmp_path / "01_t.ipynb", "import time\ntime.sleep(0.3)", "z = 3")
    res = suite.run_notebook(nb, tmp_path / "out.ipynb", run_dir=tmp_path, timeout=60)
    assert res.ok, res.error
    assert [c["cell"] for c in res.cells] == [1, 2] and res.cells[0]["seconds"] >= 0.3
    assert res.cells[0]["wait_before"] is None and 0 <= res.cells[1]["wait_before"] < 5
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.cells[1].metadata["dpo_course"]["seconds"] == res.cells[0]["seconds"]


def test_stall_problems_name_a_long_wait_between_two_cells():
    from helpers.course.nbexec import stall_problems

    nb = new_notebook(cells=[new_code_cell("a"), new_code_cell("b"), new_code_cell("c")])
    times = [("00:00:00", "00:00:05"), ("00:00:05.2", "00:00:09"), ("00:10:09", "00:10:10")]  # 600 s before cell 2
    for cell, (start, reply) in zip(nb.cells, times, strict=True):
        cell.metadata["execution"] = {"iopub.execute_input": f"2026-11-29T{start}Z",
                                      "shell.execute_reply": f"2026-11-29T{reply}Z"}
    problems = stall_problems(nb)
    assert len(problems) == 1 and problems[0].startswith("cell 2: the runner waited 600 s"), problems


def test_a_missed_wake_up_costs_at_most_one_poll_slice(monkeypatch):
    """pyzmq's async poll that misses the socket's edge returns the waiting message only at its deadline; the
    course client's waits are cut into slices, each ending with that check."""
    import asyncio
    from queue import Empty

    from helpers.course import nbexec

    arrived = time.monotonic() + 0.2  # the reply arrives 0.2 s after the wait starts, and the wake-up is missed

    async def missed_edge_get_msg(timeout=None):
        if time.monotonic() >= arrived:
            return {"msg": "reply"}
        await asyncio.sleep(timeout)  # no wake-up: only the check at the deadline sees the message
        if time.monotonic() >= arrived:
            return {"msg": "reply"}
        raise Empty

    monkeypatch.setattr(nbexec, "POLL_SLICE_S", 0.25)
    t0 = time.monotonic()
    assert asyncio.run(nbexec._sliced(missed_edge_get_msg)(timeout=30)) == {"msg": "reply"}
    assert time.monotonic() - t0 < 1.0  # not 30 s

    async def never(timeout=None):
        await asyncio.sleep(timeout)
        raise Empty

    t0 = time.monotonic()
    with pytest.raises(Empty):  # a real timeout is still a timeout, after about its own length
        asyncio.run(nbexec._sliced(never)(timeout=0.6))
    assert 0.5 < time.monotonic() - t0 < 1.5


def test_nbmake_runs_notebooks_with_the_course_client():
    import nbmake.nb_run

    from helpers.course.nbexec import CourseNotebookClient

    assert nbmake.nb_run.NotebookClient is CourseNotebookClient  # installed by the repository's conftest.py


def test_not_online_reads_the_mode_the_data_and_the_model_source():
    assert suite.not_online({"mode": "online", "model_source": "hub: x (http://127.0.0.1:1)"}) is None
    assert suite.not_online({"model_source": "Hugging Face cache: x (/tmp/a)"}) is None
    assert "mode 'offline'" in suite.not_online({"mode": "offline"})
    assert "toy world" in suite.not_online({"source": "toy", "model_source": "hub: x"})
    assert "packaged" in suite.not_online({"model_source": "packaged copy of x (no hub: ...)"})


def test_nbmake_fails_a_notebook_whose_cell_runs_into_the_timeout_naming_it(tmp_path):

    root = Path(__file__).resolve().parents[1]
    nb = _write(tmp_path / "waits.ipynb", "x = 1", "import time\ntime.sleep(60)")
    (tmp_path / "conftest.py").write_text((root / "conftest.py").read_text())  # the course's nbmake hooks
    out = subprocess.run([sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=3", "-q", "-p",
                          "no:cacheprovider", str(nb)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 1, out.stdout[-2000:]
    assert "1 failed" in out.stdout and "timed out" in out.stdout.lower() and "time.sleep(60)" in out.stdout, \
        out.stdout[-3000:]


# ------------------------------------------------------------------------------------------------------ runner
@pytest.mark.parametrize("value,offline", [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("no", False),
                                           ("FALSE", False), ("2", False), ("0", False), ("", False)])
def test_suite_and_runtime_read_hf_hub_offline_alike(value, offline, monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=no/FALSE/2 used to mean offline to `make run` and online to the notebooks' runtime."""
    from helpers.course.suite import run_suite
    from helpers.infra.runtime import offline_forced

    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert offline_forced() is offline
    _, summary = run_suite([], tmp_path)
    assert summary["mode"] == ("offline" if offline else "auto")


def test_a_real_latest_folder_is_moved_aside_not_an_error(tmp_path, capsys):
    from helpers.course.suite import run_suite

    (tmp_path / "latest").mkdir()
    (tmp_path / "latest" / "keep.txt").write_text("mine")
    run_dir, _ = run_suite([], tmp_path)
    assert (tmp_path / "latest").is_symlink() and (tmp_path / "latest").resolve() == run_dir.resolve()
    moved = list(tmp_path.glob("latest.moved-*"))
    assert len(moved) == 1 and (moved[0] / "keep.txt").read_text() == "mine"
    assert "was a folder" in capsys.readouterr().out
