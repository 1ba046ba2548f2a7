"""What a beta sweep shows (notebook 04): its table, which runs are healthy enough to draw a lesson from, the facts it
supports beyond 2 standard errors, the over-optimised run, and the check that the scratch loop takes TRL's steps.

Every fact is computed from the runs' numbers and can fail: a claim that does not hold beyond 2 s.e. of what it
compares is printed as NOT shown (which is not the same as false). ``Report`` objects print as text, so a notebook
cell shows them by leaving them last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from helpers.quality import excess_rate

__all__ = ["Report", "no_lesson", "healthy_runs", "sweep_table", "sweep_facts", "check_sized_sweep",
           "overopt_report", "replay_report", "sweep_metrics", "METRIC_KEYS", "facts_report", "na"]

Row = dict[str, Any]


@dataclass
class Report:
    """Lines of a printed report (``str(report)``, and what Jupyter shows) and the values they came from."""

    lines: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def __repr__(self) -> str:
        return str(self)


def na(v, spec: str = ".2f") -> str:
    return "n/a" if v is None or v != v else format(v, spec)  # no reward: "n/a", not nan


def _hyp(a: float, b: float) -> float:
    return float(math.hypot(a, b))


def no_lesson(r: Row, ref: Row, malformed_ratio: float) -> str | None:
    """Why run ``r`` draws no lesson: its samples are broken more than ``malformed_ratio`` times as often as the
    reference's ``ref``, beyond 2 standard errors (of ``rate - ratio * reference rate``, the two samples
    independent). None: it is healthy enough to learn from. A bound tied to the reference's own rate: a small model
    breaks some answers before any training, and a fixed number of points would let a run that breaks six times as
    often pass (issue 34)."""
    if not isinstance(malformed_ratio, int | float) or not 1.0 <= malformed_ratio <= 100.0:
        raise ValueError(f"malformed_ratio must be a number in [1, 100] (times the reference's rate), got "
                         f"{malformed_ratio!r}")
    p, n, q, m = r["malformed_rate"], r["kl_n"], ref["malformed_rate"], ref["kl_n"]
    excess_rate(p, n, q, m)  # checks the rates and counts
    se = math.sqrt(p * (1 - p) / n + malformed_ratio ** 2 * q * (1 - q) / m)
    if p - malformed_ratio * q <= 2 * se:
        return None
    return (f"malformed {p:.1%} vs the reference's {q:.1%}: more than {malformed_ratio:g}x its rate "
            f"({malformed_ratio * q:.1%}) + 2 s.e. ({2 * se:.1%})")


def healthy_runs(rows: list[Row], ref: Row, malformed_ratio: float) -> list[Row]:
    """The runs that draw a lesson (``no_lesson`` is None), in the sweep's order."""
    return [r for r in rows if no_lesson(r, ref, malformed_ratio) is None]


