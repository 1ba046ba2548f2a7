"""The DPO recipe of notebook 03: a LoRA policy trained with TRL's ``DPOTrainer``, measured on held-out pairs.

Notebook 03 calls these functions cell by cell; ``run_recipe`` chains them for the command line:

    python -m helpers.train --model toy --data toy --output-dir runs/train            # offline default, CPU
    python -m helpers.train --model HuggingFaceTB/SmolLM2-135M-Instruct --data runs/notebooks/02_hh
    accelerate launch --num_processes 2 -m helpers.train --backend transformers ...  # several GPUs (DDP)

Every ``DPORecipe`` field is a flag (``--beta``, ``--learning-rate``, ``--max-steps``, ``--lora-r`` ...).
Checkpoints go to ``output_dir/checkpoint-*``; with ``resume`` (the default) a rerun continues from the last one.
The adapter, tokenizer, ``recipe.json`` and ``metrics.json`` go to ``output_dir/adapter`` and ``output_dir``.
This module imports no ML library at import time, so that ``unsloth`` can be imported first when it is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.checks import number
from helpers.losses import LOSS_TYPES
from helpers.models import MODEL_ID, LoraSettings
from helpers.toy_model import TOY_DPO

__all__ = ["DPORecipe", "OFFLINE", "TOY", "ONPOLICY", "pilot_pick", "resolve_model", "load_lora_model", "load_data",
           "check_lengths",
           "data_provenance", "dpo_config", "make_trainer", "prepare_output_dir", "last_checkpoint",
           "checkpoint_problem", "train_with_resume", "reference_report", "after_report", "save_adapter",
           "write_metrics", "run_recipe", "expected_minutes", "expected_time", "trained_adapter", "LR_SCHEDULERS",
           "main"]

TOY = "toy"  # model="toy": the toy world's tiny SFT model; data="toy": the toy world's splits
ONPOLICY = "smollm2-onpolicy"  # data=ONPOLICY: SmolLM2's own answers to the toy world's questions (helpers.onpolicy)
# transformers 5.17's SchedulerType values (tests/test_reliability.py keeps them equal): checked before anything loads
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")


@dataclass(frozen=True)
class DPORecipe:
    """Every knob of a DPO run. Defaults: SmolLM2-135M-Instruct on HH-RLHF on a Colab T4 (online)."""

    model: str = MODEL_ID  # hub id, local model directory, or "toy"
    data: str = "runs/notebooks/02_hh"  # notebook 02's saved splits (rebuilt from data_source if absent), or "toy"
    data_source: str = "Anthropic/hh-rlhf"
    output_dir: str = "runs/notebooks/03_dpo"
    beta: float = 0.1
    loss_type: str = "sigmoid"
    sft_weight: float = 0.5  # > 0: add TRL's "sft" loss on the chosen answer with this weight (the old rpo_alpha);
    #                          0.5 online: chosen by pilot_pick from benchmarks/results/online_recipe_pilot.json
    learning_rate: float = 5e-5
    max_steps: int = 250  # -1: train for `epochs` instead
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 2
    max_length: int = 512
    max_prompt_length: int | None = 384  # pairs with longer prompts are dropped before training; None keeps all
    warmup_steps: int = 10
    lr_scheduler: str = "cosine"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: tuple[str, ...] = LoraSettings().target_modules
    load_in_4bit: bool = False
    backend: str = "auto"  # "auto" (Unsloth when installed), "unsloth", "transformers"
    eval_steps: int = 50
    eval_pairs: int = 300  # held-out pairs evaluated during training (the first ones of the test split)
    save_steps: int = 50
    logging_steps: int = 10
    seed: int = 0
    resume: bool = True
    merge: bool = False  # also save a merged (adapter folded in) copy of the model

    def __post_init__(self):
        def need(ok: bool, name: str, allowed: str):
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")

        def num(name: str, **kw):  # numpy/torch scalars accepted; stored as plain Python numbers
            object.__setattr__(self, name, number(getattr(self, name), name, **kw))

        num("beta", low=0, low_open=True, allowed="a finite number > 0 (the KL anchor's strength)")
        num("learning_rate", low=0, high=1, low_open=True, high_open=True, allowed="a finite number in (0, 1)")
        need(self.loss_type in LOSS_TYPES, "loss_type", f"one of {list(LOSS_TYPES)}")
        num("sft_weight", low=0, allowed="a finite number >= 0 (0: no SFT term)")
        num("max_steps", integer=True, low=-1, allowed="an int >= 1, or -1 to train for `epochs`")
        need(self.max_steps != 0, "max_steps", "an int >= 1, or -1 to train for `epochs`")
        num("epochs", low=0, low_open=True)
        for name in ("batch_size", "grad_accum", "eval_steps", "eval_pairs", "save_steps", "logging_steps", "lora_r"):
            num(name, integer=True, low=1)
        num("max_length", integer=True, low=16)
        if self.max_prompt_length is not None:
            num("max_prompt_length", integer=True, low=1, high=self.max_length, high_open=True,
                allowed=f"None or an int in [1, max_length={self.max_length})")
        num("warmup_steps", integer=True, low=0)
        need(self.lr_scheduler in LR_SCHEDULERS, "lr_scheduler", f"one of {list(LR_SCHEDULERS)}")
        num("lora_alpha", low=0, low_open=True)
        need(bool(self.lora_targets) and all(isinstance(t, str) and t for t in self.lora_targets), "lora_targets",
             "a non-empty list of module names")
        need(self.backend in ("auto", "unsloth", "transformers"), "backend", "'auto', 'unsloth' or 'transformers'")
        num("seed", integer=True, low=0, high=2**32 - 1)
        need(isinstance(self.model, str) and bool(self.model.strip()), "model", "a hub id, a model directory or 'toy'")
        need(isinstance(self.data, str) and bool(self.data.strip()), "data",
             "notebook 02's saved splits folder or 'toy'")
        need(isinstance(self.output_dir, (str, Path)) and bool(str(self.output_dir).strip()), "output_dir",
             "a non-empty path (a folder for checkpoints, adapter and metrics)")
        for name in ("resume", "merge", "load_in_4bit"):
            need(isinstance(getattr(self, name), bool), name, "True or False")

    def replace(self, **changes) -> DPORecipe:
        return dataclasses.replace(self, **changes)

    def lora(self) -> LoraSettings:
        return LoraSettings(r=self.lora_r, alpha=self.lora_alpha, target_modules=tuple(self.lora_targets))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# The offline default (no hub: CI, laptops): the toy world's tiny SFT model and data, TOY_DPO's measured settings.
# sft_weight=1: DPO plus the chosen answers' NLL (TRL's ["sigmoid", "sft"]). Measured on 200 held-out prompts
# (benchmarks/bench_offline_recipe.py): plain DPO left 21.5% of the policy's answers malformed, with it 0.5%.
OFFLINE: dict[str, Any] = dict(
    model=TOY, data=TOY, sft_weight=1.0, learning_rate=TOY_DPO["learning_rate"], max_steps=TOY_DPO["max_steps"],
    batch_size=TOY_DPO["per_device_train_batch_size"], grad_accum=1, max_length=TOY_DPO["max_length"],
    max_prompt_length=TOY_DPO["max_length"] - 64,
    warmup_steps=TOY_DPO["warmup_steps"], eval_steps=25, save_steps=50, logging_steps=10,
)

# Fields whose change makes old checkpoints in output_dir belong to a different run.
_RUN_IDENTITY = ("model", "data", "data_source", "beta", "loss_type", "sft_weight", "learning_rate", "batch_size",
                 "grad_accum", "max_length", "max_prompt_length", "warmup_steps", "lr_scheduler", "lora_r",
                 "lora_alpha", "lora_targets", "load_in_4bit", "seed")


def resolve_model(recipe: DPORecipe) -> str:
    """The model to load: the cached toy SFT model's directory for ``"toy"``, else ``recipe.model`` once
    ``helpers.models.resolve_source`` has found it (local directory, HF cache, hub, or the packaged SmolLM2).

    Raises ``ValueError`` for a path that does not exist (before anything is loaded) and ``HubUnavailableError``
    for a hub id that is neither cached, reachable nor packaged.
    """
    from helpers.models import resolve_source

    if recipe.model == TOY:
        from helpers.toy_model import build_toy_sft_model

        return str(build_toy_sft_model())
    resolve_source(recipe.model)
    return recipe.model


def load_lora_model(recipe: DPORecipe, source: str):
    """``helpers.models.load_model`` with the recipe's backend, precision, length and LoRA settings."""
    from helpers.models import load_model

    use = {"auto": "auto", "unsloth": True, "transformers": False}[recipe.backend]
    return load_model(source, use_unsloth=use, load_in_4bit=recipe.load_in_4bit, max_seq_length=recipe.max_length,
                      lora=recipe.lora(), seed=recipe.seed, verbose=True)


