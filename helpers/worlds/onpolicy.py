"""On-policy preference pairs for SmolLM2: its own answers to the toy world's questions, ranked by a ground truth.

The DPO paper's controlled experiments sample from the model being tuned and rank the samples with a scorer that
knows the truth. Here the model is SmolLM2-135M-Instruct, the questions are the toy world's facts
(``helpers.worlds.toy``: capitals, colours, animal sounds, opposites, small sums), and the scorer is
``check_answer``, readable in one line:

    an answer passes when it names the right answer, names no other answer of its kind, ends on its own
    (eos within the token budget) and is well-formed (``helpers.quality``).

A pair is a passing sample (the shortest: the most direct) against a failing sample of the same question (one that
names a wrong answer first). Train and held-out questions ask about different facts (``split_questions``), so a
held-out pass rate measures whether the model got better at answering, not whether it memorised a pair.

Built once by ``python -m helpers.worlds.onpolicy build`` (seeded, ~5 min on 2 cores; not part of any notebook's budget)
into ``data/smollm2_onpolicy_{train,test}.jsonl`` and ``data/smollm2_onpolicy.json`` (settings, the reference's
held-out pass rate, per-question sample counts). Each question's samples come from one ``generate`` call on the
question repeated ``n`` times (no padding) after ``torch.manual_seed(seed + question index)``, on
``BUILD_THREADS`` threads, so any slice rebuilds identically (tests/test_onpolicy.py).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.infra.files import write_json, write_text
from helpers.infra.paths import DATA_DIR
from helpers.worlds.toy import CAPITALS, COLORS, NUMBERS, OPPOSITES, SOUNDS

__all__ = ["Question", "questions", "split_questions", "check_answer", "CHECK_LINE", "sample_answers", "evaluate",
           "make_pairs", "build", "benchmark_verdicts", "load_onpolicy", "manifest", "pass_rate", "clustered_change",
           "DECODING", "FILES"]

FILES = {"train": "smollm2_onpolicy_train.jsonl", "test": "smollm2_onpolicy_test.jsonl",
         "manifest": "smollm2_onpolicy.json"}
DECODING = dict(do_sample=True, temperature=0.7, top_p=1.0, max_new_tokens=32)  # notebook 05's temperature
N_SAMPLES = 8
SEED = 0
BUILD_THREADS = 2
CHECK_LINE = ("passes = its first sentence names the right answer, it names no other answer of its kind, and it is "
              "well-formed (helpers.quality)")

# Accepted forms of each answer (lower case, whole words); a sound or an opposite has a few natural forms.
_SOUND_FORMS = {"barks": ("bark", "barks", "barking", "woof"), "meows": ("meow", "meows", "meowing", "mew"),
                "moos": ("moo", "moos", "mooing"), "quacks": ("quack", "quacks", "quacking"),
                "bleats": ("bleat", "bleats", "bleating", "baa"), "roars": ("roar", "roars", "roaring"),
                "hoots": ("hoot", "hoots", "hooting"), "neighs": ("neigh", "neighs", "neighing", "whinny"),
                "croaks": ("croak", "croaks", "croaking", "ribbit"), "buzzes": ("buzz", "buzzes", "buzzing")}
_OPPOSITE_FORMS = {"small": ("small", "little", "tiny"), "sad": ("sad", "unhappy"), "closed": ("closed", "shut"),
                   "quiet": ("quiet", "silent"), "new": ("new", "young")}
_COLOR_WORDS = ("blue", "green", "white", "black", "yellow", "red", "orange", "purple", "brown", "pink", "gray",
                "grey", "violet", "gold", "silver")
_NUMBER_RE = re.compile(r"\b(?:" + "|".join(NUMBERS + ["nineteen", "twenty"]) + r"|\d+)\b", re.IGNORECASE)
_SUMS = [(a, b) for a in range(10) for b in range(10)]


@dataclass(frozen=True)
class Question:
    """One toy-world fact asked as a question: ``kind`` (capital/color/sound/opposite/sum), the ``subject`` asked
    about, the reference ``answer`` and every accepted form of it (``forms``), and the forms of the other answers of
    its kind (``others``: naming one of them fails)."""

    id: int
    kind: str
    question: str
    subject: str
    answer: str
    forms: tuple[str, ...]
    others: tuple[str, ...]


def questions() -> list[Question]:
    """Every question of the pool, in a fixed order (ids 0..N-1): 16 capitals, 9 colours (not "an orange": its
    subject names its answer), 10 sounds, 12 opposites, 24 of the 100 sums (seeded choice)."""
    out: list[tuple] = []
    caps = sorted(CAPITALS.values())
    for country in sorted(CAPITALS):
        cap = CAPITALS[country]
        forms = (cap.lower(), "delhi") if cap == "New Delhi" else (cap.lower(),)
        out.append(("capital", f"What is the capital of {country}?", country, cap, forms,
                    tuple(c.lower() for c in caps if c != cap)))
    for thing in sorted(COLORS):
        if thing == "an orange":
            continue
        c = COLORS[thing]
        out.append(("color", f"What color is {thing}?", thing, c, (c,), tuple(w for w in _COLOR_WORDS if w != c)))
    for animal in sorted(SOUNDS):
        s = SOUNDS[animal]
        out.append(("sound", f"What sound does a {animal} make?", animal, s, _SOUND_FORMS[s],
                    tuple(f for k, v in _SOUND_FORMS.items() if k != s for f in v)))
    for word in sorted(OPPOSITES):
        o = OPPOSITES[word]
        forms = _OPPOSITE_FORMS.get(o, (o,))
        others = tuple(sorted({f for k, v in OPPOSITES.items() if v != o for f in _OPPOSITE_FORMS.get(v, (v,))}
                              - set(forms) - {word}))
        out.append(("opposite", f"What is the opposite of {word}?", word, o, forms, others))
    for a, b in sorted(random.Random(SEED).sample(_SUMS, 24)):
        out.append(("sum", f"What is {NUMBERS[a]} plus {NUMBERS[b]}?", f"{a}+{b}", NUMBERS[a + b],
                    (NUMBERS[a + b], str(a + b)), ()))
    return [Question(i, *row) for i, row in enumerate(out)]


def split_questions(pool: list[Question] | None = None) -> dict[str, list[Question]]:
    """Train and held-out questions, disjoint facts: within each kind, a seeded third is held out."""
    pool = questions() if pool is None else pool
    out: dict[str, list[Question]] = {"train": [], "test": []}
    for kind in dict.fromkeys(q.kind for q in pool):
        qs = [q for q in pool if q.kind == kind]
        held = set(random.Random(f"{SEED}-{kind}").sample(range(len(qs)), len(qs) // 3))
        for i, q in enumerate(qs):
            out["test" if i in held else "train"].append(q)
    return out


def _number(m: str) -> int:
    m = m.lower()
    return int(m) if m.isdigit() else (NUMBERS + ["nineteen", "twenty"]).index(m)


def _has(text: str, forms) -> str | None:
    low = text.lower()
    for f in forms:
        if re.search(rf"\b{re.escape(f)}\b", low):
            return f
    return None


_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def first_sentence(text: str) -> str | None:
    """``text`` up to its first sentence end (``.``, ``!`` or ``?`` before a space or the end), or None when no
    sentence ends (an answer cut off mid-sentence)."""
    m = _SENTENCE_END.search(text)
    return text[: m.end()].strip() if m else None


def check_answer(q: Question, text: str, *, stopped: bool = True) -> str | None:
    """None when ``text`` passes ``q``'s ground-truth check (``CHECK_LINE``), else why it fails: ``"malformed:
    <reason>"`` (``helpers.quality``), ``"cut off"`` (stopped by the token budget before its first sentence ended),
    ``"wrong: <what it named>"`` (another answer of the question's kind, anywhere) or ``"misses the answer"`` (the
    first sentence does not name it). The question's subject, and for a sum the question restated, are removed
    before matching, so "An orange is red" or "Zero plus nine is a mystery" cannot pass on their words."""
    from helpers.quality import malformed_reason

    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    bad = malformed_reason(text)
    if bad:
        return f"malformed: {bad}"
    first = first_sentence(text)
    if first is None:  # no sentence end: a whole answer without final punctuation, or one cut off mid-sentence
        if not stopped:
            return "cut off"
        first = text.strip()

    if q.kind == "sum":
        a, b = (int(x) for x in q.subject.split("+"))
        restated = rf"\b(?:{NUMBERS[a]}|{a})\s*(?:plus|\+|and)\s*(?:{NUMBERS[b]}|{b})\b"
    else:
        restated = rf"\b{re.escape(q.subject)}\b"
    body, head = (re.sub(restated, " ", t, flags=re.IGNORECASE) for t in (text, first))
    if q.kind == "sum":
        wrong = sorted({_number(m) for m in _NUMBER_RE.findall(body)} - {a, b, a + b})
        if wrong:
            return f"wrong: {wrong[0]}"
        return None if a + b in {_number(m) for m in _NUMBER_RE.findall(head)} else "misses the answer"
    other = _has(body, q.others)
    if other:
        return f"wrong: {other}"
    return None if _has(head, q.forms) else "misses the answer"


def sample_answers(model, tokenizer, qs: list[Question], *, n: int = N_SAMPLES, seed: int = SEED,
                   decoding: dict | None = None, reference: bool = False, progress: bool = True
                   ) -> list[list[tuple[str, bool]]]:
    """``n`` sampled answers per question, ``[[(text, stopped at eos), ...], ...]`` in question order; each
    question seeded by ``seed + q.id`` (a slice samples what the whole pool does). ``reference=True``: adapters off."""
    from helpers.evaluation import adapters_off, generate, sampling

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    decoding = dict(DECODING if decoding is None else decoding)
    out = []
    it = qs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(qs, desc="sampling", unit="question", leave=False)
    with sampling(model, tokenizer), adapters_off(model, reference):
        for q in it:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": q.question}], tokenize=False,
                                                   add_generation_prompt=True)
            _, new = generate(model, tokenizer, [prompt] * n, seed=seed + q.id, **decoding)
            texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            out.append([(t, tokenizer.eos_token_id in row) for t, row in zip(texts, new.tolist(), strict=True)])
    return out


def _mean_se(xs: list[float]) -> tuple[float, float]:
    """Mean of ``xs`` and its standard error (sample standard deviation / sqrt(n); 0 for a single value)."""
    import math

    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else 0.0


def pass_rate(qs: list[Question], samples: list[list[tuple[str, bool]]]) -> dict[str, Any]:
    """Share of samples passing ``check_answer`` with its standard error, the reasons of the failures, and per kind;
    ``per_question``: passing samples per question, and ``se_clustered``, the standard error over questions."""
    import math
    from collections import Counter

    per_q = [[check_answer(q, t, stopped=s) for t, s in ss] for q, ss in zip(qs, samples, strict=True)]
    checks = [(q.kind, c) for q, cs in zip(qs, per_q, strict=True) for c in cs]
    if not checks:
        raise ValueError("samples must hold at least one answer")
    n = len(checks)
    p = sum(c is None for _, c in checks) / n
    kinds = {k: sum(c is None for kk, c in checks if kk == k) / sum(kk == k for kk, _ in checks)
             for k in dict.fromkeys(k for k, _ in checks)}
    reasons = Counter(c.split(":")[0] for _, c in checks if c)
    passes = [sum(c is None for c in cs) for cs in per_q]
    _, se_q = _mean_se([x / len(cs) for x, cs in zip(passes, per_q, strict=True) if cs])
    return {"n": n, "pass_rate": p, "se": math.sqrt(p * (1 - p) / n), "per_kind": kinds, "fails": dict(reasons),
            "per_question": passes, "se_clustered": se_q}


def clustered_change(reference: dict[str, Any], policy: dict[str, Any]) -> tuple[float, float]:
    """``(change, its standard error)`` of the pass rate from ``reference`` to ``policy`` (``pass_rate`` results on
    the same questions, the same number of samples each), paired and clustered by question: the samples of one
    question are not independent, and both sides answer the same questions. The mean over questions of the change
    in each question's pass share, and the standard error of that mean."""
    a, b = reference.get("per_question"), policy.get("per_question")
    if not a or not b or len(a) != len(b):
        raise ValueError("reference and policy must carry per_question counts of the same questions "
                         f"(got {len(a or [])} and {len(b or [])})")
    k_a, k_b = reference["n"] / len(a), policy["n"] / len(b)
    return _mean_se([y / k_b - x / k_a for x, y in zip(a, b, strict=True)])


