"""A CPU pilot of notebook 03's online recipe: real SmolLM2-135M-Instruct, real HH-RLHF rows, learning rate x SFT term.

Notebook 03's online defaults (250 steps of 16 pairs, max_length 512, cosine schedule) had never run on the real
model with real data. A T4 is not available here, so this is a **pilot**, shrunk to what 2 CPU cores afford:
``STEPS`` steps of ``BATCH`` pairs at max_length ``MAX_LENGTH`` on the real HH rows of ../shared (harmless-base
test rows, split 90/10 by ``helpers.data``), for learning rate {5e-6, 2e-5, 5e-5} x ``sft_weight`` {0, 0.5} and
one deliberately over-optimised run (lr 5e-4, no SFT term: the quality check's calibration on the real model), beta
0.1, LoRA r=16, with notebook 03's functions (``helpers.recipe``; transformers + PEFT + TRL). Per setting, on the
held-out pairs and prompts:

- held-out reward accuracy, margin and Δ log p(chosen/rejected) on ``TEST_PAIRS`` pairs;
- ``PROMPTS`` pure samples (T=1, top-p 1, ``NEW_TOKENS`` tokens) of the policy: the sample-based KL(pi || pi_ref)
  with its standard error, and the quality rate (``helpers.quality``, real-text rules; cut-off answers apart) next
  to the reference's on the same prompts and decoding.

What it can show in 16 steps: whether a learning rate moves the model at all, whether it breaks answers, and what
the SFT term does to Δ log p(chosen). What it cannot show: where 250 steps of 16 pairs end. Writes
benchmarks/results/online_recipe_pilot.json, which notebook 03 prints where the online recipe is chosen.

    python benchmarks/bench_online_recipe_pilot.py            # ~20 min on 2 idle cores
    python benchmarks/bench_online_recipe_pilot.py 5e-05:0     # some settings only (merged into the results)
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test-0000-1199.jsonl"
OUT = ROOT / "benchmarks" / "results" / "online_recipe_pilot.json"
STEPS, BATCH, MAX_LENGTH, MAX_PROMPT = 16, 2, 192, 128
TEST_PAIRS, PROMPTS, NEW_TOKENS = 32, 24, 40
GRID = [(lr, sft) for lr in (5e-6, 2e-5, 5e-5) for sft in (0.0, 0.5)]
OVEROPT = (5e-4, 0.0)  # deliberately over-optimised (10x the online default, no SFT term): the quality check's
#                        calibration on the real model (helpers.quality.calibration prints it)


def _splits(tok, recipe):
    from helpers.recipe import check_lengths
    from helpers.worlds.splits import resolve_hh

    s = resolve_hh(str(SHARED), seed=0).data
    splits, _ = check_lengths(recipe, tok, {"train": s["train"], "test": s["test"]})
    train = splits["train"].shuffle(seed=0).select(range(STEPS * BATCH))
    return {"train": train, "test": splits["test"].select(range(min(TEST_PAIRS, len(splits["test"]))))}


def _samples(model, tok, prompts, *, reference: bool) -> dict:
    from helpers.evaluation import sample_and_score
    from helpers.quality import malformed_report

    s = sample_and_score(model, tok, prompts, n_samples=1, max_new_tokens=NEW_TOKENS, temperature=1.0, top_p=1.0,
                         seed=0, batch_size=8, reference=reference)
    kl = s["policy_logps"] - s["ref_logps"]
    return {"quality": malformed_report(s["texts"], stopped=s["stopped"].tolist()), "kl": float(kl.mean()),
            "kl_se": float(kl.std(ddof=1) / math.sqrt(len(kl))), "examples": s["texts"][:4]}


def run(lr: float, sft: float, cache: dict) -> dict:
    from helpers.evaluation import after_report, chat_prompts, reference_report
    from helpers.infra.smollm2 import MODEL_ID
    from helpers.recipe import DPORecipe, load_lora_model, make_trainer

    t0 = time.perf_counter()
    r = DPORecipe(model=MODEL_ID, data=str(SHARED), output_dir=f"/tmp/bench_pilot_{lr:g}_{sft:g}",
                  backend="transformers", learning_rate=lr, sft_weight=sft, max_steps=STEPS, batch_size=BATCH,
                  grad_accum=1, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT, warmup_steps=2,
                  lr_scheduler="constant_with_warmup", eval_steps=10_000, save_steps=10_000, logging_steps=1,
                  resume=False)
    model, tok = load_lora_model(r, r.model)
    splits = _splits(tok, r)
    ref, before = reference_report(model, tok, splits["test"], max_length=r.max_length)
    prompts = chat_prompts(splits["test"])[:PROMPTS]
    if "reference" not in cache:
        cache["reference"] = {**_samples(model, tok, prompts, reference=True), "before": before}
    trainer = make_trainer(model, tok, splits, r, eval_strategy="no")
    t1 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t1
    after = after_report(model, tok, splits["test"], ref, beta=r.beta, max_length=r.max_length)
    pol = _samples(model, tok, prompts, reference=False)
    refq = cache["reference"]["quality"]
    from helpers.quality import excess_rate

    ex, ex_se = excess_rate(pol["quality"]["malformed_rate"], pol["quality"]["n"], refq["malformed_rate"], refq["n"])
    return {"learning_rate": lr, "sft_weight": sft, "losses": [round(h["loss"], 4) for h in
                                                               trainer.state.log_history if "loss" in h],
            "after": {k: after[k] for k in ("rewards/accuracies", "rewards/margins", "delta_logps/chosen",
                                            "delta_logps/rejected", "margin_source")},
            "policy": pol, "malformed_excess": ex, "malformed_excess_se": ex_se,
            "train_seconds": round(train_s, 1), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str]) -> int:
    grid = [(float(a), float(b)) for a, b in (x.split(":") for x in argv)] if argv else GRID + [OVEROPT]
    old = json.loads(OUT.read_text()) if OUT.exists() and argv else {}
    cache = {"reference": old["reference"]} if old.get("reference") else {}
    rows = {(x["learning_rate"], x["sft_weight"]): x for x in old.get("runs", [])}
    for lr, sft in grid:
        rows[(lr, sft)] = x = run(lr, sft, cache)
        print(f"lr {lr:g} sft {sft:g}: acc {x['after']['rewards/accuracies']:.2f} margin "
              f"{x['after']['rewards/margins']:+.3f} Δc {x['after']['delta_logps/chosen']:+.2f} Δr "
              f"{x['after']['delta_logps/rejected']:+.2f} | KL {x['policy']['kl']:.2f} ± {x['policy']['kl_se']:.2f} | "
              f"malformed {cache['reference']['quality']['malformed_rate']:.2f} -> "
              f"{x['policy']['quality']['malformed_rate']:.2f} | {x['train_seconds']} s training", flush=True)
        info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
                "command": "python benchmarks/bench_online_recipe_pilot.py", "pilot": True,
                "settings": {"steps": STEPS, "batch_size": BATCH, "max_length": MAX_LENGTH, "beta": 0.1,
                             "lora_r": 16, "schedule": "constant after 2 warmup steps", "test_pairs": TEST_PAIRS,
                             "prompts": PROMPTS, "new_tokens": NEW_TOKENS, "data": SHARED.name},
                "overoptimised": {"learning_rate": OVEROPT[0], "sft_weight": OVEROPT[1]},
                "reference": cache["reference"], "runs": [rows[k] for k in sorted(rows)]}
        OUT.write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
