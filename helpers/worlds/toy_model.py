"""The offline default reference policy: a tiny SmolLM2-family model, supervised-fine-tuned on the toy world.

DPO starts from an SFT model. ``build_toy_sft_model`` trains a ChatML BPE tokenizer on the toy train split, builds
a tiny Llama (tied embeddings, grouped-query attention) and fine-tunes it on a 50/50 mix of chosen and rejected
responses (loss on response tokens only), so that as a reference policy it writes both polite and rude answers:
there is room for DPO to move it. It loads through ``helpers.models.load_model`` exactly like a hub checkpoint.

The default recipe's weights ship with the course (``data/toy-sft-<weights sha>/``, 3.5 MB), so no learner waits
~40 s for them and every machine starts from the same bytes: training is where CPUs part (AVX2 and AVX-512 kernels
round differently, ``benchmarks/bench_cpu_divergence.py``), sampling from fixed weights is not.
``python -m helpers.worlds.toy_model write`` (``make toy-model``) rebuilds and replaces them; ``... check`` rebuilds
into a temporary folder and compares (``tests/test_toy_model.py`` does the same). Any other recipe is built and
cached under ``cache_dir/toy-sft-<recipe hash>``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.infra.files import MARKER, building_dir, read_json, write_json
from helpers.infra.paths import DATA_DIR, ROOT, default_cache_dir

__all__ = ["ToyRecipe", "TOY_DPO", "TOY_DECODING", "recipe_hash", "data_key", "build_toy_sft_model",
           "toy_sft_model_dir", "shipped_toy_sft_model", "write_shipped", "compare_builds", "rebuild_problem",
           "REBUILD_TOLERANCE", "REBUILD_MIN_AGREEMENT"]

SHIPPED_KIND = "shipped toy SFT model"  # building_dir's marker for data/toy-sft-*/
# How far a rebuild may sit from the shipped weights off the kernels that made them (``compare_builds``'s mean
# |difference| per held-out response of the mean token log-prob). Measured 2026-12-07 on an AVX-512 Xeon: PyTorch's,
# MKL's or all three libraries' kernels capped at AVX2 give 0.062-0.084 (preferred response the same in 90-92% of 62
# pairs; benchmarks/results/cpu_divergence_*.json); a reseed (seed 1) gives 0.080 (89%), a changed recipe (3 epochs,
# not 4) 0.222 (79%). So off those kernels the check tells a changed recipe from rounding, not rounding from a reseed.
REBUILD_TOLERANCE = 0.15
REBUILD_MIN_AGREEMENT = 0.8  # the preferred response of a held-out pair: 0.89-0.92 measured as above, 0.79 changed
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


def _recipe_and_data(recipe: ToyRecipe):
    """sha256 over the recipe and the toy train data, to be finished by ``data_key`` or ``recipe_hash``."""
    from helpers.worlds.toy import TOY_FILES

    h = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode())
    h.update((DATA_DIR / TOY_FILES["train"]).read_bytes())
    return h


def data_key(recipe: ToyRecipe) -> str:
    """sha256 (12 hex) of the recipe and the toy train data: what the shipped weights must have been trained from.
    Library versions and CPU kernels are left out: they move the weights' last digits, not what they learned."""
    h = _recipe_and_data(recipe)
    h.update(b"v=1")
    return h.hexdigest()[:12]


def recipe_hash(recipe: ToyRecipe) -> str:
    """Hash of the recipe, the toy train data and the library versions that shape the weights (a cache entry)."""
    import torch
    import transformers

    h = _recipe_and_data(recipe)
    h.update(f"torch={torch.__version__};transformers={transformers.__version__};v=1".encode())
    return h.hexdigest()[:12]


def toy_sft_model_dir(recipe: ToyRecipe = ToyRecipe(), cache_dir: str | Path | None = None) -> Path:
    """Where a built (not shipped) model for ``recipe`` is cached."""
    return Path(cache_dir or default_cache_dir()) / f"toy-sft-{recipe_hash(recipe)}"


def shipped_toy_sft_model(recipe: ToyRecipe = ToyRecipe(), data_dir: Path = DATA_DIR) -> Path | None:
    """The committed folder ``data/toy-sft-*/`` whose ``recipe.json`` names ``recipe``'s data key, else None.
    A shipped folder whose weights no longer match the sha in its name is an error naming it (a broken checkout)."""
    key = data_key(recipe)
    for d in sorted(data_dir.glob("toy-sft-*")):
        meta = read_json(d / "recipe.json", what="the shipped toy SFT model's recipe")
        if meta.get("data_key") != key:
            continue
        weights = d / "model.safetensors"
        try:
            sha = hashlib.sha256(weights.read_bytes()).hexdigest()
        except OSError as e:
            raise ValueError(f"{weights}: the shipped toy SFT model's weights cannot be read ({e})") from None
        if sha != meta.get("weights_sha256") or not d.name.endswith(sha[:12]):
            raise ValueError(f"{weights}: sha256 {sha[:12]} is not the {meta.get('weights_sha256', '?')[:12]} that "
                             f"{d / 'recipe.json'} records (a partial checkout or a hand edit?): `git checkout "
                             f"{d.relative_to(ROOT) if d.is_relative_to(ROOT) else d}` or `make toy-model`")
        return d
    return None