def evaluate(model, tokenizer, qs: list[Question], *, n_samples: int = 4, reference: bool = False, seed: int = 0,
             kl_samples: int = 1, batch_size: int = 32) -> dict[str, Any]:
    """What the model writes for ``qs``: ``n_samples`` samples per question at ``DECODING`` (batched, seeded), scored
    by ``check_answer`` (``pass_rate``'s keys) and ``helpers.quality`` (``quality``: real-text rules, cut-offs apart);
    ``examples``: one answer per question. With ``kl_samples`` > 0 also KL(pi || pi_ref) with its standard error
    (``kl``, ``kl_se``) from that many *pure* samples per question (T 1, top-p 1: ``helpers.evaluation.measure_policy``;
    samples at temperature 0.7 are not the policy's own distribution, so they cannot estimate it)."""
    import numpy as np

    from helpers.evaluation import sample_responses
    from helpers.quality import malformed_report

    prompts = [[{"role": "user", "content": q.question}] for q in qs]
    k = n_samples
    texts, stopped = sample_responses(model, tokenizer, [p for p in prompts for _ in range(k)], seed=seed,
                                      batch_size=batch_size, reference=reference, return_stopped=True, **DECODING)
    per_q = [list(zip(texts[i * k:(i + 1) * k], stopped[i * k:(i + 1) * k], strict=True)) for i in range(len(qs))]
    out = {**pass_rate(qs, per_q), "quality": malformed_report(texts, stopped=stopped),
           "mean_words": float(np.mean([len(t.split()) for t in texts])), "examples": [ss[0][0] for ss in per_q],
           "samples": per_q}
    if kl_samples > 0:
        from helpers.evaluation import measure_policy

        m = measure_policy(model, tokenizer, prompts, reference=reference, kl_samples=kl_samples,
                           max_new_tokens=DECODING["max_new_tokens"], seed=seed)
        out.update(kl=m["kl"], kl_se=m["kl_sem"], kl_n=m["kl_n"])
    return out


