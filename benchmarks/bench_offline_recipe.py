"""Notebook 03's offline recipe with and without the SFT term: style lift, malformed answers, strict win rate.

Trains the toy world's SFT model with ``helpers.recipe.OFFLINE`` (LoRA DPO, beta 0.1, lr 1.5e-4, 100 steps of 16
pairs), once with ``sft_weight=0`` (plain sigmoid DPO) and once with ``sft_weight=1`` (TRL's ``["sigmoid", "sft"]``:
DPO plus the negative log-likelihood of the chosen answer), then generates for 200 held-out prompts exactly as
notebook 05 does (same seed, the toy world's decoding) and scores both sides: chosen-style rate, malformed rate
(``helpers.quality``), win rate by ground-truth reward, and the strict win rate that counts malformed answers as
losses. Writes ``benchmarks/results/offline_recipe_sft.json``; notebook 05 prints it.

    python benchmarks/bench_offline_recipe.py        # ~4 min on 2 idle cores
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
OUT = ROOT / "benchmarks" / "results" / "offline_recipe_sft.json"
CONFIGS = {"dpo": {"sft_weight": 0.0}, "dpo+sft": {"sft_weight": 1.0}}
PROMPTS = 200


def run(name: str, changes: dict, workdir: Path) -> dict:
    import numpy as np

    from helpers.compare import generate_side_by_side, strict_win_rate, win_rate
    from helpers.evaluation import chat_prompts
    from helpers.quality import malformed_reason
    from helpers.recipe import OFFLINE, DPORecipe, run_recipe
    from helpers.worlds.splits import TOY, resolve_hh
    from helpers.worlds.toy import is_chosen_style, toy_reward
    from helpers.worlds.toy_model import TOY_DECODING

    t0 = time.perf_counter()
    r = DPORecipe(**{**OFFLINE, "output_dir": str(workdir / name), "backend": "transformers", "resume": False,
                     **changes})
    m = run_recipe(r, verbose=False)
    prompts = chat_prompts(resolve_hh(TOY).data["test"])[:PROMPTS]
    rows = generate_side_by_side(m["model"], m["tokenizer"], prompts, decoding=TOY_DECODING, seed=0)
    score = {s: [toy_reward(x[s]) for x in rows] for s in ("policy", "reference")}
    bad = {s: [malformed_reason(x[s], rules="toy") is not None for x in rows] for s in ("policy", "reference")}
    return {"config": name, "recipe": r.to_dict(), "heldout_reward_accuracy": m["after"]["rewards/accuracies"],
            "delta_logps_chosen": m["after"]["delta_logps/chosen"],
            "delta_logps_rejected": m["after"]["delta_logps/rejected"], "prompts": len(rows),
            "chosen_style_rate_before": float(np.mean([is_chosen_style(x["reference"]) for x in rows])),
            "chosen_style_rate_after": float(np.mean([is_chosen_style(x["policy"]) for x in rows])),
            "malformed_rate_before": float(np.mean(bad["reference"])),
            "malformed_rate_after": float(np.mean(bad["policy"])),
            "win_rate": win_rate(score["policy"], score["reference"]),
            "strict_win_rate": strict_win_rate(score["policy"], score["reference"], bad["policy"], bad["reference"]),
            "malformed_examples": [x["policy"] for x, b in zip(rows, bad["policy"], strict=True) if b][:5],
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(name, changes, Path(tmp)) for name, changes in CONFIGS.items()]
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/bench_offline_recipe.py"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({**info, "runs": rows}, indent=2) + "\n")
    for x in rows:
        print(f"{x['config']:<8} accuracy {x['heldout_reward_accuracy']:.3f}, Δ chosen {x['delta_logps_chosen']:+.2f}, "
              f"Δ rejected {x['delta_logps_rejected']:+.2f}; style {x['chosen_style_rate_before']:.3f} -> "
              f"{x['chosen_style_rate_after']:.3f}; malformed {x['malformed_rate_before']:.3f} -> "
              f"{x['malformed_rate_after']:.3f}; win {x['win_rate']:.3f}, strict {x['strict_win_rate']:.3f}")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
