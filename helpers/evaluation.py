"""Held-out evaluation: pair log-probs under policy and reference, DPO reward metrics, sampling, and the reports
built on them (the reference before training, the policy after it, a policy's KL / quality / reward from samples).

``pair_logps`` tokenizes pairs exactly as TRL does (``helpers.data.tokenize_pair``) and sums completion-token
log-probs with ``helpers.logprobs.sequence_logps``, so its numbers are TRL's ``logps/chosen``/``logps/rejected``.
For a LoRA model, ``reference=True`` evaluates with the adapters disabled: the reference policy of DPOTrainer.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

__all__ = ["pair_logps", "reward_metrics", "chat_prompts", "adapters_off", "sampling", "generate",
           "sample_responses", "sample_and_score", "measure_policy", "reference_report", "after_report",
           "margin_source", "kl_text"]


def _batches(n: int, size: int):
    for s in range(0, n, size):
        yield range(s, min(s + size, n))


def adapters_off(model, reference: bool):
    """A context in which ``model`` is the reference policy when ``reference`` (its LoRA adapters disabled); a no-op
    otherwise, and for a model without adapters."""
    if reference and hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


@contextlib.contextmanager
def sampling(model, tokenizer):
    """The scaffold every sampling loop shares: eval mode, no gradients, left padding (generation continues from the
    right edge); the model's mode and the tokenizer's padding side are restored on exit, also after an error."""
    import torch

    side, was_training = tokenizer.padding_side, model.training
    tokenizer.padding_side = "left"
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        tokenizer.padding_side = side
        model.train(was_training)


def generate(model, tokenizer, texts: list[str], *, seed: int, with_logps: bool = False, **decoding):
    """One seeded ``generate`` call on B prompt texts (chat template already applied), inside ``sampling``.

    ``torch.manual_seed(seed)`` right before generating, so the same seed gives a policy and its reference the same
    random stream. ``decoding``: ``generate``'s keywords (``do_sample``, ``temperature``, ``top_p``,
    ``max_new_tokens``, ...); sampling uses the full vocabulary (``top_k=0``) unless ``top_k`` is given.

    Returns ``(enc, new)``: the tokenized batch (``input_ids``, ``attention_mask``: (B, P)) and the generated token
    ids after the prompt, (B, T), padded with eos after a response ends. ``with_logps``: also ``(B, T)`` fp32, the
    log-probability of each generated token under ``model`` (log-softmax of its raw logits, before temperature or
    top-p), which saves scoring the samples again with the model that drew them.
    """
    import torch

    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
        next(model.parameters()).device)
    torch.manual_seed(seed)
    kw = dict(decoding)
    if kw.get("do_sample"):
        kw.setdefault("top_k", 0)
    if with_logps:
        kw.update(return_dict_in_generate=True, output_logits=True)
    gen = model.generate(**enc, **kw, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if not with_logps:
        return enc, gen[:, enc["input_ids"].shape[1]:]
    new = gen.sequences[:, enc["input_ids"].shape[1]:]  # (B, T)
    logps = torch.stack([step.float().log_softmax(-1).gather(-1, new[:, t, None]).squeeze(-1)  # (B,) per step:
                         for t, step in enumerate(gen.logits)], dim=1)  # no (B, T, V) copy of the logits
    return enc, new, logps


def pair_logps(model, tokenizer, dataset, *, batch_size: int = 16, reference: bool = False,
               max_length: int | None = None, tokenized: list[dict] | None = None) -> dict[str, np.ndarray]:
    """Summed completion log-probs of every pair.

    Args:
        dataset: conversational pairs (prompt/chosen/rejected message lists), N rows.
        reference: evaluate the reference policy (LoRA adapters disabled).
        max_length: truncate prompt+completion like ``DPOConfig.max_length`` with ``keep_start``.
        tokenized: ``dataset`` already tokenized (``helpers.data.tokenize_pair`` of each row), not done again.

    Returns:
        ``{"chosen": (N,), "rejected": (N,), "chosen_tokens": (N,), "rejected_tokens": (N,)}`` numpy arrays.
    """
    import torch

    from helpers.data import tokenize_pair
    from helpers.logprobs import pad_and_mask, sequence_logps

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    toks = tokenized if tokenized is not None else [tokenize_pair(ex, tokenizer) for ex in dataset]
    out: dict[str, list] = {"chosen": [], "rejected": [], "chosen_tokens": [], "rejected_tokens": []}
    was_training = model.training
    model.eval()
    with torch.no_grad(), adapters_off(model, reference):
        for idx in _batches(len(toks), batch_size):
            for side in ("chosen", "rejected"):
                seqs = [toks[i]["prompt_ids"] + toks[i][f"{side}_ids"] for i in idx]
                n_prompt = [len(toks[i]["prompt_ids"]) for i in idx]
                input_ids, attn, lab_t = pad_and_mask(seqs, n_prompt, pad, max_length=max_length)
                logits = model(input_ids=input_ids.to(device), attention_mask=attn.to(device)).logits
                out[side] += sequence_logps(logits, lab_t.to(device)).cpu().tolist()
                out[f"{side}_tokens"] += (lab_t[:, 1:] != -100).sum(-1).tolist()
    model.train(was_training)
    return {k: np.asarray(v) for k, v in out.items()}


def reward_metrics(policy: dict[str, np.ndarray], reference: dict[str, np.ndarray], beta: float) -> dict[str, Any]:
    """DPO's implicit-reward metrics on held-out pairs, as TRL names them (means over pairs).

    ``rewards/accuracies`` counts pairs with a strictly larger chosen reward (TRL's definition).
    """
    rc = beta * (policy["chosen"] - reference["chosen"])
    rr = beta * (policy["rejected"] - reference["rejected"])
    return {
        "rewards/accuracies": float(np.mean(rc > rr)),
        "rewards/margins": float(np.mean(rc - rr)),
        "rewards/chosen": float(np.mean(rc)),
        "rewards/rejected": float(np.mean(rr)),
        "logps/chosen": float(np.mean(policy["chosen"])),
        "logps/rejected": float(np.mean(policy["rejected"])),
        "n": int(rc.size),
    }


def chat_prompts(dataset) -> list[list[dict[str, str]]]:
    """The prompt message lists of a conversational preference dataset."""
    return [list(ex["prompt"]) for ex in dataset]


def sample_responses(model, tokenizer, prompts: list[list[dict[str, str]]], *, max_new_tokens: int = 32,
                     do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                     batch_size: int = 32, reference: bool = False, return_stopped: bool = False):
    """Generate one response per prompt (chat template + generation prompt), decoded without special tokens.

    Sampling is seeded (``seed``) so that a reference and a policy see the same random stream per batch.
    ``reference=True`` samples with the LoRA adapters disabled. Returns the responses (``list[str]``), and with
    ``return_stopped`` also, per response, whether it ended at eos (False: cut by ``max_new_tokens``).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    decoding = dict(do_sample=do_sample, max_new_tokens=max_new_tokens)
    if do_sample:
        decoding.update(temperature=temperature, top_p=top_p)
    responses: list[str] = []
    stopped: list[bool] = []
    with sampling(model, tokenizer), adapters_off(model, reference):
        for b, idx in enumerate(_batches(len(texts), batch_size)):
            _, new = generate(model, tokenizer, [texts[i] for i in idx], seed=seed + b, **decoding)
            responses += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            stopped += [tokenizer.eos_token_id in row for row in new.tolist()]  # pad after eos is eos too
    return (responses, stopped) if return_stopped else responses


def sample_and_score(model, tokenizer, prompts: list[list[dict[str, str]]], *, n_samples: int = 1,
                     max_new_tokens: int = 32, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                     batch_size: int = 32, reference: bool = False) -> dict[str, Any]:
    """Sample responses and score the sampled tokens under the policy and the reference (adapters off): the model
    that drew them scores them while generating (``generate(..., with_logps=True)``), the other in one forward pass.

    With ``temperature=1`` and ``top_p=1`` the samples come from the model itself, so
    ``mean(policy_logps - ref_logps)`` over samples of the policy is an unbiased Monte-Carlo estimate of the
    sequence-level KL(pi || pi_ref) (of responses cut at ``max_new_tokens``). A response ends at its first eos
    token (included in the score).

    Returns ``{"texts": [N*n_samples], "policy_logps": (M,), "ref_logps": (M,), "tokens": (M,), "stopped": (M,)}``,
    prompt-major; ``stopped`` (bool) says whether a response ended at eos rather than at ``max_new_tokens``.
    """
    from helpers.logprobs import pad_and_mask, sequence_logps

    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    texts = [t for t in texts for _ in range(n_samples)]
    out: dict[str, list] = {"texts": [], "policy_logps": [], "ref_logps": [], "tokens": [], "stopped": []}
    drawn, other = ("ref_logps", "policy_logps") if reference else ("policy_logps", "ref_logps")
    with sampling(model, tokenizer):
        for b, idx in enumerate(_batches(len(texts), batch_size)):
            with adapters_off(model, reference):
                enc, gen, gen_logps = generate(model, tokenizer, [texts[i] for i in idx], seed=seed + b,
                                               with_logps=True, do_sample=True, temperature=temperature,
                                               top_p=top_p, max_new_tokens=max_new_tokens)
            new = gen.tolist()
            seqs, n_prompt = [], []
            masks = enc["attention_mask"].tolist()
            for j, (row, mask, ids) in enumerate(zip(enc["input_ids"].tolist(), masks, new, strict=True)):
                prompt = [t for t, m in zip(row, mask, strict=True) if m]  # drop the left padding
                resp = ids[: ids.index(eos) + 1] if eos in ids else ids
                seqs.append(prompt + resp)
                n_prompt.append(len(prompt))
                out["texts"].append(tokenizer.decode(resp, skip_special_tokens=True).strip())
                out["tokens"].append(len(resp))
                out["stopped"].append(eos in ids)
                out[drawn].append(float(gen_logps[j, : len(resp)].sum()))  # the sampler's own log-probs
            input_ids, attn, labels = pad_and_mask(seqs, n_prompt, tokenizer.pad_token_id)
            with adapters_off(model, not reference):  # the other model scores the same tokens
                logits = model(input_ids=input_ids.to(device), attention_mask=attn.to(device)).logits
            out[other] += sequence_logps(logits, labels.to(device)).cpu().tolist()
    return {k: (v if k == "texts" else np.asarray(v)) for k, v in out.items()}


def measure_policy(model, tokenizer, prompts, *, reference: bool, kl_samples: int, max_new_tokens: int, seed: int,
                   reward_fn=None, quality_rules: str = "real", batch_size: int = 32) -> dict[str, Any]:
    """KL estimate (mean, standard error, sample count), the share of malformed samples (``helpers.quality`` with
    ``quality_rules``; ``truncated_rate``: well-formed samples cut by ``max_new_tokens``, apart) and, with
    ``reward_fn``, the mean reward of the samples with its standard error: ``reward_fn(text)``, or
    ``reward_fn(prompts, texts)`` when it has ``conversational`` set (``helpers.judge.reward_fn``). ``batch_size``:
    answers sampled at once (the logits of a batch are ``batch_size x tokens x vocabulary``)."""
    from helpers.quality import malformed_report

    s = sample_and_score(model, tokenizer, prompts, n_samples=kl_samples, max_new_tokens=max_new_tokens,
                         temperature=1.0, top_p=1.0, seed=seed, reference=reference, batch_size=batch_size)
    d = s["policy_logps"] - s["ref_logps"]
    bad = malformed_report(s["texts"], rules=quality_rules, stopped=s["stopped"].tolist())
    out = {"kl": float(d.mean()), "kl_sem": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0,
           "kl_n": int(len(d)), "mean_tokens": float(s["tokens"].mean()), "malformed_rate": bad["malformed_rate"],
           "malformed_reasons": bad["reasons"], "truncated_rate": bad["truncated_rate"], "quality_rules": quality_rules,
           "samples": s["texts"][:4], "malformed_examples": bad["examples"]}
    if reward_fn is not None:  # f(text), or f(prompts, texts) for a judge that reads the conversation
        if getattr(reward_fn, "conversational", False):
            rewards = np.asarray(reward_fn([p for p in prompts for _ in range(kl_samples)], s["texts"]), dtype=float)
        else:
            rewards = np.asarray([reward_fn(t) for t in s["texts"]], dtype=float)
        out["reward"] = float(rewards.mean())
        out["reward_sem"] = float(rewards.std(ddof=1) / np.sqrt(len(rewards))) if len(rewards) > 1 else 0.0
    return out


def reference_report(model, tokenizer, test, *, max_length: int | None = None):
    """The reference policy's own view of held-out pairs, before any training.

    Returns ``(ref_logps, report)``: ``ref_logps`` from ``helpers.evaluation.pair_logps`` (adapters off), and
    the fraction of pairs the reference already prefers (summed and per-token log-probs) and mean log-probs.
    """
    ref = pair_logps(model, tokenizer, test, reference=True, max_length=max_length)
    per_tok = {s: ref[s] / np.maximum(ref[f"{s}_tokens"], 1) for s in ("chosen", "rejected")}
    report = {
        "ref_prefers_chosen": float(np.mean(ref["chosen"] > ref["rejected"])),
        "ref_prefers_chosen_per_token": float(np.mean(per_tok["chosen"] > per_tok["rejected"])),
        "logps/chosen": float(ref["chosen"].mean()),
        "logps/rejected": float(ref["rejected"].mean()),
        "n": int(len(ref["chosen"])),
    }
    return ref, report


def after_report(model, tokenizer, test, ref: dict, *, beta: float, max_length: int | None = None) -> dict:
    """DPO's reward metrics on held-out pairs, plus where the margin came from.

    ``delta_logps/chosen`` and ``delta_logps/rejected`` are mean changes of log pi relative to the reference:
    a margin can come from raising chosen, lowering rejected, or lowering both (rejected faster). Each mean comes with
    its standard error over the N held-out pairs (``..._se``; the accuracy's is binomial), so that comparisons of runs
    can say whether a difference is beyond noise.
    """
    pol = pair_logps(model, tokenizer, test, max_length=max_length)
    out = reward_metrics(pol, ref, beta)
    n = len(pol["chosen"])
    se = (lambda x: float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else 0.0)  # noqa: E731
    acc = out["rewards/accuracies"]
    out["rewards/accuracies_se"] = float(np.sqrt(acc * (1 - acc) / n)) if n else 0.0
    out["policy_prefers_chosen"] = float((pol["chosen"] > pol["rejected"]).mean())
    for side in ("chosen", "rejected"):
        d = pol[side] - ref[side]
        out[f"delta_logps/{side}"], out[f"delta_logps/{side}_se"] = float(d.mean()), se(d)
    out["margin_source"] = margin_source(out["delta_logps/chosen"], out["delta_logps/rejected"])
    return out


def margin_source(d_chosen: float, d_rejected: float) -> str:
    """Where a held-out margin came from, in words: the sign of the margin ``d_chosen - d_rejected`` (mean changes of
    log pi vs the reference) first, then which way each side moved. A negative margin is never described as a
    gain, whatever the two signs."""
    m = d_chosen - d_rejected
    if m == 0:
        return "no margin: both sides moved alike"
    up, down = d_chosen > 0, d_rejected < 0
    if m > 0:
        return ("chosen up, rejected down" if up and down else "both up, chosen faster" if up
                else "both down, rejected faster")
    return ("the wrong way: chosen down, rejected up" if d_chosen < 0 < d_rejected
            else "no margin gained: both up, rejected faster" if d_rejected > 0
            else "no margin gained: both down, chosen faster")


def kl_text(kl: float, sem: float) -> str:
    """A sampled KL estimate in words: ``"0.42 ± 0.03 nats"``; below 0, with why that can happen (the true KL is >= 0,
    but a Monte-Carlo mean of log-ratios near 0 can fall below it) and whether 0 is within 2 s.e."""
    text = f"{kl:.2f} ± {sem:.2f} nats"
    if kl < 0:
        text += (" (below 0 only as a sampled estimate: the KL itself is >= 0; "
                 + ("0 is within 2 s.e., read it as about 0)" if kl >= -2 * sem else
                    "more than 2 s.e. below 0: the two models' log-probs disagree, see evaluation.sample_and_score)"))
    return text