_FAIL_ORDER = ("wrong", "misses the answer", "cut off", "malformed")  # which failing sample to reject first


PAIRS_PER_QUESTION = 4


def make_pairs(qs: list[Question], samples: list[list[tuple[str, bool]]], *,
               pairs_per_question: int = PAIRS_PER_QUESTION) -> list[dict[str, Any]]:
    """Conversational DPO pairs: for each question with at least one passing and one failing sample, up to
    ``pairs_per_question`` pairs, each of a distinct failing sample (a wrong answer first, then a miss, a cut-off, a
    malformed one) against a passing sample (the shortest first, reused in turn when fewer pass than fail). Each
    row: prompt/chosen/rejected plus ``question_id`` and the rejected sample's ``why``."""
    if pairs_per_question < 1:
        raise ValueError(f"pairs_per_question must be >= 1, got {pairs_per_question}")
    rows = []
    for q, ss in zip(qs, samples, strict=True):
        judged = [(t, check_answer(q, t, stopped=s)) for t, s in dict.fromkeys(ss)]
        good = sorted({t for t, w in judged if w is None}, key=lambda t: (len(t), t))
        bad = [(t, w) for t, w in judged if w is not None and t not in good]
        bad.sort(key=lambda tw: next(i for i, k in enumerate(_FAIL_ORDER) if tw[1].startswith(k)))
        for i, (r, why) in enumerate(bad[:pairs_per_question] if good else []):
            c = good[i % len(good)]  # fewer passing than failing samples: a passing one is reused
            rows.append({"prompt": [{"role": "user", "content": q.question}],
                         "chosen": [{"role": "assistant", "content": c}],
                         "rejected": [{"role": "assistant", "content": r}], "question_id": q.id, "why": why})
    return rows


