"""helpers.infra.runtime: device, precision and hub detection, fast and without a network."""

from __future__ import annotations

import sys
import time

import pytest

from helpers.infra.runtime import Runtime, banner, detect, hub_reachable, precision_flags


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


def test_the_banner_explains_unsloths_bf16_line_only_where_unsloth_printed_it(monkeypatch):
    rt = detect(check_hub=False)
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    assert "Unsloth's" not in banner(rt)
    monkeypatch.setitem(sys.modules, "unsloth", object())  # imported: it printed "no GPU found ... bfloat16 = ..."
    assert "Unsloth's" in banner(rt).split("precision")[1].splitlines()[0]


def test_unreachable_hub_answers_within_the_timeout(monkeypatch):
    from helpers.infra import runtime

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
    from helpers.infra import runtime

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


def test_detect_works_without_any_google_package(monkeypatch):
    """A fresh venv without protobuf has no ``google`` package: ``find_spec("google.colab")`` then raises
    ModuleNotFoundError (Python 3.13, the Colab-faithful check); the runtime is simply not Colab."""
    import importlib.util

    import helpers.infra.runtime as runtime
    from helpers.infra.colab import on_colab

    real = importlib.util.find_spec

    def no_google(name, *a, **kw):
        if name.startswith("google"):
            raise ModuleNotFoundError("No module named 'google'", name="google")
        return real(name, *a, **kw)

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", no_google)
    assert on_colab() is False
    assert runtime.detect(check_hub=False).on_colab is False


def test_settings_from_the_environment_name_a_bad_value(monkeypatch):
    """Issue 35 item 5: one parser; blank means the default, a bad or out-of-range value names the variable."""
    from helpers.infra.runtime import probe_timeout, quick
    from helpers.infra.settings import SETTINGS, setting

    monkeypatch.setenv("DPO_X", "")
    assert setting("DPO_X", 5) == 5 and setting("DPO_X", "d") == "d" and setting("DPO_X", True) is True
    for raw, want in (("1", True), ("Yes", True), ("y", True), ("off", False), ("0", False)):
        monkeypatch.setenv("DPO_QUICK", raw)
        assert quick() is want, raw
    for raw in ("ture", "2", "maybe"):
        monkeypatch.setenv("DPO_QUICK", raw)
        with pytest.raises(ValueError, match=f"DPO_QUICK={raw!r}"):
            quick()
    for raw in ("inf", "nan", "-1", "0", "soon"):
        monkeypatch.setenv("DPO_HUB_TIMEOUT", raw)
        with pytest.raises(ValueError, match="DPO_HUB_TIMEOUT"):
            probe_timeout()
    monkeypatch.setenv("DPO_HUB_TIMEOUT", " 7.5 ")
    assert probe_timeout() == 7.5
    monkeypatch.setenv("DPO_X", "0")
    with pytest.raises(ValueError, match=r"DPO_X='0': an integer >= 1"):
        setting("DPO_X", 3, minimum=1)
    monkeypatch.setenv("DPO_X", "1e3")
    with pytest.raises(ValueError, match="not an integer"):
        setting("DPO_X", 3)
    with pytest.raises(ValueError, match="default"):
        setting("DPO_X", [1])
    monkeypatch.setenv("DPO_CACHE_DIR", "  ")
    from helpers.infra.paths import ROOT, default_cache_dir
    assert default_cache_dir() == ROOT / ".cache"
    assert {"DPO_QUICK", "DPO_RUN_DIR", "DPO_HUB_TIMEOUT", "DPO_HH_LIMIT"} <= set(SETTINGS)


def test_every_course_variable_read_anywhere_is_listed_in_settings():
    import re
    from pathlib import Path

    from helpers.infra.settings import SETTINGS

    root = Path(__file__).resolve().parents[1]
    texts = [p.read_text() for p in (root / "helpers").rglob("*.py")] + \
        [p.read_text() for p in (root / "notebooks").glob("0*.ipynb")]
    used = set(re.findall(r"\bDPO_[A-Z0-9_]+\b", "\n".join(texts)))
    assert used <= set(SETTINGS), sorted(used - set(SETTINGS))
