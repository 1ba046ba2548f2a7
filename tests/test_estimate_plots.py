"""helpers.estimate (T4 arithmetic checked against real parameter counts) and helpers.plots."""

from __future__ import annotations

import pytest
import torch

from helpers.estimate import estimate_lora_dpo, llama_parameter_count, lora_parameter_count
from helpers.plots import curves_from_log_history, plot_training_curves
from helpers.tinymodel import SMOLLM2_135M


def test_parameter_counts_equal_the_instantiated_models():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SMOLLM2_135M)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    assert llama_parameter_count(SMOLLM2_135M) == sum(p.numel() for p in model.parameters())  # ~134.5M
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=list(targets)))
    trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    assert lora_parameter_count(cfg, 16, targets) == trainable


def test_estimate_grows_with_the_batch_and_flags_what_does_not_fit():
    n, t = llama_parameter_count(SMOLLM2_135M), lora_parameter_count(SMOLLM2_135M, 16, ("q_proj", "v_proj"))
    small = estimate_lora_dpo(SMOLLM2_135M, n, t, batch_size=2, grad_accum=1, seq_len=512, steps=10)
    big = estimate_lora_dpo(SMOLLM2_135M, n, t, batch_size=64, grad_accum=1, seq_len=1024, steps=10)
    assert small.fits and not big.fits and big.memory_gib > small.memory_gib
    assert big.seconds_per_step > small.seconds_per_step
    assert abs(sum(small.parts_gib.values()) - small.memory_gib) < 0.01 and small.assumptions
    with pytest.raises(ValueError, match="batch_size"):
        estimate_lora_dpo(SMOLLM2_135M, n, t, batch_size=0, grad_accum=1, seq_len=8, steps=1)
    with pytest.raises(ValueError, match="targets"):
        lora_parameter_count(SMOLLM2_135M, 8, ("qkv",))


def test_curves_separate_train_and_eval(tmp_path):
    log = [{"step": 10, "loss": 0.6, "rewards/accuracies": 0.7, "logps/chosen": -5.0, "logps/rejected": -6.0},
           {"step": 10, "eval_loss": 0.65, "eval_rewards/margins": 0.1},
           {"step": 20, "loss": 0.5, "rewards/accuracies": 0.8},
           {"step": 20, "train_runtime": 3.0}]
    c = curves_from_log_history(log)
    assert c["loss"] == ([10, 20], [0.6, 0.5]) and c["eval_loss"] == ([10], [0.65])
    assert c["eval_rewards/margins"] == ([10], [0.1]) and "train_runtime" not in c
    plot_training_curves(log, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="log_history"):
        plot_training_curves([{"step": 1, "train_runtime": 1.0}])
