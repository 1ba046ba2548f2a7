"""DPO from scratch: what TRL's ``DPOTrainer`` does inside, in a few lines on top of ``helpers``.

One step: tokenize each pair exactly as TRL does (``helpers.data.tokenize_pair``), stack the chosen rows and then
the rejected rows into one right-padded batch ``(2B, T)`` with the prompt masked out of the labels, run the policy
(LoRA on) and the reference (the same model with adapters off, no gradient), sum the completion log-probs
(``helpers.logprobs.sequence_logps``), apply ``helpers.losses.dpo_loss``, take an optimiser step.
``trl_loss_on_batch`` asks TRL's own ``DPOTrainer.compute_loss`` for the loss of the same pairs, so the two can be
compared number for number. No ML library is imported at module import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["collate_pairs", "pair_batch_logps", "scratch_dpo_loss", "train_dpo_from_scratch", "trl_loss_on_batch",
           "perturb_lora"]


def collate_pairs(rows: list[dict], tokenizer, *, max_length: int | None = None) -> dict[str, Any]:
    """Conversational pairs -> ``{"input_ids", "attention_mask", "labels"}``, each ``(2B, T)`` int64.

    Rows ``0..B-1`` are prompt+chosen, rows ``B..2B-1`` prompt+rejected (TRL's concatenated layout); labels are
    -100 on prompt and padding tokens.
    """
    from helpers.data import tokenize_pair
    from helpers.logprobs import pad_and_mask

    if not rows:
        raise ValueError("rows must hold at least one preference pair, got an empty list")
    toks = [tokenize_pair(ex, tokenizer) for ex in rows]
    seqs = [t["prompt_ids"] + t["chosen_ids"] for t in toks] + [t["prompt_ids"] + t["rejected_ids"] for t in toks]
    n_prompt = [len(t["prompt_ids"]) for t in toks] * 2
    input_ids, attention_mask, labels = pad_and_mask(seqs, n_prompt, tokenizer.pad_token_id, max_length=max_length)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pair_batch_logps(model, batch: dict[str, Any], *, reference: bool = False):
    """Summed completion log-probs ``(chosen (B,), rejected (B,))`` of a ``collate_pairs`` batch.

    ``reference=True``: the LoRA model with its adapters disabled, without gradient (DPOTrainer's reference).
    """
    import torch

    from helpers.evaluation import adapters_off
    from helpers.logprobs import sequence_logps

    device = next(model.parameters()).device
    grad = torch.no_grad() if reference else torch.enable_grad()
    with grad, adapters_off(model, reference):
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits  # (2B, T, V)
        logps = sequence_logps(logits, batch["labels"].to(device))  # (2B,)
    return logps.chunk(2)


def scratch_dpo_loss(model, batch: dict[str, Any], *, beta: float = 0.1, **loss_kwargs):
    """``helpers.losses.DPOLossOutput`` of the policy against its adapters-off reference on one batch."""
    from helpers.losses import dpo_loss

    if not hasattr(model, "disable_adapter"):
        raise ValueError("model must be a LoRA (peft) model: its reference is the same model with adapters off "
                         "(load it with helpers.models.load_model(..., lora=LoraSettings()))")
    pc, pr = pair_batch_logps(model, batch)
    rc, rr = pair_batch_logps(model, batch, reference=True)
    return dpo_loss(pc, pr, rc, rr, beta=beta, **loss_kwargs)


def train_dpo_from_scratch(
    model,
    tokenizer,
    rows: list[dict],
    *,
    beta: float = 0.1,
    steps: int = 30,
    batch_size: int = 8,
    learning_rate: float = 5e-4,
    seed: int = 0,
    max_length: int | None = None,
    log_every: int = 5,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Minimise the DPO loss on random mini-batches of ``rows`` with AdamW on the trainable (LoRA) parameters.

    Returns one record per step: ``{"step", "loss", "accuracy", "margin"}`` (batch means; accuracy = share of
    pairs with chosen reward > rejected reward, as TRL logs it). Prints every ``log_every`` steps.
    """
    import torch

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(rows):
        raise ValueError(f"batch_size must be an int in [1, len(rows)={len(rows)}], got {batch_size!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if not hasattr(model, "disable_adapter"):
        raise ValueError("model must be a LoRA (peft) model: its reference is the same model with adapters off "
                         "(load it with helpers.models.load_model(..., lora=LoraSettings()))")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    history = []
    for step in range(1, steps + 1):
        idx = torch.randperm(len(rows), generator=gen)[:batch_size].tolist()
        batch = collate_pairs([rows[i] for i in idx], tokenizer, max_length=max_length)
        out = scratch_dpo_loss(model, batch, beta=beta)
        loss = out.losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rec = {"step": step, "loss": loss.item(),
               "accuracy": (out.chosen_rewards > out.rejected_rewards).float().mean().item(),
               "margin": (out.chosen_rewards - out.rejected_rewards).mean().item()}
        history.append(rec)
        if progress and (step % log_every == 0 or step == 1):
            print(f"step {step:3d}  loss {rec['loss']:.4f}  accuracy {rec['accuracy']:.2f}  "
                  f"margin {rec['margin']:+.3f}")
    return history


def trl_loss_on_batch(model, tokenizer, rows: list[dict], *, ref_model=None, beta: float = 0.1,
                      output_dir: str | Path, max_length: int | None = None, label_smoothing: float = 0.0) -> float:
    """TRL ``DPOTrainer.compute_loss`` on ``rows`` as one batch (TRL's own tokenization and collator), no grad.

    Mind TRL 1.14's reference for a LoRA model: given a ``PeftModel`` and no ``ref_model``, ``DPOTrainer`` copies
    the model's *current* adapter into a frozen "ref" adapter and uses that as the reference. For a fresh adapter
    (B = 0) that is the base model, as in ``scratch_dpo_loss``; for an adapter that has already been trained it is
    the trained policy itself (loss ln 2). To compare against the base model after training, pass the base model
    as ``ref_model``. TRL's default ``max_length`` (1024) applies when ``max_length`` is None.
    """
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from helpers.infra.runtime import detect, precision_flags

    rt = detect(check_hub=False)
    kw: dict[str, Any] = dict(output_dir=str(output_dir), beta=beta, per_device_train_batch_size=len(rows),
                              label_smoothing=label_smoothing,
                              report_to="none", save_strategy="no", **precision_flags(rt))
    if rt.device == "cpu":
        kw["use_cpu"] = True
    if max_length is not None:
        kw["max_length"] = max_length
    from helpers.infra.quiet import progress_bars_off

    with progress_bars_off():  # TRL's tokenizing bars for a handful of rows
        trainer = DPOTrainer(model=model, ref_model=ref_model, args=DPOConfig(**kw),
                             train_dataset=Dataset.from_list(list(rows)), processing_class=tokenizer)
    ds = trainer.train_dataset
    batch = trainer.data_collator([ds[i] for i in range(len(ds))])
    batch = {k: v.to(trainer.args.device) if hasattr(v, "to") else v for k, v in batch.items()}
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


def perturb_lora(model, *, scale: float = 0.05, seed: int = 0) -> int:
    """Add ``scale`` * N(0, 1) noise (seeded) to every LoRA B matrix: a stand-in for a trained adapter, so that the
    policy differs from its reference (a fresh adapter has B = 0: policy == reference, every loss is ln 2).
    Returns the number of matrices changed; raises ``ValueError`` when the model has no LoRA adapter."""
    import torch

    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    gen = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(scale * torch.randn(p.shape, generator=gen).to(p))
                n += 1
    if not n:
        raise ValueError("model has no LoRA adapter (load it with helpers.models.load_model(..., lora=LoraSettings()))")
    return n
