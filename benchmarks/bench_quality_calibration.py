"""Calibrate helpers.quality's rules on real text: what they flag where nothing is broken, and where it is.

1. ``hh``: the final chosen and rejected answers of the real HH-RLHF rows in ../shared (rows ``parse_hh`` keeps),
   under the real-text rules and under the toy world's strict rules. Goal: <= 2% of chosen answers flagged.
2. ``smollm2_reference``: the packaged SmolLM2-135M-Instruct (no training) answering real HH prompts with notebook
   05's online decoding (T 0.7, top-p 0.9, 128 new tokens): its malformed rate, reasons, truncated rate (cut by the
   token cap, reported apart) and examples. This is the reference every run is compared with.
3. ``toy_overoptimised``: notebook 04's offline over-optimised run (read from its parameters cell), measured under the
   toy rules (it must still be flagged) and under the real-text rules.

Writes ``benchmarks/results/quality_calibration.json``; notebooks 04 and 05 print it (``helpers.quality.calibration``).

    python benchmarks/bench_quality_calibration.py      # ~9 min on 2 cores (SmolLM2 writes 64 x 128 tokens)
    python benchmarks/bench_quality_calibration.py toy  # only part 3 again (~1 min), the rest kept
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test-0000-1199.jsonl"
OUT = ROOT / "benchmarks" / "results" / "quality_calibration.json"
N_PROMPTS = 64
DECODING = dict(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=128)  # notebook 05 online


def hh_part(pairs) -> dict:
    from helpers.quality import malformed_report

    out = {"rows_kept": len(pairs)}
    for side in ("chosen", "rejected"):
        texts = [p[side][0]["content"] for p in pairs]
        out[side] = {rules: malformed_report(texts, rules=rules) for rules in ("real", "toy")}
    return out


def smollm2_part(pairs) -> dict:
    from helpers.models import load_model
    from helpers.quality import malformed_reason, malformed_report

    prompts = [p["prompt"] for p in pairs[-N_PROMPTS:]]  # the last rows: what the local hub serves as test rows
    model, tok = load_model("HuggingFaceTB/SmolLM2-135M-Instruct", use_unsloth=False, lora=None, verbose=True)
    t0 = time.perf_counter()
    from helpers.evaluation import sample_responses

    texts, stopped = sample_responses(model, tok, prompts, seed=0, return_stopped=True, **DECODING)
    seconds = time.perf_counter() - t0
    rep = {rules: malformed_report(texts, rules=rules, stopped=stopped) for rules in ("real", "toy")}
    flagged = [(t, malformed_reason(t)) for t in texts if malformed_reason(t)]
    return {"prompts": len(prompts), "decoding": DECODING, "seconds": round(seconds, 1), **rep,
            "multi_turn_prompts": sum(len(p) > 1 for p in prompts),
            "examples_flagged": [{"reason": r, "text": t[:300]} for t, r in flagged[:6]],
            "examples_well_formed": [t[:300] for t, s in zip(texts, stopped, strict=True)
                                     if s and not malformed_reason(t)][:4]}


def toy_part() -> dict:
    """Notebook 04's offline over-optimised run (its parameters cell: OFFLINE_SWEEP + OFFLINE_OVEROPT, its loop and
    measurement), measured under the toy rules and the real-text rules."""
    import nbformat

    from helpers.models import load_tokenizer
    from helpers.recipe import OFFLINE, DPORecipe, check_lengths, resolve_model
    from helpers.sweep import run_sweep
    from helpers.worlds.splits import TOY, resolve_hh
    from helpers.worlds.toy import toy_reward

    nb = nbformat.read(ROOT / "notebooks" / "04_beta_sensitivity.ipynb", as_version=4)
    p: dict = {}
    exec(next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source, p)
    base = DPORecipe(**{**OFFLINE, **p["OFFLINE_SWEEP"]})
    tok, _ = load_tokenizer(resolve_model(base), verbose=False)
    splits, _ = check_lengths(base, tok, resolve_hh(TOY).data)
    point = p["OFFLINE_OVEROPT"]
    out = {"recipe": {k: getattr(base.replace(**point), k) for k in ("learning_rate", "max_steps", "batch_size",
                                                                      "beta")}, "loop": p["OFFLINE_LOOP"]}
    with tempfile.TemporaryDirectory() as cache:
        for rules in ("toy", "real"):
            res = run_sweep(base.replace(output_dir=str(Path(cache) / "runs")), [point], splits, cache_dir=cache,
                            kl_prompts=p["OFFLINE_KL_PROMPTS"], kl_samples=p["OFFLINE_KL_SAMPLES"],
                            max_new_tokens=p["OFFLINE_MAX_NEW_TOKENS"], reward_fn=toy_reward, progress=False,
                            quality_rules=rules, loop=p["OFFLINE_LOOP"], checkpoints=p["OFFLINE_CHECKPOINTS"],
                            path_samples=p["OFFLINE_PATH_SAMPLES"], sample_batch_size=p["OFFLINE_SAMPLE_BATCH"])
            row, ref = res["rows"][0], res["reference"]
            out[rules] = {"run": {k: row[k] for k in ("malformed_rate", "malformed_reasons", "truncated_rate", "kl",
                                                      "reward", "kl_n")},
                          "reference": {k: ref[k] for k in ("malformed_rate", "malformed_reasons", "truncated_rate")},
                          "samples": row["samples"], "malformed_examples": row["malformed_examples"]}
    return out


def main() -> int:
    from helpers.data import HHFormatError, parse_hh

    if not SHARED.exists():
        print(f"needs {SHARED} (../shared beside the repository)")
        return 2
    rows = [json.loads(x) for x in SHARED.read_text().splitlines() if x.strip()]
    pairs, dropped = [], Counter()
    for r in rows:
        try:
            pairs.append(parse_hh(r))
        except HHFormatError as e:
            dropped[e.reason] += 1
    t0 = time.perf_counter()
    if sys.argv[1:] == ["toy"] and OUT.exists():  # only the toy part again (after notebook 04's settings changed)
        res = {**json.loads(OUT.read_text()), "toy_overoptimised": toy_part(),
               "toy_date": date.today().isoformat()}
    else:
        res = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "command": "python benchmarks/bench_quality_calibration.py", "source": SHARED.name,
               "hh": hh_part(pairs), "smollm2_reference": smollm2_part(pairs), "toy_overoptimised": toy_part()}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    h, s, t = res["hh"], res["smollm2_reference"], res["toy_overoptimised"]
    print(f"HH chosen flagged: real rules {h['chosen']['real']['malformed_rate']:.1%}, toy rules "
          f"{h['chosen']['toy']['malformed_rate']:.1%} (of {h['rows_kept']})")
    print(f"SmolLM2 reference on {s['prompts']} HH prompts: malformed {s['real']['malformed_rate']:.1%} "
          f"{s['real']['reasons']}, truncated {s['real']['truncated_rate']:.1%}; "
          f"toy rules {s['toy']['malformed_rate']:.1%}")
    print(f"toy over-optimised run: toy rules {t['toy']['run']['malformed_rate']:.1%} (reference "
          f"{t['toy']['reference']['malformed_rate']:.1%}), real rules {t['real']['run']['malformed_rate']:.1%}")
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
