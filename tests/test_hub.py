"""The online code path against the local hub (helpers.course.hub): it serves what the notebooks load, the mode follows
HF_ENDPOINT, and every hub failure is a clear error or the documented offline fallback, with nothing half-written
reused afterwards. Failures are injected by a proxy in front of the hub (tests/hubproxy.py); clients run in
subprocesses because huggingface_hub and datasets read HF_ENDPOINT when they are imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.course.hub import DATASET_REPO, JUDGE_REPO, MODEL_REPO, SHARED_HH, LocalHub, client_env, free_port
from helpers.infra import runtime
from tests.hubproxy import FaultProxy

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not SHARED_HH.exists(), reason="needs ../shared/data/hh-rlhf (the CI layout)")
_OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "DPO_HH_SOURCE")


@pytest.fixture(scope="module")
def hub():
    with LocalHub() as h:
        yield h


def client(code: str, endpoint: str, hf_home: Path, timeout: int = 240) -> dict:
    """Run ``code`` in a fresh interpreter pointed at ``endpoint``; it sets ``result`` (a dict), returned here."""
    env = {k: v for k, v in os.environ.items() if k not in _OFFLINE}
    env.update(client_env(endpoint, hf_home))
    wrapped = ("import json\nresult = {}\ntry:\n" + "".join(f"    {line}\n" for line in code.splitlines())
               + "except Exception as e:\n    result['error'] = type(e).__name__\n    result['message'] = str(e)\n"
               "print('RESULT ' + json.dumps(result, default=str))\n")
    out = subprocess.run([sys.executable, "-c", wrapped], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, f"client printed no result (rc {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return json.loads(line[len("RESULT "):])


LOAD_MODEL = f"""
from helpers.infra.hubio import resolve_source
path, desc = resolve_source({MODEL_REPO!r})
result['desc'] = desc
from pathlib import Path
result['weights_bytes'] = (Path(path) / 'model.safetensors').stat().st_size
"""

LOAD_DATA = f"""
from helpers.worlds.splits import load_hh
result['train'] = len(load_hh({DATASET_REPO!r}, split='train'))
result['test'] = len(load_hh({DATASET_REPO!r}, split='test'))
"""


LOAD_JUDGE = f"""
from helpers.judge import load_judge, score
j = load_judge({JUDGE_REPO!r}, verbose=False)
result['random'] = j.random_weights
result['n'] = len(score(j, [[{{'role': 'user', 'content': 'Hi'}}]], ['Hello.'], progress=False)['scores'])
"""


def served_weights(hub) -> int:
    return (hub.root / "mirrors" / "models" / MODEL_REPO / "model.safetensors").stat().st_size


def test_the_local_hub_serves_the_model_the_tokenizer_and_the_dataset(hub, tmp_path):
    r = client(LOAD_MODEL + LOAD_DATA + f"""
