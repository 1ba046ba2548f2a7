"""Tiny Llama-architecture models and tokenizers built locally (no hub), in SmolLM2's family.

SmolLM2 is a Llama model with tied input/output embeddings, grouped-query attention and a ChatML chat template.
``tiny_llama_config`` keeps those traits at toy size; ``SMOLLM2_135M`` is the exact SmolLM2-135M architecture
(random init) for memory/speed measurements without the hub. ``train_tokenizer`` trains a byte-level BPE with
``tokenizers`` and attaches a ChatML template, so TRL's conversational path runs exactly as with SmolLM2.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = [
    "CHATML_TEMPLATE",
    "SPECIAL_TOKENS",
    "SMOLLM2_135M",
    "tiny_llama_config",
    "train_tokenizer",
    "build_tiny_model",
    "RANDOM_MARK",
    "build_tiny_reward_model",
]

RANDOM_MARK = "dpo_course_random_weights"  # a config field: a stand-in built here, whose outputs mean nothing

# ChatML as SmolLM2-Instruct renders it, minus SmolLM2's default system prompt (it would add ~20 tokens to every
# toy sequence). A system message, when given, is rendered the same way as SmolLM2's.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# SmolLM2-135M (HuggingFaceTB/SmolLM2-135M-Instruct config.json): for random-init measurements only.
SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)


def tiny_llama_config(
    vocab_size: int,
    *,
    hidden_size: int = 64,
    intermediate_size: int = 192,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 512,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    pad_token_id: int = 2,
) -> LlamaConfig:
    """A SmolLM2-family LlamaConfig at toy size (tied embeddings, GQA: fewer KV heads than query heads)."""
    if num_attention_heads % num_key_value_heads:
        raise ValueError(
            f"num_key_value_heads must divide num_attention_heads={num_attention_heads}, got {num_key_value_heads}"
        )
    if hidden_size % num_attention_heads:
        raise ValueError(f"hidden_size must be a multiple of num_attention_heads, got {hidden_size}")
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        attention_dropout=0.0,
    )


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it like SmolLM2's tokenizer.

    Special ids: 0 ``<|endoftext|>``, 1 ``<|im_start|>`` (bos), 2 ``<|im_end|>`` (eos and pad, as in SmolLM2-Instruct).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        model_max_length=2048,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    *,
    seed: int = 0,
    vocab_size: int = 512,
    **config_kwargs,
) -> Path:
    """Train a tokenizer on ``texts``, build a random-init tiny Llama for it, save both to ``out_dir``.

    The directory then loads with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``,
    the same path as a hub checkpoint. Returns ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(texts, vocab_size=vocab_size)
    cfg = tiny_llama_config(
        len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **config_kwargs,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    from helpers.infra.quiet import progress_bars_off

    with progress_bars_off():  # "Writing model shards" for one small shard
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return out


def build_tiny_reward_model(out_dir: str | Path, texts: Iterable[str], *, seed: int = 0, vocab_size: int = 600) -> Path:
    """A stand-in reward model in the architecture of the course's default judge (Qwen3, one-logit
    ``Qwen3ForSequenceClassification``) with **random weights**, and a byte-level BPE trained on ``texts`` with the
    ChatML template (pad ``<|endoftext|>``, distinct from eos, so the score is read at the true last token). Its config
    carries ``RANDOM_MARK`` so that whatever shows its scores can say they mean nothing. Returns ``out_dir``."""
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    from helpers.infra.quiet import progress_bars_off

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(texts, vocab_size=vocab_size)
    tok.pad_token = "<|endoftext|>"
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                      num_labels=1, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    setattr(cfg, RANDOM_MARK, True)
    torch.manual_seed(seed)
    with progress_bars_off():
        Qwen3ForSequenceClassification(cfg).save_pretrained(out)
        tok.save_pretrained(out)
    return out
