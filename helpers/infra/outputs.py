"""A training run's output directory: one writer at a time, checkpoints that are complete or absent, resume, interrupt.

``prepare_output_dir`` locks the folder and moves another run's checkpoints aside; ``atomic_checkpoints`` makes the
Trainer write each checkpoint into a staging folder and rename it into place; ``last_checkpoint`` skips (and renames)
incomplete ones; ``train_with_resume`` continues from it and saves a checkpoint when the stop button is pressed.
``drop_redundant_ref_adapter`` is the workaround that makes resuming a LoRA DPO run restore the policy (TRL 1.14).
What a run *is* comes in as arguments (``helpers.recipe`` passes its ``DPORecipe``'s fields): this module sits below it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from helpers.infra.files import write_json

__all__ = ["STAGING", "prepare_output_dir", "atomic_checkpoints", "drop_redundant_ref_adapter", "checkpoint_problem",
           "weights_problem", "last_checkpoint", "train_with_resume", "stop_after", "main_process"]


STAGING = ".staging"  # inside output_dir: checkpoints are written here, then renamed into place


def atomic_checkpoints(trainer) -> None:
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


def drop_redundant_ref_adapter(model) -> bool:
    """Remove the "ref" adapter TRL 1.14 adds to a ``PeftModel`` when the adapter is still fresh (LoRA B == 0).

    TRL copies the current adapter into a frozen "ref" adapter to serve as the reference. For a fresh adapter that
    copy equals the base model, so it is redundant, and it breaks resuming: checkpoints then hold the policy adapter
    at the top level and "ref" in a sub-folder, and transformers 5.17's ``_load_from_checkpoint`` reloads only the
    sub-folder adapters, so a resumed run silently restarts the policy from zero (tests/test_recipe.py). Without
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


