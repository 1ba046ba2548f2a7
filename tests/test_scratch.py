"""Notebook 01's from-scratch DPO loop (helpers.scratch): it learns, and TRL computes the same loss on its batch."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.models import LoraSettings, load_model
from helpers.scratch import collate_pairs, scratch_dpo_loss, train_dpo_from_scratch, trl_loss_on_batch
from helpers.worlds.splits import TOY, resolve_hh


@pytest.fixture(scope="module")
def toy():
    return resolve_hh(TOY).data


@pytest.fixture(scope="module")
def trained(toy_sft_dir, toy):
    model, tok = load_model(toy_sft_dir, use_unsloth=False, lora=LoraSettings(r=8, alpha=16), seed=0)
    hist = train_dpo_from_scratch(model, tok, list(toy["train"]), steps=30, batch_size=8, learning_rate=5e-4,
                                  progress=False)
    return model, tok, hist


def test_first_step_loss_is_ln2_and_the_loop_learns(trained, toy):
    model, tok, hist = trained
    assert abs(hist[0]["loss"] - math.log(2)) < 1e-5  # fresh LoRA (B = 0): policy == reference
    assert sum(h["loss"] for h in hist[-5:]) / 5 < 0.6
    model.eval()
    with torch.no_grad():
        out = scratch_dpo_loss(model, collate_pairs(list(toy["test"])[:64], tok), beta=0.1)
    assert (out.chosen_rewards > out.rejected_rewards).float().mean().item() >= 0.9  # held-out pairs


def test_trl_computes_the_same_loss_on_the_same_batch(trained, toy, toy_sft_dir, tmp_path):
    model, tok, _ = trained
    rows = list(toy["test"])[:12]
    model.eval()
    with torch.no_grad():
        ours = scratch_dpo_loss(model, collate_pairs(rows, tok), beta=0.1).losses.mean().item()
    ref, _ = load_model(toy_sft_dir, use_unsloth=False, lora=None)
    theirs = trl_loss_on_batch(model, tok, rows, ref_model=ref, beta=0.1, output_dir=tmp_path / "a")
    assert ours < 0.6  # trained: not the trivial ln 2
    assert abs(ours - theirs) < 1e-5, (ours, theirs)
    # TRL 1.14 without ref_model copies the *current* adapter as the reference: policy == reference, loss ln 2
    same = trl_loss_on_batch(model, tok, rows, beta=0.1, output_dir=tmp_path / "b")
    assert abs(same - math.log(2)) < 1e-5


def test_bad_arguments_raise(toy_sft_dir, toy):
    model, tok = load_model(toy_sft_dir, use_unsloth=False, lora=None)
    rows = list(toy["train"])[:4]
    with pytest.raises(ValueError, match="batch_size"):
        train_dpo_from_scratch(model, tok, rows, batch_size=5)
    with pytest.raises(ValueError, match="steps"):
        train_dpo_from_scratch(model, tok, rows, steps=0, batch_size=2)
    with pytest.raises(ValueError, match="LoRA"):
        train_dpo_from_scratch(model, tok, rows, steps=1, batch_size=2)
    with pytest.raises(ValueError, match="rows"):
        collate_pairs([], tok)


def test_the_loop_calls_on_step_uses_the_schedule_and_checks_prepared(toy_sft_dir, toy):
    from helpers.scratch import prepare_pairs

    model, tok = load_model(toy_sft_dir, use_unsloth=False, lora=LoraSettings(r=4, alpha=8), seed=0)
    rows = list(toy["train"])[:12]
    seen = []
    hist = train_dpo_from_scratch(model, tok, rows, steps=6, batch_size=4, learning_rate=1e-3, warmup_steps=2,
                                  lr_scheduler="linear", on_step=seen.append, progress=False)
    assert seen == [1, 2, 3, 4, 5, 6] and [h["step"] for h in hist] == seen
    lrs = [h["lr"] for h in hist]
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(1e-3) and lrs[-1] < lrs[2]  # warm-up, then linear decay
    prep = prepare_pairs(model, tok, rows[:5])
    assert prep["ref_chosen"].shape == (5,) and len(prep["toks"]) == 5
    with pytest.raises(ValueError, match="prepared"):
        train_dpo_from_scratch(model, tok, rows, steps=1, batch_size=2, prepared=prep, progress=False)
