"""The offline default reference policy: a tiny SmolLM2-family model, supervised-fine-tuned on the toy world.

DPO starts from an SFT model. ``build_toy_sft_model`` trains a ChatML BPE tokenizer on the toy train split, builds
a tiny Llama (tied embeddings, grouped-query attention) and fine-tunes it on a 50/50 mix of chosen and rejected
responses (loss on response tokens only), so that as a reference policy it writes both polite and rude answers:
there is room for DPO to move it. The result is cached under ``cache_dir/toy-sft-<recipe hash>`` and rebuilt when
absent; it loads through ``helpers.models.load_model`` exactly like a hub checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.infra.files import building_dir, write_json
from helpers.infra.paths import default_cache_dir

__all__ = ["ToyRecipe", "TOY_DPO", "TOY_DECODING", "recipe_hash", "build_toy_sft_model", "toy_sft_model_dir"]

# The offline DPO recipe (LoRA r=16, alpha=32 on all projections): measured on 2 CPU cores, 100 steps take ~30 s
# and reach held-out reward accuracy 1.0. lr 3e-4 for 80 steps already collapses generation (probability mass of
# the rejected openers leaks to junk tokens), so the learning rate is deliberately low.
TOY_DPO = dict(beta=0.1, learning_rate=1.5e-4, max_steps=100, per_device_train_batch_size=16,
               lr_scheduler_type="cosine", warmup_steps=5, max_length=256)
# How generations are sampled when the chosen-style rate is measured: nucleus sampling over the full vocabulary.
TOY_DECODING = dict(do_sample=True, temperature=1.0, top_p=0.9, max_new_tokens=32)


@dataclass(frozen=True)
class ToyRecipe:
    """Everything that determines the tiny SFT model; its hash names the cache entry."""

    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 256
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    train_pairs: int | None = None  # None: the whole toy train split


def recipe_hash(recipe: ToyRecipe) -> str:
    """Hash of the recipe, the toy train data and the library versions that shape the weights."""
    import torch
    import transformers

    from helpers.infra.paths import DATA_DIR
    from helpers.worlds.toy import TOY_FILES

    h = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode())
    h.update((DATA_DIR / TOY_FILES["train"]).read_bytes())
    h.update(f"torch={torch.__version__};transformers={transformers.__version__};v=1".encode())
    return h.hexdigest()[:12]


def toy_sft_model_dir(recipe: ToyRecipe = ToyRecipe(), cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"toy-sft-{recipe_hash(recipe)}"


def _sequences(recipe: ToyRecipe, tokenizer) -> list[tuple[list[int], int]]:
    """(token ids, number of prompt tokens) for prompt+chosen and prompt+rejected of every train pair."""
    from helpers.data import format_hh, tokenize_pair
    from helpers.infra.paths import DATA_DIR
    from helpers.worlds.splits import load_hh
    from helpers.worlds.toy import TOY_FILES

    ds, _ = format_hh(load_hh(DATA_DIR / TOY_FILES["train"], limit=recipe.train_pairs))
    seqs = []
    for ex in ds:
        t = tokenize_pair(ex, tokenizer)
        seqs.append((t["prompt_ids"] + t["chosen_ids"], len(t["prompt_ids"])))
        seqs.append((t["prompt_ids"] + t["rejected_ids"], len(t["prompt_ids"])))
    return seqs


def build_toy_sft_model(
    recipe: ToyRecipe = ToyRecipe(), cache_dir: str | Path | None = None, *, force: bool = False,
    verbose: bool = True,
) -> Path:
    """Return the directory of the tiny SFT model for ``recipe``, building it first if it is not cached."""
    import torch
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    from helpers.data import format_hh
    from helpers.infra.paths import DATA_DIR
    from helpers.infra.tinymodel import tiny_llama_config, train_tokenizer
    from helpers.logprobs import pad_and_mask, token_logps
    from helpers.worlds.splits import load_hh
    from helpers.worlds.toy import TOY_FILES

    out = toy_sft_model_dir(recipe, cache_dir)
    if (out / "recipe.json").exists() and not force:
        return out
    t0 = time.perf_counter()
    if verbose:
        print(f"building the toy SFT model (recipe {out.name}); it is cached afterwards")
    ds, _ = format_hh(load_hh(DATA_DIR / TOY_FILES["train"]))
    texts = [t["content"] for ex in ds for t in ex["prompt"] + ex["chosen"] + ex["rejected"]]
    texts += ["user", "assistant", "system"]
    tokenizer = train_tokenizer(texts, vocab_size=recipe.vocab_size)
    cfg = tiny_llama_config(
        len(tokenizer), hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_hidden_layers, num_attention_heads=recipe.num_attention_heads,
        num_key_value_heads=recipe.num_key_value_heads, max_position_embeddings=recipe.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(recipe.seed)
    model = LlamaForCausalLM(cfg)
    seqs = _sequences(recipe, tokenizer)
    gen = torch.Generator().manual_seed(recipe.seed)
    steps_per_epoch = (len(seqs) + recipe.batch_size - 1) // recipe.batch_size
    total = steps_per_epoch * recipe.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.learning_rate, total_steps=total, pct_start=0.1)
    model.train()
    bar = tqdm(total=total, desc="toy SFT", disable=not verbose)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(seqs), generator=gen).tolist()
        for s in range(0, len(order), recipe.batch_size):
            batch = [seqs[i] for i in order[s : s + recipe.batch_size]]
            input_ids, attn, labels = pad_and_mask([ids for ids, _ in batch], [n for _, n in batch],
                                                   tokenizer.pad_token_id)  # loss on response tokens only
            logits = model(input_ids=input_ids, attention_mask=attn).logits
            per_tok = token_logps(logits, labels)  # (B, T-1)
            loss = -per_tok.sum() / (labels[:, 1:] != -100).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    from helpers.infra.quiet import progress_bars_off

    with building_dir(out, kind="toy SFT model", also_ours=("recipe.json",)) as tmp:  # never a half-written entry
        with progress_bars_off():  # "Writing model shards" for one small shard
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        seconds = time.perf_counter() - t0
        write_json(tmp / "recipe.json", {"recipe": asdict(recipe), "hash": out.name, "final_sft_loss": loss.item(),
                                         "seconds": seconds})
    if verbose:
        print(f"toy SFT model: {sum(p.numel() for p in model.parameters()):,} parameters, final loss "
              f"{loss.item():.3f}, built in {seconds:.0f} s -> {out}")
    return out
