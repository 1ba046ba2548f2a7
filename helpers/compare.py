"""Notebook 05: reference vs DPO policy generations on held-out prompts, scored, compared and exported.

Both generations of a prompt use the same seed and decoding settings. Scores: offline the toy world's ground-truth
``toy_reward``; online a reward model on the learner's GPU (``helpers.judge``); in both modes DPO's implicit reward
beta * (log pi(y|x) - log pi_ref(y|x)) of each generation, reported as what DPO learned, never as quality.
``score_comparison`` turns two sides' scores into a win rate with its interval, a strict win rate (a malformed
answer loses) and the mean difference with its standard error.
"""

from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path
from typing import Any

from helpers.infra.files import write_text
from helpers.judge import wilson_interval

__all__ = ["load_policy", "expected_generation", "generate_side_by_side", "implicit_rewards", "win_rate",
           "strict_win_rate", "score_comparison", "export_comparison", "score_rows", "judge_rows", "comparison_columns"]


def load_policy(adapter_dir: str | Path, base_model: str | Path):
    """The base (reference) model with the saved LoRA adapter on top, and its tokenizer (transformers + peft).

    ``base_model`` is resolved like ``helpers.models.load_model`` does (local directory, HF cache, hub, packaged).

    With the adapter disabled (``model.disable_adapter()``) the same object is the reference policy.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from helpers.infra.hubio import resolve_source
    from helpers.models import device_and_dtype, load_tokenizer

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ValueError(f"adapter_dir {adapter_dir} holds no adapter_config.json: run notebook 03 first")
    from helpers.infra.quiet import progress_bars_off

    device, dtype = device_and_dtype()  # the runtime's GPU and precision (fp16 on a T4), as load_model does
    with progress_bars_off():
        base = AutoModelForCausalLM.from_pretrained(resolve_source(base_model)[0], dtype=dtype).to(device)
        model = PeftModel.from_pretrained(base, str(adapter_dir)).to(device)
    model.eval()
    tok, _ = load_tokenizer(adapter_dir, verbose=False)
    return model, tok


# Seconds per decode step of one generation batch (helpers.evaluation.sample_responses, up to 32 prompts).
CPU_DECODE_STEP_S = 2.4   # measured: SmolLM2-135M, 32 HH prompts, 2 cores: 518 s and 627 s for 256 steps in two runs
#                           of benchmarks/bench_quality_calibration.py (the later one in quality_calibration.json)
GPU_DECODE_STEP_S = 0.03  # arithmetic, not measured: HF generate on a 30-layer 135M model with an unmerged LoRA is
#                           launch-bound, ~1 ms per layer per token on a T4-class GPU


def expected_generation(n_prompts: int, decoding: dict, *, device: str, toy: bool = False,
                        batch_size: int = 32) -> tuple[float | None, str]:
    """``(seconds or None, where the figure comes from)`` for ``generate_side_by_side`` on ``n_prompts`` prompts with
    ``decoding`` on ``device`` ("cuda" or "cpu"): two sides x ceil(n_prompts / batch_size) batches x
    ``max_new_tokens`` decode steps. None for the toy world's tiny model (seconds)."""
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    new = int(decoding.get("max_new_tokens", 32))
    steps = 2 * math.ceil(n_prompts / batch_size) * new
    if toy:
        return None, f"the toy world's tiny model: {steps} decode steps take seconds"
    if device == "cuda":
        return steps * GPU_DECODE_STEP_S, (f"{steps} decode steps x ~{GPU_DECODE_STEP_S * 1000:.0f} ms (arithmetic "
                                           "for a 135M model on a T4-class GPU, not a measurement)")
    return steps * CPU_DECODE_STEP_S, (f"{steps} decode steps x ~{CPU_DECODE_STEP_S:.1f} s per batch step measured "
                                       "for SmolLM2 on 2 CPU cores with 32 long HH prompts (quality_calibration."
                                       "json): an upper bound for smaller batches; use a GPU runtime")


def generate_side_by_side(model, tokenizer, prompts, *, decoding: dict, seed: int = 0) -> list[dict[str, Any]]:
    """One reference and one policy generation per prompt, same seed and decoding: ``[{"prompt", "messages",
    "reference", "policy", "stopped_reference", "stopped_policy"}]`` with the prompt's last user turn as ``prompt``
    and ``stopped_*`` saying whether that answer ended at eos (False: cut by ``max_new_tokens``)."""
    from helpers.evaluation import sample_responses

    ref, ref_stop = sample_responses(model, tokenizer, prompts, reference=True, seed=seed, return_stopped=True,
                                     **decoding)
    pol, pol_stop = sample_responses(model, tokenizer, prompts, reference=False, seed=seed, return_stopped=True,
                                     **decoding)
    return [{"prompt": p[-1]["content"], "messages": p, "reference": r, "policy": q, "stopped_reference": a,
             "stopped_policy": b} for p, r, q, a, b in zip(prompts, ref, pol, ref_stop, pol_stop, strict=True)]


