"""TRL 1.14.2's DPOTrainer as an oracle for helpers.sequence_logps and helpers.dpo_loss on a real forward pass.

A tiny Llama (random init, saved and reloaded with from_pretrained) and a locally trained tokenizer; the batch is
built by TRL's own dataset preparation and collator. One training step with logging must log exactly the
log-probs and loss that the helpers compute on that batch before the step.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from helpers.logprobs import sequence_logps
from helpers.losses import dpo_loss
from tests.conftest import conversational_pairs

TOL = 2e-5


def _config(tmp_path, **kw) -> DPOConfig:
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=len(conversational_pairs()),  # the one step sees every pair: order-free means
        max_steps=1,
        logging_steps=1,
        learning_rate=1e-3,
        beta=0.1,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        seed=0,
        max_length=128,
    )
    base.update(kw)
    return DPOConfig(**base)


def _helpers_logps(model, batch, *, disable_adapter=False):
    """(chosen, rejected, chosen_len, rejected_len), each (B,), computed by helpers on TRL's collated batch."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    ctx = model.disable_adapter() if disable_adapter else torch.no_grad()
    with torch.no_grad(), ctx:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = sequence_logps(logits, labels)
    lengths = batch["completion_mask"].sum(-1).float()
    return (*logps.chunk(2), *lengths.chunk(2))


def _batch(trainer):
    ds = trainer.train_dataset
    return trainer.data_collator([ds[i] for i in range(len(ds))])


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_one_training_step_logs_what_helpers_compute(tmp_path, tiny_model_dir, tokenizer, mode):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    kw = {}
    if mode == "lora":
        kw["peft_config"] = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")
    else:
        kw["ref_model"] = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = DPOTrainer(
        model=model, args=_config(tmp_path), train_dataset=Dataset.from_list(conversational_pairs()),
        processing_class=tokenizer, **kw,
    )
    batch = _batch(trainer)
    pol = trainer.model
    pc, pr, _, _ = _helpers_logps(pol, batch)
    if mode == "lora":  # reference = the same model with adapters off
        rc, rr, _, _ = _helpers_logps(pol, batch, disable_adapter=True)
    else:
        rc, rr, _, _ = _helpers_logps(kw["ref_model"], batch)
    ours = dpo_loss(pc, pr, rc, rr, beta=0.1)

    trainer.train()
    log = trainer.state.log_history[0]
    assert abs(log["logps/chosen"] - pc.mean().item()) < TOL
    assert abs(log["logps/rejected"] - pr.mean().item()) < TOL
    assert abs(log["loss"] - ours.losses.mean().item()) < TOL
    assert abs(log["rewards/chosen"] - ours.chosen_rewards.mean().item()) < TOL
    assert abs(log["rewards/margins"] - (ours.chosen_rewards - ours.rejected_rewards).mean().item()) < TOL
    # and the step changed the policy: TRL trained on this batch
    pc2, _, _, _ = _helpers_logps(trainer.model, batch)
    assert (pc2 - pc).abs().max().item() > 1e-4


@pytest.fixture(scope="module")
def full_trainer(tmp_path_factory, tiny_model_dir, tokenizer):
    """A trainer whose policy differs from its reference (perturbed weights), so every loss term is non-trivial."""
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = DPOTrainer(
        model=model, ref_model=ref, args=_config(tmp_path_factory.mktemp("oracle"), beta=0.3),
        train_dataset=Dataset.from_list(conversational_pairs()), processing_class=tokenizer,
    )
    batch = _batch(trainer)
    pc, pr, lc, lr = _helpers_logps(model, batch)
    rc, rr, _, _ = _helpers_logps(ref, batch)
    return trainer, batch, (pc, pr, rc, rr, lc, lr)


SHARED = [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.0), ("robust", 0.2), ("bco_pair", 0.0),
          ("nca_pair", 0.0), ("sppo_hard", 0.0), ("apo_zero", 0.0), ("sigmoid_norm", 0.0)]


@pytest.mark.parametrize("loss_type,ls", SHARED)
def test_loss_equals_trl_for_each_shared_loss_type(full_trainer, loss_type, ls):
    trainer, batch, (pc, pr, rc, rr, lc, lr) = full_trainer
    trainer.loss_types, trainer.loss_weights, trainer.label_smoothing = [loss_type], [1.0], ls
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()
    ours = dpo_loss(pc, pr, rc, rr, beta=0.3, loss_type=loss_type, label_smoothing=ls,
                    chosen_lengths=lc, rejected_lengths=lr).losses.mean().item()
    assert abs(trl_loss - ours) < TOL * max(1.0, abs(ours)), (trl_loss, ours)
    # the comparison is not vacuous: policy and reference differ on this batch
    assert (pc - rc).abs().max().item() > 0.1


def test_trl_sigmoid_ignores_label_smoothing_while_helpers_applies_cdpo(full_trainer):
    """What notebook 01 says: in TRL 1.14.2 `loss_type="sigmoid"` reads no label_smoothing (robust does)."""
    trainer, batch, (pc, pr, rc, rr, lc, lr) = full_trainer
    losses = {}
    for ls in (0.0, 0.1):
        trainer.loss_types, trainer.loss_weights, trainer.label_smoothing = ["sigmoid"], [1.0], ls
        with torch.no_grad():
            losses[ls] = trainer.compute_loss(trainer.model, batch).item()
    assert losses[0.0] == losses[0.1]
    cdpo = dpo_loss(pc, pr, rc, rr, beta=0.3, label_smoothing=0.1).losses.mean().item()
    assert abs(cdpo - losses[0.0]) > 1e-3  # helpers' cDPO differs, so the equality above is not vacuous
