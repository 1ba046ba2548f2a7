"""Notebook 04's sweep (helpers.sweep) and its KL estimator (helpers.evaluation.sample_and_score); merge on save."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.evaluation import chat_prompts, sample_and_score
from helpers.models import load_model
from helpers.recipe import OFFLINE, DPORecipe, run_recipe
from helpers.sweep import run_sweep
from helpers.worlds.splits import TOY, resolve_hh
from helpers.worlds.toy import toy_reward


def test_kl_estimate_is_zero_for_the_reference_and_positive_once_the_policy_moves(toy_sft_dir):
    model, tok = load_model(toy_sft_dir, use_unsloth=False)
    prompts = chat_prompts(resolve_hh(TOY).data["test"])[:16]
    s = sample_and_score(model, tok, prompts, n_samples=2, max_new_tokens=12, seed=1)
    assert len(s["texts"]) == 32 and (s["tokens"] <= 12).all() and (s["tokens"] >= 1).all()
    assert np.abs(s["policy_logps"] - s["ref_logps"]).max() < 1e-5  # fresh LoRA: pi == pi_ref
    assert (s["policy_logps"] < 0).all()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(0)))
    s = sample_and_score(model, tok, prompts, n_samples=4, max_new_tokens=12, seed=1)
    d = s["policy_logps"] - s["ref_logps"]
    assert d.mean() > 2 * d.std() / np.sqrt(len(d))  # KL > 0, beyond the estimator's noise


def test_sweep_measures_each_setting_and_caches_it(tmp_path, toy_sft_dir):
    base = DPORecipe(**{**OFFLINE, "output_dir": str(tmp_path / "runs"), "max_steps": 3, "batch_size": 4,
                        "backend": "transformers"})
    splits = resolve_hh(TOY, limit=40, test_limit=12).data
    grid = [{"beta": 0.5}, {"loss_type": "ipo"}]
    kw = dict(cache_dir=tmp_path / "cache", kl_prompts=4, kl_samples=2, max_new_tokens=8, reward_fn=toy_reward,
              checkpoints=(2,), progress=False)
    first = run_sweep(base, grid, splits, **kw)
    assert [r["cached"] for r in first["rows"]] == [False, False]
    assert [(r["beta"], r["loss_type"]) for r in first["rows"]] == [(0.5, "sigmoid"), (0.1, "ipo")]
    for r in first["rows"]:
        assert r["steps"] == 3 and r["kl_n"] == 8 and 0 <= r["heldout_accuracy"] <= 1 and "reward" in r
        assert 0 <= r["malformed_rate"] <= 1 and isinstance(r["malformed_reasons"], dict)
        # measured along training: the checkpoint at step 2, then the end (the row's own numbers)
        assert [p["step"] for p in r["path"]] == [2, 3] and r["path"][-1]["kl"] == r["kl"]
        assert all({"kl", "kl_sem", "reward", "malformed_rate"} <= set(p) for p in r["path"])
    ref = first["reference"]
    assert abs(ref["kl"]) < 1e-5 and "reward" in ref and "malformed_rate" in ref
    with pytest.raises(ValueError, match="checkpoints"):
        run_sweep(base, grid, splits, **{**kw, "checkpoints": (0,)})
    again = run_sweep(base, grid, splits, **kw)
    assert [r["cached"] for r in again["rows"]] == [True, True]
    assert [r["kl"] for r in again["rows"]] == [r["kl"] for r in first["rows"]]
    for f in (tmp_path / "cache").glob("reference-*.json"):
        f.unlink()
    restored = run_sweep(base, grid, splits, **kw)  # points cached, the reference is measured again
    assert [r["cached"] for r in restored["rows"]] == [True, True] and restored["reference"] == first["reference"]


@pytest.mark.toy_model
def test_merge_saves_a_full_model_that_equals_the_adapter_model(tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    res = run_recipe(DPORecipe(**{**OFFLINE, "output_dir": str(tmp_path), "max_steps": 3, "batch_size": 4,
                                  "backend": "transformers", "merge": True, "eval_steps": 1000}), verbose=False)
    merged = AutoModelForCausalLM.from_pretrained(res["paths"]["merged"])
    ids = torch.tensor([[1, 5, 9, 12, 30]])
    with torch.no_grad():
        a = res["model"](input_ids=ids).logits  # the merged-and-unloaded model object
        b = merged(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

    base = AutoModelForCausalLM.from_pretrained(json.loads((tmp_path / "metrics.json").read_text())["model"])
    with torch.no_grad():
        assert (base(input_ids=ids).logits - b).abs().max().item() > 1e-5  # the merge carried the trained adapter


def test_runs_that_differ_only_in_training_settings_share_one_reference_measurement():
    from helpers.sweep import reference_key

    base = DPORecipe(**{**OFFLINE, "backend": "transformers"})
    measure = {"kl_prompts": 8, "kl_samples": 2}
    k = reference_key(base, "/x/toy-sft", measure)
    for change in ({"beta": 5.0}, {"learning_rate": 4e-4}, {"max_steps": 7}, {"loss_type": "ipo"}, {"sft_weight": 0.5}):
        assert reference_key(base.replace(**change), "/x/toy-sft", measure) == k, change
    for change in ({"seed": 1}, {"max_length": 300}):  # these change what the reference's samples are
        assert reference_key(base.replace(**change), "/x/toy-sft", measure) != k, change
    assert reference_key(base, "/x/toy-sft", {**measure, "kl_prompts": 9}) != k




def test_scratch_loop_sweep_measures_along_training_and_refuses_what_it_cannot_train(tmp_path, toy_sft_dir):
    base = DPORecipe(**{**OFFLINE, "output_dir": str(tmp_path / "runs"), "max_steps": 4, "batch_size": 4,
                        "sft_weight": 0.0, "backend": "transformers"})
    splits = resolve_hh(TOY, limit=40, test_limit=12).data
    kw = dict(cache_dir=tmp_path / "cache", kl_prompts=4, kl_samples=3, max_new_tokens=8, reward_fn=toy_reward,
              checkpoints=(2,), progress=False, loop="scratch", path_samples=1, sample_batch_size=5)
    res = run_sweep(base, [{"beta": 0.5}, {"beta": 5.0}], splits, **kw)
    for r in res["rows"]:
        assert r["loop"] == "scratch" and r["steps"] == 4 and r["kl_n"] == 12 and not r["cached"]
        assert [p["step"] for p in r["path"]] == [2, 4] and r["path"][-1]["kl"] == r["kl"]
        assert "seconds" not in r["path"][0] and r["train_seconds"] > 0
    assert res["rows"][0]["kl"] != res["rows"][1]["kl"]  # beta reached the loop
    assert res["measure"]["path_samples"] == 1 and res["measure"]["loop"] == "scratch"
    # the loop is part of what a cached row depends on; the reference measurement is not
    trl = run_sweep(base, [{"beta": 0.5}], splits, **{**kw, "loop": "trl"})
    assert trl["rows"][0]["loop"] == "trl" and not trl["rows"][0]["cached"]
    assert trl["reference"] == res["reference"] and len(list((tmp_path / "cache").glob("reference-*.json"))) == 1
    with pytest.raises(ValueError, match="sft_weight"):
        run_sweep(base.replace(sft_weight=0.5), [{"beta": 0.5}], splits, **kw)
    with pytest.raises(ValueError, match="loop"):
        run_sweep(base, [{"beta": 0.5}], splits, **{**kw, "loop": "adam"})
    with pytest.raises(ValueError, match="path_samples"):
        run_sweep(base, [{"beta": 0.5}], splits, **{**kw, "path_samples": 0})


def test_replayed_trl_steps_are_the_scratch_loops_steps_and_the_check_can_fail(tmp_path, toy_sft_dir, monkeypatch):
    """TRL's first steps, replayed through helpers.scratch.dpo_update, give the same losses and weights; with a
    different optimiser setting (weight decay) the same check reports a difference."""
    import helpers.scratch as scratch
    from helpers.sweep import replay_trl_steps

    base = DPORecipe(**{**OFFLINE, "output_dir": str(tmp_path / "runs"), "max_steps": 20, "batch_size": 4,
                        "sft_weight": 0.0, "backend": "transformers", "warmup_steps": 2, "beta": 0.5})
    splits = resolve_hh(TOY, limit=40, test_limit=12).data
    r = replay_trl_steps(base, splits, steps=5, output_dir=tmp_path / "a")
    assert r["steps"] == 5 and r["trainable"] > 0 and r["max_abs_weight_change"] > 1e-4
    assert r["trl_losses"][0] == pytest.approx(np.log(2), abs=1e-6)  # a fresh adapter: policy == reference
    assert r["trl_losses"][-1] < r["trl_losses"][0] - 1e-4  # it trained
    np.testing.assert_allclose(r["scratch_losses"], r["trl_losses"], atol=1e-6)
    assert r["max_abs_weight_diff"] <= 1e-3 * r["max_abs_weight_change"]

    real = scratch.trl_optimizer
    monkeypatch.setattr(scratch, "trl_optimizer", lambda params, **kw: real(params, **{**kw, "weight_decay": 0.5}))
    off = replay_trl_steps(base, splits, steps=5, output_dir=tmp_path / "b")
    assert off["max_abs_weight_diff"] > 1e-3 * off["max_abs_weight_change"], off
    with pytest.raises(ValueError, match="steps"):
        replay_trl_steps(base, splits, steps=21, output_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="sft_weight"):
        replay_trl_steps(base.replace(sft_weight=1.0), splits, steps=2, output_dir=tmp_path / "c")


def test_with_a_run_ahead_a_failed_judge_reads_the_instructors_runs_and_a_changed_setting_says_what_differs(
        tmp_path, toy_sft_dir, capsys):
    """Issue 34 item 4: the sweep key hashes the judge's name, so an attendee whose judge failed to load got cache
    misses and retrained everything although RUN_AHEAD was set; issue 35: a miss said nothing of why."""
    from helpers.course.runahead import fetch_sweep, pack_run_ahead

    base = DPORecipe(**{**OFFLINE, "output_dir": str(tmp_path / "runs"), "max_steps": 2, "batch_size": 4,
                        "backend": "transformers", "sft_weight": 0.0})
    splits = resolve_hh(TOY, limit=40, test_limit=12).data
    kw = dict(kl_prompts=4, kl_samples=2, max_new_tokens=8, progress=False, loop="scratch")
    teacher = run_sweep(base, [{"beta": 0.5}], splits, cache_dir=tmp_path / "teacher", reward_fn=toy_reward, **kw)
    pack = pack_run_ahead(tmp_path / "pack", sweep_dir=tmp_path / "teacher")
    fetch_sweep(pack, tmp_path / "attendee")
    capsys.readouterr()
    got = run_sweep(base, [{"beta": 0.5}], splits, cache_dir=tmp_path / "attendee", reward_fn=None, **kw)
    out = capsys.readouterr().out
    assert "1 run(s) differ from the run-ahead's only in what scores their samples (measure.reward None here, " \
           "'toy_reward' there" in out
    row, want = got["rows"][0], teacher["rows"][0]
    assert row["cached"] is True and row["train_seconds"] == want["train_seconds"], "read, not retrained"
    assert row["reward"] == want["reward"] and "settings" not in row
    changed = run_sweep(base.replace(learning_rate=3e-4), [{"beta": 0.5}], splits, cache_dir=tmp_path / "attendee",
                        reward_fn=toy_reward, **kw)
    out = capsys.readouterr().out
    assert changed["rows"][0]["cached"] is False
    assert "NOTE: 0 of 1 runs are in the run-ahead from" in out and "recipe.learning_rate 0.0003 here" in out
