"""Where do the toy world's numbers diverge across CPUs? (issue 34, item 2)

Same code and seed, two machines: an Intel Xeon with AVX-512 reproduces README's 04 table (KL at beta 1: 2.16,
beta 1 malformed 13%, the reference's 0.5%), an AMD EPYC gave 1.06 / 7.9% / 1.3%. Only one machine is at hand at a
time, so this emulates the other CPU's kernels on this one: PyTorch's own kernels (``ATEN_CPU_CAPABILITY``), MKL's
(``MKL_ENABLE_INSTRUCTIONS``: MKL picks an AVX2 path on AMD CPUs) and oneDNN's (``ONEDNN_MAX_CPU_ISA``), each capped
at AVX2, alone and together. For each setting, in a fresh process:

1. **training**: the toy SFT model (04's reference policy) rebuilt from scratch: are its weights bit-identical to
   the native build's, and how far apart (max |difference|)?
2. **sampling**: 04's reference measurement (the 233 held-out prompts x 4 samples, 32 tokens, seed 0) from one fixed
   set of weights (the native build): how many of the 932 samples are the same text, and the malformed rate; then the
   same measurement from the setting's own weights (what a machine with those kernels reports end to end).

A setting that changes (2) with (1)'s weights fixed shows that sampling alone diverges; one that changes (1) shows that
training does too, and then every later number differs even where sampling would not. Writes
benchmarks/results/cpu_divergence_<cpu>.json. The answer (2026-12-07: sampling identical, training not) is why the
course now ships the toy SFT model's weights (``helpers.worlds.toy_model``); each setting's rebuild is also compared
with the native build as the rebuild test compares it (``compare_builds``: ``mean_abs_logp_diff``, ``pref_agreement``).

    python benchmarks/bench_cpu_divergence.py      # ~4 min on 2 cores (4 settings x a 40 s build + 2 x 15 s sampling)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS: dict[str, dict[str, str]] = {
    "native": {},
    "aten_avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "mkl_avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "all_avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}

WORKER = r"""
import hashlib, json, sys, time
import torch
from safetensors.torch import load_file
from helpers.course.presets import SWEEP_OFFLINE
from helpers.recipe import DPORecipe
from helpers.worlds.toy_model import build_toy_sft_model, compare_builds
from helpers.worlds.splits import TOY, resolve_hh
from helpers.evaluation import chat_prompts, sample_and_score
from helpers.models import load_model
from helpers.quality import malformed_report
from helpers.worlds.toy import toy_reward

P = SWEEP_OFFLINE  # 04's offline reference measurement, as run_sweep takes it
prompts = chat_prompts(resolve_hh(TOY).data["test"])[:P["kl_prompts"]]
seed = DPORecipe(**P["recipe"]).seed


def measure(model_dir):
    model, tok = load_model(model_dir, use_unsloth=False, lora=None, verbose=False)
    s = sample_and_score(model, tok, prompts, n_samples=P["kl_samples"], max_new_tokens=P["max_new_tokens"],
                         seed=seed, reference=True, batch_size=P["sample_batch"])
    bad = malformed_report(s["texts"], rules="toy", stopped=s["stopped"].tolist())
    return s["texts"], bad["malformed_rate"], sum(map(toy_reward, s["texts"])) / len(s["texts"])


cache, fixed = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
built = build_toy_sft_model(cache_dir=cache, force=True, verbose=False)
out = {"capability": torch.backends.cpu.get_cpu_capability(), "build_s": round(time.perf_counter() - t0, 1),
       "weights_sha256": hashlib.sha256((built / "model.safetensors").read_bytes()).hexdigest()[:16],
       "built_dir": str(built)}
t0 = time.perf_counter()
if fixed == "-":  # the native build: its own weights are the fixed ones
    out["texts"], out["malformed_rate"], out["reward"] = measure(str(built))
else:
    w, ref = load_file(str(built / "model.safetensors")), load_file(fixed + "/model.safetensors")
    out["max_abs_weight_diff"] = max(float((w[k] - ref[k]).abs().max()) for k in ref)
    c = compare_builds(fixed, built)  # what tests/test_toy_model.py's rebuild check measures
    out["mean_abs_logp_diff"], out["pref_agreement"] = c["mean_abs_logp_diff"], c["pref_agreement"]
    out["texts"], out["malformed_rate"], out["reward"] = measure(fixed)
    # and from this setting's own weights: what a machine with these kernels measures end to end
    _, out["own_malformed_rate"], out["own_reward"] = measure(str(built))
out["sample_s"] = round(time.perf_counter() - t0, 1)
print("RESULT " + json.dumps(out))
"""


def _run(env_over: dict[str, str], cache: str, fixed: str) -> dict:
    env = {**os.environ, **env_over, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", WORKER, cache, fixed], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"worker failed ({env_over}): {p.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    from helpers.infra.files import write_json
    from helpers.worlds.toy_model import kernels

    cpu = kernels()["cpu"]

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        native = _run({}, f"{tmp}/native", "-")
        fixed = native.pop("built_dir")
        results["native"] = native
        for name, over in SETTINGS.items():
            if name == "native":
                continue
            r = _run(over, f"{tmp}/{name}", fixed)
            r.pop("built_dir")
            results[name] = r
    base = results["native"]["texts"]
    print(f"CPU: {cpu}; native capability {results['native']['capability']}")
    print(f"{'setting':10} {'capability':10} {'weights':>16} {'max|dw|':>9} {'same texts':>11} {'malformed':>9} "
          f"{'reward':>7} {'|dlogp|':>8}   own weights: malformed, reward")
    for name, r in results.items():
        same = sum(a == b for a, b in zip(base, r["texts"], strict=True))
        first = next((i for i, (a, b) in enumerate(zip(base, r["texts"], strict=True)) if a != b), None)
        r["same_texts"], r["first_different_sample"] = same, first
        print(f"{name:10} {r['capability']:10} {r['weights_sha256']:>16} {r.get('max_abs_weight_diff', 0.0):9.2e} "
              f"{same:5d}/{len(base):<5d} {r['malformed_rate']:9.3f} {r['reward']:7.3f} "
              f"{r.get('mean_abs_logp_diff', 0.0):8.4f}   "
              f"{r.get('own_malformed_rate', r['malformed_rate']):.3f}, {r.get('own_reward', r['reward']):.3f}")
    for r in results.values():
        r["texts"] = r["texts"][:8]
    tag = "".join(c if c.isalnum() else "_" for c in cpu)[:40].strip("_").lower()
    out = ROOT / "benchmarks" / "results" / f"cpu_divergence_{tag}.json"
    write_json(out, {"cpu": cpu, "settings": SETTINGS, "results": results, "when": time.strftime("%Y-%m-%d")})
    print(f"-> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
