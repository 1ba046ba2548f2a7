"""Notebook 04's sweeps: the same DPO recipe at several betas (or loss types), each run measured the same way.

Per run, on held-out data: reward accuracy and margin (``helpers.evaluation.after_report``), the change of chosen and
rejected log-probs, and the sequence-level KL(pi || pi_ref) estimated from samples of the policy
(``helpers.evaluation.sample_and_score``: mean of log pi(y) - log pi_ref(y) over samples drawn at temperature 1,
top-p 1). Offline, also the mean ground-truth ``toy_reward`` of those samples. Results are cached as JSON by a
hash of everything that determines them, so re-executing the notebook does not retrain unchanged settings.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["sweep_key", "reference_key", "run_sweep"]


def sweep_key(recipe, model_source: str, measure: dict) -> str:
    """sha256 (16 hex) of the recipe (without output paths), the model directory name and the measurement settings."""
    d = {k: v for k, v in recipe.to_dict().items() if k not in ("output_dir", "resume", "merge", "eval_steps",
                                                                  "save_steps", "logging_steps")}
    blob = json.dumps({"recipe": d, "model": Path(model_source).name, "measure": measure, "v": 5}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# What the reference measurement depends on: the model, the held-out data and how it is cut, the sampling seed and
# the measurement. Not the training settings (beta, learning rate, steps, ...): runs that differ only in those share it.
_REFERENCE_FIELDS = ("model", "data", "data_source", "max_length", "max_prompt_length", "seed")


def reference_key(recipe, model_source: str, measure: dict) -> str:
    """sha256 (16 hex) of what the reference policy's measurement depends on (``_REFERENCE_FIELDS``, the model
    directory name, ``measure``)."""
    d = {k: getattr(recipe, k) for k in _REFERENCE_FIELDS}
    blob = json.dumps({"reference": d, "model": Path(model_source).name, "measure": measure, "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_PATH_KEYS = ("kl", "kl_sem", "reward", "reward_sem", "malformed_rate", "mean_tokens")


def _measure_at(steps: list[int], into: list, kw: dict):
    """A TrainerCallback that runs ``measure_policy(**kw)`` after each step in ``steps`` (the model is restored to
    train mode by the sampler), appending ``{"step", "kl", "kl_sem", "reward", "malformed_rate", ...}`` to ``into``."""
    from transformers import TrainerCallback

    from helpers.evaluation import measure_policy

    class MeasureAt(TrainerCallback):
        def on_step_end(self, args, state, control, **_):
            if state.global_step in steps and state.global_step < state.max_steps:
                m = measure_policy(**kw)
                into.append({"step": state.global_step, **{k: m[k] for k in _PATH_KEYS if k in m}})

    return MeasureAt()


def run_sweep(base, grid: list[dict[str, Any]], splits: dict[str, Any], *, cache_dir: str | Path,
              kl_prompts: int = 64, kl_samples: int = 2, max_new_tokens: int = 32, reward_fn=None,
              checkpoints: tuple[int, ...] = (), progress: bool = True, quality_rules: str = "real") -> dict[str, Any]:
    """Train ``base.replace(**point)`` for every point of ``grid`` and measure each; cached.

    Args:
        base: a ``helpers.recipe.DPORecipe`` (data, steps, seed ... shared by all runs).
        grid: e.g. ``[{"beta": 0.01}, {"beta": 0.1}]`` or ``[{"loss_type": "ipo"}]``.
        splits: ``{"train", "test"}`` datasets (already length-checked).
        kl_prompts, kl_samples: held-out prompts and samples per prompt of the KL estimate.
        quality_rules: ``helpers.quality`` rules for the malformed rate ("real"; the toy world asks for "toy").
        checkpoints: steps before the last at which each run is also measured (KL, reward, malformed rate), for
            reward-vs-KL curves along training (the DPO paper's Fig. 2 plots every checkpoint); in ``row["path"]``.

    Returns ``{"reference": {...}, "rows": [{"beta", "loss_type", "heldout_accuracy", "margin", "kl", ...}]}``;
    ``reference`` is the reference policy measured the same way (KL 0 by definition of the estimator).
    One progress bar for the sweep; the per-run bars of transformers and datasets are off.
    """
    from helpers.infra.quiet import progress_bars_off

    with progress_bars_off():
        return _run_sweep(base, grid, splits, cache_dir=cache_dir, kl_prompts=kl_prompts, kl_samples=kl_samples,
                          max_new_tokens=max_new_tokens, reward_fn=reward_fn, checkpoints=checkpoints,
                          progress=progress, quality_rules=quality_rules)


def _run_sweep(base, grid, splits, *, cache_dir, kl_prompts, kl_samples, max_new_tokens, reward_fn, checkpoints,
               progress, quality_rules) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from helpers.evaluation import after_report, chat_prompts, measure_policy, reference_report
    from helpers.recipe import load_lora_model, make_trainer, resolve_model

    if not grid:
        raise ValueError("grid must list at least one setting, e.g. [{'beta': 0.1}]")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    source = resolve_model(base)
    prompts = chat_prompts(splits["test"])[:kl_prompts]
    measure = {"kl_prompts": len(prompts), "kl_samples": kl_samples, "max_new_tokens": max_new_tokens,
               "reward": getattr(reward_fn, "__name__", None), "n_test": len(splits["test"]),
               "checkpoints": sorted(set(checkpoints)), "quality_rules": quality_rules}
    if any(not isinstance(c, int) or c < 1 for c in checkpoints):
        raise ValueError(f"checkpoints must be steps >= 1, got {checkpoints!r}")
    ref_file = cache / f"reference-{reference_key(base, source, measure)}.json"
    state: dict[str, Any] = {}

    def ref_logps():
        """Held-out reference log-probs (needed to train-and-measure a point); measures the reference once too."""
        if "ref_logps" not in state:
            model, tok = load_lora_model(base, source)
            state["ref_logps"], _ = reference_report(model, tok, splits["test"], max_length=base.max_length)
            if not ref_file.exists():
                ref = measure_policy(model, tok, prompts, reference=True, kl_samples=kl_samples,
                                     max_new_tokens=max_new_tokens, seed=base.seed, reward_fn=reward_fn,
                                     quality_rules=quality_rules)
                ref_file.write_text(json.dumps(ref, indent=2) + "\n")
        return state["ref_logps"]

    rows = []
    bar = tqdm(grid, desc="sweep", disable=not progress)
    for point in bar:
        recipe = base.replace(**point)
        f = cache / f"{sweep_key(recipe, source, measure)}.json"
        bar.set_postfix(point)
        if f.exists():
            row = json.loads(f.read_text())
            row["cached"] = True
            rows.append(row)
            continue
        ref = ref_logps()
        model, tok = load_lora_model(recipe, source)
        path: list[dict[str, Any]] = []
        train = splits["train"]  # TRL tokenizes what it is given: give it only the pairs the run can consume
        if recipe.max_steps > 0:
            n = min(recipe.max_steps * recipe.batch_size * recipe.grad_accum, len(train))
            train = train.shuffle(seed=recipe.seed).select(range(n))
        trainer = make_trainer(model, tok, {"train": train, "test": None},
                               recipe.replace(output_dir=str(cache / "tmp")),
                               eval_strategy="no", save_strategy="no", logging_strategy="no",
                               callbacks=[_measure_at(measure["checkpoints"], path, dict(
                                   model=model, tokenizer=tok, prompts=prompts, reference=False,
                                   kl_samples=kl_samples, max_new_tokens=max_new_tokens, seed=recipe.seed,
                                   reward_fn=reward_fn, quality_rules=quality_rules))])
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        after = after_report(model, tok, splits["test"], ref, beta=recipe.beta,
                             max_length=recipe.max_length)
        m = measure_policy(model, tok, prompts, reference=False, kl_samples=kl_samples,
                           max_new_tokens=max_new_tokens, seed=recipe.seed, reward_fn=reward_fn,
                           quality_rules=quality_rules)
        row = {"beta": recipe.beta, "loss_type": recipe.loss_type, "heldout_accuracy": after["rewards/accuracies"],
               "margin": after["rewards/margins"], "delta_logps_chosen": after["delta_logps/chosen"],
               "delta_logps_rejected": after["delta_logps/rejected"],
               "heldout_accuracy_se": after["rewards/accuracies_se"],
               "delta_logps_chosen_se": after["delta_logps/chosen_se"],
               "delta_logps_rejected_se": after["delta_logps/rejected_se"], **m, "train_seconds": round(seconds, 2),
               "steps": trainer.state.global_step,
               "path": path + [{"step": trainer.state.global_step, **{k: m[k] for k in _PATH_KEYS if k in m}}]}
        f.write_text(json.dumps(row, indent=2) + "\n")
        rows.append({**row, "cached": False})
    bar.close()
    if not ref_file.exists():  # every point was cached but this reference measurement was not
        ref_logps()
    return {"reference": json.loads(ref_file.read_text()), "rows": rows, "measure": measure}
