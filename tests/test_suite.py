"""The `make run` runner (helpers.suite) on small generated notebooks."""

import json
import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from helpers import suite


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
               "04_beta_sensitivity": {"beta_sweep": [{"beta": 0.1, "heldout_accuracy": 1.0, "kl": 9.7,
                                                       "reward": 0.4, "margin": 0.6}]},
               "05_before_after_generation": {"mode": "offline", "win_rate": 0.7, "chosen_style_rate_before": 0.5,
                                              "chosen_style_rate_after": 0.9, "score": "toy_reward",
                                              "strict_win_rate": 0.65, "malformed_rate_before": 0.0,
                                              "malformed_rate_after": 0.04}}
    d = suite.digest(summary)
    assert d["mode"] == "offline"
    assert d["dpo"] == {"heldout_reward_accuracy": 1.0, "heldout_margin": 0.4}
    assert d["generation"]["win_rate"] == 0.7 and d["generation"]["chosen_style_rate_after"] == 0.9
    assert d["beta_sweep"] == [{"beta": 0.1, "heldout_accuracy": 1.0, "kl": 9.7, "reward": 0.4, "malformed_rate": None}]
    assert d["generation"]["strict_win_rate"] == 0.65 and d["generation"]["malformed_rate_after"] == 0.04
    assert d["models"] == {"01_dpo_math_and_loss": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                                    "model_source": "packaged", "model_parameters": 134_515_008,
                                                    "tokenizer_vocab": 49152}}
    assert suite.digest({"mode": "online"})["dpo"]["heldout_reward_accuracy"] is None  # absent, not invented
