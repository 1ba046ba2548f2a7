"""A back-of-the-envelope GPU memory and time estimate for LoRA DPO on a Colab T4, with its assumptions spelled out.

It is arithmetic, not a measurement: every term is listed in ``Estimate.parts`` and every assumption in
``Estimate.assumptions``, so a reader can see which one is off when the real numbers differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["T4", "Estimate", "lora_parameter_count", "llama_parameter_count", "estimate_lora_dpo", "measured_gpu",
           "measured_gpu_table"]

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


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


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
