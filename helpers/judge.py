"""Judges of answers: a reward model on the learner's own GPU (the default: free, nothing leaves the runtime) and,
optionally, an LLM behind an OpenAI-compatible API.

A reward model is what the literature scores a DPO'd policy with (the DPO paper's controlled experiments, Gao et al.
2023's over-optimisation curves: a policy measured against a *gold* reward model). ``load_judge`` loads one by hub id
(``AutoModelForSequenceClassification``, one logit), in bf16 where the GPU has it and fp32 elsewhere (a T4, a CPU:
Qwen-family models trained in bf16 are known to overflow in fp16, QwenLM/Qwen3#868, and fp16 was never shown safe
here); ``score`` formats each conversation with the model's own chat template, as it was trained to read it (system
messages dropped, as the model card's usage has none), cuts whole turns from the front when it is too long (then
tokens, from the left: the reward is read at the last token, so the answer stays), counts what it cut, and scores
again in fp32 when a half-precision score is not finite; ``agreement`` says
how far to trust it before it is used: how often it agrees with human labels on held-out HH-RLHF pairs, and how much
it simply prefers the longer answer. A model carrying ``helpers.infra.tinymodel.RANDOM_MARK`` in its config (the local
hub's stand-in) is labelled as random wherever its name shows. The optional LLM judge is ``helpers.llm_judge``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["JUDGE_MODEL", "WHY_DEFAULT", "HH_CEILING", "RewardJudge", "load_judge", "try_load_judge", "judge_texts",
           "score", "expected_seconds", "agreement", "length_matched", "check_trust", "reward_fn", "wilson_interval"]

JUDGE_MODEL = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"
WHY_DEFAULT = (
    "Skywork/Skywork-Reward-V2-Qwen3-0.6B: Apache-2.0 (its model card); 0.6B parameters on Qwen3-0.6B, about 2.4 GB "
    "in fp32, so it fits a free T4 beside SmolLM2; a Bradley-Terry reward model trained on 26M curated preference "
    "pairs, which its authors report nearly matches the average of their 27B Skywork-Reward-Gemma-2-27B-v0.2 over "
    "seven reward benchmarks (RewardBench v1/v2, PPE, RMB, RM-Bench, JudgeBench); it reads the whole conversation "
    "through its chat template. How far it agrees with HH-RLHF's human labels is measured below, not assumed.")

# Arithmetic, not measurements (labelled so where printed): sustained half-precision and fp32 matrix throughput of a
# T4 on a forward pass, and fp32 throughput of a 2-core CPU; a forward costs ~2 FLOPs per parameter per token.
_GPU_FLOPS, _GPU_FP32_FLOPS, _CPU_FLOPS = 20e12, 5e12, 30e9

# For scale when reading a judge's agreement with HH-RLHF's labels (noisy: people disagree): a reward model trained
# for HH agrees 0.71 on its helpful test pairs and 0.56 on harmless (OpenAssistant/reward-model-deberta-v3-large-v2,
# RewardBench's prior-sets results, allenai/reward-bench-results). Agreement near that is as good as these labels allow.
HH_CEILING = ("for scale: a reward model trained for HH agrees 0.71 with its helpful test labels, 0.56 with harmless "
              "(OpenAssistant/reward-model-deberta-v3-large-v2 in RewardBench's prior sets): the labels are noisy")


@dataclass
class RewardJudge:
    """A loaded reward model. ``random_weights``: the local hub's stand-in (its scores mean nothing)."""

    model_id: str
    model: Any
    tokenizer: Any
    device: str
    max_length: int
    batch_size: int
    random_weights: bool
    parameters: int

    @property
    def name(self) -> str:
        """What ``summary.json`` records as the judge: ``reward_model:<id>``."""
        return f"reward_model:{self.model_id}"

    def label(self) -> str:
        return self.model_id + (" (RANDOM WEIGHTS: the local hub's stand-in of the same architecture; its scores "
                                "mean nothing)" if self.random_weights else "")


