"""helpers.worlds.toy_model: the toy world's SFT reference model is deterministic and writes both styles."""

from __future__ import annotations

import numpy as np
import pytest

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


# --- the shipped weights (data/toy-sft-*): what every learner starts from ----------------------------------------
def test_the_shipped_model_is_the_default_recipes_and_is_checked(tmp_path):
    import shutil

    from helpers.infra.paths import DATA_DIR
    from helpers.worlds.toy_model import ToyRecipe, build_toy_sft_model, data_key, shipped_toy_sft_model

    shipped = shipped_toy_sft_model()
    assert shipped is not None and shipped.parent == DATA_DIR  # a fresh clone trains nothing
    assert build_toy_sft_model(cache_dir=tmp_path, verbose=False) == shipped and not any(tmp_path.iterdir())
    assert shipped_toy_sft_model(ToyRecipe(seed=1)) is None  # another recipe is built, not given these weights
    assert data_key(ToyRecipe(seed=1)) != data_key(ToyRecipe())
    # a damaged checkout (a truncated or edited weights file) is an error naming the file, not silently used
    fake = tmp_path / "data"
    shutil.copytree(shipped, fake / shipped.name)
    w = fake / shipped.name / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="model.safetensors"):
        shipped_toy_sft_model(data_dir=fake)


def test_write_shipped_replaces_only_its_own_earlier_folder(tmp_path):
    import json
    import os

    from helpers.infra.files import MARKER
    from helpers.worlds.toy_model import SHIPPED_KIND, ToyRecipe, data_key, shipped_toy_sft_model, write_shipped

    small = ToyRecipe(epochs=1, train_pairs=48, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    meta = json.dumps({"data_key": data_key(small)})
    ours, theirs = tmp_path / "toy-sft-000000000000", tmp_path / "toy-sft-111111111111"
    for d in (ours, theirs):
        d.mkdir()
        (d / "recipe.json").write_text(meta)
    (ours / MARKER).write_text(json.dumps({"kind": SHIPPED_KIND}))  # an earlier write_shipped's folder
    out = write_shipped(small, tmp_path, verbose=False)
    assert not ours.exists() and theirs.exists()  # a folder the course did not make is never deleted
    mask = os.umask(0)
    os.umask(mask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask  # as git checks it out, not 0600
    theirs.rename(tmp_path / "elsewhere")
    assert shipped_toy_sft_model(small, data_dir=tmp_path) == out


@pytest.mark.toy_model
def test_a_rebuild_matches_the_shipped_weights(tmp_path):
    """The rebuild the README's `make toy-model` runs: bit-identical on the kernels that made the shipped weights;
    elsewhere (another CPU rounds differently, benchmarks/bench_cpu_divergence.py) within the measured tolerance."""
    from helpers.infra.files import read_json
    from helpers.worlds import toy_model as tm

    shipped = tm.shipped_toy_sft_model()
    rebuilt = tm.build_toy_sft_model(cache_dir=tmp_path, force=True, verbose=False)
    assert rebuilt.parent == tmp_path
    r = tm.compare_builds(shipped, rebuilt)
    assert tm.rebuild_problem(r, same_kernels=read_json(shipped / "recipe.json")["built_with"] == tm.kernels()) \
        is None, r


def test_what_counts_as_a_matching_rebuild():
    from helpers.worlds.toy_model import REBUILD_TOLERANCE, rebuild_problem

    same = {"same_bytes": True, "mean_abs_logp_diff": 0.0, "pref_agreement": 1.0}
    elsewhere = {"same_bytes": False, "mean_abs_logp_diff": 0.08, "pref_agreement": 0.90}  # AVX2 kernels, measured
    assert rebuild_problem(same, same_kernels=True) is None
    assert "other bytes" in rebuild_problem(elsewhere, same_kernels=True)  # same kernels must give the same bytes
    assert rebuild_problem(elsewhere, same_kernels=False) is None
    changed = {"same_bytes": False, "mean_abs_logp_diff": 0.222, "pref_agreement": 0.79}  # 3 epochs, not 4
    assert str(REBUILD_TOLERANCE) in rebuild_problem(changed, same_kernels=False)
    assert "only 70%" in rebuild_problem({**elsewhere, "pref_agreement": 0.70}, same_kernels=False)
