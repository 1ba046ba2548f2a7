"""benchmarks/gpu_check.py (issue 34 item 6: `make gpu-check`): its dry run on the CPU runs every stage's code at toy
size and writes the one JSON a GPU run writes; on a machine without a GPU a real run is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.subprocess
def test_the_dry_run_measures_every_stage_at_toy_size_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["dry_run"] is True and res["device"] == "cpu" and list(res["stages"]) == ["recipe", "judge", "online"]
    recipe = res["stages"]["recipe"]
    assert recipe["ok"] and recipe["runs"][0]["backend"] == "transformers" and recipe["runs"][0]["steps_per_s"] > 0
    judge = res["stages"]["judge"]
    assert judge["random_weights"] is True and "RANDOM WEIGHTS" in judge["judge"]
    for dtype in ("fp32", "fp16", "bf16"):
        assert judge["dtypes"][dtype]["finite_rate"] == 1.0, dtype
    half = judge["dtypes"]["fp16"]
    assert half["verdicts_flipped_vs_fp32"] >= 0 and "max_abs_diff_vs_fp32" in judge["dtypes"]["bf16"]
    assert "skipped" in res["stages"]["online"]


def test_a_real_run_without_a_gpu_is_refused_and_bad_arguments_are_named():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    for args, want in ((["--stages", "recipe"], "no GPU here"), (["--dry-run", "--stages", "gpus"], "--stages"),
                       (["--dry-run", "--budget-s", "0"], "--budget-s")):
        r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and want in r.stderr, (args, r.stderr[-500:])