# What a rebuild of notebook 02's splits reads when 02 has not run (a new Colab runtime): 02's own default limits,
# not the whole of helpful-base (~43.8k train / ~2.35k test rows).
SPLIT_LIMITS: dict[str, int] = {"limit": 5000, "test_limit": 500}


def load_data(recipe: DPORecipe) -> dict[str, Any]:
    """Train/test splits: notebook 02's output (rebuilt with 02's default limits, ``SPLIT_LIMITS``, if absent) or,
    for ``data="toy"``, the toy world itself (``data/toy_hh_*.jsonl``, parsed in a second; notebook 02's output
    is not involved)."""
    from helpers.data import TOY as TOY_SOURCE
    from helpers.data import load_or_build_splits, resolve_hh

    if recipe.data == TOY:
        return resolve_hh(TOY_SOURCE).data
    if recipe.data == ONPOLICY:
        from helpers.onpolicy import load_onpolicy

        return load_onpolicy()
    return load_or_build_splits(recipe.data, source=recipe.data_source, rebuild_with=SPLIT_LIMITS)


def data_provenance(recipe: DPORecipe) -> dict[str, Any]:
    """Where the training pairs came from: ``source`` actually used (``"toy"`` after a fallback) and the note
    saying how it was chosen (from the saved splits' ``report.json``). Recorded in ``metrics.json`` as ``data``."""
    if recipe.data == TOY:
        return {"source": TOY, "note": "offline default: the toy world's data/toy_hh_*.jsonl"}
    if recipe.data == ONPOLICY:
        return {"source": ONPOLICY, "note": "SmolLM2's own answers to the toy world's questions, ranked by a ground "
                "truth (helpers.onpolicy): data/smollm2_onpolicy_*.jsonl"}
    try:
        report = json.loads(Path(recipe.data, "report.json").read_text())
    except (OSError, ValueError):
        return {"source": None, "note": f"no readable report.json in {recipe.data}"}
    return {"source": report.get("source"), "note": report.get("note"), "asked_for": recipe.data_source}