def _sequences(recipe: ToyRecipe, tokenizer) -> list[tuple[list[int], int]]:
    """(token ids, number of prompt tokens) for prompt+chosen and prompt+rejected of every train pair."""
    from helpers.data import format_hh, tokenize_pair
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
    """The directory of the tiny SFT model for ``recipe``: the shipped one (``data/toy-sft-*``) when it was trained
    from this recipe and data, else the cache entry, built first if absent. ``force`` rebuilds into the cache (the
    shipped folder is left alone: ``write_shipped`` replaces it)."""
    if not force:
        shipped = shipped_toy_sft_model(recipe)
        if shipped is not None:
            return shipped
    out = toy_sft_model_dir(recipe, cache_dir)
    if (out / "recipe.json").exists() and not force:
        return out
    t0 = time.perf_counter()
    if verbose:
        print(f"building the toy SFT model (recipe {out.name}); it is cached afterwards")
    model, tokenizer, loss = _train(recipe, verbose)
    from helpers.infra.quiet import progress_bars_off

    with building_dir(out, kind="toy SFT model", also_ours=("recipe.json",)) as tmp:  # never a half-written entry
        with progress_bars_off():  # "Writing model shards" for one small shard
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        seconds = time.perf_counter() - t0
        write_json(tmp / "recipe.json", {"recipe": asdict(recipe), "hash": out.name, "data_key": data_key(recipe),
                                         "final_sft_loss": loss, "seconds": seconds, "built_with": kernels()})
    if verbose:
        print(f"toy SFT model: {sum(p.numel() for p in model.parameters()):,} parameters, final loss "
              f"{loss:.3f}, built in {seconds:.0f} s -> {out}")
    return out


def _train(recipe: ToyRecipe, verbose: bool):
    """(model in eval mode, tokenizer, final training loss): the SFT recipe, seeded; ~40 s on 2 cores."""
    import torch
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    from helpers.data import format_hh
    from helpers.infra.tinymodel import tiny_llama_config, train_tokenizer
    from helpers.logprobs import pad_and_mask, token_logps
    from helpers.worlds.splits import load_hh
    from helpers.worlds.toy import TOY_FILES

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
    return model, tokenizer, loss.item()


def kernels() -> dict:
    """What decides the weights' last digits: library versions and the CPU kernels in use (the capping variables
    ``benchmarks/bench_cpu_divergence.py`` sets are the libraries' own, recorded as they are)."""
    import os
    import platform

    import torch
    import transformers

    cpu = flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].strip()
    except OSError:
        pass
    cpu = cpu or platform.processor() or "unknown"
    caps = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
            if os.environ.get(k)}
    return {"torch": torch.__version__, "transformers": transformers.__version__, "cpu": cpu,
            "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:12],
            "aten_capability": torch.backends.cpu.get_cpu_capability(), "capped": caps}


def write_shipped(recipe: ToyRecipe = ToyRecipe(), data_dir: Path = DATA_DIR, *, verbose: bool = True) -> Path:
    """Rebuild ``recipe``'s model and ship it as ``data_dir/toy-sft-<weights sha>/`` (atomically), replacing the
    shipped folder of the same recipe it made before (and nothing else). Returns the new folder."""
    with tempfile.TemporaryDirectory() as tmp:
        built = build_toy_sft_model(recipe, tmp, force=True, verbose=verbose)
        meta = read_json(built / "recipe.json", what="the toy SFT model's recipe")
        sha = hashlib.sha256((built / "model.safetensors").read_bytes()).hexdigest()
        out = data_dir / f"toy-sft-{sha[:12]}"
        old = [d for d in data_dir.glob("toy-sft-*") if d != out and (d / "recipe.json").exists()
               and read_json(d / "recipe.json", what="a shipped toy SFT model's recipe").get("data_key")
               == meta["data_key"]]
        with building_dir(out, kind=SHIPPED_KIND) as dst:
            for f in sorted(built.iterdir()):
                if f.is_file() and f.name not in (MARKER, "recipe.json"):
                    shutil.copyfile(f, dst / f.name)  # new files: the umask's mode, not 0600
            meta.pop("hash", None)
            write_json(dst / "recipe.json", {**meta, "weights_sha256": sha})
    for d in old:
        if (d / MARKER).is_file() and read_json(d / MARKER, what="a marker").get("kind") == SHIPPED_KIND:
            shutil.rmtree(d)  # an earlier build of the same recipe, which write_shipped made
    if verbose:
        print(f"shipped -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} (sha256 {sha[:12]}); "
              "commit it with the data/README.md line")
    return out


