"""DPO from scratch: what TRL's ``DPOTrainer`` does inside, in a few lines on top of ``helpers``.

One step: tokenize each pair exactly as TRL does (``helpers.data.tokenize_pair``), stack the chosen rows and then
the rejected rows into one right-padded batch ``(2B, T)`` with the prompt masked out of the labels, run the policy
(LoRA on), sum the completion log-probs (``helpers.logprobs.sequence_logps``), apply ``helpers.losses.dpo_loss``
against the reference's log-probs (the same model with adapters off, no gradient), take the optimiser step that
``transformers.Trainer`` takes (``trl_optimizer``, ``dpo_update``: AdamW, gradient clipping, the lr schedule).
``trl_loss_on_batch`` asks TRL's own ``DPOTrainer.compute_loss`` for the loss of the same pairs, so the two can be
compared number for number; ``helpers.sweep.replay_trl_steps`` replays TRL's first training steps through
``dpo_update``. Notebook 04's offline sweep trains with this loop: no Trainer set-up per run, and the reference
computed once instead of every step. No ML library is imported at module import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["collate_pairs", "collate_tokenized", "pair_batch_logps", "scratch_dpo_loss", "trl_optimizer", "dpo_update",
           "prepare_pairs", "train_dpo_from_scratch", "trl_loss_on_batch", "perturb_lora"]


def collate_pairs(rows: list[dict], tokenizer, *, max_length: int | None = None) -> dict[str, Any]:
    """Conversational pairs -> ``{"input_ids", "attention_mask", "labels"}``, each ``(2B, T)`` int64.

    Rows ``0..B-1`` are prompt+chosen, rows ``B..2B-1`` prompt+rejected (TRL's concatenated layout); labels are
    -100 on prompt and padding tokens.
    """
    from helpers.data import tokenize_pair

    if not rows:
        raise ValueError("rows must hold at least one preference pair, got an empty list")
    return collate_tokenized([tokenize_pair(ex, tokenizer) for ex in rows], tokenizer.pad_token_id,
                             max_length=max_length)


def collate_tokenized(toks: list[dict], pad_token_id: int, *, max_length: int | None = None) -> dict[str, Any]:
    """``collate_pairs`` of pairs already tokenized (``helpers.data.tokenize_pair``: prompt/chosen/rejected ids)."""
    from helpers.logprobs import pad_and_mask

    seqs = [t["prompt_ids"] + t["chosen_ids"] for t in toks] + [t["prompt_ids"] + t["rejected_ids"] for t in toks]
    n_prompt = [len(t["prompt_ids"]) for t in toks] * 2
    input_ids, attention_mask, labels = pad_and_mask(seqs, n_prompt, pad_token_id, max_length=max_length)
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


def trl_optimizer(params, *, learning_rate: float, steps: int, lr_scheduler: str = "constant", warmup_steps: int = 0,
                  weight_decay: float = 0.0):
    """The optimiser and schedule that transformers' ``Trainer`` builds by default (5.17: ``optim="adamw_torch_fused"``,
    betas (0.9, 0.999), eps 1e-8, ``weight_decay`` 0; ``get_scheduler(lr_scheduler, warmup_steps, steps)``)."""
    import torch
    from transformers import get_scheduler

    opt = torch.optim.AdamW(params, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay,
                            fused=True)
    return opt, get_scheduler(lr_scheduler, opt, num_warmup_steps=warmup_steps, num_training_steps=steps)


def dpo_update(model, opt, sched, batch: dict[str, Any], ref_chosen, ref_rejected, *, beta: float,
               loss_type: str = "sigmoid", max_grad_norm: float | None = 1.0) -> dict[str, float]:
    """One optimiser step on a ``collate_pairs`` batch, in ``Trainer``'s order: loss, backward, clip the gradient
    norm to ``max_grad_norm``, step, schedule. ``ref_chosen``, ``ref_rejected``: the reference's ``(B,)`` log-probs."""
    import torch

    from helpers.losses import dpo_loss

    pc, pr = pair_batch_logps(model, batch)  # (B,), (B,) with gradient
    out = dpo_loss(pc, pr, ref_chosen.to(pc), ref_rejected.to(pr), beta=beta, loss_type=loss_type)
    loss = out.losses.mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], max_grad_norm)
    lr = opt.param_groups[0]["lr"]
    opt.step()
    sched.step()
    return {"loss": loss.item(), "lr": lr,
            "accuracy": (out.chosen_rewards > out.rejected_rewards).float().mean().item(),
            "margin": (out.chosen_rewards - out.rejected_rewards).mean().item()}