def load_judge(model_id: str = JUDGE_MODEL, *, max_length: int = 2048, batch_size: int = 16,
               verbose: bool = True) -> RewardJudge:
    """The reward model ``model_id`` (hub id or local folder) on this runtime's device, ready for ``score``.

    Raises ``HubDownloadError`` (unknown id, a download that breaks: what failed and what to do),
    ``HubUnavailableError`` (no hub and not cached) and ``ValueError`` for bad arguments or a model that is not a
    one-logit sequence classifier with a trained score head and a chat template.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from helpers.infra.hubio import resolve_source
    from helpers.infra.quiet import progress_bars_off
    from helpers.infra.runtime import detect, precision_flags
    from helpers.infra.tinymodel import RANDOM_MARK

    if not isinstance(model_id, str) or not model_id.strip():
        raise ValueError(f"model_id must be a hub id or a folder, got {model_id!r}")
    for name, v, low in (("max_length", max_length, 16), ("batch_size", batch_size, 1)):
        if not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    path, source = resolve_source(model_id)
    rt = detect(check_hub=False)
    dtype = torch.bfloat16 if rt.device == "cuda" and precision_flags(rt)["bf16"] else torch.float32
    with progress_bars_off():
        tok = AutoTokenizer.from_pretrained(path)
        model, info = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype, output_loading_info=True)
    if model.config.num_labels != 1:
        raise ValueError(f"{model_id} has {model.config.num_labels} output labels; a reward model has one")
    # a causal LM (or a base model) loaded as a classifier: its score head is random, its scores noise
    if fresh := sorted(k for k in info.get("missing_keys", ()) if k.split(".")[0] in ("score", "classifier")):
        raise ValueError(f"{model_id} has no trained score head ({', '.join(fresh)} newly initialised): it is not a "
                         "reward model. Give a reward model (AutoModelForSequenceClassification, one label)")
    if not tok.chat_template:
        raise ValueError(f"{model_id}'s tokenizer has no chat template: the judge could not format a conversation")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if model.config.pad_token_id is None:  # the score is read at the last non-pad token of each row
        model.config.pad_token_id = tok.pad_token_id
    tok.padding_side, tok.truncation_side = "right", "left"
    model.to(rt.device).eval()
    judge = RewardJudge(model_id, model, tok, rt.device, max_length, batch_size,
                        bool(getattr(model.config, RANDOM_MARK, False)), sum(p.numel() for p in model.parameters()))
    if verbose:
        print(f"judge: {judge.label()}\n  from {source}; {judge.parameters:,} parameters, "
              f"{str(dtype).replace('torch.', '')} on {rt.device}" + (
                  " (a CPU: it runs, slowly; a GPU runtime scores in seconds)" if rt.device != "cuda" else ""))
    return judge


def try_load_judge(model_id: str, *, parameter: str = "JUDGE_MODEL", **kw) -> RewardJudge | None:
    """``load_judge`` for a notebook: the judge, or None after saying why (the id, the parameter that names it, the
    error), so the notebook goes on without judge numbers when the hub has no such model. An empty id: no judge."""
    from helpers.infra.hubio import HubDownloadError
    from helpers.infra.runtime import HubUnavailableError

    if not model_id:
        print(f"no reward-model judge: {parameter} is empty in the parameters cell")
        return None
    try:
        judge = load_judge(model_id, **kw)
        if model_id == JUDGE_MODEL:  # about the real model: said so when a random stand-in of it was loaded
            print(("why this judge (the real model; the one loaded here is its RANDOM stand-in): " if
                   judge.random_weights else "why this judge: ") + WHY_DEFAULT)
        return judge
    except (HubDownloadError, HubUnavailableError, ValueError) as e:
        print(f"NO JUDGE: {parameter}={model_id!r} could not be loaded ({type(e).__name__}: {e})\nSet {parameter} in "
              "the parameters cell to a reward model this hub serves; the notebook goes on without judge numbers.")
        return None


def judge_texts(judge: RewardJudge, prompts: list[list[dict[str, str]]], answers: list[str]) -> list[str]:
    """Each conversation (prompt messages + the answer as the assistant's turn) in the judge's chat template. The
    text holds every special token the model expects, so ``score`` tokenizes it without adding any (a tokenizer that
    adds a bos would double the template's: Skywork's card strips it for that reason)."""
    if isinstance(answers, str) or isinstance(prompts, str | dict):
        raise ValueError("prompts must be a list of conversations and answers a list of strings (one per prompt), "
                         f"got {type(prompts).__name__} and {type(answers).__name__}")
    if len(prompts) != len(answers):
        raise ValueError(f"prompts and answers must be of equal length, got {len(prompts)} and {len(answers)}")
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        if not isinstance(a, str) or isinstance(p, str) or not all(isinstance(m, dict) for m in p):
            raise ValueError(f"item {i}: a prompt must be a list of {{'role', 'content'}} messages and an answer a "
                             f"str, got {type(p).__name__} and {type(a).__name__}")
    return [judge.tokenizer.apply_chat_template([m for m in p if m.get("role") != "system"]
                                                + [{"role": "assistant", "content": a}], tokenize=False)
            for p, a in zip(prompts, answers, strict=True)]


def _encode(judge: RewardJudge, prompts, answers) -> list[list[int]]:
    """Token ids of each conversation as the judge reads it (``judge_texts``), uncut."""
    return [judge.tokenizer(t, add_special_tokens=False)["input_ids"] for t in judge_texts(judge, prompts, answers)]


def _fit(judge: RewardJudge, prompt: list[dict[str, str]], answer: str, ids: list[int]) -> list[int]:
    """``ids`` (the whole conversation) within ``judge.max_length``: the oldest turns dropped first (whole turns, so
    that what stays reads as a conversation starting at a user turn), then, if the last turn and the answer are still
    too long, tokens from the left."""
    turns = [m for m in prompt if m.get("role") != "system"]
    while len(ids) > judge.max_length and len(turns) > 1:
        turns = turns[1:]
        while len(turns) > 1 and turns[0].get("role") != "user":
            turns = turns[1:]
        ids = _encode(judge, [turns], [answer])[0]
    return ids[-judge.max_length:]


def expected_seconds(judge: RewardJudge, prompts: list[list[dict[str, str]]], answers: list[str],
                     measured_tokens_per_s: float | None = None) -> tuple[float, str]:
    """``(seconds, where the figure comes from)`` for scoring these answers (their tokens counted as ``score`` cuts
    them): this runtime's measured rate when given, else arithmetic (2 FLOPs per parameter per token at an assumed
    throughput), labelled as such."""
    if measured_tokens_per_s is not None and not (math.isfinite(measured_tokens_per_s) and measured_tokens_per_s > 0):
        raise ValueError(f"measured_tokens_per_s must be a finite rate > 0, got {measured_tokens_per_s!r}")
    tokens = sum(min(len(x), judge.max_length) for x in _encode(judge, prompts, answers))
    if measured_tokens_per_s:
        return tokens / measured_tokens_per_s, f"{measured_tokens_per_s:,.0f} tokens/s measured on this runtime"
    half = str(getattr(getattr(judge, "model", None), "dtype", "")) in ("torch.float16", "torch.bfloat16")
    flops = (_GPU_FLOPS if half else _GPU_FP32_FLOPS) if judge.device == "cuda" else _CPU_FLOPS
    where = f"a T4 in {'half precision' if half else 'fp32'}" if judge.device == "cuda" else "a 2-core CPU in fp32"
    return (2 * judge.parameters * tokens / flops,
            f"arithmetic, not a measurement: 2 x {judge.parameters:,} parameters x {tokens:,.0f} tokens at "
            f"{flops / 1e12:g} TFLOP/s ({where})")


def score(judge: RewardJudge, prompts: list[list[dict[str, str]]], answers: list[str], *,
          progress: bool = True, fp32_fallback: bool = True) -> dict[str, Any]:
    """The reward of every (conversation, answer): ``{"scores": (N,), "tokens": (N,), "truncated": int,
    "tokens_per_s": float, "batch_size": int}``. Batches of similar lengths; when the GPU runs out of memory the batch
    is halved (and stays halved), down to one, after which a ``RuntimeError`` says what to change. A non-finite score
    in half precision is scored again in fp32 (the model is converted, with a note) unless ``fp32_fallback`` is False
    (``benchmarks/gpu_check.py`` counts them)."""
    import torch


    tok = judge.tokenizer
    ids = _encode(judge, prompts, answers)
    truncated = sum(len(x) > judge.max_length for x in ids)
    ids = [_fit(judge, p, a, x) if len(x) > judge.max_length else x for p, a, x in zip(prompts, answers, ids,
                                                                                     strict=True)]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    scores = np.zeros(len(ids))
    bar = None
    if progress and len(ids) > judge.batch_size:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc="judging", unit="answer", leave=False)
    t0, start = time.perf_counter(), 0
    while start < len(order):
        idx = order[start:start + judge.batch_size]
        batch = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt").to(judge.device)
        try:
            with torch.no_grad():
                logits = judge.model(**batch).logits
        except torch.OutOfMemoryError:
            if judge.device == "cuda":
                torch.cuda.empty_cache()
            if judge.batch_size == 1:
                raise RuntimeError(
                    f"the judge ran out of GPU memory on a single answer of {len(ids[idx[0]])} tokens: lower "
                    f"JUDGE_MAX_LENGTH (now {judge.max_length}), choose a smaller JUDGE_MODEL, or free the GPU "
                    "(del the policy model, restart the runtime)") from None
            judge.batch_size = max(1, judge.batch_size // 2)
            print(f"judge: out of GPU memory, batch size down to {judge.batch_size}")
            continue
        scores[idx] = logits[:, 0].float().cpu().numpy()
        start += len(idx)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    seconds = max(time.perf_counter() - t0, 1e-9)
    n_tokens = np.array([len(x) for x in ids])
    bad = ~np.isfinite(scores)
    if bad.any() and fp32_fallback:  # a half-precision overflow: the same answers in fp32 (a NaN is never a loss)
        if judge.model.dtype == torch.float32:
            raise ValueError(f"the judge gave {int(bad.sum())} non-finite scores of {len(scores)} in fp32: its weights "
                             "or inputs are broken; no verdict can be drawn from them")
        print(f"NOTE: {int(bad.sum())} of {len(scores)} judge scores were not finite in {judge.model.dtype}: the judge "
              "now runs in fp32 (twice the memory) and scores them again")
        judge.model.float()
        redo = np.flatnonzero(bad)
        again = score(judge, [prompts[i] for i in redo], [answers[i] for i in redo], progress=False)
        scores[bad] = again["scores"]
    return {"scores": scores, "tokens": n_tokens, "truncated": int(truncated),
            "tokens_per_s": float(n_tokens.sum() / seconds), "batch_size": judge.batch_size}


def wilson_interval(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% (``z`` = 1.96) Wilson score interval of a rate ``wins / n`` (ties counted as half a win)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not 0 <= wins <= n:
        raise ValueError(f"wins must be in [0, n={n}], got {wins!r}")
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def agreement(chosen_scores, rejected_scores, chosen_words, rejected_words, *,
              matched_within: float = 0.2) -> dict[str, Any]:
    """How far to trust a judge, from its scores of N held-out human-labelled pairs.

    ``agreement``: share of pairs whose human-chosen answer it scores higher (ties half), with its Wilson
    interval. Length preference: ``prefers_longer`` (of the pairs whose answers differ in length, the share where the
    judge's pick is the longer one) next to ``humans_prefer_longer`` (the same for the human label), and
    ``matched_agreement`` on the pairs whose lengths are within ``matched_within`` of each other (length cannot
    explain a verdict there; ``matched_n`` of them).
    """
    c, r = np.asarray(chosen_scores, float), np.asarray(rejected_scores, float)
    lc, lr = np.asarray(chosen_words, float), np.asarray(rejected_words, float)
    if not (len(c) == len(r) == len(lc) == len(lr)) or len(c) == 0:
        raise ValueError("the four arrays must be non-empty and of equal length")
    finite = np.isfinite(c) & np.isfinite(r)  # a NaN score is no verdict: left out and counted, never a miss
    if not finite.any():
        raise ValueError(f"no pair has a finite score on both sides ({len(c)} pairs): the judge's scores are NaN/inf")
    nan_pairs = int((~finite).sum())
    c, r, lc, lr = c[finite], r[finite], lc[finite], lr[finite]
    hit = (c > r) + 0.5 * (c == r)
    n = len(c)
    differ = lc != lr
    judge_longer = np.where(c > r, lc > lr, lr > lc)[differ & (c != r)]
    matched = length_matched(lc, lr, matched_within)
    out = {"n": n, "nan_excluded": nan_pairs, "agreement": float(hit.mean()),
           "interval": list(wilson_interval(float(hit.sum()), n)),
           "prefers_longer": float(judge_longer.mean()) if judge_longer.size else None,
           "humans_prefer_longer": float((lc > lr)[differ].mean()) if differ.any() else None,
           "matched_n": int(matched.sum()),
           "matched_agreement": float(hit[matched].mean()) if matched.any() else None}
    out["matched_interval"] = list(wilson_interval(float(hit[matched].sum()), out["matched_n"])) if matched.any() \
        else None
    return out


def length_matched(a, b, within: float = 0.2) -> np.ndarray:
    """Per pair, whether lengths ``a`` and ``b`` (words or tokens) are within ``within`` of the longer one: pairs where
    length cannot explain a verdict (``agreement``'s matched pairs, notebook 05's length-matched win rate)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b) <= within * np.maximum(np.maximum(a, b), 1)


