"""Reports over stored measurements that notebooks 03 and 05 print: the online recipe's pilot, the GPU cost
(arithmetic and measurements), the on-policy SmolLM2 benchmark behind 03's Appendix B, 05's SFT-term benchmark.

Each returns a ``Report`` (``str()`` is the printout; ``values`` holds what its verdicts computed, for tests). The
verdicts are computed from the stored numbers, with the rules stated in the text; a file that is missing or
unreadable is an error naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.course.estimate import (
    PILOT_FILE,
    RESULTS,
    estimate_lora_dpo,
    llama_parameter_count,
    lora_parameter_count,
    measured_gpu,
    measured_gpu_table,
    pilot_pick,
)
from helpers.sweep_report import Report

__all__ = ["Report", "read_result", "recipe_report", "pilot_report", "gpu_cost_report", "onpolicy_report",
           "sft_bench_report",
           "ONPOLICY_FILE", "SFT_FILE"]

ONPOLICY_FILE = RESULTS / "onpolicy_smollm2_cpu_dpo.json"
SFT_FILE = RESULTS / "offline_recipe_sft.json"


def read_result(path: str | Path) -> dict[str, Any]:
    """A stored benchmark result (JSON); a missing or unreadable file is a ValueError that names it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"benchmark result {path} cannot be read ({e}); rerun the benchmark that writes it") from e


def pilot_report(learning_rate: float, sft_weight: float, path: str | Path = PILOT_FILE) -> Report:
    """03 §1: the online recipe pilot's runs, what its rule picks, what that can support, and whether the notebook's
    ``learning_rate``/``sft_weight`` and ``DPORecipe``'s defaults are the pick (``values['same']``)."""
    from helpers.recipe import DPORecipe

    pilot = read_result(path)
    pick = pilot_pick(pilot)
    st = pilot["settings"]
    out = [f"online recipe pilot ({pilot['command']}, {pilot['date']}, {pilot['machine']}): real SmolLM2, "
           f"{st['data']}, {st['steps']} steps of {st['batch_size']} pairs, max_length {st['max_length']}, "
           f"{st['test_pairs']} held-out pairs, {st['prompts']} sampled prompts",
           f"reference: malformed {pilot['reference']['quality']['malformed_rate']:.0%} of its samples"]
    for r in pick["rows"]:
        a = r["after"]
        out.append(f"  lr {r['learning_rate']:<7g} sft {r['sft_weight']:<4g}: held-out accuracy "
                   f"{a['rewards/accuracies']:.2f} ± {r['acc_se']:.2f}, margin {a['rewards/margins']:+.3f}, Δ log "
                   f"p(chosen) {a['delta_logps/chosen']:+.2f}, Δ log p(rejected) {a['delta_logps/rejected']:+.2f}, KL "
                   f"{r['policy']['kl']:.2f} ± {r['policy']['kl_se']:.2f}, malformed "
                   f"{r['policy']['quality']['malformed_rate']:.0%}"
                   + ("" if r["ok"] else " (more than the reference: broken)"))
    out.append(f"the rule picks lr {pick['learning_rate']:g}, sft_weight {pick['sft_weight']:g}: {pick['why']}")
    grid_lrs = sorted({r["learning_rate"] for r in pick["rows"]})
    if all(r["ok"] for r in pick["rows"]):
        out.append(f"what that supports: every pilot run stayed well-formed, so the rule could only return the grid's "
                   f"largest learning rate ({grid_lrs[-1]:g}); these are defaults the pilot found nothing against, "
                   "not a "
                   "measured optimum")
    accs = [(r["after"]["rewards/accuracies"], r["acc_se"]) for r in pick["rows"]]
    lo_acc, hi_acc = min(accs), max(accs)
    if hi_acc[0] - lo_acc[0] <= 2 * (hi_acc[1] ** 2 + lo_acc[1] ** 2) ** 0.5:
        out.append(f"  the held-out accuracies ({lo_acc[0]:.2f}-{hi_acc[0]:.2f}, ± {max(s for _, s in accs):.2f}) do "
                   "not "
                   "separate the settings beyond 2 s.e.; the SFT term raises Δ log p(chosen) by construction (it is "
                   "the chosen answers' likelihood)")
    online, chosen = DPORecipe(), (pick["learning_rate"], pick["sft_weight"])
    same = (learning_rate, sft_weight) == (online.learning_rate, online.sft_weight) == chosen
    out.append(f"online defaults: LEARNING_RATE {learning_rate:g}, SFT_WEIGHT {sft_weight:g} (DPORecipe: lr "
               f"{online.learning_rate:g}, sft_weight {online.sft_weight:g}) -> "
               + ("as the pilot picks" if same else "NOT what the pilot picks"))
    return Report(out, {"pick": pick, "same": same})


