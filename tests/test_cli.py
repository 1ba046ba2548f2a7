"""The recipe's command line (helpers.course.cli): exit codes, bad values refused before anything loads, accelerate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.course.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_cli_rejects_bad_beta_with_exit_code_2(capsys):
    assert main(["--offline", "--beta", "-0.1"]) == 2
    assert "beta must be" in capsys.readouterr().err


@pytest.mark.subprocess
def test_cli_runs_under_accelerate_launch_single_process(tmp_path):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", "-m",
           "helpers.course.cli", "--offline", "--backend", "transformers", "--output-dir", str(tmp_path),
           "--max-steps", "4", "--eval-steps", "2", "--save-steps", "2"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["global_step"] == 4 and m["recipe"]["max_steps"] == 4
    assert any("eval_loss" in h for h in m["log_history"])  # evaluated during training
    assert (tmp_path / "checkpoint-4").is_dir() and (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_cli_refuses_a_mistyped_data_dir_and_creates_nothing(tmp_path):
    from helpers.course.cli import main

    typo = tmp_path / "typo_dir"
    assert main(["--offline", "--data", str(typo), "--output-dir", str(tmp_path / "o")]) == 2
    assert not typo.exists() and not (tmp_path / "o").exists()
    f = tmp_path / "rows.jsonl"
    f.write_text("{}\n")
    assert main(["--offline", "--data", str(f), "--output-dir", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_cli_bad_values_fail_before_anything_is_loaded_or_written(tmp_path, monkeypatch, capsys):
    """Raw tracebacks (after 31 s of loading for a bad scheduler name); `--output-dir ""` wrote into the cwd."""
    from helpers.course.cli import main

    monkeypatch.chdir(tmp_path)
    for args in (["--lr-scheduler", "bogus"], ["--seed", "-1"], ["--output-dir", ""], ["--beta", "inf"]):
        assert main(["--offline", *args]) == 2
    with pytest.raises(SystemExit) as e:
        main(["--offline", "--max-prompt-length", "lots"])
    assert e.value.code == 2
    assert list(tmp_path.iterdir()) == [], "nothing written into the current directory"
    err = capsys.readouterr().err
    assert "lr_scheduler must be one of" in err and "seed must be" in err and "output_dir must be" in err


def test_cli_max_prompt_length_none():
    from helpers.course.cli import _NONE, _parser

    a = _parser().parse_args(["--max-prompt-length", "none"])
    assert a.max_prompt_length == _NONE
