"""The one place that decides a notebook's settings by mode: offline presets, and ``DPO_QUICK``'s smoke-test sizes.

A notebook's parameters cell holds the online knobs (what runs on Colab). Offline (no hub: CI, a laptop) a plan from
here replaces the ones the toy world needs instead, as ``recipe.OFFLINE`` does for the recipe, and says so in one
printed line; a notebook's cells then read ``plan.<name>`` and never branch on the mode themselves.

``QUICK`` is what ``DPO_QUICK=1`` (CI's ``make run-online``: the online branch as a smoke test on a CPU) changes in
each notebook: the runner (``helpers.course.suite``) inserts it as a cell straight after the one tagged
``parameters``, as papermill injects parameters, so the cells a learner reads carry no smoke-test sizes.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from helpers.recipe import OFFLINE, DPORecipe

__all__ = ["TOY_DECODING", "SWEEP_OFFLINE", "QUICK", "training_plan", "sweep_plan", "generation_plan",
           "quick_cell"]

# How the toy world's one-line answers are sampled (03's sample check, 05's comparison): T = 1 and 32 tokens.
TOY_DECODING: dict[str, Any] = dict(do_sample=True, temperature=1.0, top_p=0.9, max_new_tokens=32)

# 04 offline: the toy world, runs long enough that the betas separate (issue 27's sweep), trained by the scratch
# loop (TRL's steps without the Trainer; 04 §2a replays TRL's first steps to check), KL from every held-out prompt
# (233) x 4 samples, and §4's over-optimised run is the sweep's smallest beta (cached, no extra run).
SWEEP_OFFLINE: dict[str, Any] = dict(
    recipe={**OFFLINE, "learning_rate": 0.00015, "max_steps": 120, "batch_size": 4, "sft_weight": 0.0,
            "backend": "transformers"},
    betas=(1.0, 3.0, 10.0, 30.0, 100.0), checkpoints=(60,), loop="scratch", kl_prompts=256, kl_samples=4,
    path_samples=1, max_new_tokens=32, sample_batch=128, overopt=dict(beta=1.0), run_loss_sweep=False)


def _mode_line(overrides: dict[str, Any], what: str) -> None:
    print(f"offline: {what},", ", ".join(f"{k}={v}" for k, v in overrides.items()))


def training_plan(rt, recipe: DPORecipe, *, sample_decoding: dict[str, Any]) -> SimpleNamespace:
    """Notebook 03: ``recipe`` as the parameters cell built it, or offline the toy world's (``recipe.OFFLINE``), and
    how §7b samples and checks the answers. ``min_accuracy``: what the offline default was measured to reach on
    held-out pairs (03 §6 asserts it; None online, where a run is a measurement, not a check)."""
    if rt.hub:
        return SimpleNamespace(recipe=recipe, decoding=sample_decoding, rules="real", offline=False,
                               min_accuracy=None)
    _mode_line(OFFLINE, "using the toy world instead")
    return SimpleNamespace(recipe=recipe.replace(**OFFLINE), decoding=TOY_DECODING, rules="toy", offline=True,
                           min_accuracy=0.9)


def sweep_plan(rt, **online: Any) -> SimpleNamespace:
    """Notebook 04: the parameters cell's sweep settings (``online``: betas, checkpoints, loop, kl_prompts,
    kl_samples, path_samples, max_new_tokens, sample_batch, overopt, run_loss_sweep), or offline
    ``SWEEP_OFFLINE``'s; ``recipe`` holds what replaces the base recipe's fields, ``quality_rules`` the malformed
    check's rules, ``reward_fn`` the toy world's ground truth offline (online the judge's, set by the notebook)."""
    plan = SimpleNamespace(**online)
    if plan.run_loss_sweep is None:
        plan.run_loss_sweep = bool(rt.hub)  # None: online only (offline the 90 s budget goes to the beta sweep)
    if rt.hub:
        plan.__dict__.update(recipe={}, quality_rules="real", reward_fn=None, reward_name=None, offline=False)
        return plan
    from helpers.worlds.toy import toy_reward

    plan.__dict__.update(SWEEP_OFFLINE, quality_rules="toy", reward_fn=toy_reward, offline=True,
                         reward_name="ground-truth reward (toy_reward)")
    if online["run_loss_sweep"]:
        plan.run_loss_sweep = True
    _mode_line(plan.recipe, "toy world")
    return plan


def generation_plan(rt, *, run_dir: str, decoding: dict[str, Any]) -> SimpleNamespace:
    """Notebook 05: the recipe notebook 03 would train if ``TRAIN_DIR`` holds no adapter yet (online its defaults on
    02's pairs, offline the toy world's), whether §0 shows the real SmolLM2 (offline only: online the reference
    *is* SmolLM2), and ``for_recipe(recipe)`` -> (toy, decoding, quality rules) once the trained recipe is known."""
    offline = not rt.hub
    recipe03 = DPORecipe(**{**OFFLINE, "backend": "transformers"}) if offline else DPORecipe(data=f"{run_dir}/02_hh")

    def for_recipe(recipe: DPORecipe) -> tuple[bool, dict[str, Any], str]:
        toy = recipe.data == "toy"
        return toy, (TOY_DECODING if toy else decoding), ("toy" if toy else "real")

    return SimpleNamespace(recipe03=recipe03, show_real_model=offline, for_recipe=for_recipe)


# DPO_QUICK=1: each notebook's shrunk settings, as source inserted after its parameters cell (names as there).
QUICK: dict[str, str] = {
    "02_hh_rlhf_formatting": "LIMIT, TEST_LIMIT = 400, 12",
    "03_unsloth_lora_dpo": """\
MAX_STEPS, BATCH_SIZE, GRAD_ACCUM, WARMUP_STEPS = 3, 2, 1, 0
MAX_LENGTH, MAX_PROMPT_LENGTH = 256, 192
EVAL_STEPS, SAVE_STEPS, LOGGING_STEPS = 3, 3, 1
SAMPLE_PROMPTS, SAMPLE_DECODING = 4, dict(SAMPLE_DECODING, max_new_tokens=24)""",
    "04_beta_sensitivity": """\
BETAS, LOSS_SWEEP = (0.1, 1.0), ("sigmoid", "ipo")
MAX_STEPS, BATCH_SIZE, GRAD_ACCUM, MAX_LENGTH, MAX_PROMPT_LENGTH = 2, 2, 1, 256, 192
KL_PROMPTS, KL_SAMPLES, MAX_NEW_TOKENS, CHECKPOINTS = 2, 2, 16, ()
JUDGE_TRUST_PAIRS = 8""",
    "05_before_after_generation": """\
N_PROMPTS, JUDGE_PROMPTS, JUDGE_TRUST_PAIRS = 6, 6, 8
DECODING = dict(DECODING, max_new_tokens=24)""",
}


def quick_cell(notebook: str) -> str | None:
    """The cell ``DPO_QUICK=1`` inserts after ``notebook``'s parameters cell (None: it changes nothing there)."""
    body = QUICK.get(notebook)
    if body is None:
        return None
    return ("# Injected by the runner (DPO_QUICK=1, helpers.course.presets.QUICK): a smoke-test size of the online "
            "branch\n" + body)
