"""Is a generated answer broken? A cheap, explicit check applied to both sides of every comparison.

Scores that only count markers (``helpers.worlds.toy.toy_reward``) or come from the model itself (the implicit reward)
rate broken text as readily as good text. ``malformed_reason(text)`` names what is broken, or returns None.

**Real text** (the default; SmolLM2, HH-RLHF) flags only what no fluent answer does. A role word inside a sentence
("the system must be booted"), a line break (a numbered list) or an answer cut by ``max_new_tokens`` is not broken:

- ``empty``: nothing but whitespace;
- ``no_letters``: no letter or digit at all ("!", "...", a lone quote);
- ``chat_marker``: a chat-template token leaked into the text (``<|im_start|>``, ``<|im_end|>``, ``</s>``, ...);
- ``role_turn``: the answer goes on to write another turn: a line that is a role label ("user", "Assistant:",
  "Human: ...") as the ChatML template leaves it once its special tokens are stripped;
- ``repetition``: one 3-word phrase repeated 4+ times and covering at least 40% of the words (a degenerate loop).

An answer that ran out of tokens is **truncated**, counted apart (``malformed_report(..., stopped=...)``), since
whether it is cut depends on ``max_new_tokens``, not on the model. Judge breakage relative to the reference model on
the same prompts and decoding (``excess_rate``): a small model writes some broken answers before any training.

**The toy world** (``rules="toy"``, asked for explicitly) keeps its strict rules, right for its one-line answers:
``empty``, ``starts_with_non_letter``, ``unfinished`` (not ending in ".", "!" or "?"), ``line_break``, ``role_word``
(a role word anywhere). Calibration on real text: ``benchmarks/bench_quality_calibration.py`` and its results file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["REASONS", "TOY_REASONS", "RULES", "malformed_reason", "is_malformed", "malformed_report", "calibration",
           "excess_rate"]

REASONS = ("empty", "no_letters", "chat_marker", "role_turn", "repetition", "fragments")  # real text, in this order
TOY_REASONS = ("empty", "starts_with_non_letter", "unfinished", "line_break", "role_word")
RULES = ("real", "toy")
_ROLE = re.compile(r"\b(?:user|assistant|system|human)\b", re.IGNORECASE)
_MARKER = re.compile(r"<\|[a-z_]+\|>|</?s>|\[/?INST\]|<start_of_turn>|<end_of_turn>", re.IGNORECASE)
_TURN = re.compile(r"(?im)^[ \t]*(?:user|assistant|system|human)[ \t]*(?::|$)")
_WORD = re.compile(r"\w+")


def _repetition(s: str) -> bool:
    words = _WORD.findall(s.lower())
    if len(words) < 12:
        return False
    grams = Counter(zip(words, words[1:], words[2:], strict=False))
    _, n = grams.most_common(1)[0]
    return n >= 4 and 3 * n >= 0.4 * len(words)


def _fragments(s: str) -> bool:
    """Three or more blank-line-separated pieces, most of them one or two words ("Hello!\n\nAbsol!!\n\nAbsolutely!"):
    what a collapsed SmolLM2 wrote (benchmarks/bench_onpolicy_dpo.py, off-policy pairs at lr 1e-3); the trigram
    repetition rule needs 12 words and misses it."""
    paras = [p for p in re.split(r"\n\s*\n", s) if p.strip()]
    short = sum(len(_WORD.findall(p)) <= 2 for p in paras)
    return len(paras) >= 3 and short >= 3 and short >= 0.6 * len(paras)


def _toy_reason(s: str) -> str | None:
    if not s:
        return "empty"
    if not s[0].isalnum():
        return "starts_with_non_letter"
    if s[-1] not in ".!?":
        return "unfinished"
    if "\n" in s:
        return "line_break"
    if _ROLE.search(s):
        return "role_word"
    return None


def malformed_reason(text: str, *, rules: str = "real") -> str | None:
    """The first reason (in ``REASONS``, or ``TOY_REASONS`` for ``rules="toy"``, order) that ``text`` is broken,
    or None when it is well-formed."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    if rules not in RULES:
        raise ValueError(f"rules must be one of {list(RULES)}, got {rules!r}")
    s = text.strip()
    if rules == "toy":
        return _toy_reason(s)
    if not s:
        return "empty"
    if not any(ch.isalnum() for ch in s):
        return "no_letters"
    if _MARKER.search(s):
        return "chat_marker"
    if _TURN.search(s):
        return "role_turn"
    if _repetition(s):
        return "repetition"
    if _fragments(s):
        return "fragments"
    return None


def is_malformed(text: str, *, rules: str = "real") -> bool:
    return malformed_reason(text, rules=rules) is not None


def malformed_report(texts: Iterable[str], *, rules: str = "real", stopped: Sequence[bool] | None = None) -> dict:
    """``{"n", "malformed", "malformed_rate", "reasons": {reason: count}, "examples", "rules"}`` over ``texts``
    (``examples``: the first four flagged texts, ``[text, reason]`` each); with ``stopped``
    (per text: did generation end at the end-of-turn token?) also ``truncated``/``truncated_rate``: well-formed
    answers that ran out of tokens, reported apart from the broken ones."""
    texts = list(texts)  # one pass: a generator is consumed once
    found = [malformed_reason(t, rules=rules) for t in texts]
    reasons = Counter(r for r in found if r is not None)
    n, bad = len(found), sum(reasons.values())
    out = {"n": n, "malformed": bad, "malformed_rate": bad / n if n else float("nan"), "reasons": dict(reasons),
           "examples": [[t, r] for t, r in zip(texts, found, strict=True) if r is not None][:4], "rules": rules}
    if stopped is not None:
        if len(stopped) != n:
            raise ValueError(f"stopped must have one flag per text ({n}), got {len(stopped)}")
        cut = sum(1 for r, s in zip(found, stopped, strict=True) if r is None and not s)
        out.update(truncated=cut, truncated_rate=cut / n if n else float("nan"))
    return out