def sweep_table(res: dict[str, Any], *, loop: str, kl_samples: int, max_new_tokens: int, quality_rules: str,
                malformed_ratio: float, calibration: str) -> Report:
    """The sweep's table (one row per beta, the reference first), how KL was estimated, and which runs are healthy."""
    rows, ref = res["rows"], res["reference"]
    out = [f"KL estimator: {res['measure']['kl_prompts']} held-out prompts x {kl_samples} samples = "
           f"{rows[0]['kl_n']} samples per run, temperature 1, top-p 1, at most {max_new_tokens} new tokens; at the "
           f"checkpoints {res['measure']['path_samples']} per prompt",
           f"trained by {'DPOTrainer' if loop == 'trl' else 'the scratch loop (helpers.scratch, checked in §2a)'}: "
           + (", ".join(f"β={r['beta']:g} {r['train_seconds']:.1f} s" for r in rows if not r["cached"])
              or "all cached"),
           f"{'beta':>6} {'accuracy':>9} {'margin':>8} {'Δlogp ch':>9} {'Δlogp rej':>10} {'KL ± s.e.':>14} "
           f"{'reward':>7} {'malformed':>10} {'tokens':>7} {'cached':>7}",
           f"{'ref':>6} {'':>9} {'':>8} {'':>9} {'':>10} {0:>14.2f} {na(ref.get('reward')):>7} "
           f"{ref['malformed_rate']:>10.1%} {ref['mean_tokens']:>7.1f}"]
    for r in rows:
        out.append(f"{r['beta']:>6g} {r['heldout_accuracy']:>9.3f} {r['margin']:>8.3f} "
                   f"{r['delta_logps_chosen']:>+9.2f} "
                   f"{r['delta_logps_rejected']:>+10.2f} {r['kl']:>7.2f} ± {r['kl_sem']:<4.2f} "
                   f"{na(r.get('reward')):>7} {r['malformed_rate']:>10.1%} {r['mean_tokens']:>7.1f} "
                   f"{str(r['cached']):>7}")
    healthy = healthy_runs(rows, ref, malformed_ratio)
    out += ["", calibration, "",
            f"quality rules: {quality_rules!r} (helpers.quality); truncated (cut by the {max_new_tokens}-token cap, "
            "not "
            f"counted as malformed): reference {ref['truncated_rate']:.0%}, runs "
            + ", ".join(f"{r['truncated_rate']:.0%}" for r in rows),
            f"well-formed runs (broken at most {malformed_ratio:g}x as often as the reference, beyond 2 s.e.): "
            f"{', '.join('β=' + format(r['beta'], 'g') for r in healthy) or 'none'}"]
    for r in rows:
        why = no_lesson(r, ref, malformed_ratio)
        if why:
            out.append(f"  β={r['beta']:g} draws no lesson below: {why}")
    return Report(out, {"healthy": healthy})


def sweep_facts(hs: list[Row], ref: Row, *, reward_name: str | None) -> list[tuple[str, bool, str]]:
    """The facts after the first (04 §3b computes that one in its cell): ``(claim, holds beyond 2 s.e., evidence)``
    from the healthy runs ``hs`` sorted by beta (at least two) and the reference ``ref``. ``reward_name``: what
    scored the samples (None: no reward, and the two reward facts are left out)."""
    if len(hs) < 2:
        raise ValueError(f"hs must hold at least two healthy runs, got {len(hs)}")
    facts = []
    small = [r for r in hs if r["beta"] <= 0.1]
    if len(small) >= 2:
        a, b = small[0], small[-1]
        d, se = a["kl"] - b["kl"], _hyp(a["kl_sem"], b["kl_sem"])
        facts.append((f"the small betas end at different KL (β={a['beta']:g} vs β={b['beta']:g}); §5 predicts they do "
                      "not while beta*h is small, since Adam cancels beta", bool(abs(d) > 2 * se),
                      f"difference {d:+.2f} ± {se:.2f} (1 s.e.)"))
    if reward_name is not None:
        top = max(hs, key=lambda r: r["reward"])
        d, se = top["reward"] - ref["reward"], _hyp(top["reward_sem"], ref["reward_sem"])
        z = NormalDist().inv_cdf(1 - 0.025 / len(hs))  # the best of len(hs) runs was picked: Bonferroni's bar
        facts.append((f"DPO raised the {reward_name}: the best well-formed run (β={top['beta']:g}) scores above the "
                      f"reference, beyond {z:.1f} s.e. (it was picked as the best of {len(hs)} runs, so the bar is "
                      "raised for that choice)", d > z * se,
                      f"{top['reward']:.2f} vs {ref['reward']:.2f}: {d:+.2f} ± {se:.2f}"))
        far, near = max(hs, key=lambda r: r["kl"]), min(hs, key=lambda r: r["kl"])
        d, se = far["reward"] - near["reward"], _hyp(far["reward_sem"], near["reward_sem"])
        facts.append((f"more KL bought more {reward_name} (the frontier's rising part): the run furthest from the "
                      f"reference (β={far['beta']:g}) scores above the closest (β={near['beta']:g})", d > 2 * se,
                      f"KL {far['kl']:.2f} -> {far['reward']:.2f}, KL {near['kl']:.2f} -> {near['reward']:.2f}: "
                      f"{d:+.2f} ± {se:.2f}"))
    big, others = hs[-1], hs[:-1]
    if big["beta"] > 1:
        nxt = min(others, key=lambda r: abs(r["delta_logps_rejected"]))
        d = abs(nxt["delta_logps_rejected"]) - abs(big["delta_logps_rejected"])
        se = _hyp(big["delta_logps_rejected_se"], nxt["delta_logps_rejected_se"])
        facts.append((f"the largest beta ({big['beta']:g}) moved the rejected answers least: its loss saturates early, "
                      "since sigma(-beta h) is near 0 once beta h is large", d > 2 * se,
                      f"|Δ log p(rejected)| {abs(big['delta_logps_rejected']):.2f} vs the next smallest "
                      f"{abs(nxt['delta_logps_rejected']):.2f} (β={nxt['beta']:g}): {d:+.2f} ± {se:.2f}"))
    acc_hi, acc_lo = max(hs, key=lambda r: r["heldout_accuracy"]), min(hs, key=lambda r: r["heldout_accuracy"])
    d = acc_hi["heldout_accuracy"] - acc_lo["heldout_accuracy"]
    se = _hyp(acc_hi["heldout_accuracy_se"], acc_lo["heldout_accuracy_se"])
    facts.append(("held-out reward accuracy separates the betas (it could then help choose beta)", d > 2 * se,
                  f"range {acc_lo['heldout_accuracy']:.3f}-{acc_hi['heldout_accuracy']:.3f}: {d:.3f} ± {se:.3f}"))
    down = [r for r in hs if r["delta_logps_chosen"] < -2 * r["delta_logps_chosen_se"]]
    facts.append(("some well-formed runs lowered the chosen answers' log-probs too (likelihood displacement)",
                  bool(down), ", ".join(f"β={r['beta']:g}: Δ log p(chosen) {r['delta_logps_chosen']:+.2f} ± "
                                        f"{r['delta_logps_chosen_se']:.2f}" for r in hs)))
    return facts


