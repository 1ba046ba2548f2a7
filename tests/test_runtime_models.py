"""Runtime detection, model loading (both branches) and the offline default world's model and DPO promise."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.models import LoraSettings, count_parameters, load_model
from helpers.runtime import HubUnavailableError, Runtime, banner, detect, hub_reachable, precision_flags

ROOT = Path(__file__).resolve().parents[1]


# --- runtime -----------------------------------------------------------------------------------------------------
def test_detects_cpu_offline_without_touching_the_network_for_long():
    t0 = time.perf_counter()
    rt = detect()
    assert time.perf_counter() - t0 < 3
    assert rt.device == "cpu" and rt.gpu_name is None and not rt.bf16 and not rt.fp16
    assert rt.mode == "offline" and rt.hub is False and not rt.on_colab
    assert precision_flags(rt) == {"fp16": False, "bf16": False}
    text = banner(rt)
    assert "CPU" in text and "offline" in text and "HF_HUB_OFFLINE" in text


def test_unreachable_hub_answers_within_the_timeout(monkeypatch):
    from helpers import runtime

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # .invalid never resolves (RFC 2606)
    runtime._probe.cache_clear()
    t0 = time.perf_counter()
    assert hub_reachable(timeout=1.0) is False
    assert time.perf_counter() - t0 < 2.5
    assert "https://hub.invalid" in runtime.hub_problem(timeout=1.0)
    runtime._probe.cache_clear()
    with pytest.raises(ValueError, match="timeout"):
        hub_reachable(timeout=0)


def test_the_probe_timeout_comes_from_dpo_hub_timeout(monkeypatch):
    from helpers import runtime

    monkeypatch.delenv("DPO_HUB_TIMEOUT", raising=False)
    assert runtime.probe_timeout() == 2.0
    monkeypatch.setenv("DPO_HUB_TIMEOUT", "12.5")
    assert runtime.probe_timeout() == 12.5
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv("DPO_HUB_TIMEOUT", bad)
        with pytest.raises(ValueError, match="DPO_HUB_TIMEOUT"):
            runtime.probe_timeout()


@pytest.mark.parametrize("cap,expected", [((7, 5), {"fp16": True, "bf16": False}),  # T4
                                          ((8, 0), {"fp16": False, "bf16": True})])  # A100
def test_precision_flags_follow_the_gpu(cap, expected):
    rt = Runtime(on_colab=True, device="cuda", gpu_name="GPU", compute_capability=cap, bf16=cap >= (8, 0),
                 unsloth_available=True, hub=True, mode="online")
    assert precision_flags(rt) == expected
    assert ("fp16" if expected["fp16"] else "bf16") in banner(rt)


@pytest.mark.parametrize("device,cap,expected", [("cuda", (7, 5), ("cuda:0", torch.float16)),  # T4
                                                 ("cuda", (8, 0), ("cuda:0", torch.bfloat16)),  # A100
                                                 ("cpu", None, ("cpu", torch.float32))])
def test_device_and_dtype_follow_the_runtime(device, cap, expected, monkeypatch):
    from helpers.models import device_and_dtype

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    rt = Runtime(on_colab=True, device=device, gpu_name="GPU" if cap else None, compute_capability=cap,
                 bf16=bool(cap and cap >= (8, 0)), unsloth_available=True, hub=True, mode="online")
    assert device_and_dtype(rt) == expected


def test_notebook05s_policy_loads_on_the_runtimes_device_and_dtype(tiny_model_dir, tmp_path, monkeypatch):
    """compare.load_policy puts reference + adapter where device_and_dtype says (here: a fake fp16 'GPU' that is
    really the CPU, to check that the choice is applied, not only computed)."""
    import helpers.models as models
    from helpers.compare import load_policy

    model, tok = load_model(tiny_model_dir, use_unsloth=False, lora=LoraSettings(r=4, alpha=8))
    model.save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    monkeypatch.setattr(models, "device_and_dtype", lambda rt=None: ("cpu", torch.float16))
    policy, _ = load_policy(tmp_path / "adapter", tiny_model_dir)
    # the base model in the runtime's dtype; peft keeps the LoRA matrices in fp32 (its autocast_adapter_dtype default)
    assert {p.dtype for n, p in policy.named_parameters() if "lora_" not in n} == {torch.float16}
    assert {p.device.type for p in policy.parameters()} == {"cpu"}


# --- model loading -----------------------------------------------------------------------------------------------
def test_transformers_branch_gives_lora_model_and_chat_tokenizer(tiny_model_dir):
    model, tok = load_model(tiny_model_dir, use_unsloth=False, max_seq_length=128, lora=LoraSettings(r=4, alpha=8))
    assert model.dpo_course_backend == "transformers"
    trainable, total = count_parameters(model)
    assert 0 < trainable < total
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    assert tok.pad_token is not None and tok.chat_template and tok.padding_side == "right"
    plain, _ = load_model(tiny_model_dir, use_unsloth=False, lora=None)
    assert count_parameters(plain)[0] == count_parameters(plain)[1]


def test_unsloth_branch_in_a_fresh_process(tiny_model_dir):
    code = (
        "import unsloth, json, sys\n"
        "from helpers.models import load_model, LoraSettings, count_parameters\n"
        f"m, t = load_model({str(tiny_model_dir)!r}, use_unsloth=True, max_seq_length=128, lora=LoraSettings(r=4))\n"
        "print('RESULT', json.dumps({'backend': m.dpo_course_backend, 'type': type(m).__name__,\n"
        "      'params': count_parameters(m), 'pad': t.pad_token is not None}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT"))[7:])
    assert res["backend"] == "unsloth" and res["type"] == "PeftModelForCausalLM" and res["pad"]
    assert 0 < res["params"][0] < res["params"][1]


def test_bad_model_arguments_raise_clear_errors(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="neither an existing directory nor a hub id"):
        load_model(tmp_path / "nope", use_unsloth=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path / "empty", use_unsloth=False)
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        load_model("someone/not-cached-anywhere", use_unsloth=False)
    with pytest.raises(ValueError, match="load_in_4bit"):
        load_model(tiny_model_dir, use_unsloth=False, load_in_4bit=True)
    with pytest.raises(ValueError, match="use_unsloth"):
        load_model(tiny_model_dir, use_unsloth="yes")
    with pytest.raises(ValueError, match="max_seq_length"):
        load_model(tiny_model_dir, use_unsloth=False, max_seq_length=0)
    with pytest.raises(ValueError, match="lora.r"):
        LoraSettings(r=0)


def test_smollm2_135m_config_is_the_real_architecture():
    from transformers import LlamaConfig, LlamaForCausalLM

    from helpers.tinymodel import SMOLLM2_135M

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    n = sum(p.numel() for p in model.parameters())
    assert n == 134_515_008  # SmolLM2-135M's parameter count (tied embeddings counted once)
    assert model.config.num_key_value_heads < model.config.num_attention_heads


# --- the offline default world's model ---------------------------------------------------------------------------
def test_sft_recipe_is_deterministic(tmp_path):
    from helpers.toy_model import ToyRecipe, build_toy_sft_model

    small = ToyRecipe(epochs=1, train_pairs=48, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    a = build_toy_sft_model(small, tmp_path / "a", verbose=False)
    b = build_toy_sft_model(small, tmp_path / "b", verbose=False)
    assert a.name == b.name and a.name.startswith("toy-sft-")
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert build_toy_sft_model(ToyRecipe(epochs=1, train_pairs=48, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, seed=1), tmp_path / "a", verbose=False).name != a.name


def test_sft_reference_writes_both_styles(toy_sft_dir):
    from helpers.data import TOY, resolve_hh
    from helpers.evaluation import chat_prompts, sample_responses
    from helpers.toy import is_chosen_style
    from helpers.toy_model import TOY_DECODING

    model, tok = load_model(toy_sft_dir, use_unsloth=False, lora=None)
    test = resolve_hh(TOY).data["test"]
    texts = sample_responses(model, tok, chat_prompts(test), seed=0, **TOY_DECODING)
    rate = float(np.mean([is_chosen_style(t) for t in texts]))
    assert 0.2 <= rate <= 0.8, rate  # room for DPO to move it
    assert tok.chat_template and tok.eos_token == "<|im_end|>"


@pytest.mark.parametrize("backend", ["transformers", "unsloth"])
def test_short_lora_dpo_run_delivers_the_offline_promise(tmp_path, toy_sft_dir, backend):
    r = subprocess.run([sys.executable, "-m", "helpers.train", "--offline", "--backend", backend,
                        "--output-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["backend"] == backend
    assert m["after"]["rewards/accuracies"] >= 0.9
    gain = m["after"]["chosen_style_rate"] - m["before"]["chosen_style_rate"]
    assert gain >= 0.30, (m["before"]["chosen_style_rate"], m["after"]["chosen_style_rate"])


def test_detect_works_without_any_google_package(monkeypatch):
    """A fresh venv without protobuf has no ``google`` package: ``find_spec("google.colab")`` then raises
    ModuleNotFoundError (Python 3.13, the Colab-faithful check); the runtime is simply not Colab."""
    import importlib.util

    import helpers.runtime as runtime
    from helpers.colab import on_colab

    real = importlib.util.find_spec

    def no_google(name, *a, **kw):
        if name.startswith("google"):
            raise ModuleNotFoundError("No module named 'google'", name="google")
        return real(name, *a, **kw)

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", no_google)
    assert on_colab() is False
    assert runtime.detect(check_hub=False).on_colab is False
