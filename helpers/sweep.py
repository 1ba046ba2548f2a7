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
import os
import time
from pathlib import Path
from typing import Any

from helpers.infra.files import CorruptFileError, read_json, write_json

__all__ = ["sweep_key", "reference_key", "run_sweep", "replay_trl_steps", "LOOPS"]

# How a sweep trains each run: "trl" = DPOTrainer (the recipe as notebook 03 runs it; Unsloth's on a GPU);
# "scratch" = helpers.scratch.train_dpo_from_scratch with the recipe's optimiser, schedule and clipping (no Trainer
# set-up per run, the reference's log-probs computed once for the whole sweep). ``replay_trl_steps`` checks that the
# two take the same steps.
LOOPS = ("trl", "scratch")


def sweep_settings(recipe, model_source: str, measure: dict) -> dict[str, Any]:
    """What a sweep run's result depends on: the recipe (without output paths), the model directory name and the
    measurement settings. Stored in each cache entry (``"settings"``), so a cache miss can say what differs."""
    d = {k: v for k, v in recipe.to_dict().items() if k not in ("output_dir", "resume", "merge", "eval_steps",
                                                                  "save_steps", "logging_steps")}
    return json.loads(json.dumps({"recipe": d, "model": Path(model_source).name, "measure": measure, "v": 6}))