def implicit_rewards(model, tokenizer, rows: list[dict], *, beta: float) -> tuple[list[float], list[float]]:
    """DPO's implicit reward beta * log(pi/pi_ref) of each reference and each policy generation."""
    from helpers.evaluation import pair_logps

    pairs = [{"prompt": r["messages"], "chosen": [{"role": "assistant", "content": r["policy"]}],
              "rejected": [{"role": "assistant", "content": r["reference"]}]} for r in rows]
    pol = pair_logps(model, tokenizer, pairs)
    ref = pair_logps(model, tokenizer, pairs, reference=True)
    return ((beta * (pol["rejected"] - ref["rejected"])).tolist(), (beta * (pol["chosen"] - ref["chosen"])).tolist())


def win_rate(policy_scores, reference_scores) -> float:
    """Share of prompts where the policy's score beats the reference's; ties count one half."""
    if len(policy_scores) != len(reference_scores) or not policy_scores:
        raise ValueError("policy_scores and reference_scores must be non-empty and of equal length")
    wins = sum((p > r) + 0.5 * (p == r) for p, r in zip(policy_scores, reference_scores, strict=True))
    return wins / len(policy_scores)


def strict_win_rate(policy_scores, reference_scores, policy_malformed, reference_malformed) -> float:
    """``win_rate`` in which a malformed answer (``helpers.quality``) loses to a well-formed one whatever its score;
    two malformed answers tie. A score that only counts markers cannot then reward broken text."""
    n = len(policy_scores)
    if not n or not n == len(reference_scores) == len(policy_malformed) == len(reference_malformed):
        raise ValueError("policy_scores, reference_scores and both malformed lists must be non-empty, equal length")
    total = 0.0
    for p, r, pb, rb in zip(policy_scores, reference_scores, policy_malformed, reference_malformed, strict=True):
        total += 0.5 if pb and rb else 0.0 if pb else 1.0 if rb else (p > r) + 0.5 * (p == r)
    return total / n


def score_comparison(policy_scores, reference_scores, policy_malformed, reference_malformed) -> dict[str, Any]:
    """A judge's verdict on N prompts: ``win_rate`` (the policy's score higher, ties half) with its 95% Wilson
    ``win_interval``, ``strict_win_rate`` (a malformed answer loses whatever its score), ``mean_difference`` (policy
    minus reference) with its standard error, ``n``."""
    import numpy as np

    p, r = np.asarray(policy_scores, float), np.asarray(reference_scores, float)
    if p.shape != r.shape or p.ndim != 1:
        raise ValueError(f"policy_scores and reference_scores must be 1-D and of equal length, got {p.shape} and "
                         f"{r.shape}")
    keep = np.isfinite(p) & np.isfinite(r)  # a NaN score is no verdict: left out and counted, never a loss
    if not keep.any():
        raise ValueError(f"no prompt has a finite score on both sides ({len(p)} prompts): the scores are NaN/inf")
    excluded = int((~keep).sum())
    policy_scores, reference_scores = p[keep].tolist(), r[keep].tolist()
    policy_malformed = [x for x, k in zip(policy_malformed, keep, strict=True) if k]
    reference_malformed = [x for x, k in zip(reference_malformed, keep, strict=True) if k]
    wr = win_rate(list(policy_scores), list(reference_scores))
    n = len(policy_scores)
    d = np.asarray(policy_scores, float) - np.asarray(reference_scores, float)
    return {"n": n, "nan_excluded": excluded, "win_rate": wr,
            "win_interval": list(wilson_interval(round(wr * n * 2) / 2, n)),
            "strict_win_rate": strict_win_rate(list(policy_scores), list(reference_scores), list(policy_malformed),
                                               list(reference_malformed)),
            "mean_difference": float(d.mean()), "mean_difference_se": float(d.std(ddof=1) / np.sqrt(n)) if n > 1
            else None}


