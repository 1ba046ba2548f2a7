"""The DPO recipe of notebook 03: a LoRA policy trained with TRL's ``DPOTrainer``, measured on held-out pairs.

Read it top to bottom: ``DPORecipe`` (every knob) -> ``resolve_model`` / ``load_lora_model`` -> ``load_data`` /
``check_lengths`` -> ``dpo_config`` / ``make_trainer`` -> ``train_with_resume`` -> ``save_adapter`` /
``write_metrics``. Notebook 03 calls these cell by cell; ``run_recipe`` chains them, and the command line
(``python -m helpers.course.cli``, every ``DPORecipe`` field a flag) calls ``run_recipe``. What a measurement of the
model is (reference and after reports, sampling) lives in ``helpers.evaluation``; output directories, checkpoints,
resume and interrupts in ``helpers.infra.outputs``.

Checkpoints go to ``output_dir/checkpoint-*``; with ``resume`` (the default) a rerun continues from the last one.
The adapter, tokenizer, ``recipe.json`` and ``metrics.json`` go to ``output_dir/adapter`` and ``output_dir``.
This module imports no ML library at import time, so that ``unsloth`` can be imported first when it is used.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.infra import outputs
from helpers.infra.checks import number
from helpers.infra.files import read_json, write_json
from helpers.infra.smollm2 import MODEL_ID
from helpers.losses import BETA_RANGE, LOSS_TYPES
from helpers.models import LoraSettings
from helpers.worlds.toy_model import TOY_DPO

__all__ = ["DPORecipe", "OFFLINE", "TOY", "ONPOLICY", "LR_SCHEDULERS", "RUN_IDENTITY", "SPLIT_LIMITS",
           "resolve_model", "load_lora_model", "load_data", "data_provenance", "check_lengths", "dpo_config",
           "make_trainer", "trainer_class", "unsloth_patch_warning", "prepare_output_dir", "train_with_resume",
           "save_adapter", "write_metrics", "run_recipe", "toy_style"]

TOY = "toy"  # model="toy": the toy world's tiny SFT model; data="toy": the toy world's splits
ONPOLICY = "smollm2-onpolicy"  # data=ONPOLICY: SmolLM2's answers to the toy world's questions (helpers.worlds.onpolicy)
# transformers 5.17's SchedulerType values (tests/test_recipe.py keeps them equal): checked before anything loads
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")


def _f(default: Any, help: str):
    """A ``DPORecipe`` field with its help text (TRL's ``DPOConfig`` idiom)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DPORecipe:
    """Every knob of a DPO run, each with its help text (``python -m helpers.course.cli --help`` prints it).

    Defaults: SmolLM2-135M-Instruct on HH-RLHF on a Colab T4 (the online track); ``OFFLINE`` holds the toy world's.
    Invalid values raise a ``ValueError`` naming the field and what it accepts, before anything is loaded.
    """

    # --- model, data, output ---
    model: str = _f(MODEL_ID, "hub id or local model directory (offline: the packaged SmolLM2 copy), or 'toy' for "
                              "the toy world's SFT model")
    data: str = _f("runs/notebooks/02_hh", "notebook 02's saved splits folder (rebuilt from data_source when "
                                           "absent), or 'toy'")
    data_source: str = _f("Anthropic/hh-rlhf", "what the splits are built from when data is absent: a hub dataset id "
                                               "or a raw HH-RLHF .jsonl[.gz] file")
    output_dir: str = _f("runs/notebooks/03_dpo", "checkpoints, the adapter and metrics.json")
    # --- loss ---
    beta: float = _f(0.1, "the KL anchor's strength (DPOConfig.beta): higher beta keeps the policy closer to the "
                          "reference; the implicit reward is beta * log(pi / pi_ref)")
    loss_type: str = _f("sigmoid", "one of helpers.losses.LOSS_TYPES (TRL's loss_type); 'sigmoid' is the DPO "
                                   "paper's loss")
    sft_weight: float = _f(0.5, "> 0 adds the chosen answers' NLL with this weight (TRL loss_type [loss_type, "
                                "'sft'], loss_weights [1, sft_weight]; the old rpo_alpha); 0.5 online is the pilot's "
                                "pick (benchmarks/results/online_recipe_pilot.json); 0 = plain DPO")
    # --- optimiser and sequence lengths ---
    learning_rate: float = _f(5e-5, "AdamW's peak learning rate (TRL's default 1e-6 suits full fine-tuning, not "
                                    "LoRA)")
    max_steps: int = _f(250, "optimizer steps; -1 trains for `epochs` instead")
    epochs: float = _f(1.0, "passes over the train split, used when max_steps is -1")
    batch_size: int = _f(8, "pairs per device per step")
    grad_accum: int = _f(2, "steps accumulated into one optimizer step: effective batch = batch_size x grad_accum "
                            "pairs per device")
    max_length: int = _f(512, "prompt + completion tokens per sequence (DPOConfig.max_length); TRL truncates longer "
                              "ones keeping the start")
    max_prompt_length: int | None = _f(384, "pairs whose prompt is longer are dropped before training (the course's "
                                            "filter, not a TRL field); None keeps all")
    warmup_steps: int = _f(10, "steps of linear learning-rate warm-up")
    lr_scheduler: str = _f("cosine", "the learning-rate schedule after warm-up (one of LR_SCHEDULERS)")
    # --- LoRA and backend ---
    lora_r: int = _f(16, "LoRA rank: the inner dimension of each adapter B A")
    lora_alpha: int = _f(32, "LoRA scale: a layer's update is (lora_alpha / lora_r) * B A")
    lora_targets: tuple[str, ...] = _f(LoraSettings().target_modules, "module names that get an adapter (default: "
                                                                      "every attention and MLP projection)")
    load_in_4bit: bool = _f(False, "QLoRA: 4-bit base weights (GPU only); pointless at 135M; needs bitsandbytes")
    backend: str = _f("auto", "'auto' (Unsloth when installed), 'unsloth', or 'transformers' (transformers + peft)")
    # --- run ---
    eval_steps: int = _f(50, "held-out evaluation every this many steps")
    eval_pairs: int = _f(300, "held-out pairs evaluated during training (the first ones of the test split)")
    save_steps: int = _f(50, "a checkpoint every this many steps (what resume continues from)")
    logging_steps: int = _f(10, "training metrics logged every this many steps")
    seed: int = _f(0, "seed of the data order, the adapter's initialisation and sampling")
    resume: bool = _f(True, "continue from the last checkpoint in output_dir when the run's settings match")
    merge: bool = _f(False, "also save a merged copy of the model (adapter folded in) to output_dir/merged")

    def __post_init__(self):
        def need(ok: bool, name: str, allowed: str):
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")

        def num(name: str, **kw):  # numpy/torch scalars accepted; stored as plain Python numbers
            object.__setattr__(self, name, number(getattr(self, name), name, **kw))

        num("beta", low=BETA_RANGE[0], high=BETA_RANGE[1], allowed=f"in {list(BETA_RANGE)} (the KL anchor's strength)")
        num("learning_rate", low=0, high=1, low_open=True, high_open=True, allowed="a finite number in (0, 1)")
        need(self.loss_type in LOSS_TYPES, "loss_type", f"one of {list(LOSS_TYPES)}")
        num("sft_weight", low=0, allowed="a finite number >= 0 (0: no SFT term)")
        num("max_steps", integer=True, low=-1, allowed="an int >= 1, or -1 to train for `epochs`")
        need(self.max_steps != 0, "max_steps", "an int >= 1, or -1 to train for `epochs`")
        num("epochs", low=0, low_open=True)
        for name in ("batch_size", "grad_accum", "eval_steps", "eval_pairs", "save_steps", "logging_steps", "lora_r"):
            num(name, integer=True, low=1)
        num("max_length", integer=True, low=16)
        if self.max_prompt_length is not None:
            num("max_prompt_length", integer=True, low=1, high=self.max_length, high_open=True,
                allowed=f"None or an int in [1, max_length={self.max_length})")
        num("warmup_steps", integer=True, low=0)
        need(self.lr_scheduler in LR_SCHEDULERS, "lr_scheduler", f"one of {list(LR_SCHEDULERS)}")
        num("lora_alpha", low=0, low_open=True)
        need(bool(self.lora_targets) and all(isinstance(t, str) and t for t in self.lora_targets), "lora_targets",
             "a non-empty list of module names")
        need(self.backend in ("auto", "unsloth", "transformers"), "backend", "'auto', 'unsloth' or 'transformers'")
        num("seed", integer=True, low=0, high=2**32 - 1)
        need(isinstance(self.model, str) and bool(self.model.strip()), "model", "a hub id, a model directory or 'toy'")
        need(isinstance(self.data, str) and bool(self.data.strip()), "data",
             "notebook 02's saved splits folder or 'toy'")
        need(isinstance(self.output_dir, (str, Path)) and bool(str(self.output_dir).strip()), "output_dir",
             "a non-empty path (a folder for checkpoints, adapter and metrics)")
        for name in ("resume", "merge", "load_in_4bit"):
            need(isinstance(getattr(self, name), bool), name, "True or False")

    def replace(self, **changes) -> DPORecipe:
        return dataclasses.replace(self, **changes)

    def lora(self) -> LoraSettings:
        return LoraSettings(r=self.lora_r, alpha=self.lora_alpha, target_modules=tuple(self.lora_targets))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# The offline default (no hub: CI, laptops): the toy world's tiny SFT model and data, TOY_DPO's measured settings.
# sft_weight=1: DPO plus the chosen answers' NLL (TRL's ["sigmoid", "sft"]). Measured on 200 held-out prompts
# (benchmarks/bench_offline_recipe.py): plain DPO left 21.5% of the policy's answers malformed, with it 0.5%.
OFFLINE: dict[str, Any] = dict(
    model=TOY, data=TOY, sft_weight=1.0, learning_rate=TOY_DPO["learning_rate"], max_steps=TOY_DPO["max_steps"],
    batch_size=TOY_DPO["per_device_train_batch_size"], grad_accum=1, max_length=TOY_DPO["max_length"],
    max_prompt_length=TOY_DPO["max_length"] - 64,
    warmup_steps=TOY_DPO["warmup_steps"], eval_steps=25, save_steps=50, logging_steps=10,
)

# Fields whose change makes old checkpoints in output_dir belong to a different run.
RUN_IDENTITY = ("model", "data", "data_source", "beta", "loss_type", "sft_weight", "learning_rate", "batch_size",
                 "grad_accum", "max_length", "max_prompt_length", "warmup_steps", "lr_scheduler", "lora_r",
                 "lora_alpha", "lora_targets", "load_in_4bit", "seed")


def resolve_model(recipe: DPORecipe) -> str:
    """The model to load: the cached toy SFT model's directory for ``"toy"``, else ``recipe.model`` once
    ``helpers.infra.hubio.resolve_source`` has found it (local directory, HF cache, hub, or the packaged SmolLM2).

    Raises ``ValueError`` for a path that does not exist (before anything is loaded) and ``HubUnavailableError``
    for a hub id that is neither cached, reachable nor packaged.
    """
    from helpers.infra.hubio import resolve_source

    if recipe.model == TOY:
        from helpers.worlds.toy_model import build_toy_sft_model

        return str(build_toy_sft_model())
    resolve_source(recipe.model)
    return recipe.model


def load_lora_model(recipe: DPORecipe, source: str, *, verbose: bool = True):
    """``helpers.models.load_model`` with the recipe's backend, precision, length and LoRA settings; ``verbose``
    prints where the model came from."""
    from helpers.models import load_model

    use = {"auto": "auto", "unsloth": True, "transformers": False}[recipe.backend]
    return load_model(source, use_unsloth=use, load_in_4bit=recipe.load_in_4bit, max_seq_length=recipe.max_length,
                      lora=recipe.lora(), seed=recipe.seed, verbose=verbose)


# What a rebuild of notebook 02's splits reads when 02 has not run (a new Colab runtime): 02's own default limits,
# not the whole of helpful-base (~43.8k train / ~2.35k test rows).
SPLIT_LIMITS: dict[str, int] = {"limit": 5000, "test_limit": 500}


def load_data(recipe: DPORecipe) -> dict[str, Any]:
    """Train/test splits: notebook 02's output (rebuilt with 02's default limits, ``SPLIT_LIMITS``, if absent) or,
    for ``data="toy"``, the toy world itself (``data/toy_hh_*.jsonl``, parsed in a second; notebook 02's output
    is not involved)."""
    from helpers.worlds.splits import TOY as TOY_SOURCE
    from helpers.worlds.splits import load_or_build_splits, resolve_hh

    if recipe.data == TOY:
        return resolve_hh(TOY_SOURCE).data
    if recipe.data == ONPOLICY:
        from helpers.worlds.onpolicy import load_onpolicy

        return load_onpolicy()
    return load_or_build_splits(recipe.data, source=recipe.data_source, rebuild_with=SPLIT_LIMITS)


def data_provenance(recipe: DPORecipe) -> dict[str, Any]:
    """Where the training pairs came from: ``source`` actually used (``"toy"`` after a fallback) and the note
    saying how it was chosen (from the saved splits' ``report.json``). Recorded in ``metrics.json`` as ``data``."""
    if recipe.data == TOY:
        return {"source": TOY, "note": "offline default: the toy world's data/toy_hh_*.jsonl"}
    if recipe.data == ONPOLICY:
        return {"source": ONPOLICY, "note": "SmolLM2's own answers to the toy world's questions, ranked by a ground "
                "truth (helpers.worlds.onpolicy): data/smollm2_onpolicy_*.jsonl"}
    try:
        report = read_json(Path(recipe.data, "report.json"), what="notebook 02's report")
    except ValueError:
        return {"source": None, "note": f"no readable report.json in {recipe.data}"}
    return {"source": report.get("source"), "note": report.get("note"), "asked_for": recipe.data_source}


def check_lengths(recipe: DPORecipe, tokenizer, splits: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """Drop pairs whose prompt exceeds ``max_prompt_length``, then check ``max_length`` against what is kept.

    TRL truncates prompt+completion to ``max_length`` keeping the start, so a prompt of ``max_length`` tokens or
    more would lose its whole answer (TRL then drops the pair silently): that raises ``ValueError``. Returns the
    kept splits and a report (pairs dropped per split, longest prompt and pair kept, pairs that will be truncated).
    """
    from helpers.data import tokenize_pair

    kept_splits, report = {}, {"dropped_long_prompt": {}, "longest_prompt": 0, "longest_pair": 0,
                               "truncated_pairs": 0}
    for split in ("train", "test"):
        keep = []
        for i, ex in enumerate(splits[split]):
            t = tokenize_pair(ex, tokenizer)
            n = len(t["prompt_ids"])
            if recipe.max_prompt_length is not None and n > recipe.max_prompt_length:
                continue
            keep.append(i)
            pair = n + max(len(t["chosen_ids"]), len(t["rejected_ids"]))
            report["longest_prompt"] = max(report["longest_prompt"], n)
            report["longest_pair"] = max(report["longest_pair"], pair)
            report["truncated_pairs"] += pair > recipe.max_length
        report["dropped_long_prompt"][split] = len(splits[split]) - len(keep)
        kept_splits[split] = splits[split] if len(keep) == len(splits[split]) else splits[split].select(keep)
        if not keep:
            raise ValueError(f"max_prompt_length={recipe.max_prompt_length} drops every {split} pair; raise it")
    if report["longest_prompt"] >= recipe.max_length:
        raise ValueError(f"max_length={recipe.max_length} is not larger than the longest prompt kept "
                         f"({report['longest_prompt']} tokens): that pair would keep no answer token. Raise "
                         f"max_length above {report['longest_prompt']}, or set max_prompt_length below max_length.")
    return kept_splits, report


def dpo_config(recipe: DPORecipe, **overrides):
    """The ``DPOConfig`` of ``recipe``: explicit learning rate, this device's precision, eval and checkpoints."""
    from trl import DPOConfig

    from helpers.infra.runtime import detect, precision_flags

    rt = detect(check_hub=False)
    prec = precision_flags(rt)
    kw = dict(
        output_dir=str(recipe.output_dir), beta=recipe.beta,
        loss_type=[recipe.loss_type] + (["sft"] if recipe.sft_weight else []),
        loss_weights=[1.0, float(recipe.sft_weight)] if recipe.sft_weight else None,
        learning_rate=recipe.learning_rate, max_steps=recipe.max_steps, num_train_epochs=recipe.epochs,
        per_device_train_batch_size=recipe.batch_size, per_device_eval_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum, max_length=recipe.max_length,
        warmup_steps=recipe.warmup_steps, lr_scheduler_type=recipe.lr_scheduler,
        logging_steps=recipe.logging_steps, eval_strategy="steps", eval_steps=recipe.eval_steps,
        save_strategy="steps", save_steps=recipe.save_steps, save_total_limit=2,
        fp16=prec["fp16"], bf16=prec["bf16"], use_cpu=rt.device == "cpu", seed=recipe.seed,
        report_to="none",
    )
    kw.update(overrides)
    return DPOConfig(**kw)


def make_trainer(model, tokenizer, splits: dict[str, Any], recipe: DPORecipe, *, callbacks=None, **overrides):
    """``DPOTrainer`` on the LoRA ``model``; its reference is the model with the (fresh) adapter switched off."""
    from trl import DPOTrainer

    from helpers.infra.outputs import atomic_checkpoints, drop_redundant_ref_adapter
    from helpers.infra.quiet import progress_bars_off

    test = splits["test"]
    if test is not None and len(test) > recipe.eval_pairs:  # evaluating every eval_steps: a capped subset
        test = test.select(range(recipe.eval_pairs))
    with progress_bars_off():  # TRL's tokenizing/filtering bars: the training bar is the one that matters
        trainer = DPOTrainer(model=model, args=dpo_config(recipe, **overrides), train_dataset=splits["train"],
                             eval_dataset=test, processing_class=tokenizer, callbacks=callbacks)
    drop_redundant_ref_adapter(trainer.model)
    from helpers.infra.runtime import detect

    warning = unsloth_patch_warning(model, trainer, detect(check_hub=False).device)
    if warning:
        print(warning)
    if trainer.args.world_size == 1:  # under DDP every rank writes into the checkpoint (its RNG state): left as is
        atomic_checkpoints(trainer)
    return trainer


def trainer_class(trainer) -> str:
    """``module.Class`` of the trainer that ran: ``trl...DPOTrainer``, or Unsloth's patched ``Unsloth...`` class."""
    return f"{type(trainer).__module__}.{type(trainer).__qualname__}"


def unsloth_patch_warning(model, trainer, device: str) -> str | None:
    """A warning when the model came through Unsloth on a GPU but the trainer is TRL's own class: Unsloth replaces
    ``trl.DPOTrainer`` with a patched ``Unsloth``-prefixed class on import and falls back to the plain one with only a
    log line when it cannot. On a CPU Unsloth's fallback is plain TRL by design (``unsloth/_cpu_init.py``): None."""
    if getattr(model, "dpo_course_backend", None) != "unsloth" or device != "cuda":
        return None
    name = type(trainer).__name__
    if name.startswith("Unsloth"):
        return None
    return (f"WARNING: the model was loaded through Unsloth, but the trainer is {trainer_class(trainer)}, not "
            f"Unsloth's patched class: Unsloth could not patch TRL here (its log above says why), so this run trains "
            f"with plain TRL. Was `import unsloth` run before `import trl`/`transformers`?")


def prepare_output_dir(recipe: DPORecipe) -> Path:
    """Lock ``recipe.output_dir``, create it and record the recipe; checkpoints of a run that differs in a
    ``RUN_IDENTITY`` field are moved aside (``helpers.infra.outputs.prepare_output_dir``)."""
    return outputs.prepare_output_dir(recipe.output_dir, recipe.to_dict(), defaults=DPORecipe().to_dict(),
                                      identity=RUN_IDENTITY)


def train_with_resume(trainer, recipe: DPORecipe):
    """``trainer.train()`` continuing from the last checkpoint when ``recipe.resume``; the stop button saves one
    (``helpers.infra.outputs.train_with_resume``)."""
    return outputs.train_with_resume(trainer, recipe.output_dir, resume=recipe.resume, max_steps=recipe.max_steps)


def save_adapter(model, tokenizer, out_dir: str | Path, *, merge: bool = False) -> dict[str, str]:
    """Save the LoRA adapter + tokenizer to ``out_dir/adapter`` (and a merged full model to ``out_dir/merged``).
    ``ValueError`` for a model without a LoRA adapter (``save_pretrained`` would write the whole model there)."""
    if not getattr(model, "peft_config", None):
        raise ValueError(f"model is a {type(model).__name__} without a LoRA adapter: nothing to save as an adapter")
    out = Path(out_dir)
    paths = {"adapter": str(out / "adapter")}
    model.save_pretrained(paths["adapter"])
    tokenizer.save_pretrained(paths["adapter"])
    if merge:
        paths["merged"] = str(out / "merged")
        merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        from helpers.infra.quiet import progress_bars_off

        with progress_bars_off():
            merged.save_pretrained(paths["merged"])
            tokenizer.save_pretrained(paths["merged"])
    return paths


def write_metrics(recipe: DPORecipe, trainer, *, backend: str, model_source: str, before: dict, after: dict,
                  lengths: dict, paths: dict, train_seconds: float, model_info: dict | None = None) -> dict[str, Any]:
    """Write ``output_dir/metrics.json`` (what notebooks 04/05 and ``make run`` read) and return it.

    ``model_info``: ``helpers.models.describe_model`` of the trained model (``model``, ``model_source``,
    ``model_parameters``, ``tokenizer_vocab``); without it only ``model`` = ``model_source`` is recorded."""
    metrics = {"backend": backend, "trainer": trainer_class(trainer), **(model_info or {"model": model_source}),
               "recipe": recipe.to_dict(),
               "data": data_provenance(recipe), "lengths": lengths, "global_step": trainer.state.global_step,
               "train_seconds": round(train_seconds, 2),
               "before": before, "after": after, "paths": paths, "log_history": trainer.state.log_history}
    write_json(Path(recipe.output_dir, "metrics.json"), metrics, default=str)
    return metrics


def run_recipe(recipe: DPORecipe, *, style_fn=None, decoding: dict | None = None, stop_after: int | None = None,
               verbose: bool = True) -> dict[str, Any]:
    """The whole of notebook 03: load, check, evaluate the reference, train (resuming), evaluate, save.

    ``style_fn``/``decoding``: also sample held-out responses before and after and report the share that
    ``style_fn`` accepts (offline: ``helpers.worlds.toy.is_chosen_style``). Writes ``output_dir/metrics.json`` and
    returns the metrics plus ``model``, ``tokenizer``, ``trainer``. Holds ``output_dir``'s lock while it runs.
    """
    from helpers.infra.lock import acquire, release
    from helpers.infra.outputs import main_process

    main = main_process()  # under DDP (accelerate launch) the ranks of one run share the directory: rank 0 locks
    if main:
        acquire(recipe.output_dir)  # one writer per output_dir: a second run fails here, before anything is loaded
    try:
        return _run_recipe(recipe, style_fn=style_fn, decoding=decoding, stop_after=stop_after, verbose=verbose)
    finally:
        if main:
            release(recipe.output_dir)


def _run_recipe(recipe: DPORecipe, *, style_fn, decoding, stop_after, verbose) -> dict[str, Any]:
    import numpy as np

    from helpers.evaluation import after_report, chat_prompts, reference_report, sample_responses
    from helpers.infra.outputs import stop_after as stop_callback
    from helpers.models import describe_model

    source = resolve_model(recipe)  # bad path -> ValueError before anything heavy
    model, tokenizer = load_lora_model(recipe, source)
    splits = load_data(recipe)
    splits, lengths = check_lengths(recipe, tokenizer, splits)
    out_dir = prepare_output_dir(recipe)
    ref, before = reference_report(model, tokenizer, splits["test"], max_length=recipe.max_length)
    prompts = chat_prompts(splits["test"])

    def style(into: dict, reference: bool) -> None:
        if style_fn is not None:
            texts = sample_responses(model, tokenizer, prompts, reference=reference, seed=recipe.seed,
                                     **(decoding or {}))
            into["chosen_style_rate"] = float(np.mean([style_fn(t) for t in texts]))
            into["samples"] = texts[:8]

    style(before, reference=True)
    trainer = make_trainer(model, tokenizer, splits, recipe,
                           callbacks=[stop_callback(stop_after)] if stop_after else None)
    t0 = time.perf_counter()
    train_with_resume(trainer, recipe)
    seconds = time.perf_counter() - t0
    after = after_report(model, tokenizer, splits["test"], ref, beta=recipe.beta, max_length=recipe.max_length)
    style(after, reference=False)
    paths = save_adapter(model, tokenizer, out_dir, merge=recipe.merge)
    metrics = write_metrics(recipe, trainer, backend=model.dpo_course_backend, model_source=source, before=before,
                            after=after, lengths=lengths, paths=paths, train_seconds=seconds,
                            model_info=describe_model(model, tokenizer, source))
    if verbose:
        print(f"[{metrics['backend']}] step {metrics['global_step']}: held-out reward accuracy "
              f"{after['rewards/accuracies']:.3f}, margin {after['rewards/margins']:.3f} ({after['margin_source']})"
              + (f"; chosen-style rate {before['chosen_style_rate']:.3f} -> {after['chosen_style_rate']:.3f}"
                 if style_fn else "") + f"; {out_dir / 'metrics.json'}")
    return {**metrics, "model": model, "tokenizer": tokenizer, "trainer": trainer}


def toy_style(recipe: DPORecipe) -> dict[str, Any]:
    """``run_recipe``'s sampling check for the toy world (its ground truth says what a chosen-style answer is)."""
    if recipe.model != TOY or recipe.data != TOY:
        return {}
    from helpers.worlds.toy import is_chosen_style
    from helpers.worlds.toy_model import TOY_DECODING

    return dict(style_fn=is_chosen_style, decoding=TOY_DECODING)


