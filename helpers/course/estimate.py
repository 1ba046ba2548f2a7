"""How long and how much: a GPU memory and time estimate for LoRA DPO on a Colab T4, the GPU measurements, the
expected time of a recipe on this machine, and the rule that chose the online recipe from a pilot.

The T4 estimate is arithmetic, not a measurement: every term is listed in ``Estimate.parts`` and every assumption in
``Estimate.assumptions``, so a reader can see which one is off when the real numbers differ. ``expected_minutes``
says where its figure comes from (a measurement on this GPU, the arithmetic, or a rough CPU figure).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.infra.paths import RESULTS_DIR

__all__ = ["T4", "Estimate", "lora_parameter_count", "llama_parameter_count", "estimate_lora_dpo", "measured_gpu",
           "measured_gpu_table", "PILOT_FILE", "pilot_pick", "expected_minutes", "expected_time"]

T4 = {"name": "Tesla T4 (Colab free tier)", "memory_gib": 15.0, "fp16_tflops": 65.0}  # NVIDIA datasheet, tensor cores


@dataclass
class Estimate:
    memory_gib: float
    parts_gib: dict[str, float]
    seconds_per_step: float
    total_minutes: float
    fits: bool
    assumptions: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.parts_gib.items())
        return (f"~{self.memory_gib:.1f} GiB of {T4['memory_gib']:.0f} ({'fits' if self.fits else 'does NOT fit'}; "
                f"{parts}); ~{self.seconds_per_step:.2f} s/step, ~{self.total_minutes:.1f} min in total")


def _dims(config) -> tuple[int, int, int, int, int]:
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k)
    h, inter, layers, vocab = get("hidden_size"), get("intermediate_size"), get("num_hidden_layers"), get("vocab_size")
    kv = h // get("num_attention_heads") * get("num_key_value_heads")
    return h, inter, layers, vocab, kv


def llama_parameter_count(config) -> int:
    """Parameters of a Llama-architecture model with tied embeddings (SmolLM2), from its config."""
    h, inter, layers, vocab, kv = _dims(config)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h  # q,o + k,v + gate,up,down + 2 norms
    return vocab * h + layers * per_layer + h


def lora_parameter_count(config, r: int, targets) -> int:
    """Trainable LoRA parameters: r * (in + out) per targeted projection and layer."""
    h, inter, layers, _, kv = _dims(config)
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h), "gate_proj": (h, inter),
              "up_proj": (h, inter), "down_proj": (inter, h)}
    unknown = set(targets) - set(shapes)
    if unknown:
        raise ValueError(f"targets must be among {sorted(shapes)}, got unknown {sorted(unknown)}")
    return layers * sum(r * sum(shapes[t]) for t in targets)


def estimate_lora_dpo(config, n_params: int, n_trainable: int, *, batch_size: int, grad_accum: int,
                      seq_len: int, steps: int, gradient_checkpointing: bool = True,
                      utilization: float = 0.15) -> Estimate:
    """Memory (GiB) and time of LoRA DPO on a T4 in fp16.

    Args:
        config: the model config (``hidden_size``, ``intermediate_size``, ``num_hidden_layers``, ``vocab_size``,
            attention heads), an object or a dict.
        seq_len: padded tokens per sequence (prompt + completion, at most ``max_length``).
        utilization: assumed fraction of the T4's 65 fp16 TFLOPS reached (small models reach little of it).
    """
    for name, v in (("batch_size", batch_size), ("grad_accum", grad_accum), ("seq_len", seq_len), ("steps", steps)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization!r}")
    h, inter, layers, vocab, _ = _dims(config)
    gib = 2**30
    tokens = 2 * batch_size * seq_len  # chosen and rejected of each pair go through the model together
    if gradient_checkpointing:
        act = tokens * (2 * h * layers + 2 * (10 * h + 3 * inter))  # layer inputs + one layer recomputed, fp16
    else:
        act = tokens * layers * 2 * (10 * h + 3 * inter)
    parts = {
        "weights fp16": n_params * 2 / gib,
        "LoRA + grads + Adam (fp32)": n_trainable * 16 / gib,
        "activations": act / gib,
        "logits + log-softmax + grad": tokens * vocab * 10 / gib,  # fp16 logits, fp32 upcast, fp32 grad
        "CUDA context": 0.5,
    }
    memory = sum(parts.values())
    flops_per_token = (8 if gradient_checkpointing else 6) * n_params  # policy fwd+bwd(+recompute) + reference fwd
    seconds = flops_per_token * tokens * grad_accum / (T4["fp16_tflops"] * 1e12 * utilization)
    assumptions = [
        "fp16 weights, LoRA params/grads/Adam states in fp32; gradient checkpointing "
        + ("on" if gradient_checkpointing else "off"),
        f"{2 * batch_size} sequences of {seq_len} tokens per micro-batch (chosen + rejected), "
        f"x{grad_accum} accumulation",
        "logits: fp16 + an fp32 upcast + an fp32 gradient per element; the reference forward adds no lasting memory",
        f"compute: {flops_per_token // n_params} x params FLOPs per token (policy forward, backward, "
        f"{'recompute, ' if gradient_checkpointing else ''}reference forward) at {utilization:.0%} of 65 TFLOPS",
        "arithmetic, not a T4 measurement; data loading, evaluation and checkpoint saving are not counted",
    ]
    return Estimate(round(memory, 2), {k: round(v, 3) for k, v in parts.items()}, seconds, seconds * steps / 60,
                    memory <= T4["memory_gib"], assumptions)


RESULTS = RESULTS_DIR


def measured_gpu(results_dir: str | Path = RESULTS) -> list[dict]:
    """The GPU measurements of notebook 03's recipe (``benchmarks/bench_gpu_recipe.py``): one dict per backend,
    precision and length setting, as recorded (``device``, ``steps_per_s``, ``tokens_per_s``,
    ``peak_allocated_gib``, ...). Empty when none were recorded."""
    rows = []
    for f in sorted(Path(results_dir).glob("gpu_recipe_*.json")):
        rows += [dict(r, file=f.name) for r in json.loads(f.read_text()) if "error" not in r]
    return rows


def measured_gpu_table(rows: list[dict]) -> str:
    """A text table of ``measured_gpu`` rows, with the device and the token lengths they were measured at."""
    if not rows:
        return "no GPU measurements recorded (run benchmarks/bench_gpu_recipe.py on a GPU)"
    lines = [f"{'device':<22} {'prompt/chosen/rejected':>22}  {'backend':<13}{'dtype':<6}{'steps/s':>8}{'tokens/s':>10}"
             f"{'peak GiB':>10}"]
    for r in rows:
        t = r["mean_tokens"]
        lengths = f"{t['prompt']:.0f}/{t['chosen']:.0f}/{t['rejected']:.0f}"
        lines.append(f"{r['device'][:22]:<22} {lengths:>22}  {r['backend']:<13}{r['dtype']:<6}{r['steps_per_s']:>8.2f}"
                     f"{r['tokens_per_s']:>10,}{r['peak_allocated_gib']:>10.2f}")
    return "\n".join(lines)


PILOT_FILE = RESULTS_DIR / "online_recipe_pilot.json"


def pilot_pick(results: dict[str, Any]) -> dict[str, Any]:
    """The online learning rate and SFT weight chosen from ``benchmarks/bench_online_recipe_pilot.py``'s results by a
    rule fixed before the pilot ran: among the grid's runs (not the deliberately over-optimised one) whose samples stay
    well-formed (malformed rate within two standard errors of the reference's), take the **largest learning rate**
    at which both SFT settings are well-formed (a fixed step budget learns most at the fastest rate that does not
    break answers); at it, keep the **SFT term** if it holds Δ log p(chosen) higher than without it while losing at
    most one standard error of held-out reward accuracy. Returns ``{"learning_rate", "sft_weight", "why",
    "rows"}``; ``rows`` the runs with ``ok`` (well-formed) and ``acc_se``."""
    import math

    over = results.get("overoptimised") or {}
    rows = []
    for r in results["runs"]:
        if (r["learning_rate"], r["sft_weight"]) == (over.get("learning_rate"), over.get("sft_weight")):
            continue
        acc, n = r["after"]["rewards/accuracies"], results["settings"]["test_pairs"]
        rows.append({**r, "ok": r["malformed_excess"] <= 2 * r["malformed_excess_se"],
                     "acc_se": math.sqrt(max(acc * (1 - acc), 1e-12) / n)})
    lrs = sorted({r["learning_rate"] for r in rows})
    good = [lr for lr in lrs if all(r["ok"] for r in rows if r["learning_rate"] == lr)]
    if not good:
        raise ValueError("no learning rate of the pilot kept its samples well-formed: nothing to choose")
    lr = max(good)
    at = {r["sft_weight"]: r for r in rows if r["learning_rate"] == lr}
    sfts = sorted(at)
    plain, with_sft = at[sfts[0]], at[sfts[-1]]
    keep = (len(sfts) > 1 and with_sft["after"]["delta_logps/chosen"] > plain["after"]["delta_logps/chosen"]
            and with_sft["after"]["rewards/accuracies"] >= plain["after"]["rewards/accuracies"] - plain["acc_se"])
    pick = with_sft if keep else plain
    why = (f"largest well-formed learning rate {lr:g}; SFT term {pick['sft_weight']:g}: Δ log p(chosen) "
           f"{with_sft['after']['delta_logps/chosen']:+.2f} with it vs {plain['after']['delta_logps/chosen']:+.2f} "
           f"without, held-out reward accuracy {with_sft['after']['rewards/accuracies']:.2f} vs "
           f"{plain['after']['rewards/accuracies']:.2f} (± {plain['acc_se']:.2f})")
    return {"learning_rate": lr, "sft_weight": pick["sft_weight"], "why": why, "rows": rows}


def expected_minutes(recipe) -> tuple[float | None, str]:
    """``(minutes or None, where the figure comes from)`` for ``recipe`` on this machine: a GPU measured by
    ``benchmarks/bench_gpu_recipe.py`` (its steps/s at the recipe's precision), another GPU (the T4 arithmetic of
    ``helpers.course.estimate``, SmolLM2-135M only), a CPU (a rough per-step figure, labelled); None with the reason for
    the toy model (under a minute) and epoch-based runs."""
    from helpers.infra.runtime import detect, precision_flags
    from helpers.infra.smollm2 import MODEL_ID
    from helpers.infra.tinymodel import SMOLLM2_135M
    from helpers.recipe import TOY

    rt = detect(check_hub=False)
    steps = recipe.max_steps if recipe.max_steps > 0 else None
    if steps is None:
        return None, "an epoch-based run (max_steps=-1): its length depends on the data"
    if recipe.model == TOY:
        return None, f"{steps} steps of the toy world's tiny model: under a minute (notebook 03 offline, 2 CPU cores)"
    if rt.device != "cuda":
        pairs = recipe.batch_size * recipe.grad_accum
        return steps * max(1.0, pairs / 4) * 6 / 60, (
            f"a CPU: ~6 s per step of 4 short pairs on 2 cores (4-8 s measured; this recipe's steps hold {pairs} "
            f"pairs of up to {recipe.max_length} tokens, so it may take longer); use a GPU runtime for real runs")
    dtype = "bf16" if precision_flags(rt)["bf16"] else "fp16"
    rows = [r for r in measured_gpu() if r["device"] == rt.gpu_name and r["dtype"] == dtype]
    if rows and recipe.model == MODEL_ID:
        r = max(rows, key=lambda r: r["mean_tokens"]["prompt"])  # the longer measured batches: the slower rate
        return steps / r["steps_per_s"] / 60, (f"{r['steps_per_s']:.2f} steps/s measured on this GPU, "
                                               f"{r['backend']}, {dtype}; benchmarks/results/{r['file']}")
    if recipe.model == MODEL_ID:
        n = llama_parameter_count(SMOLLM2_135M)
        t = lora_parameter_count(SMOLLM2_135M, recipe.lora_r, recipe.lora_targets)
        est = estimate_lora_dpo(SMOLLM2_135M, n, t, batch_size=recipe.batch_size, grad_accum=recipe.grad_accum,
                                seq_len=recipe.max_length, steps=steps)
        return est.total_minutes, f"{rt.gpu_name}: T4 arithmetic (helpers.course.estimate), not a measurement"
    return None, f"{steps} steps of {recipe.model} on {rt.gpu_name}: no measurement or estimate for this model"


def expected_time(recipe) -> str:
    """How long ``recipe`` should take on this machine, with where the figure comes from (printed before training;
    ``expected_minutes``)."""
    minutes, why = expected_minutes(recipe)
    if minutes is None:
        return why
    return f"~{minutes:.1f} min for {recipe.max_steps} steps ({why})"