def prepare_output_dir(output_dir: str | Path, run: dict[str, Any], *, defaults: dict[str, Any],
                       identity: tuple[str, ...]) -> Path:
    """Lock ``output_dir`` for this process, create it and record the run (``run`` -> ``recipe.json``).

    ``identity``: the fields of ``run`` whose change makes old checkpoints belong to a *different* run (a field missing
    from an old ``recipe.json`` had its value in ``defaults``). Checkpoints of a different run (or of a run whose
    ``recipe.json`` cannot be read) are moved aside, not lost. Another live process writing into ``output_dir`` raises
    ``helpers.infra.lock.OutputDirLocked`` before anything moves.
    """
    from helpers.infra.lock import acquire

    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file, not a directory")
    if main_process():
        acquire(out)
    saved = out / "recipe.json"
    if saved.exists():
        try:
            old = json.loads(saved.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
            changed = [k for k in identity if old.get(k, defaults[k]) != run[k]]
        except ValueError as e:  # which run it was is unknown: treat it as another run
            changed = [f"(unreadable recipe.json: {e})"]
        if changed and any(out.glob("checkpoint-*")):
            aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            out.rename(aside)
            print(f"NOTE: {out} held a run with different {', '.join(changed)}; moved it to {aside} and starting "
                  f"fresh (resume continues only the same run).")
    out.mkdir(parents=True, exist_ok=True)
    write_json(saved, run)
    return out


def checkpoint_problem(ckpt: str | Path) -> str | None:
    """Why ``ckpt`` cannot be resumed from (None: it can). Every file that resuming loads is read through:
    ``trainer_state.json`` (required) and every other JSON file; the model weights (required: a readable
    safetensors file, e.g. not truncated by a full disk); and each torch-saved state that is present
    (``optimizer.pt``, ``scheduler.pt``, ``rng_state*.pth``, ``scaler.pt``, ``training_args.bin``: zip archives whose
    every member must pass its CRC check). A missing ``optimizer.pt`` is allowed (``train_with_resume`` says what it
    means); a present but unreadable one is not."""
    import zipfile

    ckpt = Path(ckpt)
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        return f"trainer_state.json {'missing' if isinstance(e, FileNotFoundError) else 'unreadable'}"
    for f in sorted(ckpt.glob("*.json")):
        try:
            json.loads(f.read_text())
        except (OSError, ValueError) as e:
            return f"{f.name} unreadable ({type(e).__name__})"
    weights = [ckpt / n for n in ("adapter_model.safetensors", "model.safetensors") if (ckpt / n).exists()]
    if not weights:
        return "no adapter_model.safetensors / model.safetensors"
    for w in weights:
        if why := weights_problem(w):
            return f"{w.name} unreadable ({why})"
    for state in sorted([*ckpt.glob("*.pt"), *ckpt.glob("*.pth"), *ckpt.glob("*.bin")]):
        try:  # torch.save writes a zip archive: a truncated one has no central directory, a damaged one a bad CRC
            with zipfile.ZipFile(state) as z:
                bad = z.testzip()
            if bad is not None:
                return f"{state.name} unreadable (member {bad} fails its CRC check)"
        except (OSError, zipfile.BadZipFile) as e:
            return f"{state.name} unreadable ({type(e).__name__}: {str(e)[:80]})"
    return None


def weights_problem(path: str | Path) -> str | None:
    """Why the safetensors file ``path`` cannot be loaded (None: every tensor in it reads), e.g. truncated by a full
    disk or a disconnect mid-save: ``"SafetensorError: ..."``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():  # reads every tensor: a truncated file fails here
                f.get_tensor(k)
    except Exception as e:  # SafetensorError, OSError: the file is not what it claims
        return f"{type(e).__name__}: {str(e)[:80]}"
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


def train_with_resume(trainer, output_dir: str | Path, *, resume: bool = True, max_steps: int = -1):
    """``trainer.train()``, continuing from ``output_dir``'s last checkpoint when ``resume``; an interrupt saves one.

    On ``KeyboardInterrupt`` (the stop button) a checkpoint of the current step is written before re-raising, so
    a rerun with ``resume=True`` loses nothing. A kernel that dies (a Colab disconnect) keeps the last
    ``save_steps`` checkpoint.
    """
    ckpt = last_checkpoint(output_dir) if resume else None
    if ckpt:
        step = int(Path(ckpt).name.split("-")[1])
        if 0 < max_steps < step:
            raise ValueError(f"max_steps={max_steps} but {ckpt} is already at step {step}: the run would "
                             f"continue past max_steps. Use max_steps >= {step}, another output_dir, or resume=False.")
        if step == max_steps:  # transformers 5.17 would take one step more (its loop steps, then checks max_steps)
            return _load_finished(trainer, ckpt, step)
        if not Path(ckpt, "optimizer.pt").exists():
            print(f"NOTE: {ckpt} has no optimizer.pt: resuming with a fresh Adam state (and learning-rate "
                  f"schedule state if scheduler.pt is missing too), so the steps after {step} will differ from an "
                  f"uninterrupted run")
    print(f"resuming from {ckpt}" if ckpt else "starting from step 0" + ("" if resume else " (resume=False)"))
    try:
        return trainer.train(resume_from_checkpoint=ckpt)
    except KeyboardInterrupt:
        step = trainer.state.global_step
        if step > 0 and not Path(output_dir, f"checkpoint-{step}").exists():
            trainer._save_checkpoint(trainer.model, trial=None)  # the Trainer's own full checkpoint (model+optim)
        print(f"interrupted at step {step}; checkpoint saved in {output_dir}. Rerun to resume.")
        raise


def _load_finished(trainer, ckpt: str, step: int):
    """A run already at ``max_steps``: load its checkpoint's weights and trainer state instead of training (resuming
    there, ``Trainer.train`` in transformers 5.17 runs one more optimizer step before it checks ``max_steps``).
    Returns a ``TrainOutput`` like ``trainer.train`` does."""
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(ckpt)
    trainer.state = TrainerState.load_from_json(str(Path(ckpt, "trainer_state.json")))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"{ckpt} is already at max_steps={step}: its weights are loaded, nothing is left to train")
    return TrainOutput(step, sum(losses) / len(losses) if losses else float("nan"), {})


def stop_after(k: int):
    """A TrainerCallback that raises KeyboardInterrupt after step k: simulates pressing stop (tests, --stop-after)."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # step k is done and logged
            if state.global_step >= k:
                raise KeyboardInterrupt(f"stopped after step {k} (--stop-after)")

    return StopAfter()


def main_process() -> bool:
    """Rank 0 of a distributed launch (torchrun/accelerate set RANK), or a plain single process."""
    import os

    return os.environ.get("RANK", "0").strip() in ("0", "")
