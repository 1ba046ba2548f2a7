"""helpers.models: both loading branches (Unsloth, transformers + peft), devices and dtypes, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.infra.runtime import HubUnavailableError, Runtime
from helpers.models import LoraSettings, count_parameters, load_model

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.subprocess
def test_unsloth_branch_in_a_fresh_process(tiny_model_dir, tmp_path):
    """Unsloth's CPU backend, as notebook 03 runs it offline. Its import prints "bfloat16 = True" on a CPU with
    AVX512-BF16/AMX (the banner says what that means): the run still trains in fp32, with bf16 and fp16 off."""
    code = (
        "import unsloth, json, sys\n"
        "from helpers.models import load_model, LoraSettings, count_parameters\n"
        f"m, t = load_model({str(tiny_model_dir)!r}, use_unsloth=True, max_seq_length=128, lora=LoraSettings(r=4))\n"
        "from helpers.recipe import DPORecipe, dpo_config\n"
        f"c = dpo_config(DPORecipe(output_dir={str(tmp_path)!r}))  # after Unsloth patched DPOConfig for the CPU\n"
        "print('RESULT', json.dumps({'backend': m.dpo_course_backend, 'type': type(m).__name__,\n"
        "      'params': count_parameters(m), 'pad': t.pad_token is not None, 'bf16': c.bf16, 'fp16': c.fp16,\n"
        "      'dtypes': sorted({str(p.dtype) for p in m.parameters()})}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT"))[7:])
    assert res["backend"] == "unsloth" and res["type"] == "PeftModelForCausalLM" and res["pad"]
    assert 0 < res["params"][0] < res["params"][1]
    assert (res["bf16"], res["fp16"], res["dtypes"]) == (False, False, ["torch.float32"]), res


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

    from helpers.infra.tinymodel import SMOLLM2_135M

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    n = sum(p.numel() for p in model.parameters())
    assert n == 134_515_008  # SmolLM2-135M's parameter count (tied embeddings counted once)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
