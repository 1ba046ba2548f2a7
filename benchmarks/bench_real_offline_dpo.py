"""Can notebook 03 train the real SmolLM2-135M-Instruct offline, on a 2-core CPU, within its 90 s budget?

Runs notebook 03's functions (``helpers.train``) on the real model (offline: the packaged copy) with the toy world's
politeness pairs, whose ground-truth reward tells whether the samples changed, for a few short recipes. For each:
held-out reward accuracy and margin, Δ log p(chosen/rejected), the chosen-style rate and malformed rate of sampled
answers (the toy world's decoding: T=1.0, top-p 0.9, 32 new tokens) before and after, and wall-clock seconds of
each part. Writes ``benchmarks/results/real_smollm2_cpu_dpo.json``, which notebook 03 prints.

    python benchmarks/bench_real_offline_dpo.py            # ~5 min on 2 idle cores
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "real_smollm2_cpu_dpo.json"

# name -> (learning rate, steps); batch 4 pairs, max_length 128, LoRA r=16 on all projections, beta 0.1, constant lr
CONFIGS = {"gentle": (2e-4, 8), "aggressive": (5e-4, 10)}
TEST_PAIRS = 24


def run(name: str, lr: float, steps: int) -> dict:
    import numpy as np

    from helpers.data import TOY, resolve_hh
    from helpers.evaluation import chat_prompts, sample_responses
    from helpers.models import MODEL_ID
    from helpers.quality import malformed_report
    from helpers.toy import is_chosen_style
    from helpers.toy_model import TOY_DECODING
    from helpers.train import DPORecipe, after_report, check_lengths, load_lora_model, make_trainer, reference_report

    t = {"start": time.perf_counter()}
    r = DPORecipe(model=MODEL_ID, data=TOY, output_dir=f"/tmp/bench_real_{name}", backend="transformers",
                  learning_rate=lr, max_steps=steps, batch_size=4, grad_accum=1, max_length=128, max_prompt_length=100,
                  warmup_steps=0, lr_scheduler="constant", eval_steps=10_000, save_steps=10_000, logging_steps=1,
                  resume=False)
    model, tok = load_lora_model(r, r.model)
    s = resolve_hh(TOY).data
    splits = {"train": s["train"].shuffle(seed=0).select(range(steps * r.batch_size)),
              "test": s["test"].select(range(TEST_PAIRS))}
    splits, _ = check_lengths(r, tok, splits)
    t["loaded"] = time.perf_counter()
    ref, before = reference_report(model, tok, splits["test"], max_length=r.max_length)
    t["reference"] = time.perf_counter()
    prompts = chat_prompts(splits["test"])
    texts_before = sample_responses(model, tok, prompts, reference=True, seed=0, **TOY_DECODING)
    t["sampled_before"] = time.perf_counter()
    trainer = make_trainer(model, tok, splits, r, eval_strategy="no")
    trainer.train()
    t["trained"] = time.perf_counter()
    after = after_report(model, tok, splits["test"], ref, beta=r.beta, max_length=r.max_length)
    t["after"] = time.perf_counter()
    texts_after = sample_responses(model, tok, prompts, reference=False, seed=0, **TOY_DECODING)
    t["sampled_after"] = time.perf_counter()
    keys = list(t)
    return {
        "config": name, "learning_rate": lr, "steps": steps, "batch_size": r.batch_size, "max_length": r.max_length,
        "test_pairs": len(splits["test"]), "decoding": TOY_DECODING,
        "losses": [round(h["loss"], 4) for h in trainer.state.log_history if "loss" in h],
        "before": before, "after": {k: v for k, v in after.items()},
        "chosen_style_rate_before": float(np.mean([is_chosen_style(x) for x in texts_before])),
        "chosen_style_rate_after": float(np.mean([is_chosen_style(x) for x in texts_after])),
        "malformed_before": malformed_report(texts_before, rules="toy"),
        "malformed_after": malformed_report(texts_after, rules="toy"),
        "samples_before": texts_before[:6], "samples_after": texts_after[:6],
        "seconds": {k: round(t[k] - t[keys[i - 1]], 1) for i, k in enumerate(keys) if i},
        "seconds_total": round(t["sampled_after"] - t["start"], 1),
        "seconds_notebook03_parts": round(t["trained"] - t["start"] - (t["sampled_before"] - t["reference"])
                                          + (t["after"] - t["trained"]), 1),
    }


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = [run(name, lr, steps) for name, (lr, steps) in CONFIGS.items()]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/bench_real_offline_dpo.py"}
    OUT.write_text(json.dumps({**info, "runs": rows}, indent=2) + "\n")
    for x in rows:
        print(f"{x['config']:<10} lr {x['learning_rate']:g} x {x['steps']} steps: accuracy "
              f"{x['after']['rewards/accuracies']:.2f}, margin {x['after']['rewards/margins']:.2f}, Δ chosen "
              f"{x['after']['delta_logps/chosen']:+.1f}, Δ rejected {x['after']['delta_logps/rejected']:+.1f}; style "
              f"{x['chosen_style_rate_before']:.2f} -> {x['chosen_style_rate_after']:.2f}; malformed "
              f"{x['malformed_before']['malformed_rate']:.2f} -> {x['malformed_after']['malformed_rate']:.2f}; "
              f"notebook-03 parts {x['seconds_notebook03_parts']} s (total with sampling {x['seconds_total']} s)")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
