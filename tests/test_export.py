"""Notebook 05 without notebook 03 on the same machine (helpers.course.export.trained_adapter), and notebook 03's export
section (helpers.course.export): the merged 16-bit model, the hub push with the hub mocked at huggingface_hub.HfApi."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers.course.export import push_to_hub, save_merged, trained_adapter
from helpers.evaluation import pair_logps
from helpers.infra.runtime import HubUnavailableError
from helpers.recipe import OFFLINE, DPORecipe
from helpers.worlds.splits import TOY, resolve_hh


def _online_like_recipe(model_dir: Path) -> DPORecipe:
    """Notebook 03's online recipe pointed at a local model directory (no hub in CI), a few steps only."""
    return DPORecipe(model=str(model_dir), data=TOY, backend="transformers", max_steps=3, batch_size=4, grad_accum=1,
                     max_length=OFFLINE["max_length"], max_prompt_length=OFFLINE["max_prompt_length"],
                     warmup_steps=0, eval_steps=1000, save_steps=1000, logging_steps=1,
                     learning_rate=2e-3)  # large: a visible adapter after 3 steps


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy_sft_dir):
    out = tmp_path_factory.mktemp("nb05") / "03_dpo"
    return out, trained_adapter(out, _online_like_recipe(toy_sft_dir))


def test_a_missing_adapter_is_trained_with_notebook_03s_recipe_then_reused(trained, toy_sft_dir, capsys):
    out, (adapter, metrics) = trained
    assert adapter == out / "adapter" and (adapter / "adapter_config.json").exists()
    assert metrics["global_step"] == 3 and metrics["model"] == str(toy_sft_dir)
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 3
    again = trained_adapter(out, _online_like_recipe(toy_sft_dir))  # present now: loaded, not trained
    assert again[0] == adapter and "training it now" not in capsys.readouterr().out


def test_trained_adapter_prints_the_expected_time_and_refuses_without_a_recipe(tmp_path, toy_sft_dir, capsys):
    with pytest.raises(FileNotFoundError, match="run notebook 03"):
        trained_adapter(tmp_path / "nothing")
    with pytest.raises(HubUnavailableError):  # an owner/name that is not a folder here: the hub (offline in tests)
        trained_adapter("someone/smollm2-dpo")
    from helpers.course.estimate import expected_time

    assert "CPU" in expected_time(_online_like_recipe(toy_sft_dir))


def test_a_pushed_layout_folder_is_accepted(trained, tmp_path):
    """A Drive folder or hub snapshot of what push_to_hub uploads: the adapter at the top, plus metrics.json."""
    out, (adapter, metrics) = trained
    flat = tmp_path / "pushed"
    shutil.copytree(adapter, flat)
    shutil.copy(out / "metrics.json", flat / "metrics.json")
    got, m = trained_adapter(flat)
    assert got == flat and m["global_step"] == metrics["global_step"]


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("float16", 0.02)])
def test_merged_model_reloads_with_the_log_probs_of_adapter_on_base(trained, tmp_path, toy_sft_dir, dtype, tol):
    from transformers import AutoModelForCausalLM

    from helpers.compare import load_policy

    _, (adapter, metrics) = trained
    merged_dir = save_merged(adapter, metrics["model"], tmp_path / "merged", dtype=dtype)
    assert not list(tmp_path.glob(".merged.*")), "no temporary folder left behind"
    cfg = json.loads((merged_dir / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == dtype and not (merged_dir / "adapter_config.json").exists()
    pairs = resolve_hh(TOY).data["test"].select(range(8))
    policy, tok = load_policy(adapter, metrics["model"])
    want = pair_logps(policy, tok, pairs)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    got = pair_logps(merged, tok, pairs)
    base = pair_logps(policy, tok, pairs, reference=True)
    for side in ("chosen", "rejected"):
        assert abs(got[side] - want[side]).max() < tol, (side, got[side] - want[side])
    assert max(abs(base[s] - want[s]).max() for s in ("chosen", "rejected")) > 10 * tol, "the adapter changed nothing"


def test_merged_export_never_deletes_a_folder_it_did_not_make_and_replaces_its_own(trained, tmp_path):
    """Issue 35: save_merged(out_dir=<the run's own output folder>) deleted the adapter, checkpoints and metrics."""
    out, (adapter, metrics) = trained
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match=r"not an earlier merged export.*nothing was written or deleted"):
        save_merged(adapter, metrics["model"], out, dtype="float32")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    mine = tmp_path / "merged"
    save_merged(adapter, metrics["model"], mine, dtype="float32")
    save_merged(adapter, metrics["model"], mine, dtype="float16")  # its own earlier export: replaced
    assert json.loads((mine / "config.json").read_text())["dtype"] == "float16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"], "nothing set aside is left behind"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("a learner's file")
    with pytest.raises(ValueError, match="not an earlier merged export"):
        save_merged(adapter, metrics["model"], tmp_path / "notes")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "a learner's file"


class _FakeHub:
    """Stands in for huggingface_hub.HfApi: records calls, creates nothing."""

    calls: list[tuple] = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, repo_type, private, exist_ok):
        self.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
        self.calls.append(("upload_folder", sorted(p.name for p in Path(folder_path).iterdir()), repo_id))

    def upload_file(self, path_or_fileobj, path_in_repo, repo_id, repo_type, commit_message):
        self.calls.append(("upload_file", Path(path_or_fileobj).name, path_in_repo, repo_id))


def test_push_uploads_the_adapter_and_metrics_through_huggingface_hub(trained, monkeypatch, tmp_path):
    import huggingface_hub

    out, (adapter, _) = trained
    _FakeHub.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHub)
    url = push_to_hub(adapter, "me/smollm2-dpo", token="hf_x", extra_files={"metrics.json": out / "metrics.json"})
    assert url == "https://huggingface.co/me/smollm2-dpo"
    kinds = [c[0] for c in _FakeHub.calls]
    assert kinds == ["init", "create_repo", "upload_folder", "upload_file"]
    assert _FakeHub.calls[0] == ("init", "hf_x") and _FakeHub.calls[1][3] is True  # private by default
    assert "adapter_config.json" in _FakeHub.calls[2][1] and "adapter_model.safetensors" in _FakeHub.calls[2][1]
    assert _FakeHub.calls[3][2] == "metrics.json"

    _FakeHub.calls = []
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ValueError, match="HF_TOKEN"):
        push_to_hub(adapter, "me/smollm2-dpo", token=None)
    with pytest.raises(ValueError, match="repo_id"):
        push_to_hub(adapter, "not a repo/../x", token="t")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        push_to_hub(tmp_path / "empty", "me/x", token="t")
    assert _FakeHub.calls == [], "nothing reached the hub on bad input"