def facts_report(facts: list[tuple[str, bool, str]]) -> Report:
    """The facts as 04 prints them: each one ``[holds]`` or ``[NOT shown]`` with the numbers it rests on."""
    out = ["Each claim holds only beyond 2 standard errors of what it compares; otherwise it is NOT shown (which is "
           "not the same as false)."]
    out += [f"[{'holds' if holds else 'NOT shown'}] {text}\n        {evidence}" for text, holds, evidence in facts]
    return Report(out, {"facts": {t: h for t, h, _ in facts}})


def check_sized_sweep(rows: list[Row], hs: list[Row], *, min_healthy: int = 4) -> None:
    """What the offline sweep was sized for (04's toy world): at least ``min_healthy`` healthy runs, KL never rising
    with beta beyond 1 s.e., the smallest beta's KL >= 5x the largest's and > 3 s.e. apart, every reward's s.e. <=
    0.05. A change that breaks it fails here, loudly (AssertionError with the numbers)."""
    assert len(hs) >= min_healthy, [(r["beta"], r["malformed_rate"]) for r in rows]
    rises = [(a["beta"], b["beta"]) for a, b in zip(hs, hs[1:], strict=False)
             if b["kl"] - a["kl"] > _hyp(a["kl_sem"], b["kl_sem"])]
    sep = (hs[0]["kl"] - hs[-1]["kl"]) / _hyp(hs[0]["kl_sem"], hs[-1]["kl_sem"])
    assert not rises and hs[0]["kl"] >= 5 * hs[-1]["kl"] and sep > 3, (rises, [(r["beta"], r["kl"]) for r in hs], sep)
    assert all(r["reward_sem"] <= 0.05 for r in rows), [(r["beta"], r["reward_sem"]) for r in rows]