def excess_rate(run_rate: float, run_n: int, reference_rate: float, reference_n: int) -> tuple[float, float]:
    """``(run_rate - reference_rate, its standard error)``: how much more often a run's answers are broken than the
    reference's on the same prompts and decoding; ``*_n`` answers each (independent-sample error, conservative for
    paired samples)."""
    for name, v in (("run_n", run_n), ("reference_n", reference_n)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    for name, v in (("run_rate", run_rate), ("reference_rate", reference_rate)):
        if not 0 <= v <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {v!r}")
    p, q = run_rate, reference_rate
    return p - q, math.sqrt(p * (1 - p) / run_n + q * (1 - q) / reference_n)


CALIBRATION_FILE = "benchmarks/results/quality_calibration.json"


def calibration(root: str | None = None) -> str:
    """What the rules flag on real text, from ``benchmarks/bench_quality_calibration.py``'s results: the lines the
    notebooks print where they use the check."""
    import json
    from pathlib import Path

    from helpers.infra.paths import ROOT

    path = Path(root or ROOT) / CALIBRATION_FILE
    if not path.exists():
        return f"(no calibration file {CALIBRATION_FILE}: run benchmarks/bench_quality_calibration.py)"
    c = json.loads(path.read_text())
    h, s = c["hh"], c["smollm2_reference"]
    # c["toy_overoptimised"] (one machine's 04 run, dated) is not printed: notebook 04's own table shows the live run's
    # rates, which differ across CPUs (issue 34); tests/test_quality.py still checks the toy rules catch that run.
    return "\n".join([
        f"quality check calibration ({c['command']}, {c['date']}):",
        f"  real HH-RLHF answers flagged ({h['rows_kept']} pairs of {c['source']}): chosen "
        f"{h['chosen']['real']['malformed_rate']:.1%}, rejected {h['rejected']['real']['malformed_rate']:.1%} "
        f"(the toy rules would flag {h['chosen']['toy']['malformed_rate']:.1%} of chosen: lists, 'the system ...')",
        f"  SmolLM2-135M-Instruct untrained, {s['prompts']} HH prompts, T={s['decoding']['temperature']}, "
        f"{s['decoding']['max_new_tokens']} tokens: malformed {s['real']['malformed_rate']:.1%} "
        f"{s['real']['reasons'] or ''}, truncated (cut by the cap, not malformed) {s['real']['truncated_rate']:.1%}",
    ] + _real_overoptimised(path.parents[2] / PILOT_FILE) + _real_collapsed(path.parents[2] / ONPOLICY_FILE))


ONPOLICY_FILE = "benchmarks/results/onpolicy_smollm2_cpu_dpo.json"


def _real_collapsed(path) -> list[str]:
    """SmolLM2 collapsed by off-policy pairs at lr 1e-3 (``benchmarks/bench_onpolicy_dpo.py``): its stored answers
    (one per held-out question) judged by today's rules, next to the reference's."""
    import json

    if not path.exists():
        return []
    c = json.loads(path.read_text())
    run = next((r for r in c["runs"] if r["name"] == "offpolicy_lr1e-3"), None)
    if run is None:
        return []
    flagged = [malformed_reason(t) for t in run["policy"]["examples"]]
    ref = [malformed_reason(t) for t in c["reference"]["examples"]]
    reasons = dict(Counter(r for r in flagged if r))
    return [f"  SmolLM2 collapsed by off-policy pairs (lr {run['learning_rate']:g}, {run['steps']} steps; held-out "
            f"pass rate {run['policy']['pass_rate']:.2f}, KL {run['policy']['kl']:.0f}): real-text rules flag "
            f"{sum(map(bool, flagged))} of its {len(flagged)} stored answers {reasons or ''} (reference "
            f"{sum(map(bool, ref))} of {len(ref)})"]


PILOT_FILE = "benchmarks/results/online_recipe_pilot.json"


def _real_overoptimised(path) -> list[str]:
    """The calibration line of SmolLM2 deliberately over-optimised (``benchmarks/bench_online_recipe_pilot.py``)."""
    import json

    if not path.exists():
        return []
    c = json.loads(path.read_text())
    o = c.get("overoptimised")
    run = next((r for r in c["runs"] if o and (r["learning_rate"], r["sft_weight"]) ==
                (o["learning_rate"], o["sft_weight"])), None)
    if run is None:
        return []
    ref, q = c["reference"]["quality"], run["policy"]["quality"]
    ex, se = excess_rate(q["malformed_rate"], q["n"], ref["malformed_rate"], ref["n"])
    return [f"  SmolLM2 meant to over-optimise on real HH pairs (lr {o['learning_rate']:g}, no SFT term, "
            f"{c['settings']['steps']} steps of {c['settings']['batch_size']}, a CPU pilot): real-text rules flag "
            f"{q['malformed_rate']:.0%}{' ' + str(q['reasons']) if q['reasons'] else ''} (its reference "
            f"{ref['malformed_rate']:.0%}, {q['n']} samples), KL {run['policy']['kl']:.1f}"
            + (": not broken at this size" if ex <= 2 * se else "")]