def check_lengths(recipe: DPORecipe, tokenizer, splits: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """Drop pairs whose prompt exceeds ``max_prompt_length``, then check ``max_length`` against what is kept.

    TRL truncates prompt+completion to ``max_length`` keeping the start, so a prompt of ``max_length`` tokens or
    more would lose its whole answer (TRL then drops the pair silently): that raises ``ValueError``. Returns the
    kept splits and a report (pairs dropped per split, longest prompt and pair kept, pairs that will be truncated).
    """
    from helpers.data import tokenize_pair

    kept_splits, report = {}, {"dropped_long_prompt": {}, "longest_prompt": 0, "longest_pair": 0,
                               "truncated_pairs": 0}
    for split in ("train", "test"):
        keep = []
        for i, ex in enumerate(splits[split]):
            t = tokenize_pair(ex, tokenizer)
            n = len(t["prompt_ids"])
            if recipe.max_prompt_length is not None and n > recipe.max_prompt_length:
                continue
            keep.append(i)
            pair = n + max(len(t["chosen_ids"]), len(t["rejected_ids"]))
            report["longest_prompt"] = max(report["longest_prompt"], n)
            report["longest_pair"] = max(report["longest_pair"], pair)
            report["truncated_pairs"] += pair > recipe.max_length
        report["dropped_long_prompt"][split] = len(splits[split]) - len(keep)
        kept_splits[split] = splits[split] if len(keep) == len(splits[split]) else splits[split].select(keep)
        if not keep:
            raise ValueError(f"max_prompt_length={recipe.max_prompt_length} drops every {split} pair; raise it")
    if report["longest_prompt"] >= recipe.max_length:
        raise ValueError(f"max_length={recipe.max_length} is not larger than the longest prompt kept "
                         f"({report['longest_prompt']} tokens): that pair would keep no answer token. Raise "
                         f"max_length above {report['longest_prompt']}, or set max_prompt_length below max_length.")
    return kept_splits, report


def dpo_config(recipe: DPORecipe, **overrides):
    """The ``DPOConfig`` of ``recipe``: explicit learning rate, this device's precision, eval and checkpoints."""
    from trl import DPOConfig

    from helpers.runtime import detect, precision_flags

    rt = detect(check_hub=False)
    prec = precision_flags(rt)
    kw = dict(
        output_dir=str(recipe.output_dir), beta=recipe.beta,
        loss_type=[recipe.loss_type] + (["sft"] if recipe.sft_weight else []),
        loss_weights=[1.0, float(recipe.sft_weight)] if recipe.sft_weight else None,
        learning_rate=recipe.learning_rate, max_steps=recipe.max_steps, num_train_epochs=recipe.epochs,
        per_device_train_batch_size=recipe.batch_size, per_device_eval_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum, max_length=recipe.max_length,
        warmup_steps=recipe.warmup_steps, lr_scheduler_type=recipe.lr_scheduler,
        logging_steps=recipe.logging_steps, eval_strategy="steps", eval_steps=recipe.eval_steps,
        save_strategy="steps", save_steps=recipe.save_steps, save_total_limit=2,
        fp16=prec["fp16"], bf16=prec["bf16"], use_cpu=rt.device == "cpu", seed=recipe.seed,
        report_to="none",
    )
    kw.update(overrides)
    return DPOConfig(**kw)


def make_trainer(model, tokenizer, splits: dict[str, Any], recipe: DPORecipe, *, callbacks=None, **overrides):
    """``DPOTrainer`` on the LoRA ``model``; its reference is the model with the (fresh) adapter switched off."""
    from trl import DPOTrainer

    from helpers.quiet import progress_bars_off

    test = splits["test"]
    if test is not None and len(test) > recipe.eval_pairs:  # evaluating every eval_steps: a capped subset
        test = test.select(range(recipe.eval_pairs))
    with progress_bars_off():  # TRL's tokenizing/filtering bars: the training bar is the one that matters
        trainer = DPOTrainer(model=model, args=dpo_config(recipe, **overrides), train_dataset=splits["train"],
                             eval_dataset=test, processing_class=tokenizer, callbacks=callbacks)
    _drop_redundant_ref_adapter(trainer.model)
    if trainer.args.world_size == 1:  # under DDP every rank writes into the checkpoint (its RNG state): left as is
        _atomic_checkpoints(trainer)
    return trainer


STAGING = ".staging"  # inside output_dir: checkpoints are written here, then renamed into place


def _atomic_checkpoints(trainer) -> None:
    """Make ``trainer`` write every checkpoint under ``output_dir/.staging/`` and rename it to
    ``output_dir/checkpoint-N`` only once complete, so that a crash or a full disk mid-save never leaves a
    ``checkpoint-N`` that looks complete and is not. Old checkpoints are then rotated as the Trainer would."""
    import shutil

    from transformers.trainer_utils import rotate_checkpoints

    save, get_dir = trainer._save_checkpoint, trainer._get_output_dir

    def atomic(model, trial):
        run_dir = Path(get_dir(trial=trial))
        staging = run_dir / STAGING
        shutil.rmtree(staging, ignore_errors=True)  # leftovers of a save that died
        staging.mkdir(parents=True)
        trainer._get_output_dir = lambda trial=None: str(staging)
        try:
            save(model, trial)
        finally:
            trainer._get_output_dir = get_dir
        for ckpt in staging.glob("checkpoint-*"):
            final = run_dir / ckpt.name
            if final.exists():
                shutil.rmtree(final)
            ckpt.rename(final)
        shutil.rmtree(staging, ignore_errors=True)
        if trainer.args.should_save:
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=trainer.args.save_total_limit,
                               best_model_checkpoint=trainer.state.best_model_checkpoint, use_mtime=True)

    trainer._save_checkpoint = atomic