def overopt_report(over: Row, rows: list[Row], ref: Row, overopt: dict[str, Any], *, reward_fn,
                   malformed_ratio: float, judge=None) -> Report:
    """04 §4: the run pushed hardest, labelled by what it shows (never by what it was meant to show): over-optimised
    when its samples break beyond ``no_lesson``'s bound; whether its reward fell below the best well-formed run's as
    its KL grew past it (beyond 2 s.e.: the falling half of the reward-vs-KL curve); its samples and broken
    samples; what the reward said of them (the toy world's ground truth scored sample by sample; online the judge's
    verdict against the reference beyond 2 s.e.). ``values``: ``overoptimised``, ``reward_fell`` (None: no reward or
    nothing to compare)."""
    why = no_lesson(over, ref, malformed_ratio)
    settings = ", ".join(f"{k}={v}" for k, v in overopt.items())
    cached = "; the sweep's own run, cached" if over["cached"] and len(overopt) == 1 else ""
    verdict = (f"OVER-OPTIMISED: {why}" if why else
               f"NOT over-optimised by this measure: {over['malformed_rate']:.1%} of its samples break, within "
               f"{malformed_ratio:g}x the reference's {ref['malformed_rate']:.1%} + 2 s.e.")
    out = [f"the §4 run ({settings}{cached}): {verdict}",
           f"  held-out accuracy {over['heldout_accuracy']:.2f}, KL {over['kl']:.2f}, reward {na(over.get('reward'))}, "
           f"mean length {over['mean_tokens']:.1f} tokens (reference {ref['mean_tokens']:.1f})"]
    same = next((r for r in rows if r["beta"] == over["beta"] and r is not over and len(overopt) > 1), None)
    if same:
        out.append(f"the sweep's run at the same beta: accuracy {same['heldout_accuracy']:.2f}, KL {same['kl']:.2f}, "
                   f"reward {na(same.get('reward'))}, malformed {same['malformed_rate']:.0%}")
    fell = None
    healthy = [r for r in healthy_runs(rows, ref, malformed_ratio) if r is not over and r.get("reward") is not None]
    if over.get("reward") is not None and healthy:
        top = max(healthy, key=lambda r: r["reward"])
        gap, se = over["reward"] - top["reward"], _hyp(over["reward_sem"], top["reward_sem"])
        fell = over["kl"] > top["kl"] and gap < -2 * se
        out.append(f"[{'holds' if fell else 'NOT shown'}] its reward fell as its KL grew past the best well-formed "
                   f"run's (β={top['beta']:g}: KL {top['kl']:.2f}, reward {top['reward']:.2f}): KL {over['kl']:.2f}, "
                   f"reward {over['reward']:.2f} ({gap:+.2f} ± {se:.2f}; below -2 s.e. needed)"
                   + ("" if fell else (". Its KL is not past that run's, so the curve was not followed that far"
                                       if over["kl"] <= top["kl"] else
                                       ". So this run shows " + ("its samples breaking" if why else "more KL")
                                       + ", not the falling half of the reward-vs-KL curve (Gao et al. 2023), by this "
                                       "reward")))
    out.append(f"its samples: {over['samples']}")
    broken = [t for t, _ in over.get("malformed_examples", [])]
    out.append("its broken samples: " + ("; ".join(f"{t!r} ({why})" for t, why in over.get("malformed_examples", []))
                                         or "none"))
    if reward_fn is not None and not getattr(reward_fn, "conversational", False):  # the toy world's ground truth
        scored = ", ".join(f"{s!r}: {reward_fn(s):+.0f}" for s in broken or over["samples"])
        gap, se = over["reward"] - ref["reward"], _hyp(over["reward_sem"], ref["reward_sem"])
        hacked = gap > 2 * se and why is not None
        out.append(f"[{'holds' if hacked else 'NOT shown'}] reward hacking: the §4 run's ground-truth "
                   f"reward {over['reward']:.2f} beats the reference's {ref['reward']:.2f} ({gap:+.2f} ± {se:.2f}, "
                   f"beyond 2 s.e. needed) although {over['malformed_rate']:.0%} of "
                   f"its samples are broken; toy_reward scores fragments by their markers ({scored}). "
                   + ("A reward that does not read the whole answer was gamed here" if hacked else
                      "The broken samples are not scored below the reference, so the reward alone would not have "
                      "flagged this run") + ", which is why every comparison here also checks well-formedness.")
    elif reward_fn is not None:  # the judge reads every sample in its conversation
        gap, se = over["reward"] - ref["reward"], _hyp(over["reward_sem"], ref["reward_sem"])
        word = "above" if gap > 2 * se else "below" if gap < -2 * se else "not distinguishable from"
        out.append(f"the judge scores the §4 run {word} the reference ({over['reward']:.2f} ± "
                   f"{over['reward_sem']:.2f} vs {ref['reward']:.2f} ± {ref['reward_sem']:.2f}, 2 s.e. = "
                   f"{2 * se:.2f}); "
                   f"its samples are {over['malformed_rate']:.0%} malformed (the reference {ref['malformed_rate']:.0%})"
                   + (" [RANDOM-WEIGHT judge: this says nothing]" if getattr(judge, "random_weights", False) else ""))
    else:
        out.append("no reward for these samples (no judge): only their malformed rate and KL say what happened")
    return Report(out, {"overoptimised": why is not None, "reward_fell": fell})


