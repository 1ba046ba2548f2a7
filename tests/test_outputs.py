"""helpers.infra.outputs: checkpoints that are complete or absent, resume, a recipe change moves the old run aside."""

from __future__ import annotations

import json
import os

import pytest

from helpers.infra import lock


# ----------------------------------------------------------------------------------------------- checkpoints
def _recipe(out, **kw):
    from helpers.recipe import OFFLINE, DPORecipe

    return DPORecipe(**{**OFFLINE, "output_dir": str(out), "backend": "transformers", "max_steps": 4,
                        "save_steps": 2, "eval_steps": 1000, "logging_steps": 1, "batch_size": 4, **kw})


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory, toy_sft_dir):
    from helpers.recipe import run_recipe

    out = tmp_path_factory.mktemp("ckpt") / "run"
    run_recipe(_recipe(out), verbose=False)
    return out


def test_checkpoints_are_written_through_a_staging_folder(four_steps):
    assert sorted(p.name for p in four_steps.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (four_steps / ".staging").exists()


def test_incomplete_or_truncated_checkpoints_are_skipped_with_a_note(four_steps, tmp_path, capsys):
    """Defect 5: a checkpoint without trainer_state.json blocked every rerun; a truncated safetensors file raised
    an error that named no file."""
    import shutil

    from helpers.infra.outputs import last_checkpoint

    out = tmp_path / "run"
    shutil.copytree(four_steps, out)
    (out / "checkpoint-4" / "trainer_state.json").unlink()  # died while saving
    assert last_checkpoint(out) == str(out / "checkpoint-2")
    assert "checkpoint-4 is incomplete (trainer_state.json missing)" in capsys.readouterr().out
    assert (out / "incomplete-checkpoint-4").is_dir(), "kept, not deleted"
    w = out / "checkpoint-2" / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])  # disk full
    assert last_checkpoint(out) is None
    assert "adapter_model.safetensors unreadable" in capsys.readouterr().out


@pytest.mark.parametrize("victim", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "adapter_config.json"])
def test_a_checkpoint_with_any_unreadable_state_file_is_set_aside_and_the_run_resumes_from_the_one_before(
        four_steps, tmp_path, capsys, victim):
    """Issue 35: a truncated optimizer.pt (a disconnect mid-save) passed the check, then every rerun died in torch.load
    with "OSError: [Errno 22] Invalid argument", naming no file."""
    import shutil

    from helpers.infra.outputs import last_checkpoint
    from helpers.recipe import run_recipe

    out = tmp_path / "run"
    shutil.copytree(four_steps, out)
    f = out / "checkpoint-4" / victim
    assert f.exists(), sorted(p.name for p in f.parent.iterdir())
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert last_checkpoint(out) == str(out / "checkpoint-2")
    assert f"checkpoint-4 is incomplete ({victim} unreadable" in capsys.readouterr().out
    assert (out / "incomplete-checkpoint-4" / victim).exists(), "kept, not deleted"
    if victim == "optimizer.pt":  # and training goes on from checkpoint-2 to the end
        run_recipe(_recipe(out), verbose=False)
        assert "resuming from" in capsys.readouterr().out
        assert json.loads((out / "metrics.json").read_text())["global_step"] == 4


def test_max_steps_below_an_existing_checkpoint_is_refused(four_steps, tmp_path):
    """Defect 4: --max-steps 4 over checkpoint-8 ran step 9 and wrote metrics saying max_steps 4."""
    import shutil

    from helpers.recipe import run_recipe

    out = tmp_path / "run"
    shutil.copytree(four_steps, out)
    with pytest.raises(ValueError, match="max_steps=3 but .*checkpoint-4 is already at step 4"):
        run_recipe(_recipe(out, max_steps=3), verbose=False)


def test_a_resume_without_optimizer_state_says_so(four_steps, tmp_path, capsys):
    import shutil

    from helpers.recipe import run_recipe

    out = tmp_path / "run"
    shutil.copytree(four_steps, out)
    shutil.rmtree(out / "checkpoint-4")
    (out / "checkpoint-2" / "optimizer.pt").unlink()
    run_recipe(_recipe(out), verbose=False)
    assert "checkpoint-2 has no optimizer.pt: resuming with a fresh Adam state" in capsys.readouterr().out