def build(out_dir: str | Path = DATA_DIR, *, n: int = N_SAMPLES, seed: int = SEED, limit: int | None = None,
          model=None, tokenizer=None) -> dict[str, Any]:
    """Sample the pool's questions with the packaged SmolLM2 (or ``model``/``tokenizer``), rank and pair them, and
    write ``FILES`` into ``out_dir``; ``limit`` keeps the first questions of each split (a slice). Returns the
    manifest."""
    import platform
    import time

    import torch

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be None or >= 1, got {limit}")
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        if model is None:
            from helpers.infra.smollm2 import MODEL_ID
            from helpers.models import load_model

            model, tokenizer = load_model(MODEL_ID, use_unsloth=False, verbose=False)
        t0 = time.perf_counter()
        split = {k: v[:limit] for k, v in split_questions().items()}
        samples = {k: sample_answers(model, tokenizer, qs, n=n, seed=seed) for k, qs in split.items()}
    finally:
        torch.set_num_threads(threads)
    counts = write_pairs(out_dir, split, samples)
    man = {"command": "python -m helpers.worlds.onpolicy build", "model": "HuggingFaceTB/SmolLM2-135M-Instruct "
           "(packaged Q4_1 GGUF, dequantised)", "license": "text generated by SmolLM2-135M-Instruct (Apache-2.0) "
           "from this project's questions", "check": CHECK_LINE, "decoding": DECODING, "n_samples": n, "seed": seed,
           "threads": BUILD_THREADS, "limit": limit, "pairs_per_question": PAIRS_PER_QUESTION,
           "seconds": round(time.perf_counter() - t0, 1),
           "machine": f"{platform.machine()}, torch {torch.__version__}", "pairs": counts,
           "questions": {k: [q.id for q in v] for k, v in split.items()},
           "reference": {k: pass_rate(split[k], samples[k]) for k in split},
           "samples": {k: {str(q.id): [[t, s] for t, s in ss] for q, ss in zip(split[k], samples[k], strict=True)}
                       for k in split}}
    write_json(Path(out_dir) / FILES["manifest"], man, indent=1, ensure_ascii=False)
    return man


