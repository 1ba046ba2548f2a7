"""Does DPO on SmolLM2's own answers (on-policy pairs, ``helpers.worlds.onpolicy``) help SmolLM2 (2 cores)?

For each setting of a small grid, with notebook 03's functions (``helpers.recipe``: transformers + PEFT + TRL, the
path Unsloth's CPU fallback also takes): load the packaged SmolLM2-135M-Instruct with a fresh LoRA adapter, train
on the first ``steps x batch`` on-policy pairs (data/smollm2_onpolicy_train.jsonl), then on the held-out questions
(facts never trained on):

- held-out reward accuracy and Δ log p(chosen/rejected) on the held-out on-policy pairs;
- ``SAMPLES`` pure samples (T=1, top-p 1, 32 tokens) per held-out question from the policy and from the reference:
  the ground-truth pass rate (``helpers.worlds.onpolicy.check_answer``) with its standard error, the quality rate
  (``helpers.quality``, real-text rules) and the sample-based KL(pi || pi_ref) (``helpers.evaluation``).

The off-policy contrast trains the same budget on the toy world's politeness pairs (text SmolLM2 would not write).
Timings: the parts notebook 03 would run (load, reference report, training, after report, policy samples).
Writes benchmarks/results/onpolicy_smollm2_cpu_dpo.json.

    python benchmarks/bench_onpolicy_dpo.py              # the grid, ~20 min on 2 idle cores
    python benchmarks/bench_onpolicy_dpo.py base sft     # some settings only (merged into the results file)
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "onpolicy_smollm2_cpu_dpo.json"
SAMPLES = 4  # per held-out question

BASE = dict(learning_rate=3e-4, steps=10, batch_size=4, beta=0.1, sft_weight=0.0, lora_r=16, pairs="onpolicy",
            pairs_per_question=4)  # as built (helpers.worlds.onpolicy.PAIRS_PER_QUESTION)
GRID = {
    "base": {},
    "lr1e-4": dict(learning_rate=1e-4),
    "lr1e-3": dict(learning_rate=1e-3),
    "lr1e-3_steps6": dict(learning_rate=1e-3, steps=6),  # what fits notebook 03's 90 s
    "beta0.5": dict(beta=0.5),
    "sft0.5": dict(sft_weight=0.5),
    "sft0.5_lr1e-3": dict(sft_weight=0.5, learning_rate=1e-3),
    "r4": dict(lora_r=4),
    "one_pair_per_question": dict(pairs_per_question=1, steps=6),  # 24 train questions give 24 such pairs
    "steps20": dict(steps=20),  # every train pair once (80 of 81)
    "sft0.5_steps20": dict(sft_weight=0.5, steps=20),
    "offpolicy": dict(pairs="toy"),
    "offpolicy_lr1e-3": dict(pairs="toy", learning_rate=1e-3),
}


def _se_diff(p1: float, n1: int, p0: float, n0: int) -> float:
    return math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)


def evaluate_samples(model, tok, qs, *, reference: bool) -> dict:
    """Pass rate, quality and KL of ``SAMPLES`` pure samples per question (``helpers.worlds.onpolicy.evaluate``)."""
    from helpers.worlds.onpolicy import evaluate

    out = evaluate(model, tok, qs, n_samples=SAMPLES, reference=reference)
    out.pop("samples")
    return out


def train_pairs(cfg: dict):
    """The training and held-out pairs of a setting: the first ``steps x batch`` pairs, shuffled with seed 0."""
    import json as _json

    from datasets import Dataset

    from helpers.worlds.onpolicy import DATA_DIR, FILES, load_onpolicy

    n = cfg["steps"] * cfg["batch_size"]
    held = load_onpolicy()["test"]
    if cfg["pairs"] == "toy":
        from helpers.worlds.splits import TOY, resolve_hh

        return resolve_hh(TOY).data["train"].shuffle(seed=0).select(range(n)), held
    rows = [_json.loads(x) for x in (DATA_DIR / FILES["train"]).read_text().splitlines() if x.strip()]
    seen: dict[int, int] = {}  # keep the first pairs_per_question pairs of each question
    kept = []
    for r in rows:
        seen[r["question_id"]] = seen.get(r["question_id"], 0) + 1
        if seen[r["question_id"]] <= cfg["pairs_per_question"]:
            kept.append(r)
    rows = kept
    train = Dataset.from_list([{c: r[c] for c in ("prompt", "chosen", "rejected")} for r in rows]).shuffle(seed=0)
    if len(train) < n:
        raise ValueError(f"{cfg}: {len(train)} pairs < {n} needed")
    return train.select(range(n)), held


def run(name: str, cfg: dict, reference_cache: dict) -> dict:
    from helpers.evaluation import after_report, reference_report
    from helpers.infra.smollm2 import MODEL_ID
    from helpers.recipe import ONPOLICY, DPORecipe, check_lengths, load_lora_model, make_trainer
    from helpers.worlds.onpolicy import clustered_change, split_questions

    t = {"start": time.perf_counter()}
    r = DPORecipe(model=MODEL_ID, data=ONPOLICY, output_dir=f"/tmp/bench_onpolicy_{name}", backend="transformers",
                  learning_rate=cfg["learning_rate"], max_steps=cfg["steps"], batch_size=cfg["batch_size"],
                  grad_accum=1, beta=cfg["beta"], sft_weight=cfg["sft_weight"], lora_r=cfg["lora_r"],
                  lora_alpha=2 * cfg["lora_r"], max_length=160, max_prompt_length=112, warmup_steps=0,
                  lr_scheduler="constant", eval_steps=10_000, save_steps=10_000, logging_steps=1, resume=False)
    model, tok = load_lora_model(r, r.model)
    train, held = train_pairs(cfg)
    splits, _ = check_lengths(r, tok, {"train": train, "test": held})
    t["loaded"] = time.perf_counter()
    ref, before = reference_report(model, tok, splits["test"], max_length=r.max_length)
    t["reference_report"] = time.perf_counter()
    qs = split_questions()["test"]
    if "reference" not in reference_cache:  # the reference is the same model in every setting
        reference_cache["reference"] = evaluate_samples(model, tok, qs, reference=True)
    t["reference_samples"] = time.perf_counter()
    trainer = make_trainer(model, tok, splits, r, eval_strategy="no")
    trainer.train()
    t["trained"] = time.perf_counter()
    after = after_report(model, tok, splits["test"], ref, beta=r.beta, max_length=r.max_length)
    t["after_report"] = time.perf_counter()
    pol = evaluate_samples(model, tok, qs, reference=False)
    t["policy_samples"] = time.perf_counter()
    refs = reference_cache["reference"]
    keys = list(t)
    secs = {k: round(t[k] - t[keys[i - 1]], 1) for i, k in enumerate(keys) if i}
    nb = sum(v for k, v in secs.items() if k != "reference_samples")
    return {"name": name, **cfg, "train_pairs": len(splits["train"]), "held_out_pairs": len(splits["test"]),
            "losses": [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h],
            "after": {k: after[k] for k in ("rewards/accuracies", "rewards/margins", "delta_logps/chosen",
                                            "delta_logps/rejected", "margin_source")},
            "policy": pol, "pass_rate_change": pol["pass_rate"] - refs["pass_rate"],
            "pass_rate_change_se": _se_diff(pol["pass_rate"], pol["n"], refs["pass_rate"], refs["n"]),
            "pass_rate_change_se_clustered": clustered_change(refs, pol)[1],  # paired by question
            "quality_change": pol["quality"]["malformed_rate"] - refs["quality"]["malformed_rate"],
            "seconds": secs, "seconds_notebook03_parts": round(nb, 1)}


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = argv or list(GRID)
    bad = [n for n in names if n not in GRID]
    if bad:
        raise SystemExit(f"unknown settings {bad}; known: {list(GRID)}")
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    cache: dict = {}
    if old.get("reference", {}).get("per_question") and argv:  # a stored reference without them is measured again
        cache["reference"] = old["reference"]
    rows = {r["name"]: r for r in old.get("runs", [])} if argv else {}
    for name in names:
        rows[name] = run(name, {**BASE, **GRID[name]}, cache)
        x = rows[name]
        print(f"{name:<22} acc {x['after']['rewards/accuracies']:.2f} Δc {x['after']['delta_logps/chosen']:+.2f} "
              f"Δr {x['after']['delta_logps/rejected']:+.2f} | pass {cache['reference']['pass_rate']:.2f} -> "
              f"{x['policy']['pass_rate']:.2f} ({x['pass_rate_change']:+.2f} ± {x['pass_rate_change_se']:.2f}) | "
              f"malformed {cache['reference']['quality']['malformed_rate']:.2f} -> "
              f"{x['policy']['quality']['malformed_rate']:.2f} | KL {x['policy']['kl']:.2f} | "
              f"nb03 {x['seconds_notebook03_parts']} s", flush=True)
        info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
                "command": "python benchmarks/bench_onpolicy_dpo.py", "base": BASE, "samples_per_question": SAMPLES,
                "reference": cache["reference"], "runs": [rows[n] for n in GRID if n in rows]}
        OUT.write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