def export_comparison(rows: list[dict], out_dir: str | Path, *, columns: list[str]) -> dict[str, Path]:
    """Write ``comparison.csv`` and ``comparison.html`` (one row per prompt) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "comparison.csv", "html": out / "comparison.html"}
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(paths["csv"], buf.getvalue())  # atomic, as every file the course writes
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    write_text(paths["html"], f"<!doctype html><meta charset='utf-8'><title>reference vs DPO policy</title>"
               f"<table border=1 cellpadding=4 style='border-collapse:collapse'>"
               f"<tr>{head}</tr>{body}</table>\n")
    return paths


def score_rows(model, tokenizer, rows: list[dict], *, beta: float, toy: bool, rules: str, seed: int,
               decoding: dict) -> tuple[dict[str, Any], dict[str, list[bool]]]:
    """Score notebook 05's side-by-side ``rows`` in place and summarise them: every answer's implicit reward
    (``beta`` > 0), length in tokens and malformed reason (``rules``: "toy" or "real", ``helpers.quality``); with
    ``toy`` also the toy world's ground truth, its win rates (a malformed answer loses the strict one), their interval
    and the chosen-style rates. Online the implicit reward is reported as what DPO learned, never as a win rate.

    Returns ``(summary, malformed)``: ``malformed[side]`` is one bool per row, for ``side`` in reference / policy."""
    import numpy as np

    from helpers.quality import malformed_reason

    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    ref_ir, pol_ir = implicit_rewards(model, tokenizer, rows, beta=beta)
    for r, a, b in zip(rows, ref_ir, pol_ir, strict=True):
        r["implicit_reward_reference"], r["implicit_reward_policy"] = round(a, 4), round(b, 4)
        r["tokens_reference"] = len(tokenizer(r["reference"], add_special_tokens=False)["input_ids"])
        r["tokens_policy"] = len(tokenizer(r["policy"], add_special_tokens=False)["input_ids"])
    summary: dict[str, Any] = {
        "n": len(rows), "decoding": decoding, "seed": seed,
        "implicit_reward_reference": float(np.mean(ref_ir)), "implicit_reward_policy": float(np.mean(pol_ir)),
        "tokens_reference": float(np.mean([r["tokens_reference"] for r in rows])),
        "tokens_policy": float(np.mean([r["tokens_policy"] for r in rows]))}
    if toy:
        from helpers.worlds.toy import is_chosen_style, toy_reward

        for r in rows:
            r["toy_reward_reference"], r["toy_reward_policy"] = toy_reward(r["reference"]), toy_reward(r["policy"])
        summary["score"] = "toy_reward (ground truth)"
        summary["reward_reference"] = float(np.mean([r["toy_reward_reference"] for r in rows]))
        summary["reward_policy"] = float(np.mean([r["toy_reward_policy"] for r in rows]))
        summary["chosen_style_rate_before"] = float(np.mean([is_chosen_style(r["reference"]) for r in rows]))
        summary["chosen_style_rate_after"] = float(np.mean([is_chosen_style(r["policy"]) for r in rows]))
        summary["win_rate"] = win_rate([r["toy_reward_policy"] for r in rows],
                                       [r["toy_reward_reference"] for r in rows])
    else:  # the implicit reward says what DPO learned, not whether answers got better: no win rate from it
        summary["score"] = "none yet: the reward-model judge scores in §4 (the implicit reward is what DPO learned)"
        summary["implicit_reward_policy_higher"] = win_rate(pol_ir, ref_ir)
        summary["win_rate"] = None
    for r in rows:
        r["malformed_reference"], r["malformed_policy"] = (malformed_reason(r[s], rules=rules)
                                                           for s in ("reference", "policy"))
    bad = {s: [r[f"malformed_{s}"] is not None for r in rows] for s in ("reference", "policy")}
    summary["quality_rules"] = rules
    summary["malformed_rate_before"], summary["malformed_rate_after"] = (float(np.mean(bad[s]))
                                                                         for s in ("reference", "policy"))
    # cut by max_new_tokens and otherwise well-formed: reported apart, not counted as malformed
    summary["truncated_rate_before"], summary["truncated_rate_after"] = (
        float(np.mean([r[f"malformed_{s}"] is None and not r[f"stopped_{s}"] for r in rows]))
        for s in ("reference", "policy"))
    summary["strict_win_rate"] = None
    if toy:  # the same comparison with its uncertainty: a conclusion holds only beyond its interval
        pol, ref = [r["toy_reward_policy"] for r in rows], [r["toy_reward_reference"] for r in rows]
        summary["strict_win_rate"] = strict_win_rate(pol, ref, bad["policy"], bad["reference"])
        c = score_comparison(pol, ref, bad["policy"], bad["reference"])
        summary["win_interval"] = c["win_interval"]
        summary["reward_difference"], summary["reward_difference_se"] = c["mean_difference"], c["mean_difference_se"]
    return summary, bad


def judge_rows(judge, trust: dict[str, Any], rows: list[dict], bad: dict[str, list[bool]],
               summary: dict[str, Any]) -> str:
    """Score both sides of every row with the reward-model ``judge`` (its ``trust`` measured first), store the scores
    in the rows and the comparison in ``summary`` (win rate with its 95% Wilson interval, strict win rate, mean
    difference; the win rate again on the untruncated and on the length-matched pairs; ``judge_trusted``), and return
    what it shows, in words: a verdict only when the judge's agreement with the human labels is beyond chance (the
    lower end of its Wilson interval above 0.5)."""
    from helpers.judge import expected_seconds, length_matched, score

    msgs = [r["messages"] for r in rows]
    answers = [r["reference"] for r in rows] + [r["policy"] for r in rows]
    seconds, why = expected_seconds(judge, msgs * 2, answers, measured_tokens_per_s=trust["tokens_per_s"])
    print(f"expected: ~{seconds:.0f} s to score {len(answers)} answers ({why})")
    js = score(judge, msgs * 2, answers)
    n = len(rows)
    for r, a, b in zip(rows, js["scores"][:n], js["scores"][n:], strict=True):
        r["judge_reference"], r["judge_policy"] = round(float(a), 4), round(float(b), 4)
    c = score_comparison(js["scores"][n:], js["scores"][:n], bad["policy"], bad["reference"])
    summary.update(judge=judge.name, judge_random_weights=judge.random_weights, win_rate=c["win_rate"],
                   win_interval=c["win_interval"], strict_win_rate=c["strict_win_rate"],
                   judge_difference=c["mean_difference"], judge_difference_se=c["mean_difference_se"],
                   judge_agreement=trust["agreement"], judge_agreement_n=trust["n"], judge_trust=trust,
                   judge_truncated=js["truncated"], score=f"reward model {judge.label()}")
    lo, hi = c["win_interval"]
    se = "n/a" if c["mean_difference_se"] is None else f"{c['mean_difference_se']:.3f}"
    trusted = trust["interval"][0] > 0.5  # the trust check first: a judge that disagrees with people decides nothing
    verdict = ("the judge cannot decide here: its agreement with the human labels "
               f"({trust['agreement']:.2f}, interval {trust['interval'][0]:.2f}-{trust['interval'][1]:.2f}) is not "
               "beyond chance" if not trusted else
               "the DPO policy's answers score higher than the reference's" if lo > 0.5 else
               "the DPO policy's answers score lower than the reference's" if hi < 0.5 else
               "no difference shown: the interval holds 0.5")
    subsets = {"untruncated": [r["stopped_reference"] and r["stopped_policy"] for r in rows],
               "length_matched": length_matched([r["tokens_reference"] for r in rows],
                                                [r["tokens_policy"] for r in rows]).tolist()}
    parts = []
    for name, keep in subsets.items():
        idx = [i for i, k in enumerate(keep) if k]
        summary[f"win_rate_{name}_n"] = len(idx)
        summary[f"win_rate_{name}"] = summary[f"win_interval_{name}"] = None
        if idx:
            sub = score_comparison([js["scores"][n + i] for i in idx], [js["scores"][i] for i in idx],
                                   [bad["policy"][i] for i in idx], [bad["reference"][i] for i in idx])
            summary[f"win_rate_{name}"], summary[f"win_interval_{name}"] = sub["win_rate"], sub["win_interval"]
            parts.append(f"{sub['win_rate']:.3f} on the {len(idx)} {name.replace('_', '-')} pairs "
                         f"({sub['win_interval'][0]:.2f}-{sub['win_interval'][1]:.2f})")
        else:
            parts.append(f"no {name.replace('_', '-')} pairs")
    summary["judge_trusted"] = trusted
    return (f"judge: {judge.label()}\n  win rate of the DPO policy over the reference {c['win_rate']:.3f} on {n} "
            f"prompts (ties half; 95% Wilson interval {lo:.2f}-{hi:.2f}) -> {verdict}\n"
            f"  the same where stopping and length cannot drive it: {'; '.join(parts)} (untruncated: neither "
            "answer cut at max_new_tokens; length-matched: within 20% of each other's tokens)\n"
            f"  strict win rate (a malformed answer loses) {c['strict_win_rate']:.3f}; mean score difference "
            f"{c['mean_difference']:+.3f} ± {se} (s.e.)\n"
            f"  answer lengths beside it: reference {summary['tokens_reference']:.1f}, policy "
            f"{summary['tokens_policy']:.1f} tokens on average (the judge's taste for length is measured above)")


def comparison_columns(rows: list[dict], summary: dict[str, Any]) -> list[str]:
    """The columns ``export_comparison`` writes for notebook 05's rows: the answers, their lengths, malformed reasons
    and implicit rewards, and whichever scores this run has (toy reward, judge, LLM judge)."""
    columns = ["prompt", "reference", "policy", "tokens_reference", "tokens_policy", "malformed_reference",
               "malformed_policy", "implicit_reward_reference", "implicit_reward_policy"]
    if rows and "toy_reward_reference" in rows[0]:
        columns += ["toy_reward_reference", "toy_reward_policy"]
    if "judge" in summary:
        columns += ["judge_reference", "judge_policy"]
    if "llm_judge" in summary:
        columns += ["llm_judge"]
    return columns