def write_pairs(out_dir: str | Path, split: dict[str, list[Question]], samples: dict[str, list]) -> dict[str, int]:
    """``make_pairs`` of each split's samples into ``out_dir``'s pair files; returns the pair counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for k in ("train", "test"):
        rows = make_pairs(split[k], samples[k])
        write_text(out / FILES[k], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        counts[k] = len(rows)
    return counts


def manifest(data_dir: str | Path = DATA_DIR) -> dict[str, Any]:
    p = Path(data_dir) / FILES["manifest"]
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: build it with `python -m helpers.worlds.onpolicy build`")
    return json.loads(p.read_text())


def load_onpolicy(data_dir: str | Path = DATA_DIR) -> dict[str, Any]:
    """The on-policy pairs as ``{"train", "test"}`` datasets of prompt/chosen/rejected (what TRL reads)."""
    from datasets import Dataset

    out = {}
    for k in ("train", "test"):
        p = Path(data_dir) / FILES[k]
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing: build it with `python -m helpers.worlds.onpolicy build`")
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        out[k] = Dataset.from_list([{c: r[c] for c in ("prompt", "chosen", "rejected")} for r in rows])
    return out


GOAL_POINTS = 0.20  # issue: held-out pass rate up by >= 20 points ...
BUDGET_S = 75.0  # ... with notebook 03's parts inside its 90 s (about 15 s go to imports, plots and saving)


def benchmark_verdicts(results: dict[str, Any], *, goal: float = GOAL_POINTS, budget_s: float = BUDGET_S
                       ) -> list[dict[str, Any]]:
    """Per run of ``benchmarks/results/onpolicy_smollm2_cpu_dpo.json``: the pass-rate change with its standard error
    (``se``: samples as independent; ``se_clustered``: paired by question, ``clustered_change``, None in results
    stored before it existed),
    whether it reaches ``goal``, whether the malformed rate stayed within two standard errors of the reference's
    (``helpers.quality.excess_rate``), and whether notebook 03's parts of it fit ``budget_s``; ``meets`` = all three."""
    from helpers.quality import excess_rate

    ref = results["reference"]
    out = []
    for r in results["runs"]:
        ex, se = excess_rate(r["policy"]["quality"]["malformed_rate"], r["policy"]["quality"]["n"],
                             ref["quality"]["malformed_rate"], ref["quality"]["n"])
        v = {"name": r["name"], "pairs": r["pairs"], "change": r["pass_rate_change"], "se": r["pass_rate_change_se"],
             "se_clustered": r.get("pass_rate_change_se_clustered"),
             "reaches_goal": r["pass_rate_change"] >= goal, "quality_ok": ex <= 2 * se,
             "fits": r["seconds_notebook03_parts"] <= budget_s, "seconds": r["seconds_notebook03_parts"]}
        v["meets"] = v["reaches_goal"] and v["quality_ok"] and v["fits"]
        out.append(v)
    return out


def question_dict() -> dict[int, Question]:
    return {q.id: q for q in questions()}


if __name__ == "__main__":  # python -m helpers.worlds.onpolicy build [--limit N] [--out DIR]
    import argparse

    ap = argparse.ArgumentParser(prog="python -m helpers.worlds.onpolicy")
    ap.add_argument("command", choices=["build", "show"])
    ap.add_argument("--limit", type=int, default=None, help="first N questions of each split (a slice)")
    ap.add_argument("--out", default=str(DATA_DIR))
    a = ap.parse_args()
    if a.command == "show":
        for k, v in split_questions().items():
            print(k, len(v), [q.question for q in v])
    else:
        m = build(a.out, limit=a.limit)
        print(json.dumps({k: m[k] for k in ("pairs", "reference", "seconds")}, indent=1))
