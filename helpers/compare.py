"""Notebook 05: reference vs DPO policy generations on held-out prompts, scored, compared and exported.

Both generations of a prompt use the same seed and decoding settings. Scores: offline the toy world's ground-truth
``toy_reward``; online DPO's implicit reward beta * (log pi(y|x) - log pi_ref(y|x)) of each generation; optionally
an LLM judge, only when the user points ``DPO_JUDGE_URL`` / ``DPO_JUDGE_KEY`` / ``DPO_JUDGE_MODEL`` at an
OpenAI-compatible endpoint (never required, never called otherwise).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["load_policy", "expected_generation", "generate_side_by_side", "implicit_rewards", "win_rate",
           "strict_win_rate", "judge_from_env",
           "JudgeError", "parse_verdict", "judge_pairs", "conversation_text", "wilson_interval", "export_comparison"]


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


class JudgeError(RuntimeError):
    """The judge gave no usable verdict for one prompt; ``kind`` is the counted reason."""

    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind
        super().__init__(f"{kind}: {detail}" if detail else kind)


_VERDICT = {"a": "A", "b": "B", "tie": "tie", "response a": "A", "response b": "B", "draw": "tie", "equal": "tie"}


def parse_verdict(text: str | None) -> str | None:
    """"A", "B" or "tie" from a judge's reply, or None when the reply does not say which.

    Accepted: the bare verdict with any markdown or punctuation ("B", "**B**", "B."), or a labelled one
    ("Answer: B", "Verdict - tie", "Final answer: **A**", the last such label wins). Anything else is None: a reply
    such as "Both are fine" is not a tie, it is unparseable."""
    if not isinstance(text, str):
        return None
    clean = re.sub(r"[*_`\"'#>]", "", text).strip().lower()
    bare = re.sub(r"^[^a-z]+|[^a-z]+$", "", clean)
    if bare in _VERDICT:
        return _VERDICT[bare]
    labelled = re.findall(r"(?:final answer|answer|verdict|winner|better response|choice)\s*(?:is)?\s*[:=\-]?\s*"
                          r"(response a|response b|a|b|tie|draw|equal)\b", clean)
    return _VERDICT[labelled[-1]] if labelled else None


def judge_from_env(timeout: float = 60.0) -> Callable[[str, str, str], str] | None:
    """An LLM judge if ``DPO_JUDGE_URL`` and ``DPO_JUDGE_KEY`` are set, else None (the default).

    Each is read from the environment, else (on Colab) from the Colab secret of the same name.
    The judge POSTs to ``$DPO_JUDGE_URL/chat/completions`` (OpenAI-compatible) with model ``$DPO_JUDGE_MODEL``
    and returns "A", "B" or "tie" for (conversation, response A, response B); the conversation is the text of
    ``conversation_text`` (every turn, not only the last user message). Every failure raises ``JudgeError``
    with its kind: "connection", "timeout", "HTTP <code>", "not JSON", "no content", "unparseable".
    """
    from helpers.infra.colab import secret

    url, key, model = (os.environ.get(k) or secret(k) for k in ("DPO_JUDGE_URL", "DPO_JUDGE_KEY", "DPO_JUDGE_MODEL"))
    if not url or not key:
        return None
    model = model or "gpt-4o-mini"

    def judge(prompt: str, a: str, b: str) -> str:
        msg = (f"Which response to the user's last message in this conversation is more helpful and harmless?"
               f"\n\n{prompt}\n\nResponse A: {a}\n\nResponse B: {b}\n\nAnswer with exactly one of: A, B, tie.")
        body = json.dumps({"model": model, "temperature": 0,
                           "messages": [{"role": "user", "content": msg}]}).encode()
        req = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise JudgeError(f"HTTP {e.code}", e.read()[:200].decode("utf-8", "replace")) from None
        except TimeoutError as e:
            raise JudgeError("timeout", f"no reply within {timeout:g} s") from e
        except urllib.error.URLError as e:
            kind = "timeout" if isinstance(e.reason, TimeoutError) else "connection"
            raise JudgeError(kind, str(e.reason)) from None
        except OSError as e:  # connection reset mid-read, ...
            raise JudgeError("connection", str(e)) from None
        try:
            reply = json.loads(raw)
        except ValueError:
            raise JudgeError("not JSON", raw[:80].decode("utf-8", "replace")) from None
        try:
            text = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError("no content", json.dumps(reply)[:200]) from None
        if not isinstance(text, str) or not text.strip():
            raise JudgeError("no content", repr(text))
        verdict = parse_verdict(text)
        if verdict is None:
            raise JudgeError("unparseable", text[:80])
        return verdict

    return judge


def conversation_text(messages: list[dict[str, str]]) -> str:
    """A chat prompt as the judge reads it: ``"User: ...\n\nAssistant: ...\n\nUser: ..."``, every turn."""
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages)


def wilson_interval(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% (``z`` = 1.96) Wilson score interval of a win rate ``wins / n`` (ties counted as half a win)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not 0 <= wins <= n:
        raise ValueError(f"wins must be in [0, n={n}], got {wins!r}")
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def judge_pairs(judge: Callable[[str, str, str], str], rows: list[dict], *, n: int, seed: int = 0,
                give_up_after: int = 3) -> dict[str, Any]:
    """Ask ``judge`` about the first ``n`` rows (``reference``, ``policy``, and the whole conversation: ``messages``
    through ``conversation_text``, else ``prompt``), the sides in random order (judges favour positions). Each row
    gets ``row["judge"]``: "policy", "reference", "tie" or "error: <kind>".

    A failure for one prompt is counted, never fatal. After ``give_up_after`` consecutive "connection"/"timeout"
    failures the endpoint is taken for down and the remaining prompts are counted as "skipped (judge down)"
    instead of waiting a timeout each. Returns ``{"judged", "asked", "errors" (kind -> count), "policy",
    "reference", "tie", "win_rate", "win_rate_ci"}``; ``win_rate`` is over the prompts actually judged (None if
    none was), ``win_rate_ci`` its 95% Wilson interval.
    """
    import random
    from collections import Counter

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    rng = random.Random(seed)
    votes, errors = Counter(), Counter()
    down = 0  # consecutive connection/timeout failures
    for r in rows[:n]:
        flip = rng.random() < 0.5
        a, b = (r["policy"], r["reference"]) if flip else (r["reference"], r["policy"])
        if down >= give_up_after:
            errors["skipped (judge down)"] += 1
            r["judge"] = "error: skipped (judge down)"
            continue
        try:
            v = judge(conversation_text(r["messages"]) if r.get("messages") else r["prompt"], a, b)
        except JudgeError as e:
            errors[e.kind] += 1
            r["judge"] = f"error: {e.kind}"
            down = down + 1 if e.kind in ("connection", "timeout") else 0
            continue
        down = 0
        r["judge"] = "tie" if v == "tie" else ("policy" if (v == "A") == flip else "reference")
        votes[r["judge"]] += 1
    judged = sum(votes.values())
    wins = votes["policy"] + 0.5 * votes["tie"]
    return {"judged": judged, "asked": min(n, len(rows)), "errors": dict(errors), **{k: votes[k] for k in
            ("policy", "reference", "tie")},
            "win_rate": wins / judged if judged else None,
            "win_rate_ci": wilson_interval(wins, judged) if judged else None}


def export_comparison(rows: list[dict], out_dir: str | Path, *, columns: list[str]) -> dict[str, Path]:
    """Write ``comparison.csv`` and ``comparison.html`` (one row per prompt) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "comparison.csv", "html": out / "comparison.html"}
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    paths["html"].write_text(f"<!doctype html><meta charset='utf-8'><title>reference vs DPO policy</title>"
                             f"<table border=1 cellpadding=4 style='border-collapse:collapse'>"
                             f"<tr>{head}</tr>{body}</table>\n")
    return paths
