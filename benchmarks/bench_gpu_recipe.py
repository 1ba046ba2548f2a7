"""Notebook 03's recipe on a GPU: Unsloth vs transformers + peft, fp16 and bf16: steps/s, tokens/s, peak memory.

The recipe is ``helpers.recipe.DPORecipe()``'s online default (LoRA r=16/alpha=32 on all seven projections, batch 8
x grad-accum 2 = 16 pairs per optimizer step, max_length 512, TRL 1.14.2 ``DPOTrainer``, reference = adapters off),
built with the same helpers notebook 03 calls (``helpers.models.load_model``, ``helpers.recipe.make_trainer``).
Each configuration runs in a fresh process (Unsloth patches transformers on import), on identical synthetic pairs
of fixed token lengths (prompt/chosen/rejected; defaults = the means of the 1169 real HH-RLHF harmless-base test
rows under SmolLM2's tokenizer and chat template, prompts <= 384 tokens: 132/41/51), so both backends see the same
tokens. steps/s is timed over ``--steps`` optimizer steps after ``--warmup`` steps (CUDA synchronised); tokens/s
counts non-padding tokens of policy forward passes (prompt+chosen and prompt+rejected per pair); peak memory is
``torch.cuda.max_memory_allocated`` over the whole training call.

Model: ``--model-dir`` (a saved model, e.g. ``helpers.infra.smollm2.packaged_model_dir()``), or ``--random-config DIR``
(a directory with SmolLM2-135M's config.json and tokenizer): the exact architecture with random weights, for a GPU
machine the real weights cannot reach. Speed and memory do not depend on the weight values.

    python benchmarks/bench_gpu_recipe.py --random-config DIR --all --out-dir runs/bench_gpu   # the whole matrix
    python benchmarks/bench_gpu_recipe.py --model-dir DIR --backend unsloth --dtype fp16       # one configuration
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("the cat sat on a mat while we read good books about warm bread and cold rain in old towns near big "
         "hills where people walk slowly past small shops that sell fresh fruit every day").split()


def synthetic_pairs(tokenizer, n: int, prompt_tokens: int, chosen_tokens: int, rejected_tokens: int,
                    seed: int = 0) -> list[dict]:
    """``n`` conversational pairs whose TRL tokenization has the given prompt/chosen/rejected lengths (+-2)."""
    import random

    from helpers.data import tokenize_pair

    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(max(k, 1)))

    def pair(p: int, c: int, r: int) -> dict:
        return {"prompt": [{"role": "user", "content": text(p)}], "chosen": [{"role": "assistant", "content": text(c)}],
                "rejected": [{"role": "assistant", "content": text(r)}]}

    t = tokenize_pair(pair(1, 1, 1), tokenizer)  # template overhead = length with 1-word contents - 1
    over = {k: len(t[f"{k}_ids"]) - 1 for k in ("prompt", "chosen", "rejected")}
    return [pair(prompt_tokens - over["prompt"], chosen_tokens - over["chosen"], rejected_tokens - over["rejected"])
            for _ in range(n)]


def run_one(a: argparse.Namespace) -> dict:
    if a.backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers/trl)
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from helpers.models import load_model
    from helpers.recipe import DPORecipe, make_trainer

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    recipe = DPORecipe(model=a.model_dir, data="synthetic", output_dir=a.work_dir, backend=a.backend,
                       max_steps=a.warmup + a.steps, warmup_steps=0, logging_steps=1)
    t0 = time.perf_counter()
    model, tok = load_model(a.model_dir, use_unsloth=a.backend == "unsloth", max_seq_length=recipe.max_length,
                            lora=recipe.lora(), dtype=dtype, seed=recipe.seed)
    load_s = time.perf_counter() - t0
    n = recipe.batch_size * recipe.grad_accum * (a.warmup + a.steps)
    pairs = synthetic_pairs(tok, n, a.prompt_tokens, a.chosen_tokens, a.rejected_tokens)
    splits = {"train": Dataset.from_list(pairs), "test": Dataset.from_list(pairs[:8])}
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            sync()
            stamps.append(time.perf_counter())

    trainer = make_trainer(model, tok, splits, recipe, callbacks=[Clock()], fp16=a.dtype == "fp16",
                           bf16=a.dtype == "bf16", eval_strategy="no", save_strategy="no", dataloader_num_workers=0)
    ds = trainer.train_dataset
    lens = {k: sum(len(x) for x in ds[f"{k}_ids"]) / len(ds) for k in ("prompt", "chosen", "rejected")}
    tokens_per_step = recipe.batch_size * recipe.grad_accum * (2 * lens["prompt"] + lens["chosen"]
                                                               + lens["rejected"])
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    stamps.append(time.perf_counter())
    if a.profile:  # where a step's time goes: CPU-side ops vs GPU kernels (profiler overhead inflates CPU times)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            trainer.train()
        ka = prof.key_averages()
        print(ka.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))
        print(ka.table(sort_by="self_device_time_total", row_limit=10, max_name_column_width=60))
        gpu_us = sum(e.self_device_time_total for e in ka)
        print(f"PROFILE GPU kernel time {gpu_us / 1e6:.2f} s over {stamps[-1] - stamps[0]:.2f} s of training "
              f"({len(stamps) - 1} steps)")
    else:
        trainer.train()
    secs = stamps[-1] - stamps[a.warmup]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "backend": a.backend, "dtype": a.dtype, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "weights": a.weights, "versions": _versions(), "pairs_per_step": recipe.batch_size * recipe.grad_accum,
        "mean_tokens": {k: round(v, 1) for k, v in lens.items()}, "load_seconds": round(load_s, 1),
        "warmup_steps": a.warmup, "timed_steps": a.steps, "seconds": round(secs, 3),
        "steps_per_s": round(a.steps / secs, 3), "tokens_per_s": round(a.steps * tokens_per_step / secs),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3) if cuda else None,
        "gradient_checkpointing": "recipe default: 'unsloth' (Unsloth) / non-reentrant (transformers) on a GPU",
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo", "bitsandbytes"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def build_random_model(config_dir: Path, out: Path) -> Path:
    """SmolLM2-135M's exact architecture with random weights (seed 0), saved with the real tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir), dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", help="a saved model directory (real weights)")
    src.add_argument("--random-config", help="a directory with config.json + tokenizer: random weights")
    p.add_argument("--backend", choices=("unsloth", "transformers"), default="unsloth")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="fp32: CPU smoke test only")
    p.add_argument("--all", action="store_true", help="every backend x dtype, each in its own process")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--prompt-tokens", type=int, default=132)
    p.add_argument("--chosen-tokens", type=int, default=41)
    p.add_argument("--rejected-tokens", type=int, default=51)
    p.add_argument("--out-dir", default="runs/bench_gpu")
    p.add_argument("--profile", action="store_true", help="one configuration under torch.profiler (tables printed)")
    p.add_argument("--work-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for name in ("steps", "warmup"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1")
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if a.random_config:
        a.model_dir = str(build_random_model(Path(a.random_config), out / "random-smollm2-135m"))
        a.weights = "random (SmolLM2-135M architecture and tokenizer)"
    a.weights = a.weights or f"real: {a.model_dir}"
    if not a.all:
        a.work_dir = a.work_dir or str(out / f"work-{a.backend}-{a.dtype}")
        res = run_one(a)
        (out / f"{a.backend}-{a.dtype}-p{a.prompt_tokens}.json").write_text(json.dumps(res, indent=2) + "\n")
        print("RESULT " + json.dumps(res))
        return 0
    rows = []
    for dtype in ("fp16", "bf16"):
        for backend in ("unsloth", "transformers"):
            cmd = [sys.executable, __file__, "--model-dir", a.model_dir, "--backend", backend, "--dtype", dtype,
                   "--steps", str(a.steps), "--warmup", str(a.warmup), "--prompt-tokens", str(a.prompt_tokens),
                   "--chosen-tokens", str(a.chosen_tokens), "--rejected-tokens", str(a.rejected_tokens),
                   "--out-dir", str(out), "--weights", a.weights]
            r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
            if r.returncode or not line:
                print(f"{backend}/{dtype} FAILED (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
                rows.append({"backend": backend, "dtype": dtype, "error": r.stderr[-2000:]})
                continue
            rows.append(json.loads(line[-1][len("RESULT "):]))
    (out / f"matrix-p{a.prompt_tokens}.json").write_text(json.dumps(rows, indent=2) + "\n")
    ok = [r for r in rows if "error" not in r]
    print(f"\n{'backend':13s} {'dtype':5s} {'steps/s':>8s} {'tokens/s':>9s} {'peak GiB':>9s} {'loss 1st->last':>16s}")
    for r in ok:
        print(f"{r['backend']:13s} {r['dtype']:5s} {r['steps_per_s']:8.2f} {r['tokens_per_s']:9d} "
              f"{r['peak_allocated_gib'] or 0:9.2f} {r['loss_first']:7.4f}->{r['loss_last']:.4f}")
    for dtype in ("fp16", "bf16"):
        u = [r for r in ok if r["dtype"] == dtype and r["backend"] == "unsloth"]
        t = [r for r in ok if r["dtype"] == dtype and r["backend"] == "transformers"]
        if u and t:
            print(f"{dtype}: Unsloth / transformers+peft = {u[0]['steps_per_s'] / t[0]['steps_per_s']:.2f}x steps/s, "
                  f"{u[0]['peak_allocated_gib'] / t[0]['peak_allocated_gib']:.2f}x peak memory")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
