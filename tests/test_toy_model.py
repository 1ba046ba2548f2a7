"""helpers.worlds.toy_model: the toy world's SFT reference model is deterministic and writes both styles."""

from __future__ import annotations

import numpy as np

from helpers.models import load_model


# --- the offline default world's model ---------------------------------------------------------------------------
def test_sft_recipe_is_deterministic(tmp_path):
    from helpers.worlds.toy_model import ToyRecipe, build_toy_sft_model

    small = ToyRecipe(epochs=1, train_pairs=48, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    a = build_toy_sft_model(small, tmp_path / "a", verbose=False)
    b = build_toy_sft_model(small, tmp_path / "b", verbose=False)
    assert a.name == b.name and a.name.startswith("toy-sft-")
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert build_toy_sft_model(ToyRecipe(epochs=1, train_pairs=48, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, seed=1), tmp_path / "a", verbose=False).name != a.name


def test_sft_reference_writes_both_styles(toy_sft_dir):
    from helpers.evaluation import chat_prompts, sample_responses
    from helpers.worlds.splits import TOY, resolve_hh
    from helpers.worlds.toy import is_chosen_style
    from helpers.worlds.toy_model import TOY_DECODING

    model, tok = load_model(toy_sft_dir, use_unsloth=False, lora=None)
    test = resolve_hh(TOY).data["test"]
    texts = sample_responses(model, tok, chat_prompts(test), seed=0, **TOY_DECODING)
    rate = float(np.mean([is_chosen_style(t) for t in texts]))
    assert 0.2 <= rate <= 0.8, rate  # room for DPO to move it
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
