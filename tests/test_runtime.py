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