def sweep_key(recipe, model_source: str, measure: dict) -> str:
    """sha256 (16 hex) of ``sweep_settings``: the name of the run's cache entry."""
    blob = json.dumps(sweep_settings(recipe, model_source, measure), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def settings_difference(want: dict[str, Any], have: dict[str, Any], limit: int = 4) -> str:
    """The settings in which a cached run ``have`` differs from the run asked for (``want``), e.g.
    ``"recipe.beta 0.1 here, 0.3 there; measure.reward 'toy_reward' here, None there"``."""
    def leaves(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(leaves(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = leaves(want), leaves(have)
    diff = [f"{k} {a.get(k)!r} here, {b.get(k)!r} there" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(diff[:limit]) + (f"; and {len(diff) - limit} more" if len(diff) > limit else "")


RUN_AHEAD_NOTE = ".run-ahead"  # in a sweep cache: which entries a run-ahead put there (helpers.course.runahead)


def _run_ahead(cache: Path) -> tuple[dict | None, dict[str, dict[str, Any]]]:
    """The run-ahead note of ``cache`` (None: no run-ahead was fetched here) and its entries that record their
    settings, as ``{file name: sweep_settings}``."""
    try:
        pack = json.loads((cache / RUN_AHEAD_NOTE).read_text())
    except (OSError, ValueError):
        return None, {}
    entries = {}
    for name in pack.get("files", []):
        try:
            s = json.loads((cache / name).read_text()).get("settings")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(s, dict):
            entries[name] = s
    return pack, entries


def _judge_only(want: dict[str, Any], entries: dict[str, dict[str, Any]]) -> str | None:
    """The run-ahead entry whose settings differ from ``want`` only in ``measure.reward`` (what scored the samples:
    the attendee's judge did not load, or is another one), or None. Its training is the run asked for."""
    def without_reward(s):
        return {**s, "measure": {k: v for k, v in s.get("measure", {}).items() if k != "reward"}}

    return next((name for name, s in entries.items() if without_reward(s) == without_reward(want)), None)


def _miss_note(cache: Path, planned: int, missing: list[dict[str, Any]], *,
               run_ahead: tuple[dict | None, dict[str, dict[str, Any]]] | None = None) -> str | None:
    """When a run-ahead filled ``cache`` (its ``RUN_AHEAD_NOTE``) and some planned runs (``missing``: their
    ``sweep_settings``) are not in it: how many match, and how the nearest run-ahead run differs from the first
    missing one (the setting a learner changed). None otherwise. ``run_ahead``: ``_run_ahead(cache)``, when the
    caller has read it already."""
    pack, entries = run_ahead if run_ahead is not None else _run_ahead(cache)
    if pack is None or not missing:
        return None
    others = list(entries.values())
    if not others:
        return (f"NOTE: {planned - len(missing)} of {planned} runs are in the run-ahead from {pack.get('source')}; "
                f"the other {len(missing)} train now (its results do not record their settings, so what differs "
                "cannot be said)")
    nearest = min(others, key=lambda s: settings_difference(missing[0], s, limit=10**6).count(" here, "))
    return (f"NOTE: {planned - len(missing)} of {planned} runs are in the run-ahead from {pack.get('source')}; the "
            f"other {len(missing)} train now. The nearest run-ahead run differs from them in: "
            f"{settings_difference(missing[0], nearest)}")


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
              checkpoints: tuple[int, ...] = (), progress: bool = True, quality_rules: str = "real",
              loop: str = "trl", path_samples: int | None = None, sample_batch_size: int = 32) -> dict[str, Any]:
    """Train ``base.replace(**point)`` for every point of ``grid`` and measure each; cached.

    Args:
        base: a ``helpers.recipe.DPORecipe`` (data, steps, seed ... shared by all runs).
        grid: e.g. ``[{"beta": 0.01}, {"beta": 0.1}]`` or ``[{"loss_type": "ipo"}]``.
        splits: ``{"train", "test"}`` datasets (already length-checked).
        kl_prompts, kl_samples: held-out prompts and samples per prompt of the KL estimate.
        quality_rules: ``helpers.quality`` rules for the malformed rate ("real"; the toy world asks for "toy").
        checkpoints: steps before the last at which each run is also measured (KL, reward, malformed rate), for
            reward-vs-KL curves along training (the DPO paper's Fig. 2 plots every checkpoint); in ``row["path"]``.
        sample_batch_size: answers sampled at once (``measure_policy``'s ``batch_size``; larger is faster for a
            small vocabulary, costlier in memory for a large one).
        path_samples: samples per prompt at those checkpoints (None: ``kl_samples``); fewer is cheaper, the points'
            error bars say what it costs.
        loop: ``LOOPS``: "trl" (DPOTrainer) or "scratch" (the same steps without the Trainer: plain DPO losses only,
            ``sft_weight`` 0; ``grad_accum`` folded into one batch of ``batch_size * grad_accum`` pairs).

    Returns ``{"reference": {...}, "rows": [{"beta", "loss_type", "heldout_accuracy", "margin", "kl", ...}]}``;
    ``reference`` is the reference policy measured the same way (KL 0 by definition of the estimator, up to
    float rounding: the sampler scores its tokens while generating, the other model in a forward pass).
    One progress bar for the sweep; the per-run bars of transformers and datasets are off.
    """
    from helpers.infra.quiet import progress_bars_off

    with progress_bars_off():
        return _run_sweep(base, grid, splits, cache_dir=cache_dir, kl_prompts=kl_prompts, kl_samples=kl_samples,
                          max_new_tokens=max_new_tokens, reward_fn=reward_fn, checkpoints=checkpoints,
                          progress=progress, quality_rules=quality_rules, loop=loop, path_samples=path_samples,
                          sample_batch_size=sample_batch_size)


def _train_scratch(model, tok, recipe, train, prepared, on_step) -> int:
    """Train ``model`` with ``helpers.scratch.train_dpo_from_scratch`` at ``recipe``'s settings; returns the steps."""
    from helpers.scratch import train_dpo_from_scratch

    train_dpo_from_scratch(model, tok, train, beta=recipe.beta, loss_type=recipe.loss_type,
                           steps=recipe.max_steps, batch_size=recipe.batch_size * recipe.grad_accum,
                           learning_rate=recipe.learning_rate, seed=recipe.seed, max_length=recipe.max_length,
                           lr_scheduler=recipe.lr_scheduler, warmup_steps=recipe.warmup_steps, max_grad_norm=1.0,
                           prepared=prepared, on_step=on_step, progress=False)
    return recipe.max_steps


def _run_sweep(base, grid, splits, *, cache_dir, kl_prompts, kl_samples, max_new_tokens, reward_fn, checkpoints,
               progress, quality_rules, loop, path_samples, sample_batch_size) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from helpers.evaluation import after_report, chat_prompts, measure_policy, reference_report
    from helpers.recipe import load_lora_model, make_trainer, resolve_model

    if not grid:
        raise ValueError("grid must list at least one setting, e.g. [{'beta': 0.1}]")
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    if loop == "scratch" and (base.sft_weight or any(p.get("sft_weight") for p in grid)):
        raise ValueError("loop='scratch' trains the DPO loss only: sft_weight must be 0 (use loop='trl' for DPO+SFT)")
    if loop == "scratch" and base.max_steps < 1:
        raise ValueError(f"loop='scratch' needs max_steps >= 1 (it does not count epochs), got {base.max_steps}")
    if path_samples is not None and (not isinstance(path_samples, int) or path_samples < 1):
        raise ValueError(f"path_samples must be None or an int >= 1, got {path_samples!r}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    source = resolve_model(base)
    prompts = chat_prompts(splits["test"])[:kl_prompts]
    measure = {"kl_prompts": len(prompts), "kl_samples": kl_samples, "max_new_tokens": max_new_tokens,
               "reward": getattr(reward_fn, "__name__", None), "n_test": len(splits["test"]),
               "checkpoints": sorted(set(checkpoints)), "quality_rules": quality_rules, "loop": loop,
               "path_samples": path_samples or kl_samples, "sample_batch_size": sample_batch_size}
    if any(not isinstance(c, int) or c < 1 for c in checkpoints):
        raise ValueError(f"checkpoints must be steps >= 1, got {checkpoints!r}")
    ref_measure = {k: v for k, v in measure.items() if k not in ("loop", "path_samples", "checkpoints")}
    ref_file = cache / f"reference-{reference_key(base, source, ref_measure)}.json"
    _cached(ref_file)  # a broken reference entry is set aside here, so it is measured again below
    state: dict[str, Any] = {}

    def ref_logps():
        """Held-out reference log-probs (needed to train-and-measure a point); measures the reference once too."""
        if "ref_logps" not in state:
            model, tok = load_lora_model(base, source)
            state["ref_logps"], _ = reference_report(model, tok, splits["test"], max_length=base.max_length)
            if not ref_file.exists():
                ref = measure_policy(model, tok, prompts, reference=True, kl_samples=kl_samples,
                                     max_new_tokens=max_new_tokens, seed=base.seed, reward_fn=reward_fn,
                                     quality_rules=quality_rules, batch_size=sample_batch_size)
                write_json(ref_file, ref)
        return state["ref_logps"]

    rows = []
    recipes = [base.replace(**point) for point in grid]
    wanted = [sweep_settings(r, source, measure) for r in recipes]
    files = [cache / f"{sweep_key(r, source, measure)}.json" for r in recipes]
    run_ahead = _run_ahead(cache)
    stand_in = {i: name for i, (w, f) in enumerate(zip(wanted, files, strict=True))
                if not f.exists() and (name := _judge_only(w, run_ahead[1]))}  # the instructor's run, judged apart
    if stand_in:
        theirs = run_ahead[1][next(iter(stand_in.values()))]["measure"]["reward"]
        print(f"NOTE: {len(stand_in)} run(s) differ from the run-ahead's only in what scores their samples "
              f"(measure.reward {measure['reward']!r} here, {theirs!r} there: a judge that did not load?): read "
              "from the run-ahead, not retrained; their reward column is the run-ahead's judge's")
    missing = [w for i, (w, f) in enumerate(zip(wanted, files, strict=True)) if not f.exists() and i not in stand_in]
    note = _miss_note(cache, len(grid), missing, run_ahead=run_ahead)
    if note:
        print(note)
    bar = tqdm(grid, desc="sweep", disable=not progress)
    for i, (point, settings) in enumerate(zip(bar, wanted, strict=True)):
        recipe = recipes[i]
        f = files[i] if i not in stand_in else cache / stand_in[i]
        bar.set_postfix(point)
        row = _cached(f)
        if row is not None:
            row.pop("settings", None)
            row["cached"] = True
            rows.append(row)
            continue
        ref = ref_logps()
        model, tok = load_lora_model(recipe, source, verbose=False)  # the first load printed where from
        path: list[dict[str, Any]] = []
        train = splits["train"]  # only the pairs the run can consume (TRL tokenizes what it is given)
        if recipe.max_steps > 0:
            n = min(recipe.max_steps * recipe.batch_size * recipe.grad_accum, len(train))
            train = train.shuffle(seed=recipe.seed).select(range(n))
        path_kw = dict(model=model, tokenizer=tok, prompts=prompts, reference=False,
                       kl_samples=measure["path_samples"], max_new_tokens=max_new_tokens, seed=recipe.seed,
                       reward_fn=reward_fn, quality_rules=quality_rules, batch_size=sample_batch_size)
        t0 = time.perf_counter()
        if loop == "scratch":
            from helpers.scratch import prepare_pairs

            rows_ = list(train)
            key = (len(rows_), recipe.seed, recipe.max_length)
            if state.get("prepared_key") != key:  # shared by every run of the sweep: same pairs, same reference
                state["prepared"], state["prepared_key"] = prepare_pairs(model, tok, rows_,
                                                                         max_length=recipe.max_length), key

            def at(step, steps=recipe.max_steps, kw=path_kw, into=path):
                if step in measure["checkpoints"] and step < steps:
                    t = time.perf_counter()
                    m = measure_policy(**kw)
                    into.append({"step": step, **{k: m[k] for k in _PATH_KEYS if k in m},
                                 "seconds": time.perf_counter() - t})

            steps = _train_scratch(model, tok, recipe, rows_, state["prepared"], at)
        else:
            trainer = make_trainer(model, tok, {"train": train, "test": None},
                                   recipe.replace(output_dir=str(cache / "tmp")),
                                   eval_strategy="no", save_strategy="no", logging_strategy="no",
                                   callbacks=[_measure_at(measure["checkpoints"], path, path_kw)])
            trainer.train()
            steps = trainer.state.global_step
        seconds = time.perf_counter() - t0 - sum(p.pop("seconds", 0.0) for p in path)  # training only
        after = after_report(model, tok, splits["test"], ref, beta=recipe.beta,
                             max_length=recipe.max_length)
        m = measure_policy(model, tok, prompts, reference=False, kl_samples=kl_samples,
                           max_new_tokens=max_new_tokens, seed=recipe.seed, reward_fn=reward_fn,
                           quality_rules=quality_rules, batch_size=sample_batch_size)
        row = {"beta": recipe.beta, "loss_type": recipe.loss_type, "heldout_accuracy": after["rewards/accuracies"],
               "margin": after["rewards/margins"], "delta_logps_chosen": after["delta_logps/chosen"],
               "delta_logps_rejected": after["delta_logps/rejected"],
               "heldout_accuracy_se": after["rewards/accuracies_se"],
               "delta_logps_chosen_se": after["delta_logps/chosen_se"],
               "delta_logps_rejected_se": after["delta_logps/rejected_se"], **m, "train_seconds": round(seconds, 2),
               "steps": steps, "loop": loop,
               "path": path + [{"step": steps, **{k: m[k] for k in _PATH_KEYS if k in m}}]}
        write_json(f, {**row, "settings": settings})
        rows.append({**row, "cached": False})
    bar.close()
    if not ref_file.exists():  # every point was cached but this reference measurement was not
        ref_logps()
    return {"reference": read_json(ref_file, what="sweep cache entry"), "rows": rows, "measure": measure}


def _cached(f: Path) -> dict[str, Any] | None:
    """A sweep cache entry, or None: absent, or broken (a write cut off, a disk error). A broken one is set aside as
    ``<name>.broken`` (never deleted) with a printed note, so the run is measured again."""
    if not f.exists():
        return None
    try:
        return read_json(f, what="sweep cache entry")
    except CorruptFileError as e:
        aside = f.with_name(f.name + ".broken")
        os.replace(f, aside)
        print(f"NOTE: {e}; set aside as {aside.name}, measuring it again")
        return None


def replay_trl_steps(recipe, splits: dict[str, Any], *, steps: int = 3, output_dir: str | Path) -> dict[str, Any]:
    """Does the scratch loop take TRL's steps? Train ``recipe`` with ``DPOTrainer`` for its first ``steps`` steps
    (schedule of the full ``max_steps``), recording each batch TRL's collator built; then, from the same initial
    adapter, feed the same batches through ``helpers.scratch.dpo_update`` with ``trl_optimizer``'s optimiser.

    Returns ``{"steps", "trl_losses", "scratch_losses", "max_abs_weight_diff", "max_abs_weight_change",
    "trainable", "trl_setup_seconds", "trl_step_seconds", "scratch_step_seconds"}``: per-step batch losses of both
    loops, the largest difference between the two adapters after ``steps`` steps, the largest change of any trained
    weight (the scale the difference is read against), and wall-clock times (``DPOTrainer``'s construction; one step
    of each loop, both computing the reference on every step as TRL does).
    """
    import torch
    from transformers import TrainerCallback

    from helpers.infra.quiet import progress_bars_off
    from helpers.recipe import load_lora_model, make_trainer, resolve_model
    from helpers.scratch import dpo_update, pair_batch_logps, trl_optimizer

    if not isinstance(steps, int) or not 1 <= steps <= recipe.max_steps:
        raise ValueError(f"steps must be an int in [1, max_steps={recipe.max_steps}], got {steps!r}")
    if recipe.sft_weight or recipe.grad_accum != 1:
        raise ValueError("replay_trl_steps compares the plain DPO step: sft_weight must be 0 and grad_accum 1, got "
                         f"sft_weight={recipe.sft_weight}, grad_accum={recipe.grad_accum}")
    source = resolve_model(recipe)
    model, tok = load_lora_model(recipe, source, verbose=False)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    start = {n: p.detach().clone() for n, p in trained.items()}
    batches, trl_losses = [], []

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **_):
            control.should_training_stop = state.global_step >= steps

    train = splits["train"].select(range(min(len(splits["train"]), steps * recipe.batch_size)))
    t0 = time.perf_counter()
    with progress_bars_off():
        trainer = make_trainer(model, tok, {"train": train, "test": None}, recipe.replace(output_dir=str(output_dir)),
                               eval_strategy="no", save_strategy="no", logging_strategy="no", callbacks=[Stop()],
                               disable_tqdm=True)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # its end-of-training log line is noise here
        setup = time.perf_counter() - t0
        compute_loss = trainer.compute_loss

        def recording(model_, inputs, *a, **kw):
            batches.append({k: v.detach().cpu().clone() for k, v in inputs.items() if hasattr(v, "detach")})
            loss = compute_loss(model_, inputs, *a, **kw)
            trl_losses.append(float((loss[0] if isinstance(loss, tuple) else loss).detach()))
            return loss

        trainer.compute_loss = recording
        t0 = time.perf_counter()
        trainer.train()
        trl_seconds = time.perf_counter() - t0
    after_trl = {n: p.detach().clone() for n, p in trained.items()}
    with torch.no_grad():  # back to the adapter TRL started from
        for n, p in trained.items():
            p.copy_(start[n])
    opt, sched = trl_optimizer(list(trained.values()), learning_rate=recipe.learning_rate, steps=recipe.max_steps,
                               lr_scheduler=recipe.lr_scheduler, warmup_steps=recipe.warmup_steps)
    model.train()
    ours = []
    t0 = time.perf_counter()
    for b in batches:
        batch = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
                 "labels": torch.where(b["completion_mask"].bool(), b["input_ids"], -100)}
        ref_c, ref_r = pair_batch_logps(model, batch, reference=True)
        ours.append(dpo_update(model, opt, sched, batch, ref_c, ref_r, beta=recipe.beta,
                               loss_type=recipe.loss_type)["loss"])
    scratch_seconds = time.perf_counter() - t0
    diff = max((after_trl[n] - p.detach()).abs().max().item() for n, p in trained.items())
    change = max((after_trl[n] - start[n]).abs().max().item() for n in trained)
    return {"steps": len(batches), "trl_losses": trl_losses, "scratch_losses": ours, "max_abs_weight_diff": diff,
            "max_abs_weight_change": change, "trainable": sum(p.numel() for p in trained.values()),
            "trl_setup_seconds": setup, "trl_step_seconds": trl_seconds / max(len(batches), 1),
            "scratch_step_seconds": scratch_seconds / max(len(batches), 1)}