def test_a_corrupted_recipe_json_moves_the_old_run_aside(four_steps, tmp_path, capsys):
    import shutil

    from helpers.recipe import prepare_output_dir

    out = tmp_path / "run"
    shutil.copytree(four_steps, out)
    (out / "recipe.json").write_text("{garbage")
    prepare_output_dir(_recipe(out))
    assert "unreadable recipe.json" in capsys.readouterr().out
    assert len(list(tmp_path.glob("run.old-*"))) == 1 and not list(out.glob("checkpoint-*"))


def test_a_save_that_dies_midway_leaves_no_checkpoint_behind(tmp_path, toy_sft_dir):
    """Disk full while saving: the half-written checkpoint stays in the staging folder, never as checkpoint-N."""
    from helpers.recipe import load_data, load_lora_model, make_trainer, resolve_model

    recipe = _recipe(tmp_path / "run")
    model, tok = load_lora_model(recipe, resolve_model(recipe))
    splits = load_data(recipe)
    trainer = make_trainer(model, tok, {"train": splits["train"].select(range(8)), "test": None}, recipe,
                           eval_strategy="no")

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    trainer._save_optimizer_and_scheduler = disk_full  # the adapter is written, then the optimizer save fails
    trainer.state.global_step = 2
    with pytest.raises(OSError, match="No space left"):
        trainer._save_checkpoint(trainer.model, trial=None)
    assert not (tmp_path / "run" / "checkpoint-2").exists()
    assert (tmp_path / "run" / ".staging" / "checkpoint-2" / "adapter_model.safetensors").exists()


def test_only_rank_0_of_a_distributed_run_takes_the_lock(tmp_path, monkeypatch):
    """Under accelerate launch / torchrun every rank runs the recipe on the same directory: one lock, rank 0's."""
    from helpers.recipe import prepare_output_dir

    out = tmp_path / "run"
    monkeypatch.setenv("RANK", "1")
    prepare_output_dir(_recipe(out))
    assert not lock.lock_path(out).exists()
    monkeypatch.setenv("RANK", "0")
    prepare_output_dir(_recipe(out))
    assert json.loads(lock.lock_path(out).read_text())["pid"] == os.getpid()
    lock.release(out)


def test_rerunning_a_finished_run_trains_no_further_step(four_steps, tmp_path):
    """A rerun of a run that already reached max_steps (notebook 03 executed twice, nbmake in one checkout) used to
    train one step more (checkpoint-5 of a max_steps=4 run; the third rerun was then refused). It must end where the
    first run ended: the same step, the same adapter weights."""
    import shutil

    from safetensors.torch import load_file

    from helpers.recipe import run_recipe

    out = tmp_path / "run"
    shutil.copytree(four_steps, out)
    res = run_recipe(_recipe(out), verbose=False)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert res["global_step"] == 4
    first = load_file(four_steps / "adapter" / "adapter_model.safetensors")
    again = load_file(out / "adapter" / "adapter_model.safetensors")
    assert first.keys() == again.keys() and all((first[k] == again[k]).all() for k in first)
    run_recipe(_recipe(out), verbose=False)  # and a third time: neither refused nor a step further
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 4


def test_files_are_written_atomically_and_a_broken_one_is_named(tmp_path):
    """Issue 35 item 1: one helper writes every file (temporary file beside it, then a rename), and reading a broken
    file names it instead of raising a bare JSONDecodeError."""
    from helpers.infra.files import CorruptFileError, read_json, write_json, write_text

    p = write_json(tmp_path / "a" / "m.json", {"x": 1})
    assert read_json(p) == {"x": 1} and [f.name for f in p.parent.iterdir()] == ["m.json"]  # no temporary left
    p.write_text('{"x": 1')  # a write cut off
    with pytest.raises(CorruptFileError, match=r"sweep cache entry .*m\.json is not valid JSON"):
        read_json(p, what="sweep cache entry")
    with pytest.raises(CorruptFileError, match="does not exist"):
        read_json(tmp_path / "none.json")
    with pytest.raises(ValueError, match="text"):
        write_text(tmp_path / "t", b"bytes")


def test_a_broken_sweep_cache_entry_is_set_aside_and_measured_again(tmp_path, capsys):
    from helpers.sweep import _cached

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"beta": 1}')
    bad.write_text('{"beta": ')
    assert _cached(good) == {"beta": 1} and _cached(tmp_path / "absent.json") is None
    assert _cached(bad) is None and not bad.exists() and (tmp_path / "bad.json.broken").read_text() == '{"beta": '
    assert "set aside as bad.json.broken" in capsys.readouterr().out
