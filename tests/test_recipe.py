"""Notebook 03's recipe (helpers.recipe): resume after an interrupt, early errors, the keywords TRL/Unsloth/PEFT
accept, evaluation during training, the offline promise."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from helpers.recipe import OFFLINE, DPORecipe, check_lengths, load_data, run_recipe

ROOT = Path(__file__).resolve().parents[1]
NB03 = ROOT / "notebooks" / "03_unsloth_lora_dpo.ipynb"


def _recipe(tmp_path, **kw) -> DPORecipe:
    base = {**OFFLINE, "output_dir": str(tmp_path), "backend": "transformers", "max_steps": 12, "logging_steps": 1,
            "save_steps": 4, "eval_steps": 1000, "batch_size": 8}
    return DPORecipe(**{**base, **kw})


def _train_losses(metrics) -> dict[int, float]:
    steps = [h["step"] for h in metrics["log_history"] if "loss" in h]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {h["step"]: h["loss"] for h in metrics["log_history"] if "loss" in h}


@pytest.mark.subprocess
def test_interrupt_then_rerun_continues_without_repeating_a_step(tmp_path):
    full = run_recipe(_recipe(tmp_path / "full"), verbose=False)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(_recipe(tmp_path / "cut"), stop_after=6, verbose=False)  # 6 is not a save_steps multiple
    assert (tmp_path / "cut" / "checkpoint-6").is_dir()  # the interrupt saved a checkpoint
    resumed = run_recipe(_recipe(tmp_path / "cut"), verbose=False)
    assert resumed["global_step"] == full["global_step"] == 12
    a, b = _train_losses(full), _train_losses(resumed)
    assert sorted(b) == list(range(1, 13))  # every step exactly once
    # the resumed steps see the same batches and optimizer state as the uninterrupted run
    assert all(abs(a[s] - b[s]) < 1e-4 for s in range(7, 13)), (a, b)
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["global_step"] == 12
    assert (tmp_path / "cut" / "adapter" / "adapter_config.json").exists()


@pytest.mark.subprocess
def test_unsloth_branch_resumes_the_same_way(tmp_path):
    def cli(out, *extra):
        cmd = [sys.executable, "-m", "helpers.course.cli", "--offline", "--backend", "unsloth",
               "--output-dir", str(out), "--max-steps", "10", "--save-steps", "4", "--eval-steps", "1000",
               "--logging-steps", "1", *extra]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)

    assert cli(tmp_path / "cut", "--stop-after", "5").returncode == 130  # interrupted
    r = cli(tmp_path / "cut")
    assert r.returncode == 0 and "resuming from" in r.stdout, r.stderr[-2000:]
    assert cli(tmp_path / "full").returncode == 0
    a, b = (_train_losses(json.loads((tmp_path / d / "metrics.json").read_text())) for d in ("full", "cut"))
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["backend"] == "unsloth"
    assert sorted(b) == list(range(1, 11)) and all(abs(a[s] - b[s]) < 1e-4 for s in range(6, 11)), (a, b)


@pytest.mark.toy_model
def test_changed_recipe_does_not_resume_a_different_run(tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        run_recipe(_recipe(tmp_path / "r"), stop_after=4, verbose=False)
    res = run_recipe(_recipe(tmp_path / "r", beta=0.5, max_steps=2), verbose=False)
    assert res["global_step"] == 2 and "moved it to" in capsys.readouterr().out
    assert list(tmp_path.glob("r.old-*/checkpoint-4"))  # nothing lost


@pytest.mark.parametrize("kw,match", [({"beta": 0.0}, "beta"), ({"beta": -1}, "beta"),
                                      ({"learning_rate": 0}, "learning_rate"), ({"max_steps": 0}, "max_steps"),
                                      ({"loss_type": "kl-dpo"}, "loss_type"), ({"backend": "fast"}, "backend")])
def test_bad_parameters_raise_before_anything_loads(kw, match):
    with pytest.raises(ValueError, match=match):
        DPORecipe(**kw)


@pytest.mark.toy_model
def test_unknown_model_path_and_short_max_length_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="neither an existing directory"):
        run_recipe(_recipe(tmp_path, model="./no/such/model"), verbose=False)
    assert not any(tmp_path.glob("checkpoint-*"))
    with pytest.raises(ValueError, match="max_prompt_length"):
        _recipe(tmp_path, max_length=20)  # the offline max_prompt_length (192) is not below it
    r = _recipe(tmp_path, max_length=20, max_prompt_length=None)
    from helpers.models import load_tokenizer
    from helpers.worlds.toy_model import build_toy_sft_model

    tok, _ = load_tokenizer(build_toy_sft_model(), verbose=False)
    with pytest.raises(ValueError, match="longest prompt kept"):
        check_lengths(r, tok, load_data(r))
    with pytest.raises(ValueError, match="longest prompt kept"):
        run_recipe(r, verbose=False)
    assert not any(tmp_path.glob("checkpoint-*"))
    # a prompt limit drops the long-prompt pairs instead, and then max_length fits what is kept
    splits, rep = check_lengths(_recipe(tmp_path, max_length=64, max_prompt_length=40), tok, load_data(r))
    assert rep["dropped_long_prompt"]["train"] > 0 and rep["longest_prompt"] <= 40
    assert len(splits["train"]) == len(load_data(r)["train"]) - rep["dropped_long_prompt"]["train"]


def _notebook_sources() -> dict[str, str]:
    cells = nbformat.read(NB03, as_version=4).cells
    nb = "\n".join(c.source for c in cells if c.cell_type == "code" and not c.source.lstrip().startswith(("%", "!")))
    import helpers.models
    import helpers.recipe

    return {"notebook 03": nb, "helpers/recipe.py": inspect.getsource(helpers.recipe),
            "helpers/models.py": inspect.getsource(helpers.models)}


def _calls(src: str, names: set[str]) -> list[tuple[str, list[str]]]:
    """(callee, keywords) of every call to ``names``; ``**kw`` is expanded when ``kw = dict(...)`` is in ``src``."""
    tree = ast.parse(src)
    dicts: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == "dict"):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    dicts.setdefault(t.id, []).extend(k.arg for k in node.value.keywords if k.arg)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in names:
                kws = [k.arg for k in node.keywords if k.arg is not None]
                for k in node.keywords:
                    if k.arg is None and isinstance(k.value, ast.Name):
                        kws += dicts.get(k.value.id, [])
                found.append((name, kws))
    return found


def test_every_keyword_passed_to_trl_unsloth_peft_is_accepted():
    # resolved in a subprocess: unsloth must be imported before trl/transformers
    code = r'''
import inspect, json, unsloth
from unsloth import FastLanguageModel
from trl import DPOConfig, DPOTrainer
from peft import get_peft_model
from transformers import AutoModelForCausalLM
def params(f):
    p = inspect.signature(f).parameters
    return {"names": list(p), "var_kw": any(v.kind == v.VAR_KEYWORD for v in p.values())}
print(json.dumps({"DPOConfig": params(DPOConfig), "DPOTrainer": params(DPOTrainer.__init__),
                  "from_pretrained": params(FastLanguageModel.from_pretrained),
                  "get_peft_model": params(FastLanguageModel.get_peft_model),
                  "peft.get_peft_model": params(get_peft_model)}))
'''
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    sigs = json.loads(r.stdout.strip().splitlines()[-1])
    checked, n_config_keywords = set(), 0
    for where, src in _notebook_sources().items():
        for name, kws in _calls(src, {"DPOConfig", "DPOTrainer", "from_pretrained", "get_peft_model"}):
            keys = [name]
            if name == "from_pretrained" and "model_name" not in kws:
                continue  # AutoModel/AutoTokenizer.from_pretrained, not Unsloth's
            if name == "get_peft_model" and "r" not in kws:
                keys = ["peft.get_peft_model"]  # peft's get_peft_model(model, LoraConfig(...))
            sig = sigs[keys[0]]
            if name == "DPOConfig":
                n_config_keywords = max(n_config_keywords, len(kws))
            bad = [k for k in kws if k not in sig["names"]]
            assert not bad, f"{where}: {name}() does not accept {bad} in the pinned versions"
            checked.add(keys[0])
    assert {"DPOConfig", "DPOTrainer", "from_pretrained", "get_peft_model"} <= checked, checked
    assert n_config_keywords >= 20, n_config_keywords  # DPOConfig's keywords were really read (via **kw)


def test_evaluation_during_training_uses_a_capped_held_out_subset(tmp_path, toy_sft_dir):
    from helpers.recipe import load_lora_model, make_trainer, resolve_model

    recipe = _recipe(tmp_path, eval_pairs=5)
    model, tok = load_lora_model(recipe, resolve_model(recipe))
    splits = load_data(recipe)
    assert len(splits["test"]) > 5
    trainer = make_trainer(model, tok, splits, recipe)
    assert len(trainer.eval_dataset) == 5
    assert len(make_trainer(model, tok, splits, recipe.replace(eval_pairs=10_000)).eval_dataset) == len(splits["test"])
    with pytest.raises(ValueError, match="eval_pairs"):
        recipe.replace(eval_pairs=0)


def test_a_rebuild_of_missing_splits_honours_notebook02s_limits(tmp_path, shared_hh_path, capsys):
    """No notebook 02 output (a new Colab runtime): the rebuild reads 02's limits, not the whole source; saved
    splits with other limits (02 ran with its own) are reused as they are."""
    from helpers.recipe import SPLIT_LIMITS
    from helpers.worlds.splits import load_or_build_splits

    assert SPLIT_LIMITS == {"limit": 5000, "test_limit": 500}  # notebook 02's defaults
    out = tmp_path / "02_hh"
    built = load_or_build_splits(out, source=str(shared_hh_path), rebuild_with={"limit": 200, "test_limit": 7})
    assert "limit=200, test_limit=7" in capsys.readouterr().out
    assert len(built["test"]) <= 7 and len(built["train"]) + len(built["test"]) <= 200
    again = load_or_build_splits(out, source=str(shared_hh_path), rebuild_with={"limit": 5000, "test_limit": 500})
    assert "NOTE" not in capsys.readouterr().out and len(again["train"]) == len(built["train"])


# ------------------------------------------------------------------------------------------ boundary validation
def test_recipe_values_are_checked_and_numpy_or_torch_scalars_accepted():

    from helpers.recipe import LR_SCHEDULERS, DPORecipe

    r = DPORecipe(beta=np.float32(0.1), learning_rate=torch.tensor(5e-5), seed=np.int64(3), max_steps=np.int32(7))
    assert type(r.beta) is float and abs(r.beta - 0.1) < 1e-7 and r.seed == 3 and type(r.max_steps) is int
    for bad, match in [(dict(beta=float("inf")), "beta"), (dict(beta=float("nan")), "beta"),
                       (dict(lr_scheduler="bogus"), "lr_scheduler"), (dict(seed=-1), "seed"),
                       (dict(output_dir=""), "output_dir"), (dict(max_steps=0), "max_steps"),
                       (dict(batch_size=True), "batch_size"), (dict(beta=torch.tensor([0.1, 0.2])), "beta")]:
        with pytest.raises(ValueError, match=match):
            DPORecipe(**bad)
    from transformers.trainer_utils import SchedulerType

    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}


@pytest.mark.toy_model
def test_the_toy_fallback_is_recorded_in_the_run_metrics(tmp_path, monkeypatch, capsys):
    """A fallback happens only for the default source offline, is printed, and lands in metrics.json."""
    from helpers.recipe import OFFLINE, DPORecipe, run_recipe
    from helpers.worlds.splits import DEFAULT_SOURCE

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = DPORecipe(**{**OFFLINE, "data": str(tmp_path / "02_hh"), "data_source": DEFAULT_SOURCE,
                     "output_dir": str(tmp_path / "out"), "backend": "transformers", "max_steps": 1,
                     "eval_steps": 1000, "save_steps": 1000})
    run_recipe(r, verbose=False)
    assert "Falling back to the offline default" in capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())["data"]
    assert data["source"] == "toy" and data["asked_for"] == DEFAULT_SOURCE and "fallback" in data["note"]


@pytest.mark.subprocess
@pytest.mark.parametrize("backend", ["transformers", "unsloth"])
def test_short_lora_dpo_run_delivers_the_offline_promise(tmp_path, toy_sft_dir, backend):
    r = subprocess.run([sys.executable, "-m", "helpers.course.cli", "--offline", "--backend", backend,
                        "--output-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["backend"] == backend
    assert m["after"]["rewards/accuracies"] >= 0.9
    gain = m["after"]["chosen_style_rate"] - m["before"]["chosen_style_rate"]
    assert gain >= 0.30, (m["before"]["chosen_style_rate"], m["after"]["chosen_style_rate"])


def test_the_trainer_class_is_named_and_a_missing_unsloth_patch_is_warned_about_on_a_gpu():
    from types import SimpleNamespace

    from helpers.recipe import trainer_class, unsloth_patch_warning

    class DPOTrainer:  # TRL's own class, as Unsloth leaves it when it cannot patch
        pass

    class UnslothDPOTrainer:
        pass

    unsloth_model, plain_model = SimpleNamespace(dpo_course_backend="unsloth"), SimpleNamespace(
        dpo_course_backend="transformers")
    assert trainer_class(DPOTrainer()).endswith(".DPOTrainer")
    warning = unsloth_patch_warning(unsloth_model, DPOTrainer(), "cuda")
    assert warning and "WARNING" in warning and "DPOTrainer" in warning and "import unsloth" in warning
    assert unsloth_patch_warning(unsloth_model, UnslothDPOTrainer(), "cuda") is None
    assert unsloth_patch_warning(unsloth_model, DPOTrainer(), "cpu") is None  # the CPU fallback is plain TRL
    assert unsloth_patch_warning(plain_model, DPOTrainer(), "cuda") is None