def prepare_pairs(model, tokenizer, rows: list[dict], *, max_length: int | None = None) -> dict[str, Any]:
    """What every step reuses: each pair tokenized (``toks``) and the reference's summed log-probs
    (``ref_chosen``, ``ref_rejected``: ``(N,)`` fp32 tensors; ``model`` with its adapters off, no gradient)."""
    import torch

    from helpers.data import tokenize_pair
    from helpers.evaluation import pair_logps

    toks = [tokenize_pair(ex, tokenizer) for ex in rows]
    ref = pair_logps(model, tokenizer, rows, reference=True, max_length=max_length, batch_size=64, tokenized=toks)
    return {"toks": toks,
            "ref_chosen": torch.as_tensor(ref["chosen"], dtype=torch.float32),
            "ref_rejected": torch.as_tensor(ref["rejected"], dtype=torch.float32)}


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
    loss_type: str = "sigmoid",
    lr_scheduler: str = "constant",
    warmup_steps: int = 0,
    max_grad_norm: float | None = 1.0,
    on_step=None,
    prepared: dict[str, Any] | None = None,
    log_every: int = 5,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Minimise the DPO loss on mini-batches of ``rows`` with the optimiser ``Trainer`` builds (``trl_optimizer``).

    The reference never changes, so its log-probs are computed once, before the first step (adapters off, no
    gradient), as TRL's ``precompute_ref_log_probs=True`` does. Batches: consecutive slices of a seeded random
    permutation of ``rows``, a new permutation each epoch. ``on_step(step)`` runs after every step (measurements
    along training). ``prepared``: ``prepare_pairs(model, tokenizer, rows, ...)`` computed once and shared by runs
    from the same reference (a sweep). Returns one record per step: ``{"step", "loss", "lr", "accuracy", "margin"}``
    (batch means; accuracy = share of pairs with chosen reward > rejected reward, as TRL logs it). Prints every
    ``log_every`` steps.
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
    prep = prepared or prepare_pairs(model, tokenizer, rows, max_length=max_length)
    if len(prep["toks"]) != len(rows):
        raise ValueError(f"prepared holds {len(prep['toks'])} pairs but rows {len(rows)}: prepare the same rows")
    toks, ref_c, ref_r = prep["toks"], prep["ref_chosen"], prep["ref_rejected"]
    opt, sched = trl_optimizer([p for p in model.parameters() if p.requires_grad], learning_rate=learning_rate,
                               steps=steps, lr_scheduler=lr_scheduler, warmup_steps=warmup_steps)
    gen, order = torch.Generator().manual_seed(seed), []
    model.train()
    history = []
    for step in range(1, steps + 1):
        while len(order) < batch_size:  # next epoch: a new permutation
            order += torch.randperm(len(rows), generator=gen).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        batch = collate_tokenized([toks[i] for i in idx], tokenizer.pad_token_id, max_length=max_length)
        rec = {"step": step, **dpo_update(model, opt, sched, batch, ref_c[idx], ref_r[idx], beta=beta,
                                          loss_type=loss_type, max_grad_norm=max_grad_norm)}
        history.append(rec)
        if on_step is not None:
            on_step(step)
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
