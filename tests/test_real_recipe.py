"""Notebook 03's recipe (helpers.recipe) on the real SmolLM2-135M-Instruct, both backends: a 3-step smoke test.

Slow on 2 CPU cores (~1-2 min for both): a tiny batch of short toy-world pairs, LoRA r=8, max_length 96. Train and
test split are the same two pairs, so that step 1's logged ``logps/chosen`` (policy == reference: fresh adapter)
must equal ``helpers.evaluation``'s summed log-probs of those pairs, recorded by the recipe as ``before``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.infra.smollm2 import MODEL_ID

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_pairs_dir(tmp_path_factory) -> Path:
    """The two toy-world pairs with the shortest prompts, saved as notebook 02 saves splits (train = test)."""
    from helpers.worlds.splits import TOY, HHSplits, resolve_hh, save_splits, split_request

    s = resolve_hh(TOY, limit=200, test_limit=1)
    train = s.data["train"]
    short = sorted(range(len(train)), key=lambda i: sum(len(m["content"]) for m in train[i]["prompt"]))[:2]
    pairs = train.select(short)
    out = tmp_path_factory.mktemp("real") / "data"
    save_splits(HHSplits(TOY, "two shortest toy pairs", {"train": [], "test": []},
                         {"train": pairs, "test": pairs}, {"train": {}, "test": {}}), out,
                request=split_request(source=TOY, limit=200, test_limit=1))
    return out


def _args(data: Path, out: Path, backend: str) -> list[str]:
    return ["--model", MODEL_ID, "--data", str(data), "--data-source", "toy", "--output-dir", str(out),
            "--backend", backend,
            "--batch-size", "2", "--grad-accum", "1", "--max-steps", "3", "--max-length", "96",
            "--max-prompt-length", "80", "--learning-rate", "2e-3", "--warmup-steps", "0", "--lr-scheduler",
            "constant", "--lora-r", "8", "--lora-alpha", "16", "--logging-steps", "1", "--eval-steps", "1000",
            "--save-steps", "1000", "--sft-weight", "0"]  # plain DPO, so step 1's loss is ln 2 (the default adds SFT)


@pytest.mark.parametrize("backend", ["transformers", "unsloth"])
def test_real_smollm2_recipe_runs_logs_trl_exact_logps_and_saves_a_reloadable_adapter(two_pairs_dir, tmp_path,
                                                                                      backend):
    out = tmp_path / backend
    r = subprocess.run([sys.executable, "-m", "helpers.course.cli", *_args(two_pairs_dir, out, backend)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["backend"] == backend and m["global_step"] == 3
    assert m["model_parameters"] == 134_515_008 and m["tokenizer_vocab"] == 49152
    logs = {h["step"]: h for h in m["log_history"] if "loss" in h}
    assert sorted(logs) == [1, 2, 3]
    assert abs(logs[1]["loss"] - math.log(2)) < 1e-4, logs[1]  # fresh LoRA: policy == reference
    # TRL's logged summed completion log-probs == helpers.evaluation's, on the same two pairs
    assert abs(logs[1]["logps/chosen"] - m["before"]["logps/chosen"]) < 2e-3 * abs(m["before"]["logps/chosen"])
    assert abs(logs[1]["logps/rejected"] - m["before"]["logps/rejected"]) < 2e-3 * abs(m["before"]["logps/rejected"])
    assert logs[3]["loss"] < math.log(2) - 0.01, logs  # it learns something by step 3

    # the saved adapter, reloaded on the base model, gives the trained policy's log-probs
    from datasets import load_from_disk

    from helpers.compare import load_policy
    from helpers.evaluation import pair_logps

    model, tok = load_policy(out / "adapter", m["model"])
    pol = pair_logps(model, tok, load_from_disk(str(two_pairs_dir / "test")), max_length=96)
    assert abs(pol["chosen"].mean() - m["after"]["logps/chosen"]) < 1e-3 * abs(m["after"]["logps/chosen"])
    assert abs(pol["rejected"].mean() - m["after"]["logps/rejected"]) < 1e-3 * abs(m["after"]["logps/rejected"])
