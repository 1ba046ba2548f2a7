"""The DPO recipe: LoRA policy + TRL DPOTrainer, measured on held-out pairs before and after training.

    python -m helpers.train [--backend auto|unsloth|transformers] [--output-dir runs/train] [--max-steps N]

The command line runs the offline default: the toy world's SFT model and data (``helpers.toy_model``), and
reports held-out reward accuracy and the chosen-style rate of sampled generations before and after DPO
(``metrics.json`` in the output directory). This module imports no ML library at import time, so that
``unsloth`` can be imported first when it is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["dpo_config", "run_dpo_experiment", "main"]


def dpo_config(output_dir: str | Path, **overrides):
    """A ``DPOConfig`` with explicit learning rate, precision flags that fit this device and no external logging."""
    from trl import DPOConfig

    from helpers.runtime import detect, precision_flags

    rt = detect(check_hub=False)
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir), report_to="none", logging_steps=10, save_strategy="no", seed=0,
        learning_rate=1.5e-4, **precision_flags(rt),
    )
    if rt.device == "cpu":
        kw["use_cpu"] = True
    kw.update(overrides)
    beta = kw.get("beta", 0.1)
    if not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta must be a number > 0, got {beta!r}")
    return DPOConfig(**kw)


def run_dpo_experiment(
    model_dir: str | Path,
    train,
    test,
    *,
    output_dir: str | Path,
    backend: str = "auto",
    dpo: dict | None = None,
    decoding: dict | None = None,
    style_fn=None,
    lora=None,
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train a LoRA policy with DPO from ``model_dir`` on ``train`` and measure it on ``test``.

    Args:
        train, test: conversational preference datasets (prompt/chosen/rejected).
        backend: "auto" (Unsloth when installed), "unsloth" or "transformers".
        dpo: ``DPOConfig`` keyword arguments (``beta``, ``learning_rate``, ``max_steps`` ...).
        decoding: ``helpers.evaluation.sample_responses`` settings for the style rate (needs ``style_fn``).
        style_fn: text -> bool, "follows the preferred style" (offline: ``helpers.toy.is_chosen_style``).

    Returns:
        ``{"before": {...}, "after": {...}, "backend": str, "log_history": [...], "train_seconds": float}``;
        ``before`` holds the reference policy's preference on held-out pairs, ``after`` DPO's reward metrics.
    """
    import time

    import numpy as np

    from helpers.evaluation import chat_prompts, pair_logps, reward_metrics, sample_responses
    from helpers.models import LoraSettings, load_model

    use = {"auto": "auto", "unsloth": True, "transformers": False}.get(backend)
    if use is None:
        raise ValueError(f"backend must be 'auto', 'unsloth' or 'transformers', got {backend!r}")
    dpo = dict(dpo or {})
    model, tokenizer = load_model(model_dir, use_unsloth=use, max_seq_length=dpo.get("max_length") or 1024,
                                  lora=lora or LoraSettings(), seed=seed)
    from trl import DPOTrainer  # after load_model: unsloth (if used) is imported first

    beta = dpo.get("beta", 0.1)
    max_length = dpo.get("max_length")
    ref = pair_logps(model, tokenizer, test, reference=True, max_length=max_length)
    out: dict[str, Any] = {"backend": model.dpo_course_backend, "n_test": len(test)}
    out["before"] = {
        "ref_prefers_chosen": float(np.mean(ref["chosen"] > ref["rejected"])),
        "ref_prefers_chosen_per_token": float(np.mean(ref["chosen"] / np.maximum(ref["chosen_tokens"], 1)
                                                      > ref["rejected"] / np.maximum(ref["rejected_tokens"], 1))),
        "logps/chosen": float(ref["chosen"].mean()),
        "logps/rejected": float(ref["rejected"].mean()),
    }
    prompts = chat_prompts(test)

    def style(into: dict, reference: bool) -> None:  # chosen-style rate of sampled generations (+ a few samples)
        if style_fn is not None:
            samples = sample_responses(model, tokenizer, prompts, reference=reference, seed=seed, **(decoding or {}))
            into["chosen_style_rate"] = float(np.mean([style_fn(t) for t in samples]))
            into["samples"] = samples[:8]

    style(out["before"], reference=True)

    trainer = DPOTrainer(model=model, args=dpo_config(output_dir, seed=seed, **dpo), train_dataset=train,
                         processing_class=tokenizer)
    t0 = time.perf_counter()
    trainer.train()
    out["train_seconds"] = round(time.perf_counter() - t0, 2)
    out["log_history"] = trainer.state.log_history

    pol = pair_logps(model, tokenizer, test, max_length=max_length)
    out["after"] = reward_metrics(pol, ref, beta)
    style(out["after"], reference=False)
    out["model"], out["tokenizer"], out["trainer"] = model, tokenizer, trainer
    if verbose:
        b, a = out["before"], out["after"]
        print(f"[{out['backend']}] held-out reward accuracy {a['rewards/accuracies']:.3f}, margin "
              f"{a['rewards/margins']:.3f}; chosen-style rate {b.get('chosen_style_rate', float('nan')):.3f} -> "
              f"{a.get('chosen_style_rate', float('nan')):.3f}; trained in {out['train_seconds']:.0f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="LoRA DPO with TRL, measured before/after on held-out pairs.")
    p.add_argument("--backend", choices=["auto", "unsloth", "transformers"], default="auto")
    p.add_argument("--output-dir", type=Path, default=Path("runs/train"))
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from helpers.models import unsloth_importable  # imports no ML library

    if a.backend == "unsloth" or (a.backend == "auto" and unsloth_importable()):
        import unsloth  # noqa: F401  (before transformers/trl)
    from helpers.data import load_or_build_splits
    from helpers.toy import is_chosen_style
    from helpers.toy_model import TOY_DECODING, TOY_DPO, build_toy_sft_model

    dpo = dict(TOY_DPO)
    if a.max_steps is not None:
        dpo["max_steps"] = a.max_steps
    splits = load_or_build_splits(a.output_dir / "data", source="toy")
    res = run_dpo_experiment(build_toy_sft_model(), splits["train"], splits["test"], output_dir=a.output_dir,
                             backend=a.backend, dpo=dpo, decoding=TOY_DECODING, style_fn=is_chosen_style,
                             seed=a.seed)
    metrics = {k: v for k, v in res.items() if k not in ("model", "tokenizer", "trainer")}
    (a.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    print(f"metrics: {a.output_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