from helpers.models import load_model, describe_model
from helpers.infra.runtime import banner, detect
m, tok = load_model({MODEL_REPO!r}, use_unsloth=False, lora=None)
result['info'] = describe_model(m, tok, {MODEL_REPO!r})
result['again'] = resolve_source({MODEL_REPO!r})[1]
result['banner'] = banner(detect())
""", hub.endpoint, tmp_path / "hf")
    assert "error" not in r, r
    assert r["desc"].startswith(f"hub: {MODEL_REPO} ({hub.endpoint})"), r["desc"]
    assert r["weights_bytes"] == served_weights(hub)
    assert r["again"].startswith("Hugging Face cache"), "the second load comes from the HF cache the first filled"
    assert r["info"]["model_parameters"] == 134_515_008 and r["info"]["tokenizer_vocab"] == 49152
    assert (r["train"], r["test"]) == (1000, 200)
    assert f"mode       : online ({hub.endpoint})" in r["banner"]


def test_hub_reachable_follows_hf_endpoint_and_offline_wins(hub, monkeypatch):
    for k in _OFFLINE:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DPO_HUB_TIMEOUT", "15")  # a loaded machine: the 2 s default answered late once in CI
    runtime._probe.cache_clear()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    assert runtime.hub_reachable() and runtime.hub_endpoint() == hub.endpoint
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    assert not runtime.hub_reachable(timeout=1.0)
    assert closed in runtime.hub_problem(timeout=1.0)
    with FaultProxy(hub.endpoint) as proxy:
        proxy.on(r"^/api/models/", ("status", 500))
        monkeypatch.setenv("HF_ENDPOINT", proxy.endpoint)
        assert runtime.hub_problem() == f"{proxy.endpoint} answered HTTP 500"
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert runtime.hub_problem() == "HF_HUB_OFFLINE is set"
    runtime._probe.cache_clear()


def test_hub_stopped_before_the_run_falls_back_to_the_offline_default_and_says_so(monkeypatch, capsys):
    from helpers.infra.hubio import resolve_source
    from helpers.worlds.splits import resolve_hh

    for k in _OFFLINE:
        monkeypatch.delenv(k, raising=False)
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    runtime._probe.cache_clear()
    try:
        splits = resolve_hh()
        assert splits.source == "toy" and closed in splits.note
        assert "Falling back to the offline default" in capsys.readouterr().out
        path, desc = resolve_source(MODEL_REPO)
        assert desc.startswith("packaged copy") and closed in desc
        with pytest.raises(runtime.HubUnavailableError, match=closed.replace(".", r"\.")):
            resolve_source("someone/other-model")
    finally:
        runtime._probe.cache_clear()


def test_server_gone_midway_is_a_clear_error_and_the_partial_download_is_not_reused(hub, tmp_path):
    home = tmp_path / "hf"
    with FaultProxy(hub.endpoint) as proxy:
        proxy.on(r"/resolve/[^/]+/model\.safetensors", ("cut", 5_000_000))
        r = client(LOAD_MODEL, proxy.endpoint, home)
        assert r.get("error") == "HubDownloadError", (r, proxy.hits)
        assert proxy.endpoint in r["message"] and "rerun" in r["message"] and "HF_HUB_OFFLINE=1" in r["message"]
        assert any("cut after" in h for h in proxy.hits)
        proxy.reset()
        again = client(LOAD_MODEL, proxy.endpoint, home)
    assert "error" not in again, again
    assert again["desc"].startswith("hub:"), "an unfinished snapshot must not pass as the HF cache"
    assert again["weights_bytes"] == served_weights(hub)


def test_a_missing_model_file_is_a_clear_error(hub, tmp_path):
    with FaultProxy(hub.endpoint) as proxy:
        proxy.on(r"/resolve/[^/]+/model\.safetensors", ("status", 404))
        r = client(LOAD_MODEL, proxy.endpoint, tmp_path / "hf")
    assert r.get("error") == "HubDownloadError", r
    assert "lacks a file" in r["message"] and proxy.endpoint in r["message"], r["message"]


def test_a_missing_dataset_is_a_clear_error_not_a_silent_fallback(hub, tmp_path):
    with FaultProxy(hub.endpoint) as proxy:
        proxy.on(r"^/(api/)?datasets/Anthropic/hh-rlhf", ("status", 404))
        r = client("from helpers.worlds.splits import resolve_hh\nresolve_hh()", proxy.endpoint, tmp_path / "hf")
    assert r.get("error") == "HubDownloadError", r
    assert DATASET_REPO in r["message"] and proxy.endpoint in r["message"], r["message"]


def test_a_server_error_on_a_split_then_a_clean_rerun_reads_every_row(hub, tmp_path):
    home = tmp_path / "hf"
    with FaultProxy(hub.endpoint) as proxy:
        proxy.on(r"helpful-base/test\.jsonl\.gz", ("status", 500))
        r = client(LOAD_DATA, proxy.endpoint, home)
        assert r.get("error") == "HubDownloadError", (r, proxy.hits)
        assert "HTTP 500" in r["message"] or "500" in r["message"], r["message"]
        proxy.reset()
        again = client(LOAD_DATA, proxy.endpoint, home)
    assert (again.get("train"), again.get("test")) == (1000, 200), again


def test_saved_splits_are_all_or_nothing(tmp_path, monkeypatch):
    """A save that dies midway (here: on the test split) leaves no splits folder, so nothing partial is reused."""
    import datasets

    from helpers.worlds.splits import TOY, load_or_build_splits, resolve_hh, save_splits

    splits = resolve_hh(TOY)
    real = datasets.Dataset.save_to_disk

    def dies_on_test(self, path, *a, **kw):
        if Path(path).name == "test":
            raise OSError(28, "No space left on device")
        return real(self, path, *a, **kw)

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", dies_on_test)
    with pytest.raises(OSError, match="No space"):
        save_splits(splits, tmp_path / "02_hh")
    assert not (tmp_path / "02_hh").exists()
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", real)
    loaded = load_or_build_splits(tmp_path / "02_hh", source=TOY)
    assert len(loaded["train"]) == len(splits.data["train"]) and len(loaded["test"]) == len(splits.data["test"])


NB02 = ROOT / "notebooks" / "02_hh_rlhf_formatting.ipynb"


def _online_suite(tmp_path, monkeypatch, endpoint: str | None):
    from helpers.course import suite

    for k in _OFFLINE:
        monkeypatch.delenv(k, raising=False)
    if endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    else:
        monkeypatch.delenv("HF_ENDPOINT", raising=False)
    rc = suite.main(["--online", "--notebooks", str(NB02), "--runs-dir", str(tmp_path / "runs")])
    summary = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    assert os.environ.get("HF_ENDPOINT") == endpoint  # the runner restores the environment it changed
    return rc, summary


def test_run_online_uses_the_hub_hf_endpoint_names_and_its_data(tmp_path, monkeypatch):
    """Another hub-compatible server (here a second local hub with other rows): the runner starts none of its own,
    notebook 02 reads that server's rows, and its metrics name the server, the dataset and the row counts."""
    rows = [line for line in SHARED_HH.read_text().splitlines() if line.strip()][:300]
    (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n")
    with LocalHub(tmp_path / "other-hub", rows_file=tmp_path / "rows.jsonl") as other:
        rc, summary = _online_suite(tmp_path, monkeypatch, other.endpoint)
    assert rc == 0, summary["notebooks"]
    assert summary["mode"] == "online" and summary["hub"]["endpoint"] == other.endpoint
    assert summary["hub"]["started_by_runner"] is False
    m = summary["02_hh_rlhf_formatting"]
    assert m["data"]["source"] == DATASET_REPO and m["data"]["rows_read"] == {"train": 100, "test": 200}
    assert other.endpoint in m["data"]["note"] and other.endpoint in m["model_source"]
    assert not list((tmp_path / "runs").glob("hf-home-*")), "the run's fresh HF_HOME is removed afterwards"


def test_run_online_fails_a_notebook_that_fell_back_offline(tmp_path, monkeypatch):
    """The hub stopped before the run: notebook 02 falls back to the toy world (said in its output), and the online
    runner reports that notebook as failed instead of passing an offline run off as online."""
    closed = f"http://127.0.0.1:{free_port()}"
    rc, summary = _online_suite(tmp_path, monkeypatch, closed)
    r = summary["notebooks"]["02_hh_rlhf_formatting"]
    assert rc == 1 and r["ok"] is False and "fell back to the offline default" in r["error"], r
    executed = (tmp_path / "runs" / "latest" / "02_hh_rlhf_formatting.ipynb").read_text()
    assert "Falling back to the offline default" in executed and closed in executed


def test_the_local_hub_serves_a_random_stand_in_of_the_default_judge(hub, tmp_path):
    from helpers.judge import JUDGE_MODEL

    assert JUDGE_REPO == JUDGE_MODEL
    assert client(LOAD_JUDGE, hub.endpoint, tmp_path / "hf") == {"random": True, "n": 1}


def test_an_unknown_judge_id_is_a_clear_error(hub, tmp_path):
    r = client("from helpers.judge import load_judge\nload_judge('nobody/no-such-reward-model', verbose=False)",
               hub.endpoint, tmp_path / "hf")
    assert r.get("error") == "HubDownloadError", r
    assert "nobody/no-such-reward-model" in r["message"] and hub.endpoint in r["message"], r["message"]


def test_a_judge_download_that_breaks_midway_is_a_clear_error_and_a_rerun_loads_it(hub, tmp_path):
    home = tmp_path / "hf"
    with FaultProxy(hub.endpoint) as proxy:
        proxy.on(r"/resolve/[^/]+/model\.safetensors", ("cut", 20_000))
        r = client(LOAD_JUDGE, proxy.endpoint, home)
        assert r.get("error") == "HubDownloadError", (r, proxy.hits)
        assert "rerun" in r["message"], r["message"]
        proxy.reset()
        again = client(LOAD_JUDGE, proxy.endpoint, home)
    assert again == {"random": True, "n": 1}, again


def test_run_ahead_from_the_hub_gives_notebook_04_its_sweep_and_05_its_adapter(tmp_path):
    """The workshop's run-ahead (helpers.course.runahead): an instructor's packed folder, served by the local hub as
    a model repository, gives notebook 04 its sweep cache (fetch_sweep) and notebook 05 its adapter
    (trained_adapter, notebook 05's TRAIN_DIR); a repository that does not exist is a clear error."""
    import torch
    from safetensors.torch import save_file

    from helpers.course.runahead import SWEEP_FOLDER, fetch_sweep, pack_run_ahead
    from helpers.recipe import DPORecipe

    train, sweep = tmp_path / "03_dpo", tmp_path / "04_sweep"
    (train / "adapter").mkdir(parents=True)
    (train / "adapter" / "adapter_config.json").write_text('{"r": 16}')
    save_file({"lora_A.weight": torch.ones(2, 2)}, str(train / "adapter" / "adapter_model.safetensors"))
    (train / "metrics.json").write_text(json.dumps({"steps": 3, "recipe": DPORecipe().to_dict()}))
    sweep.mkdir()
    (sweep / "0123abcd.json").write_text('{"beta": 1.0}')
    (sweep / "reference-4567.json").write_text('{"kl": 0.0}')
    packed = pack_run_ahead(tmp_path / "run-ahead", train_dir=train, sweep_dir=sweep)
    assert sorted(p.name for p in packed.iterdir()) == [".dpo-course.json", SWEEP_FOLDER, "adapter_config.json",
                                                        "adapter_model.safetensors", "metrics.json", "run-ahead.json"]
    assert fetch_sweep(packed, tmp_path / "local") == 2 and fetch_sweep(packed, tmp_path / "local") == 0  # kept
    with pytest.raises(ValueError, match="sweep_dir"):
        pack_run_ahead(tmp_path / "x", sweep_dir=tmp_path / "empty")
    code = f"""
from helpers.course.runahead import fetch_sweep
from helpers.course.export import trained_adapter
result['copied'] = fetch_sweep('teacher/dpo-workshop', {str(tmp_path / 'attendee')!r})
adapter, metrics = trained_adapter('teacher/dpo-workshop')
result['metrics'] = metrics
result['adapter'] = (adapter / 'adapter_config.json').read_text()
try:
    fetch_sweep('teacher/no-such-repo', {str(tmp_path / 'other')!r})
except Exception as e:
    result['missing'] = type(e).__name__ + ': ' + str(e)
"""
    with LocalHub(extra_models={"teacher/dpo-workshop": packed}) as h:
        r = client(code, h.endpoint, tmp_path / "hf")
    assert "error" not in r, r
    assert r["copied"] == 2 and r["metrics"]["steps"] == 3 and r["adapter"] == '{"r": 16}'
    assert sorted(p.name for p in (tmp_path / "attendee").iterdir()) == [".run-ahead", "0123abcd.json",
                                                                         "reference-4567.json"]
    assert r["missing"].startswith("HubDownloadError") and "teacher/no-such-repo" in r["missing"], r