def replay_report(rp: dict[str, Any], rows: list[Row], *, beta: float, pairs_per_step: int) -> Report:
    """04 §2a: TRL's first steps replayed through the scratch loop on the same batches. ``values['same_steps']``:
    the weights agree to 0.1% of how far they moved and every loss to 1e-5."""
    out = [f"{rp['steps']} steps of β={beta:g}, same batches (batch loss per step):",
           "  TRL    : " + " ".join(f"{x:.6f}" for x in rp["trl_losses"]),
           "  scratch: " + " ".join(f"{x:.6f}" for x in rp["scratch_losses"]),
           f"largest |difference| of the {rp['trainable']:,} LoRA weights after {rp['steps']} steps: "
           f"{rp['max_abs_weight_diff']:.1e}, while the largest weight moved by {rp['max_abs_weight_change']:.1e}",
           f"time per step on this machine: DPOTrainer {rp['trl_step_seconds'] * 1e3:.0f} ms, the scratch update "
           f"{rp['scratch_step_seconds'] * 1e3:.0f} ms (both with the reference on every step), plus "
           f"{rp['trl_setup_seconds']:.1f} s to build the DPOTrainer; the sweep's loop computes the reference once"]
    fresh = [r for r in rows if not r["cached"]]
    if fresh:
        out.append(f"the sweep's own steps above: "
                   f"{1e3 * sum(r['train_seconds'] for r in fresh) / sum(r['steps'] for r in fresh):.0f}"
                   f" ms each on average ({len(fresh)} runs, batches of {pairs_per_step} pairs)")
    same_steps = rp["max_abs_weight_diff"] <= 1e-3 * rp["max_abs_weight_change"] and max(
        abs(a - b) for a, b in zip(rp["trl_losses"], rp["scratch_losses"], strict=False)) < 1e-5
    out.append(f"[{'holds' if same_steps else 'NOT shown'}] the scratch loop takes TRL's steps (weights equal to 0.1% "
               "of how far they moved, losses to 1e-5)")
    return Report(out, {"same_steps": same_steps})


METRIC_KEYS = ("beta", "loss_type", "heldout_accuracy", "margin", "kl", "kl_sem", "kl_n", "reward", "reward_sem",
               "delta_logps_chosen", "delta_logps_chosen_se", "delta_logps_rejected_se", "heldout_accuracy_se",
               "delta_logps_rejected", "mean_tokens", "malformed_rate", "truncated_rate", "path")


def sweep_metrics(rows: list[Row], loss_rows: list[Row], ref: Row, over: Row, plan, *, malformed_ratio: float,
                  facts: list[tuple[str, bool, str]], trust, spread: dict[str, float]) -> dict[str, Any]:
    """What notebook 04 records for ``make run``'s summary (``record_metrics``)."""
    bad = {f"beta={r['beta']:g}": no_lesson(r, ref, malformed_ratio) for r in rows}
    return {
        "beta_sweep": [{k: r.get(k) for k in METRIC_KEYS} for r in rows],
        "loss_sweep": [{k: r.get(k) for k in METRIC_KEYS} for r in loss_rows],
        "reference": {k: ref.get(k) for k in ("reward", "reward_sem", "mean_tokens", "malformed_rate",
                                              "truncated_rate")},
        "reward_source": plan.reward_name if plan.reward_fn is not None else None, "judge_trust": trust,
        "quality_rules": plan.quality_rules, "no_lesson": {k: v for k, v in bad.items() if v},
        "overoptimised": {**{k: over.get(k) for k in METRIC_KEYS}, "settings": plan.overopt},
        "malformed_ratio": malformed_ratio,
        "well_formed_betas": [r["beta"] for r in healthy_runs(rows, ref, malformed_ratio)],
        "adam_small_beta_spread": spread,
        "kl_estimator": f"mean of log pi - log pi_ref over {rows[0]['kl_n']} policy samples (T=1, top-p 1)",
        "facts": {t: h for t, h, _ in facts},
    }
