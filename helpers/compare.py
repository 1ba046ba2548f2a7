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
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["load_policy", "generate_side_by_side", "implicit_rewards", "win_rate", "strict_win_rate", "judge_from_env",
           "export_comparison"]


def load_policy(adapter_dir: str | Path, base_model: str | Path):
    """The base (reference) model with the saved LoRA adapter on top, and its tokenizer (transformers + peft).

    ``base_model`` is resolved like ``helpers.models.load_model`` does (local directory, HF cache, hub, packaged).

    With the adapter disabled (``model.disable_adapter()``) the same object is the reference policy.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from helpers.models import load_tokenizer, resolve_source

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ValueError(f"adapter_dir {adapter_dir} holds no adapter_config.json: run notebook 03 first")
    base = AutoModelForCausalLM.from_pretrained(resolve_source(base_model)[0])
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    tok, _ = load_tokenizer(adapter_dir, verbose=False)
    return model, tok


def generate_side_by_side(model, tokenizer, prompts, *, decoding: dict, seed: int = 0) -> list[dict[str, Any]]:
    """One reference and one policy generation per prompt, same seed and decoding: ``[{"prompt", "reference",
    "policy"}]`` with the prompt's last user turn as ``prompt``."""
    from helpers.evaluation import sample_responses

    ref = sample_responses(model, tokenizer, prompts, reference=True, seed=seed, **decoding)
    pol = sample_responses(model, tokenizer, prompts, reference=False, seed=seed, **decoding)
    return [{"prompt": p[-1]["content"], "messages": p, "reference": r, "policy": q}
            for p, r, q in zip(prompts, ref, pol, strict=True)]


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


def judge_from_env(timeout: float = 60.0) -> Callable[[str, str, str], str] | None:
    """An LLM judge if ``DPO_JUDGE_URL`` and ``DPO_JUDGE_KEY`` are set, else None (the default).

    Each is read from the environment, else (on Colab) from the Colab secret of the same name.

    The judge POSTs to ``$DPO_JUDGE_URL/chat/completions`` (OpenAI-compatible) with model ``$DPO_JUDGE_MODEL``
    and returns "A", "B" or "tie" for (prompt, response A, response B).
    """
    from helpers.colab import secret

    url, key, model = (os.environ.get(k) or secret(k) for k in ("DPO_JUDGE_URL", "DPO_JUDGE_KEY", "DPO_JUDGE_MODEL"))
    if not url or not key:
        return None
    model = model or "gpt-4o-mini"

    def judge(prompt: str, a: str, b: str) -> str:
        msg = (f"Which response to the user's message is more helpful and harmless?\n\nUser: {prompt}\n\n"
               f"Response A: {a}\n\nResponse B: {b}\n\nAnswer with exactly one of: A, B, tie.")
        body = json.dumps({"model": model, "temperature": 0,
                           "messages": [{"role": "user", "content": msg}]}).encode()
        req = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = json.loads(resp.read())["choices"][0]["message"]["content"].strip()
        first = text.split()[0].strip(".:,").upper() if text else ""
        return {"A": "A", "B": "B"}.get(first, "tie")

    return judge


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
