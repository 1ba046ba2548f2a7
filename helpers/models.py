"""Loading models and tokenizers the same way for a hub id (online) and a local directory (offline).

``load_model`` uses Unsloth's ``FastLanguageModel`` when unsloth is installed (on Colab's T4 and, through its CPU
fallback, in CI) and transformers + peft otherwise; both give a LoRA-wrapped model and a tokenizer with a pad
token and a chat template. Unsloth is imported before transformers/trl wherever it is used. Where a model comes
from (folder, cache, hub, the packaged SmolLM2) is ``helpers.infra.hubio.resolve_source``'s job.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.infra.hubio import resolve_source
from helpers.infra.smollm2 import MODEL_ID

__all__ = ["LoraSettings", "load_model", "load_tokenizer", "count_parameters", "device_and_dtype",
           "unsloth_importable", "describe_model", "model_parameters_of", "source_info"]


def _finish_tokenizer(tok) -> None:
    """Every tokenizer the course hands out has a pad token (eos, as SmolLM2-Instruct) and a chat template."""
    from helpers.infra.tinymodel import CHATML_TEMPLATE

    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tok.chat_template = CHATML_TEMPLATE


def load_tokenizer(
    name_or_path: str | Path = MODEL_ID,
    *,
    fallback_texts: Iterable[str] | None = None,
    fallback_vocab_size: int = 4096,
    verbose: bool = True,
):
    """A tokenizer with a pad token and a chat template, plus a note on where it came from.

    ``name_or_path`` is a local directory or a hub id, resolved by ``resolve_source`` (local, HF cache, hub, the
    packaged SmolLM2). Only when none of them has it and ``fallback_texts`` is given is a ChatML byte-level BPE
    trained on those texts instead (``helpers.infra.tinymodel.train_tokenizer``), with a note; without
    ``fallback_texts`` that raises ``HubUnavailableError``. Returns ``(tokenizer, source)``.
    """
    from transformers import AutoTokenizer

    from helpers.infra.runtime import HubUnavailableError
    from helpers.infra.tinymodel import train_tokenizer

    try:
        if Path(name_or_path).is_dir():  # a model or adapter directory: a tokenizer needs no config.json
            path, source = str(name_or_path), f"local directory {name_or_path}"
        else:
            path, source = resolve_source(name_or_path, weights=False)
        tok = AutoTokenizer.from_pretrained(path)
    except HubUnavailableError as e:
        if fallback_texts is None:
            raise
        tok = train_tokenizer(fallback_texts, vocab_size=fallback_vocab_size)
        source = f"offline fallback: ChatML BPE ({len(tok)} tokens) trained on the given texts; {e}"
    _finish_tokenizer(tok)
    if verbose:
        print(f"tokenizer: {source}")
    return tok, source


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings shared by the Unsloth and the transformers+peft branch."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    gradient_checkpointing: bool | str = "auto"  # "auto": Unsloth's "unsloth" mode on a GPU, off on a CPU

    def __post_init__(self):
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"lora.r must be an int >= 1, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.target_modules:
            raise ValueError("lora.target_modules must name at least one module, e.g. ('q_proj', 'v_proj')")


def unsloth_importable() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def _resolve_unsloth(use_unsloth: bool | str) -> bool:
    if use_unsloth not in (True, False, "auto"):
        raise ValueError(f"use_unsloth must be True, False or 'auto', got {use_unsloth!r}")
    if use_unsloth is True and not unsloth_importable():
        raise ValueError("use_unsloth=True but unsloth is not installed (pip install -r requirements-unsloth.txt)")
    return unsloth_importable() if use_unsloth == "auto" else bool(use_unsloth)


def load_model(
    name_or_path: str | Path = MODEL_ID,
    *,
    use_unsloth: bool | str = "auto",
    load_in_4bit: bool = False,
    max_seq_length: int = 1024,
    lora: LoraSettings | None = LoraSettings(),
    dtype: Any = None,
    seed: int = 0,
    verbose: bool = False,
):
    """Load a causal LM (hub id or local directory) with LoRA adapters, and its tokenizer.

    With Unsloth (``use_unsloth="auto"`` and unsloth installed) this is ``FastLanguageModel.from_pretrained`` +
    ``FastLanguageModel.get_peft_model``; otherwise transformers + peft with the same settings. ``dtype=None``:
    fp16 on a GPU without bf16 (T4), bf16 on newer GPUs, fp32 on a CPU. ``lora=None`` returns the plain model
    (for a reference model or for generation). Sources are resolved by ``resolve_source``; ``verbose`` prints
    which one was used (``model.dpo_course_source`` keeps it). The tokenizer always has a pad token and a chat template.

    Returns ``(model, tokenizer)``; ``model.dpo_course_backend`` is ``"unsloth"`` or ``"transformers"``.
    """
    if not isinstance(max_seq_length, int) or max_seq_length < 8:
        raise ValueError(f"max_seq_length must be an int >= 8, got {max_seq_length!r}")
    backend = "unsloth" if _resolve_unsloth(use_unsloth) else "transformers"
    if backend == "unsloth":
        import unsloth  # noqa: F401  (before anything imports transformers/trl: it patches them on import)
    from helpers.infra.quiet import progress_bars_off

    with progress_bars_off():  # the "Loading weights" bar of a second-long load
        return _load(name_or_path, backend, load_in_4bit=load_in_4bit, max_seq_length=max_seq_length, lora=lora,
                     dtype=dtype, seed=seed, verbose=verbose)


def _load(name_or_path, backend: str, *, load_in_4bit, max_seq_length, lora, dtype, seed, verbose):
    import torch

    from helpers.infra.runtime import detect

    source, described = resolve_source(name_or_path)
    if verbose:
        print(f"model: {described}")
    rt = detect(check_hub=False)
    if dtype is None:
        dtype = device_and_dtype(rt)[1]
    if load_in_4bit and rt.device == "cpu":
        raise ValueError("load_in_4bit=True needs a CUDA GPU (bitsandbytes); use load_in_4bit=False on a CPU")
    checkpointing = None
    if lora is not None:
        checkpointing = lora.gradient_checkpointing
        if checkpointing == "auto":
            checkpointing = ("unsloth" if backend == "unsloth" else True) if rt.device == "cuda" else False

    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=source, max_seq_length=max_seq_length, dtype=dtype, load_in_4bit=load_in_4bit,
        )
        if lora is not None:
            model = FastLanguageModel.get_peft_model(
                model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules), bias="none",
                use_gradient_checkpointing=checkpointing, random_state=seed, max_seq_length=max_seq_length,
            )
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"dtype": dtype}
        if load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        if rt.device == "cuda" and not load_in_4bit:
            import os

            model = model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")  # one GPU per process under DDP
        tokenizer = AutoTokenizer.from_pretrained(source, model_max_length=max_seq_length)
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            if checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                model.enable_input_require_grads()
            torch.manual_seed(seed)
            model = get_peft_model(model, LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM"))
    _finish_tokenizer(tokenizer)
    tokenizer.padding_side = "right"
    model.dpo_course_backend = backend
    model.dpo_course_source = described
    return model, tokenizer


def device_and_dtype(rt=None) -> tuple[str, Any]:
    """Where and in which precision a model runs on this runtime (``helpers.infra.runtime.detect()`` if ``rt`` is None):
    ``("cuda:<LOCAL_RANK>", bfloat16)`` on a GPU with bf16, ``(..., float16)`` on one without (the T4),
    ``("cpu", float32)`` on a CPU."""
    import os

    import torch

    from helpers.infra.runtime import detect

    rt = rt or detect(check_hub=False)
    if rt.device != "cuda":
        return "cpu", torch.float32
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}", torch.bfloat16 if rt.bf16 else torch.float16


def describe_model(model, tokenizer, name: str | None = None) -> dict[str, Any]:
    """What every notebook records about the model it ran: ``model`` (``name``: what was loaded, a path or hub id),
    ``model_source`` (where it came from, as ``load_model`` said), ``model_parameters`` (int, LoRA adapters
    excluded) and ``tokenizer_vocab`` (int, ``len(tokenizer)``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = sum(p.numel() for pname, p in base.named_parameters() if "lora_" not in pname)
    return {"model": str(name) if name is not None else getattr(base.config, "_name_or_path", None),
            "model_source": getattr(model, "dpo_course_source", None), "model_parameters": int(n),
            "tokenizer_vocab": int(len(tokenizer))}


def model_parameters_of(name_or_path: str | Path = MODEL_ID) -> int:
    """Parameter count of a model from its config alone (built on the meta device: no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(resolve_source(name_or_path, weights=False)[0])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return int(sum(p.numel() for p in model.parameters()))


def source_info(model: str, source: str | Path, tokenizer) -> dict[str, Any]:
    """What a summary records of a model it loaded by config only: ``model`` (the name asked for), ``model_source``
    (where ``source`` came from: folder, cache, hub or the packaged copy), ``tokenizer_vocab``, ``model_parameters``."""
    return {"model": model, "model_source": resolve_source(source)[1], "tokenizer_vocab": len(tokenizer),
            "model_parameters": model_parameters_of(source)}


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
