"""helpers.course.runahead's pack and fetch: what they carry is checked, nothing they did not make is replaced, a
pack from another course version or with other settings says what differs (issue 35, items 2 and 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _train_dir(root: Path, *, weights: bool = True, extra_recipe: dict | None = None) -> Path:
    """A notebook-03 output folder: adapter/ (config + small safetensors weights) and metrics.json."""
    import torch
    from safetensors.torch import save_file

    from helpers.recipe import DPORecipe

    adapter = root / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    if weights:
        save_file({"base_model.model.lora_A.weight": torch.ones(4, 8)}, str(adapter / "adapter_model.safetensors"))
    recipe = {**DPORecipe().to_dict(), **(extra_recipe or {})}
    (root / "metrics.json").write_text(json.dumps({"recipe": recipe, "model": "tiny", "global_step": 3}))
    return root


def _sweep_dir(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"{i:016x}.json").write_text(json.dumps({"beta": 0.1 * (i + 1), "kl": 0.5}))
    return root


def test_a_pack_into_its_own_source_folder_is_refused_before_anything_is_copied(tmp_path):
    """Issue 35: pack_run_ahead into notebook 03's own folder copied half, then raised SameFileError."""
    from helpers.course.runahead import pack_run_ahead

    train = _train_dir(tmp_path / "03_dpo")
    before = sorted(p.relative_to(train) for p in train.rglob("*"))
    for out in (train, train / "adapter", tmp_path):
        with pytest.raises(ValueError, match="overlaps train_dir"):
            pack_run_ahead(out, train_dir=train)
    assert sorted(p.relative_to(train) for p in train.rglob("*")) == before


def test_a_pack_never_replaces_a_folder_of_something_else_and_never_mixes_old_files_with_new(tmp_path):
    from helpers.course.runahead import SWEEP_FOLDER, pack_run_ahead

    train, sweep = _train_dir(tmp_path / "03_dpo"), _sweep_dir(tmp_path / "04_sweep")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("mine")
    with pytest.raises(ValueError, match="not an earlier run-ahead"):
        pack_run_ahead(mine, train_dir=train)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.md"]
    out = pack_run_ahead(tmp_path / "pack", train_dir=train, sweep_dir=sweep)
    assert (out / "adapter_model.safetensors").is_file() and len(list((out / SWEEP_FOLDER).glob("*.json"))) == 2
    desc = json.loads((out / "run-ahead.json").read_text())
    assert desc["adapter"] is True and desc["sweep_results"] == 2 and "beta" in desc["recipe_fields"]
    pack_run_ahead(out, sweep_dir=sweep)  # a repack holds what was asked for now, nothing of the earlier pack
    assert not (out / "adapter_model.safetensors").exists() and not (out / "metrics.json").exists()


def test_a_pack_checks_what_it_carries(tmp_path):
    """Issue 35: the pack accepted an adapter folder with no weights and copied a truncated sweep file."""
    from helpers.course.runahead import pack_run_ahead
    from helpers.infra.files import CorruptFileError

    with pytest.raises(FileNotFoundError, match="no adapter weights"):
        pack_run_ahead(tmp_path / "p1", train_dir=_train_dir(tmp_path / "a", weights=False))
    train = _train_dir(tmp_path / "b")
    w = train / "adapter" / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:40])
    with pytest.raises(ValueError, match="adapter weights cannot be read"):
        pack_run_ahead(tmp_path / "p2", train_dir=train)
    sweep = _sweep_dir(tmp_path / "s")
    bad = sorted(sweep.glob("*.json"))[1]
    bad.write_text('{"beta": 0.2, "kl"')
    with pytest.raises(CorruptFileError, match=f"sweep result {bad} is not valid JSON"):
        pack_run_ahead(tmp_path / "p3", sweep_dir=sweep)
    assert not any((tmp_path / p).exists() for p in ("p1", "p2", "p3")), "nothing packed"


def test_notebook_05s_loader_names_a_weightless_or_other_version_run_ahead(tmp_path):
    """Issue 35: a weightless pack gave HFValidationError ("Repo id must be in the form ..."); a run-ahead from another
    course version gave TypeError: unexpected keyword argument 'dpo_variant'."""
    from helpers.course.export import trained_adapter

    weightless = _train_dir(tmp_path / "a", weights=False)
    with pytest.raises(FileNotFoundError, match=f"{weightless / 'adapter'} has adapter_config.json but no adapter"):
        trained_adapter(weightless)
    other = _train_dir(tmp_path / "b", extra_recipe={"dpo_variant": "x"})
    with pytest.raises(ValueError, match=r"does not know \(\['dpo_variant'\]\).*another version of the course"):
        trained_adapter(other)
    adapter, metrics = trained_adapter(_train_dir(tmp_path / "c"))
    assert adapter == tmp_path / "c" / "adapter" and metrics["global_step"] == 3