def _drop_redundant_ref_adapter(model) -> bool:
    """Remove the "ref" adapter TRL 1.14 adds to a ``PeftModel`` when the adapter is still fresh (LoRA B == 0).

    TRL copies the current adapter into a frozen "ref" adapter to serve as the reference. For a fresh adapter that
    copy equals the base model, so it is redundant, and it breaks resuming: checkpoints then hold the policy adapter
    at the top level and "ref" in a sub-folder, and transformers 5.17's ``_load_from_checkpoint`` reloads only the
    sub-folder adapters, so a resumed run silently restarts the policy from zero (tests/test_train.py). Without
    "ref", TRL's reference is the model with adapters disabled: the same numbers. Returns whether it was removed.
    """
    import torch

    cfg = getattr(model, "peft_config", {})
    if "ref" not in cfg:
        return False
    fresh = all(torch.count_nonzero(p).item() == 0 for n, p in model.named_parameters()
                if "lora_B" in n and ".default." in n)
    if fresh:
        model.delete_adapter("ref")
    else:
        print("NOTE: the model's adapter is already trained, so TRL's reference is that adapter (a frozen copy), "
              "not the base model.")
    return fresh


def prepare_output_dir(recipe: DPORecipe) -> Path:
    """Lock ``output_dir`` for this process, create it and record the recipe.

    Checkpoints of a *different* run (or of a run whose ``recipe.json`` cannot be read) are moved aside, not lost.
    Another live process writing into ``output_dir`` raises ``helpers.lock.OutputDirLocked`` before anything moves.
    """
    from helpers.lock import acquire

    out = Path(recipe.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file, not a directory")
    if _main_process():
        acquire(out)
    saved = out / "recipe.json"
    if saved.exists():
        try:
            old = json.loads(saved.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
            new, default = recipe.to_dict(), DPORecipe().to_dict()  # a missing field had its default value
            changed = [k for k in _RUN_IDENTITY if old.get(k, default[k]) != new[k]]
        except ValueError as e:  # which run it was is unknown: treat it as another run
            changed = [f"(unreadable recipe.json: {e})"]
        if changed and any(out.glob("checkpoint-*")):
            aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            out.rename(aside)
            print(f"NOTE: {out} held a run with different {', '.join(changed)}; moved it to {aside} and starting "
                  f"fresh (resume continues only the same run).")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
    return out


def checkpoint_problem(ckpt: str | Path) -> str | None:
    """Why ``ckpt`` cannot be resumed from (None: it can): a missing or unreadable ``trainer_state.json``, or
    model weights that are missing or not a readable safetensors file (e.g. truncated by a full disk)."""
    from safetensors import safe_open

    ckpt = Path(ckpt)
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        return f"trainer_state.json {'missing' if isinstance(e, FileNotFoundError) else 'unreadable'}"
    weights = [ckpt / n for n in ("adapter_model.safetensors", "model.safetensors") if (ckpt / n).exists()]
    if not weights:
        return "no adapter_model.safetensors / model.safetensors"
    for w in weights:
        try:
            with safe_open(str(w), framework="pt") as f:
                for k in f.keys():  # reads every tensor: a truncated file fails here
                    f.get_tensor(k)
        except Exception as e:  # SafetensorError, OSError: the file is not what it claims
            return f"{w.name} unreadable ({type(e).__name__}: {str(e)[:80]})"
    return None


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir``. Incomplete or unreadable ones are renamed to
    ``incomplete-checkpoint-N`` (kept, not deleted) with a note naming them, and the next older one is used."""
    import re

    out = Path(output_dir)
    if not out.is_dir():
        return None
    ckpts = sorted((p for p in out.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)),
                   key=lambda p: int(p.name.split("-")[1]), reverse=True)
    for ckpt in ckpts:
        why = checkpoint_problem(ckpt)
        if why is None:
            return str(ckpt)
        aside = ckpt.with_name(f"incomplete-{ckpt.name}")
        if aside.exists():
            aside = ckpt.with_name(f"incomplete-{ckpt.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        ckpt.rename(aside)
        print(f"NOTE: {ckpt} is incomplete ({why}); moved to {aside.name} and not resumed from")
    return None


def train_with_resume(trainer, recipe: DPORecipe):
    """``trainer.train()``, continuing from the last checkpoint when ``recipe.resume``; an interrupt saves one.

    On ``KeyboardInterrupt`` (the stop button) a checkpoint of the current step is written before re-raising, so
    a rerun with ``resume=True`` loses nothing. A kernel that dies (a Colab disconnect) keeps the last
    ``save_steps`` checkpoint.
    """
    ckpt = last_checkpoint(recipe.output_dir) if recipe.resume else None
    if ckpt:
        step = int(Path(ckpt).name.split("-")[1])
        if 0 < recipe.max_steps < step:
            raise ValueError(f"max_steps={recipe.max_steps} but {ckpt} is already at step {step}: the run would "
                             f"continue past max_steps. Use max_steps >= {step}, another output_dir, or resume=False.")
        if not Path(ckpt, "optimizer.pt").exists():
            print(f"NOTE: {ckpt} has no optimizer.pt: resuming with a fresh Adam state (and learning-rate "
                  f"schedule state if scheduler.pt is missing too), so the steps after {step} will differ from an "
                  f"uninterrupted run")
    print(f"resuming from {ckpt}" if ckpt else "starting from step 0" + ("" if recipe.resume else " (resume=False)"))
    try:
        return trainer.train(resume_from_checkpoint=ckpt)
    except KeyboardInterrupt:
        step = trainer.state.global_step
        if step > 0 and not Path(recipe.output_dir, f"checkpoint-{step}").exists():
            trainer._save_checkpoint(trainer.model, trial=None)  # the Trainer's own full checkpoint (model+optim)
        print(f"interrupted at step {step}; checkpoint saved in {recipe.output_dir}. Rerun to resume.")
        raise


def reference_report(model, tokenizer, test, *, max_length: int | None = None):
    """The reference policy's own view of held-out pairs, before any training.

    Returns ``(ref_logps, report)``: ``ref_logps`` from ``helpers.evaluation.pair_logps`` (adapters off), and
    the fraction of pairs the reference already prefers (summed and per-token log-probs) and mean log-probs.
    """
    import numpy as np

    from helpers.evaluation import pair_logps

    ref = pair_logps(model, tokenizer, test, reference=True, max_length=max_length)
    per_tok = {s: ref[s] / np.maximum(ref[f"{s}_tokens"], 1) for s in ("chosen", "rejected")}
    report = {
        "ref_prefers_chosen": float(np.mean(ref["chosen"] > ref["rejected"])),
        "ref_prefers_chosen_per_token": float(np.mean(per_tok["chosen"] > per_tok["rejected"])),
        "logps/chosen": float(ref["chosen"].mean()),
        "logps/rejected": float(ref["rejected"].mean()),
        "n": int(len(ref["chosen"])),
    }
    return ref, report


def after_report(model, tokenizer, test, ref: dict, *, beta: float, max_length: int | None = None) -> dict:
    """DPO's reward metrics on held-out pairs, plus where the margin came from.

    ``delta_logps/chosen`` and ``delta_logps/rejected`` are mean changes of log pi relative to the reference:
    a margin can come from raising chosen, lowering rejected, or lowering both (rejected faster).
    """
    from helpers.evaluation import pair_logps, reward_metrics

    pol = pair_logps(model, tokenizer, test, max_length=max_length)
    out = reward_metrics(pol, ref, beta)
    out["policy_prefers_chosen"] = float((pol["chosen"] > pol["rejected"]).mean())
    out["delta_logps/chosen"] = float((pol["chosen"] - ref["chosen"]).mean())
    out["delta_logps/rejected"] = float((pol["rejected"] - ref["rejected"]).mean())
    up, down = out["delta_logps/chosen"] > 0, out["delta_logps/rejected"] < 0
    out["margin_source"] = ("chosen up, rejected down" if up and down else "both up, chosen faster" if up
                            else "both down, rejected faster" if down else "neither: no margin")
    return out


def save_adapter(model, tokenizer, out_dir: str | Path, *, merge: bool = False) -> dict[str, str]:
    """Save the LoRA adapter + tokenizer to ``out_dir/adapter`` (and a merged full model to ``out_dir/merged``)."""
    out = Path(out_dir)
    paths = {"adapter": str(out / "adapter")}
    model.save_pretrained(paths["adapter"])
    tokenizer.save_pretrained(paths["adapter"])
    if merge:
        paths["merged"] = str(out / "merged")
        merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        from helpers.quiet import progress_bars_off

        with progress_bars_off():
            merged.save_pretrained(paths["merged"])
            tokenizer.save_pretrained(paths["merged"])
    return paths


def write_metrics(recipe: DPORecipe, trainer, *, backend: str, model_source: str, before: dict, after: dict,
                  lengths: dict, paths: dict, train_seconds: float, model_info: dict | None = None) -> dict[str, Any]:
    """Write ``output_dir/metrics.json`` (what notebooks 04/05 and ``make run`` read) and return it.

    ``model_info``: ``helpers.models.describe_model`` of the trained model (``model``, ``model_source``,
    ``model_parameters``, ``tokenizer_vocab``); without it only ``model`` = ``model_source`` is recorded."""
    metrics = {"backend": backend, **(model_info or {"model": model_source}), "recipe": recipe.to_dict(),
               "data": data_provenance(recipe), "lengths": lengths, "global_step": trainer.state.global_step,
               "train_seconds": round(train_seconds, 2),
               "before": before, "after": after, "paths": paths, "log_history": trainer.state.log_history}
    Path(recipe.output_dir, "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return metrics


def _stop_after(k: int):
    """A TrainerCallback that raises KeyboardInterrupt after step k: simulates pressing stop (tests, --stop-after)."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # step k is done and logged
            if state.global_step >= k:
                raise KeyboardInterrupt(f"stopped after step {k} (--stop-after)")

    return StopAfter()


def run_recipe(recipe: DPORecipe, *, style_fn=None, decoding: dict | None = None, stop_after: int | None = None,
               verbose: bool = True) -> dict[str, Any]:
    """The whole of notebook 03: load, check, evaluate the reference, train (resuming), evaluate, save.

    ``style_fn``/``decoding``: also sample held-out responses before and after and report the share that
    ``style_fn`` accepts (offline: ``helpers.toy.is_chosen_style``). Writes ``output_dir/metrics.json`` and
    returns the metrics plus ``model``, ``tokenizer``, ``trainer``. Holds ``output_dir``'s lock while it runs.
    """
    from helpers.lock import acquire, release

    main = _main_process()  # under DDP (accelerate launch) the ranks of one run share the directory: rank 0 locks
    if main:
        acquire(recipe.output_dir)  # one writer per output_dir: a second run fails here, before anything is loaded
    try:
        return _run_recipe(recipe, style_fn=style_fn, decoding=decoding, stop_after=stop_after, verbose=verbose)
    finally:
        if main:
            release(recipe.output_dir)


def _main_process() -> bool:
    """Rank 0 of a distributed launch (torchrun/accelerate set RANK), or a plain single process."""
    import os

    return os.environ.get("RANK", "0").strip() in ("0", "")


def _run_recipe(recipe: DPORecipe, *, style_fn, decoding, stop_after, verbose) -> dict[str, Any]:
    import numpy as np

    from helpers.evaluation import chat_prompts, sample_responses
    from helpers.models import describe_model

    source = resolve_model(recipe)  # bad path -> ValueError before anything heavy
    model, tokenizer = load_lora_model(recipe, source)
    splits = load_data(recipe)
    splits, lengths = check_lengths(recipe, tokenizer, splits)
    out_dir = prepare_output_dir(recipe)
    ref, before = reference_report(model, tokenizer, splits["test"], max_length=recipe.max_length)
    prompts = chat_prompts(splits["test"])

    def style(into: dict, reference: bool) -> None:
        if style_fn is not None:
            texts = sample_responses(model, tokenizer, prompts, reference=reference, seed=recipe.seed,
                                     **(decoding or {}))
            into["chosen_style_rate"] = float(np.mean([style_fn(t) for t in texts]))
            into["samples"] = texts[:8]

    style(before, reference=True)
    trainer = make_trainer(model, tokenizer, splits, recipe,
                           callbacks=[_stop_after(stop_after)] if stop_after else None)
    t0 = time.perf_counter()
    train_with_resume(trainer, recipe)
    seconds = time.perf_counter() - t0
    after = after_report(model, tokenizer, splits["test"], ref, beta=recipe.beta, max_length=recipe.max_length)
    style(after, reference=False)
    paths = save_adapter(model, tokenizer, out_dir, merge=recipe.merge)
    metrics = write_metrics(recipe, trainer, backend=model.dpo_course_backend, model_source=source, before=before,
                            after=after, lengths=lengths, paths=paths, train_seconds=seconds,
                            model_info=describe_model(model, tokenizer, source))
    if verbose:
        print(f"[{metrics['backend']}] step {metrics['global_step']}: held-out reward accuracy "
              f"{after['rewards/accuracies']:.3f}, margin {after['rewards/margins']:.3f} ({after['margin_source']})"
              + (f"; chosen-style rate {before['chosen_style_rate']:.3f} -> {after['chosen_style_rate']:.3f}"
                 if style_fn else "") + f"; {out_dir / 'metrics.json'}")
    return {**metrics, "model": model, "tokenizer": tokenizer, "trainer": trainer}


def _toy_style(recipe: DPORecipe) -> dict[str, Any]:
    """``run_recipe``'s sampling check for the toy world (its ground truth says what a chosen-style answer is)."""
    if recipe.model != TOY or recipe.data != TOY:
        return {}
    from helpers.toy import is_chosen_style
    from helpers.toy_model import TOY_DECODING

    return dict(style_fn=is_chosen_style, decoding=TOY_DECODING)


PILOT_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "online_recipe_pilot.json"


def pilot_pick(results: dict[str, Any]) -> dict[str, Any]:
    """The online learning rate and SFT weight chosen from ``benchmarks/bench_online_recipe_pilot.py``'s results by a
    rule fixed before the pilot ran: among the grid's runs (not the deliberately over-optimised one) whose samples stay
    well-formed (malformed rate within two standard errors of the reference's), take the **largest learning rate**
    at which both SFT settings are well-formed (a fixed step budget learns most at the fastest rate that does not
    break answers); at it, keep the **SFT term** if it holds Δ log p(chosen) higher than without it while losing at
    most one standard error of held-out reward accuracy. Returns ``{"learning_rate", "sft_weight", "why",
    "rows"}``; ``rows`` the runs with ``ok`` (well-formed) and ``acc_se``."""
    import math

    over = results.get("overoptimised") or {}
    rows = []
    for r in results["runs"]:
        if (r["learning_rate"], r["sft_weight"]) == (over.get("learning_rate"), over.get("sft_weight")):
            continue
        acc, n = r["after"]["rewards/accuracies"], results["settings"]["test_pairs"]
        rows.append({**r, "ok": r["malformed_excess"] <= 2 * r["malformed_excess_se"],
                     "acc_se": math.sqrt(max(acc * (1 - acc), 1e-12) / n)})
    lrs = sorted({r["learning_rate"] for r in rows})
    good = [lr for lr in lrs if all(r["ok"] for r in rows if r["learning_rate"] == lr)]
    if not good:
        raise ValueError("no learning rate of the pilot kept its samples well-formed: nothing to choose")
    lr = max(good)
    at = {r["sft_weight"]: r for r in rows if r["learning_rate"] == lr}
    sfts = sorted(at)
    plain, with_sft = at[sfts[0]], at[sfts[-1]]
    keep = (len(sfts) > 1 and with_sft["after"]["delta_logps/chosen"] > plain["after"]["delta_logps/chosen"]
            and with_sft["after"]["rewards/accuracies"] >= plain["after"]["rewards/accuracies"] - plain["acc_se"])
    pick = with_sft if keep else plain
    why = (f"largest well-formed learning rate {lr:g}; SFT term {pick['sft_weight']:g}: Δ log p(chosen) "
           f"{with_sft['after']['delta_logps/chosen']:+.2f} with it vs {plain['after']['delta_logps/chosen']:+.2f} "
           f"without, held-out reward accuracy {with_sft['after']['rewards/accuracies']:.2f} vs "
           f"{plain['after']['rewards/accuracies']:.2f} (± {plain['acc_se']:.2f})")
    return {"learning_rate": lr, "sft_weight": pick["sft_weight"], "why": why, "rows": rows}


def expected_minutes(recipe: DPORecipe) -> tuple[float | None, str]:
    """``(minutes or None, where the figure comes from)`` for ``recipe`` on this machine: a GPU measured by
    ``benchmarks/bench_gpu_recipe.py`` (its steps/s at the recipe's precision), another GPU (the T4 arithmetic of
    ``helpers.estimate``, SmolLM2-135M only), a CPU (a rough per-step figure, labelled); None with the reason for
    the toy model (under a minute) and epoch-based runs."""
    from helpers.estimate import estimate_lora_dpo, llama_parameter_count, lora_parameter_count, measured_gpu
    from helpers.runtime import detect, precision_flags
    from helpers.tinymodel import SMOLLM2_135M

    rt = detect(check_hub=False)
    steps = recipe.max_steps if recipe.max_steps > 0 else None
    if steps is None:
        return None, "an epoch-based run (max_steps=-1): its length depends on the data"
    if recipe.model == TOY:
        return None, f"{steps} steps of the toy world's tiny model: under a minute (notebook 03 offline, 2 CPU cores)"
    if rt.device != "cuda":
        pairs = recipe.batch_size * recipe.grad_accum
        return steps * max(1.0, pairs / 4) * 6 / 60, (
            f"a CPU: ~6 s per step of 4 short pairs on 2 cores (4-8 s measured; this recipe's steps hold {pairs} "
            f"pairs of up to {recipe.max_length} tokens, so it may take longer); use a GPU runtime for real runs")
    dtype = "bf16" if precision_flags(rt)["bf16"] else "fp16"
    rows = [r for r in measured_gpu() if r["device"] == rt.gpu_name and r["dtype"] == dtype]
    if rows and recipe.model == MODEL_ID:
        r = max(rows, key=lambda r: r["mean_tokens"]["prompt"])  # the longer measured batches: the slower rate
        return steps / r["steps_per_s"] / 60, (f"{r['steps_per_s']:.2f} steps/s measured on this GPU, "
                                               f"{r['backend']}, {dtype}; benchmarks/results/{r['file']}")
    if recipe.model == MODEL_ID:
        n = llama_parameter_count(SMOLLM2_135M)
        t = lora_parameter_count(SMOLLM2_135M, recipe.lora_r, recipe.lora_targets)
        est = estimate_lora_dpo(SMOLLM2_135M, n, t, batch_size=recipe.batch_size, grad_accum=recipe.grad_accum,
                                seq_len=recipe.max_length, steps=steps)
        return est.total_minutes, f"{rt.gpu_name}: T4 arithmetic (helpers.estimate), not a measurement"
    return None, f"{steps} steps of {recipe.model} on {rt.gpu_name}: no measurement or estimate for this model"


def expected_time(recipe: DPORecipe) -> str:
    """How long ``recipe`` should take on this machine, with where the figure comes from (printed before training;
    ``expected_minutes``)."""
    minutes, why = expected_minutes(recipe)
    if minutes is None:
        return why
    return f"~{minutes:.1f} min for {recipe.max_steps} steps ({why})"


def trained_adapter(train_dir: str | Path, recipe: DPORecipe | None = None) -> tuple[Path, dict[str, Any]]:
    """Notebook 03's trained adapter and its ``metrics.json``, for notebook 05: ``(adapter folder, metrics)``.

    ``train_dir`` is notebook 03's ``OUTPUT_DIR`` (``adapter/`` + ``metrics.json``, on this disk or on Google
    Drive), a folder holding a pushed adapter (``adapter_config.json`` + ``metrics.json``), or the hub id
    ``owner/name`` of a repository that notebook 03's export section pushed. When a local ``train_dir`` holds no
    adapter and ``recipe`` is given, the adapter is trained now with ``recipe`` (notebook 03's recipe, output in
    ``train_dir``), printing the expected time first and the measured time after; without ``recipe``:
    ``FileNotFoundError``.
    """
    from helpers.export import REPO_ID

    p = Path(train_dir)
    for adapter in (p / "adapter", p):
        if (adapter / "adapter_config.json").exists() and (p / "metrics.json").exists():
            return adapter, json.loads((p / "metrics.json").read_text())
    name = str(train_dir)
    if not p.exists() and name.count("/") == 1 and REPO_ID.match(name) and not name.startswith("."):
        from huggingface_hub import snapshot_download

        from helpers.runtime import require_hub

        require_hub(f"TRAIN_DIR={name!r} (a hub repository)")
        local = Path(snapshot_download(name))
        if not (local / "adapter_config.json").exists() or not (local / "metrics.json").exists():
            raise FileNotFoundError(f"hub repository {name} holds no adapter_config.json + metrics.json (push the "
                                    f"adapter with notebook 03's export section)")
        print(f"adapter: hub repository {name} -> {local}")
        return local, json.loads((local / "metrics.json").read_text())
    if recipe is None:
        raise FileNotFoundError(f"no trained adapter in {p} (adapter/ and metrics.json): run notebook 03, or give "
                                f"TRAIN_DIR as the hub id of a pushed adapter")
    recipe = recipe.replace(output_dir=str(p))
    print(f"NOTE: no trained adapter in {p}: training it now with notebook 03's recipe "
          f"({recipe.model}, {recipe.max_steps} steps). Expected: {expected_time(recipe)}.")
    t0 = time.perf_counter()
    run_recipe(recipe, **_toy_style(recipe))
    print(f"trained in {(time.perf_counter() - t0) / 60:.1f} min (loading and evaluation included)")
    return p / "adapter", json.loads((p / "metrics.json").read_text())


_NONE = "none"  # what `--max-prompt-length none` parses to before it becomes None


def _int_or_none(v: str):
    if v.strip().lower() == _NONE:
        return _NONE
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 'none', got {v!r}") from None


def _check_data_args(given: dict[str, Any]) -> str | None:
    """A mistyped ``--data`` must not become a new folder (or the toy world): what is wrong, or None."""
    data = given.get("data")
    if data is None or data == TOY:
        return None
    path = Path(data)
    if path.is_file():
        return (f"--data {data} is a file; --data takes a folder of saved splits (notebook 02's output) or 'toy'. "
                f"For a raw HH-RLHF .jsonl[.gz] file use --data-source {data} --data <folder to save the splits in>")
    if not path.exists() and "data_source" not in given:
        return (f"--data {data} does not exist. Give notebook 02's saved splits folder, or 'toy', or add "
                f"--data-source <hub id or .jsonl file> to build the splits there")
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="LoRA DPO with TRL (notebook 03's recipe), measured on held-out pairs.")
    defaults = DPORecipe()
    for f in dataclasses.fields(DPORecipe):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"default {default}")
        elif isinstance(default, tuple):
            p.add_argument(flag, nargs="+", default=None, help=f"default {' '.join(default)}")
        elif f.name == "max_prompt_length":
            p.add_argument(flag, type=_int_or_none, default=None, help=f"default {default!r}; 'none' keeps all")
        else:
            p.add_argument(flag, type=type(default), default=None, help=f"default {default!r}")
    p.add_argument("--offline", action="store_true",
                   help="the offline default: toy SFT model and toy data with their measured settings "
                        "(explicit flags still win)")
    p.add_argument("--stop-after", type=int, default=None, help="simulate an interrupt after this step")
    return p


def main(argv: list[str] | None = None) -> int:
    a = vars(_parser().parse_args(argv))
    stop_after, offline = a.pop("stop_after"), a.pop("offline")
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in a.items() if v is not None}
    if given.get("max_prompt_length") == _NONE:
        given["max_prompt_length"] = None
    problem = _check_data_args(given)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        recipe = DPORecipe(**{**(OFFLINE if offline else {}), **given})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from helpers.models import unsloth_importable  # imports no ML library

    if recipe.backend == "unsloth" or (recipe.backend == "auto" and unsloth_importable()):
        import unsloth  # noqa: F401  (before transformers/trl)
    from helpers.lock import OutputDirLocked

    try:
        run_recipe(recipe, stop_after=stop_after, **_toy_style(recipe))
    except KeyboardInterrupt:
        return 130
    except OutputDirLocked as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:  # bad data, lengths, checkpoints: said plainly, no traceback
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