def gpu_cost_report(recipe, model_config, n_params: int, n_trainable: int, *, also_online: bool) -> Report:
    """03 Appendix A: the T4 arithmetic for ``recipe`` on this model (and, with ``also_online``, for the online
    default on SmolLM2-135M), its assumptions, then the GPU measurements and Unsloth's speed and memory ratios."""
    from helpers.infra.tinymodel import SMOLLM2_135M
    from helpers.recipe import DPORecipe

    def t4(config, n, t, seq_len, r):
        return estimate_lora_dpo(config, n, t, batch_size=r.batch_size, grad_accum=r.grad_accum, seq_len=seq_len,
                                 steps=max(r.max_steps, 1))

    est = t4(model_config, n_params, n_trainable, recipe.max_length, recipe)
    out = [f"T4 estimate for these settings (sequences padded to max_length={recipe.max_length}): "
           f"{est}"]
    if also_online:
        online = DPORecipe()
        n, t = llama_parameter_count(SMOLLM2_135M), lora_parameter_count(SMOLLM2_135M, online.lora_r,
                                                                         online.lora_targets)
        out.append(f"online default (SmolLM2-135M, batch {online.batch_size}x{online.grad_accum}, {online.max_length} "
                   f"tokens, {online.max_steps} steps): {t4(SMOLLM2_135M, n, t, online.max_length, online)}")
    out += ["assumptions:"] + [f"  - {a}" for a in est.assumptions]
    out += ["",
            "Measured: this recipe's defaults (LoRA r=16 on all projections, batch 8 x 2, max_length 512) on a GPU,",
            "SmolLM2-135M's exact architecture with random weights, fixed-length synthetic pairs "
            "(benchmarks/bench_gpu_recipe.py):"]
    gpu = measured_gpu()
    out.append(measured_gpu_table(gpu))
    for key in sorted({(r["device"], r["dtype"], r["mean_tokens"]["prompt"]) for r in gpu}):
        u, t = ([r for r in gpu if (r["device"], r["dtype"], r["mean_tokens"]["prompt"]) == key and r["backend"] == b]
                for b in ("unsloth", "transformers"))
        if u and t:
            out.append(f"{key[1]}, prompts of {key[2]:.0f} tokens: Unsloth "
                       f"{u[0]['steps_per_s'] / t[0]['steps_per_s']:.2f}x "
                       f"the steps/s of transformers + peft, "
                       f"{t[0]['peak_allocated_gib'] / u[0]['peak_allocated_gib']:.1f}x less peak memory")
    return Report(out, {"estimate": est})


def _beyond(change: float, se: float) -> str:
    return "beyond" if abs(change) > 2 * se else "within"