def compare_builds(a: str | Path, b: str | Path, *, prompts: int = 64) -> dict:
    """How close two builds of the toy SFT model are: identical weight bytes, the largest weight difference, and on
    the first ``prompts`` held-out pairs the mean token log-prob each gives the chosen and the rejected response
    (``mean_abs_logp_diff``: their mean absolute difference per response; ``pref_agreement``: how often both
    prefer the same response of a pair)."""
    import torch
    from safetensors.torch import load_file

    from helpers.data import format_hh, tokenize_pair
    from helpers.logprobs import pad_and_mask, token_logps
    from helpers.models import load_model
    from helpers.worlds.splits import load_hh
    from helpers.worlds.toy import TOY_FILES

    a, b = Path(a), Path(b)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if set(wa) != set(wb):
        raise ValueError(f"{a} and {b} hold different tensors: not two builds of one recipe")
    out = {"same_bytes": (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes(),
           "max_abs_weight_diff": max(float((wa[k] - wb[k]).abs().max()) for k in wa)}
    ds, _ = format_hh(load_hh(DATA_DIR / TOY_FILES["test"], limit=prompts))
    per = []
    for d in (a, b):
        model, tok = load_model(d, use_unsloth=False, lora=None, verbose=False)
        seqs = []
        for ex in ds:
            t = tokenize_pair(ex, tok)
            seqs += [(t["prompt_ids"] + t["chosen_ids"], len(t["prompt_ids"])),
                     (t["prompt_ids"] + t["rejected_ids"], len(t["prompt_ids"]))]
        ids, attn, labels = pad_and_mask([s for s, _ in seqs], [n for _, n in seqs], tok.pad_token_id)
        with torch.no_grad():
            lp = token_logps(model(input_ids=ids, attention_mask=attn).logits, labels)  # (2N, T-1)
        n = (labels[:, 1:] != -100).sum(-1)
        per.append((lp.sum(-1) / n).view(-1, 2))  # (N, 2): chosen, rejected mean token log-prob
    pa, pb = per
    out["mean_logp"] = [float(pa.mean()), float(pb.mean())]
    out["mean_abs_logp_diff"] = float((pa - pb).abs().mean())
    out["pref_agreement"] = float(((pa[:, 0] > pa[:, 1]) == (pb[:, 0] > pb[:, 1])).float().mean())
    out["pairs"] = len(ds)
    return out


def rebuild_problem(report: dict, *, same_kernels: bool) -> str | None:
    """Why a rebuild (``compare_builds(shipped, rebuilt)``) does not match the shipped weights, or None:
    on the kernels that made them it must give the same bytes, elsewhere stay within ``REBUILD_TOLERANCE`` and
    prefer the same response in at least ``REBUILD_MIN_AGREEMENT`` of the held-out pairs."""
    if same_kernels and not report["same_bytes"]:
        return "the same kernels trained other bytes: the recipe, the data or the training code changed"
    if report["mean_abs_logp_diff"] > REBUILD_TOLERANCE:
        return (f"held-out log-probs {report['mean_abs_logp_diff']:.3f} apart per response (tolerance "
                f"{REBUILD_TOLERANCE}): more than other CPU kernels move them")
    if report["pref_agreement"] < REBUILD_MIN_AGREEMENT:
        return f"the same preferred response in only {report['pref_agreement']:.0%} of the held-out pairs"
    return None


if __name__ == "__main__":  # python -m helpers.worlds.toy_model {check,write}
    import argparse

    ap = argparse.ArgumentParser(prog="python -m helpers.worlds.toy_model", description=(
        "check: rebuild the default toy SFT model in a temporary folder and compare it with the shipped one; "
        "write: rebuild it and replace the shipped folder under data/ (make toy-model)"))
    ap.add_argument("command", choices=["check", "write"])
    args = ap.parse_args()
    if args.command == "write":
        write_shipped()
    else:
        shipped = shipped_toy_sft_model()
        if shipped is None:
            raise SystemExit("no shipped toy SFT model matches the recipe and data: run `make toy-model`")
        with tempfile.TemporaryDirectory() as tmp:
            r = compare_builds(shipped, build_toy_sft_model(cache_dir=tmp, force=True))
        made = read_json(shipped / "recipe.json", what="the shipped toy SFT model's recipe")["built_with"]
        print(f"shipped: built with {made}\nhere:    {kernels()}")
        print(f"same bytes: {r['same_bytes']}; max |dw| {r['max_abs_weight_diff']:.3g}; held-out mean token log-prob "
              f"{r['mean_logp'][0]:.4f} shipped vs {r['mean_logp'][1]:.4f} rebuilt, mean |diff| per response "
              f"{r['mean_abs_logp_diff']:.4f} (tolerance {REBUILD_TOLERANCE}); same preferred response in "
              f"{r['pref_agreement']:.1%} of {r['pairs']} pairs")
        problem = rebuild_problem(r, same_kernels=made == kernels())
        if problem:
            raise SystemExit(f"FAILED: {problem}")
        print("the rebuild matches the shipped weights")