def test_fetch_skips_a_broken_result_names_another_version_and_marks_the_cache(tmp_path, capsys):
    from helpers.course.runahead import SWEEP_FOLDER, fetch_sweep, pack_run_ahead
    from helpers.sweep import RUN_AHEAD_NOTE

    pack = pack_run_ahead(tmp_path / "pack", sweep_dir=_sweep_dir(tmp_path / "s", n=3))
    first = sorted((pack / SWEEP_FOLDER).glob("*.json"))[0]
    first.write_text("{")  # damaged after packing (a download cut off)
    desc = json.loads((pack / "run-ahead.json").read_text())
    (pack / "run-ahead.json").write_text(json.dumps({**desc, "recipe_fields": desc["recipe_fields"] + ["dpo_variant"]}))
    assert fetch_sweep(pack, tmp_path / "attendee") == 2
    out = capsys.readouterr().out
    assert f"{first} is not valid JSON" in out and "skipped" in out
    assert "another version of the course (recipe fields unknown here: ['dpo_variant'])" in out
    note = json.loads((tmp_path / "attendee" / RUN_AHEAD_NOTE).read_text())
    assert note["source"] == str(pack) and len(note["files"]) == 2
    assert fetch_sweep(pack, tmp_path / "attendee") == 0  # results already there are kept, not copied again


def test_a_mistyped_run_ahead_folder_is_named_as_a_missing_folder(tmp_path, monkeypatch):
    """Issue 35: a mistyped relative folder (runs/run-ahaed) was reported as an unusable hub id only."""
    from helpers.course.runahead import fetch_sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match=r"no folder .*runs/run-ahaed here, so read as a hub repository id"):
        fetch_sweep("runs/run-ahaed", tmp_path / "attendee")


def test_a_sweep_cache_miss_after_a_run_ahead_says_what_differs(tmp_path):
    """Issue 35: a sweep pack whose keys match nothing here reported "2 copied"; 04 retrained everything, silently."""
    from helpers.sweep import RUN_AHEAD_NOTE, _miss_note

    cache = tmp_path / "04_sweep"
    cache.mkdir()
    theirs = {"recipe": {"beta": 0.3, "max_steps": 40}, "model": "toy", "measure": {"reward": "toy_reward"}, "v": 6}
    (cache / "aaaa.json").write_text(json.dumps({"kl": 1.0, "settings": theirs}))
    ours = {**theirs, "recipe": {"beta": 0.3, "max_steps": 40}, "measure": {"reward": None}}
    assert _miss_note(cache, 2, [ours]) is None, "no run-ahead fetched here: a plain miss is no news"
    (cache / RUN_AHEAD_NOTE).write_text(json.dumps({"source": "teacher/pack", "files": ["aaaa.json"]}))
    note = _miss_note(cache, 2, [ours])
    assert note.startswith("NOTE: 1 of 2 runs are in the run-ahead from teacher/pack; the other 1 train now")
    assert "measure.reward None here, 'toy_reward' there" in note
    assert _miss_note(cache, 2, []) is None


def test_a_truncated_metrics_json_and_an_adapterless_save_are_named(tmp_path, tiny_model_dir):
    """Issue 35: a truncated metrics.json gave a bare JSONDecodeError; save_adapter on a model without LoRA wrote the
    full model into adapter/."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.course.export import trained_adapter
    from helpers.infra.files import CorruptFileError
    from helpers.recipe import save_adapter

    t = _train_dir(tmp_path / "t")
    (t / "metrics.json").write_text('{"recipe": {')
    with pytest.raises(CorruptFileError, match=f"notebook 03's metrics {t / 'metrics.json'} is not valid JSON"):
        trained_adapter(t)
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="LlamaForCausalLM without a LoRA adapter"):
        save_adapter(model, tok, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_banner_says_dpo_quick_does_not_shrink_an_offline_run(monkeypatch):
    """Issue 35: DPO_QUICK=1 offline made 03's banner say the run is shrunk while the offline recipe trains in full."""
    from dataclasses import replace

    from helpers.infra.runtime import banner, detect

    monkeypatch.setenv("DPO_QUICK", "1")
    rt = detect(check_hub=False)
    offline, online = banner(replace(rt, hub=False, mode="offline")), banner(replace(rt, hub=True, mode="online"))
    assert "without the hub the toy world's own settings run unshrunk" in offline and "are shrunk" not in offline
    assert "are shrunk to a smoke test" in online