def onpolicy_report(path: str | Path = ONPOLICY_FILE) -> Report:
    """03 Appendix B: SmolLM2 trained on 2 CPU cores on on-policy and off-policy pairs, every run's held-out pass
    rate change with its s.e., whether any run meets the goal within the notebook's budget
    (``helpers.worlds.onpolicy.benchmark_verdicts``), and what the on-policy run learned, from the stored counts."""
    from helpers.worlds.onpolicy import BUDGET_S, CHECK_LINE, GOAL_POINTS, benchmark_verdicts

    bench = read_result(path)
    ref = bench["reference"]
    out = [f"measured {bench['date']} on {bench['machine']} ({bench['command']})", f"ground truth: {CHECK_LINE}",
           f"reference SmolLM2: held-out pass rate {ref['pass_rate']:.2f} ± {ref['se']:.2f} of {ref['n']} samples, "
           f"malformed {ref['quality']['malformed_rate']:.0%}, {ref['mean_words']:.0f} words per answer"]
    verdict = {v["name"]: v for v in benchmark_verdicts(bench)}
    for x in bench["runs"]:
        v = verdict[x["name"]]
        out.append(f"  {x['name']:<22} {x['pairs']:<9} lr {x['learning_rate']:g} x {x['steps']:>2} steps, beta "
                   f"{x['beta']:g}, sft {x['sft_weight']:g}, r {x['lora_r']}: pass {x['policy']['pass_rate']:.2f} "
                   f"({v['change']:+.2f} ± {v['se']:.2f}), malformed {x['policy']['quality']['malformed_rate']:.0%}, "
                   f"{x['policy']['mean_words']:.0f} words, KL {x['policy']['kl']:.1f}, Δ log p(chosen) "
                   f"{x['after']['delta_logps/chosen']:+.1f}, {v['seconds']:.0f} s")
    runs = {x["name"]: x for x in bench["runs"]}
    on, off = verdict.get("base"), verdict.get("offpolicy")
    if on and off:
        out.append(f"\nsame settings, same steps: on-policy pairs moved the held-out pass rate {on['change']:+.2f} ± "
                   f"{on['se']:.2f}, off-policy pairs {off['change']:+.2f} ± {off['se']:.2f}; chosen-answer log-prob "
                   "of "
                   f"the off-policy run {runs['offpolicy']['after']['delta_logps/chosen']:+.1f} nats")
    meets = [v["name"] for v in verdict.values() if v["meets"]]
    best_fit = max((v for v in verdict.values() if v["fits"]), key=lambda v: v["change"], default=None)
    out.append(f"a run that lifts the pass rate by >= {GOAL_POINTS:.0%} points, keeps the malformed rate, and fits "
               f"this notebook (its training parts <= {BUDGET_S:.0f} s of the 90 s: imports, plots and saving take "
               f"the rest): {', '.join(meets) or 'none'}"
               + ("" if meets else " -> the offline default stays the toy model; the best run within the budget: "
                  + (f"{best_fit['name']} ({best_fit['change']:+.2f})" if best_fit else "none fits")))
    if "base" in runs:  # what the on-policy run learned, from the stored counts: not simply "better answers"
        b, vb = runs["base"]["policy"], verdict["base"]
        n_q = len(ref["examples"])
        out.append(f"\nwhat the on-policy run (base) learned, on {ref['n']} held-out samples of {n_q} questions:")
        for reason in sorted(set(ref["fails"]) | set(b["fails"])):
            out.append(f"  fails '{reason}': {ref['fails'].get(reason, 0)} -> {b['fails'].get(reason, 0)}")
        out.append(f"  words per answer: {ref['mean_words']:.0f} -> {b['mean_words']:.0f} (the chosen side of every "
                   "pair "
                   "is the shortest passing sample: helpers.worlds.onpolicy.make_pairs)")
        moved = {k: b["fails"].get(k, 0) - ref["fails"].get(k, 0) for k in ("misses the answer", "wrong")}
        out.append(f"  so: answers that miss the answer in their first sentence "
                   f"{'fell' if moved['misses the answer'] < 0 else 'did not fall'} ({moved['misses the answer']:+d}), "
                   f"wrong answers {'rose' if moved['wrong'] > 0 else 'did not rise'} ({moved['wrong']:+d}), answers "
                   "got "
                   f"{'shorter' if b['mean_words'] < ref['mean_words'] else 'longer'}; pass rate change "
                   f"{vb['change']:+.2f} ± {vb['se']:.2f} with the samples taken as independent: "
                   f"{_beyond(vb['change'], vb['se'])} 2 s.e.")
        sc = vb["se_clustered"]
        if sc is not None:  # the samples come 4 per question: paired by question, clustered
            out.append(f"  paired and clustered by question ({n_q} questions, {ref['n'] // n_q} samples each): "
                       f"{vb['change']:+.2f} ± {sc:.2f}, {_beyond(vb['change'], sc)} 2 s.e. (the s.e. to read)")
        else:
            out.append("  the stored results keep no per-question outcomes: rerun benchmarks/bench_onpolicy_dpo.py "
                       "base "
                       "for the s.e. clustered by question")
    return Report(out, {"verdicts": verdict, "meets": meets})


def sft_bench_report(path: str | Path = SFT_FILE) -> Report:
    """05 §3: notebook 03's offline recipe with and without the SFT term (benchmarks/bench_offline_recipe.py)."""
    bench = read_result(path)
    out = [f"notebook 03's offline recipe with and without the SFT term ({bench['command']}, {bench['date']}, "
           f"{bench['runs'][0]['prompts']} held-out prompts, decoding as here):"]
    for x in bench["runs"]:
        out.append(f"  {x['config']:<8} (sft_weight {x['recipe']['sft_weight']:g}): chosen-style "
                   f"{x['chosen_style_rate_before']:.2f} -> {x['chosen_style_rate_after']:.2f}, malformed "
                   f"{x['malformed_rate_before']:.1%} -> {x['malformed_rate_after']:.1%}, win rate "
                   f"{x['win_rate']:.3f}, "
                   f"strict {x['strict_win_rate']:.3f}, Δ log p(chosen) {x['delta_logps_chosen']:+.2f}")
    return Report(out)


def recipe_report(recipe) -> Report:
    """03 §1: every field of ``recipe`` (a ``DPORecipe``) with its value and the first clause of its help text
    (the same text ``python -m helpers.course.cli --help`` prints)."""
    import dataclasses

    out = []
    for f in dataclasses.fields(recipe):
        text = f.metadata.get("help", "")
        short = text.split("; ")[0]
        short = short if len(short) <= 72 else short[:71] + "…"
        out.append(f"  {f.name:<17} {str(getattr(recipe, f.name)):<24} {short}")
    return Report(out)
