"""Notebook 05 helpers: win rate, implicit rewards, the optional judge (on a fake endpoint), export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from helpers.compare import export_comparison, generate_side_by_side, implicit_rewards, win_rate

ROOT = Path(__file__).resolve().parents[1]


def test_win_rate_counts_ties_half_and_checks_input():
    assert win_rate([1, 0, 2, 3], [0, 0, 5, 1]) == (1 + 0.5 + 0 + 1) / 4
    with pytest.raises(ValueError, match="equal length"):
        win_rate([1], [1, 2])


def test_fresh_adapter_generates_like_the_reference_with_zero_implicit_reward(toy_sft_dir):
    from helpers.evaluation import chat_prompts
    from helpers.models import load_model
    from helpers.worlds.splits import TOY, resolve_hh
    from helpers.worlds.toy_model import TOY_DECODING

    model, tok = load_model(toy_sft_dir, use_unsloth=False)  # fresh LoRA: policy == reference
    prompts = chat_prompts(resolve_hh(TOY).data["test"])[:12]
    rows = generate_side_by_side(model, tok, prompts, decoding=TOY_DECODING, seed=3)
    assert all(r["reference"] == r["policy"] for r in rows)  # same seed, same model: same text
    ref_r, pol_r = implicit_rewards(model, tok, rows, beta=0.1)
    assert max(abs(x) for x in ref_r + pol_r) < 1e-5


def test_export_writes_csv_and_escaped_html(tmp_path):
    rows = [{"prompt": "a<b", "reference": "x", "policy": "y", "score": 1.0}]
    p = export_comparison(rows, tmp_path, columns=["prompt", "reference", "policy", "score"])
    assert p["csv"].read_text().splitlines()[1] == "a<b,x,y,1.0"
    assert "a&lt;b" in p["html"].read_text()


def test_expected_generation_counts_decode_steps_and_names_its_source():
    """Notebook 05 prints this before generating: 2 sides x batches x new tokens, at the CPU rate measured for
    SmolLM2 or the GPU arithmetic (labelled); its online parameters fit a workshop on a GPU."""

    import nbformat

    from helpers.compare import CPU_DECODE_STEP_S, expected_generation

    ROOT = Path(__file__).resolve().parents[1]

    cpu, why = expected_generation(64, {"max_new_tokens": 128}, device="cpu")
    assert "measured" in why and cpu == pytest.approx(2 * 2 * 128 * CPU_DECODE_STEP_S)  # 2 sides x 2 batches x 128
    gpu, why = expected_generation(64, {"max_new_tokens": 128}, device="cuda")
    assert "not a measurement" in why and gpu < cpu / 10
    c = json.loads((ROOT / "benchmarks" / "results" / "quality_calibration.json").read_text())["smollm2_reference"]
    steps = math.ceil(c["prompts"] / 32) * c["decoding"]["max_new_tokens"]  # one side, batches of 32
    assert CPU_DECODE_STEP_S == pytest.approx(c["seconds"] / steps, rel=0.25)  # the constant follows the measurement
    assert expected_generation(65, {"max_new_tokens": 128}, device="cuda")[0] == pytest.approx(gpu * 1.5)
    assert expected_generation(6, {"max_new_tokens": 32}, device="cpu", toy=True)[0] is None
    for bad, match in (({"n_prompts": 0}, "n_prompts"), ({"device": "tpu"}, "device")):
        kw = {"n_prompts": 8, "device": "cpu", **bad}
        with pytest.raises(ValueError, match=match):
            expected_generation(kw.pop("n_prompts"), {"max_new_tokens": 8}, **kw)
    params = {}
    exec(next(c for c in nbformat.read(ROOT / "notebooks" / "05_before_after_generation.ipynb", as_version=4).cells
              if "parameters" in c.metadata.get("tags", [])).source, params)
    minutes = expected_generation(params["N_PROMPTS"], params["DECODING"], device="cuda")[0] / 60
    assert minutes < 5, minutes


@pytest.mark.notebook
def test_notebook_05_completes_and_exports_with_a_dead_judge(tmp_path, monkeypatch):
    import nbformat

    from helpers.course.suite import run_notebook

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DPO_JUDGE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("DPO_JUDGE_KEY", "sk-test")
    nb = ROOT / "notebooks" / "05_before_after_generation.ipynb"
    res = run_notebook(nb, tmp_path / "05.ipynb", run_dir=tmp_path, timeout=600)
    assert res.ok, res.error
    assert (tmp_path / "05_generation" / "comparison.csv").exists()
    metrics = json.loads((tmp_path / "metrics" / "05_before_after_generation.json").read_text())
    assert metrics["llm_judge"]["errors"] == {"connection": 3, "skipped (judge down)": 47}
    assert metrics["llm_judge"]["win_rate"] is None
    assert metrics["win_rate"] is not None  # offline: the ground-truth win rate is still there
    out = "".join("".join(o.get("text", "")) for c in nbformat.read(tmp_path / "05.ipynb", as_version=4).cells
                  if c.cell_type == "code" for o in c.outputs)
    assert "connection x3, skipped (judge down) x47" in out


def test_score_comparison_gives_the_win_rate_its_interval_the_strict_rate_and_the_difference():
    from helpers.compare import score_comparison

    c = score_comparison([2, 1, 0, 5], [1, 1, 3, 0], [False, False, False, True], [False] * 4)
    assert c["n"] == 4 and c["win_rate"] == 0.625
    assert c["win_interval"][0] < 0.625 < c["win_interval"][1]
    assert c["strict_win_rate"] == (1 + 0.5 + 0 + 0) / 4  # the malformed policy answer loses despite its score
    assert c["mean_difference"] == pytest.approx(0.75) and c["mean_difference_se"] > 0


def test_nan_scores_are_left_out_and_counted_never_scored_as_losses():
    """Issue 35: a NaN score used to count as a loss (win rate) and as a disagreement (judge trust)."""
    import math

    from helpers.compare import score_comparison
    from helpers.judge import agreement

    nan = math.nan
    c = score_comparison([1.0, nan, 2.0], [0.0, 5.0, 1.0], [False] * 3, [False] * 3)
    assert c["n"] == 2 and c["nan_excluded"] == 1 and c["win_rate"] == 1.0
    a = agreement([1.0, nan, 3.0], [0.0, 1.0, 2.0], [5, 5, 5], [5, 5, 5])
    assert a["n"] == 2 and a["nan_excluded"] == 1 and a["agreement"] == 1.0
    with pytest.raises(ValueError, match="finite"):
        score_comparison([nan], [1.0], [False], [False])
    with pytest.raises(ValueError, match="finite"):
        agreement([nan], [nan], [1], [1])


def test_judge_inputs_are_checked_at_the_boundary():
    from types import SimpleNamespace

    from helpers.judge import expected_seconds, judge_texts

    j = SimpleNamespace(tokenizer=None, max_length=8, device="cpu", parameters=10)
    with pytest.raises(ValueError, match="list of strings"):
        judge_texts(j, [[{"role": "user", "content": "hi"}]], "an answer")  # a string: one character per prompt
    with pytest.raises(ValueError, match="item 1"):
        judge_texts(j, [[{"role": "user", "content": "a"}], "b"], ["x", "y"])
    with pytest.raises(ValueError, match="measured_tokens_per_s"):
        expected_seconds(j, [], [], measured_tokens_per_s=-5.0)