def check_trust(judge: RewardJudge, pairs, *, verbose: bool = True) -> dict[str, Any]:
    """Score the human-chosen and rejected answers of held-out conversational ``pairs`` (prompt / chosen / rejected
    message lists, e.g. notebook 02's test split) and return ``agreement``'s figures plus ``truncated`` and the
    measured ``tokens_per_s``; printed (expected time first) with ``verbose``."""
    prompts = [list(ex["prompt"]) for ex in pairs]
    chosen, rejected = ([ex[side][-1]["content"] for ex in pairs] for side in ("chosen", "rejected"))
    n = len(prompts)
    if n == 0:
        raise ValueError("pairs must hold at least one held-out pair")
    if verbose:
        seconds, why = expected_seconds(judge, prompts * 2, chosen + rejected)
        print(f"expected: ~{seconds:.0f} s to score {2 * n} held-out answers ({why})")
    t = score(judge, prompts * 2, chosen + rejected, progress=verbose)
    trust = {**agreement(t["scores"][:n], t["scores"][n:], [len(a.split()) for a in chosen],
                         [len(a.split()) for a in rejected]),
             "truncated": t["truncated"], "tokens_per_s": t["tokens_per_s"], "judge": judge.name,
             "random_weights": judge.random_weights}
    if verbose:
        lo, hi = trust["interval"]
        print(f"agreement with the human labels on {n} held-out HH pairs: {trust['agreement']:.2f} (95% Wilson "
              f"interval {lo:.2f}-{hi:.2f}; chance is 0.50) -> [{'holds' if lo > 0.5 else 'NOT shown'}] the judge "
              f"agrees with people beyond chance; {t['truncated']} of {2 * n} conversations cut to "
              f"{judge.max_length} tokens\n  ({HH_CEILING})")
        if trust["prefers_longer"] is not None:
            m = (f"{trust['matched_agreement']:.2f} ({trust['matched_interval'][0]:.2f}-"
                 f"{trust['matched_interval'][1]:.2f})" if trust["matched_n"] else "n/a")
            print(f"length: the judge picks the longer answer in {trust['prefers_longer']:.0%} of the pairs, the "
                  f"human labels in {trust['humans_prefer_longer']:.0%}; on the {trust['matched_n']} pairs of about "
                  f"equal length (within 20%) it agrees {m}")
        if judge.random_weights:
            print("(this judge has RANDOM WEIGHTS: the local hub's stand-in; every judge number below means nothing)")
    return trust


def reward_fn(judge: RewardJudge) -> Callable:
    """A ``helpers.evaluation.measure_policy`` reward that scores each sample in its conversation: called as
    ``f(prompts, texts)`` (``f.conversational``), named after the judge so that sweep caches keep judges apart."""

    def judged(prompts, texts):
        return score(judge, prompts, texts, progress=False)["scores"]

    judged.conversational = True
    judged.__name__ = judge.name
    return judged
