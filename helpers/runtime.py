"""Where are we running? Colab or not, GPU and its precision, Unsloth, hub reachability -> offline/online mode.

Every notebook prints ``banner()`` first. ``hub_reachable()`` honours ``HF_HUB_OFFLINE`` and never blocks for more
than its timeout (DNS included), so the offline default kicks in within seconds when there is no network.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
import sys
import threading
from dataclasses import dataclass

__all__ = ["Runtime", "detect", "hub_reachable", "offline_forced", "precision_flags", "banner", "HubUnavailableError"]

HUB_HOST = "huggingface.co"
_TRUE = {"1", "true", "yes", "on"}  # huggingface_hub's reading (case-insensitive); anything else is "not offline"


class HubUnavailableError(RuntimeError):
    """The Hugging Face hub cannot be used now (offline mode or unreachable)."""


def offline_forced() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``HF_DATASETS_OFFLINE``/``TRANSFORMERS_OFFLINE``) asks for offline mode."""
    return any(
        os.environ.get(k, "").strip().lower() in _TRUE
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@functools.lru_cache(maxsize=4)
def _probe(host: str, timeout: float) -> bool:
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=attempt, daemon=True)  # daemon: a hung DNS lookup cannot keep us waiting
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def hub_reachable(timeout: float = 2.0) -> bool:
    """Can we open a TCP connection to the hub within ``timeout`` seconds? False at once when offline is forced."""
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if offline_forced():
        return False
    return _probe(HUB_HOST, float(timeout))


def require_hub(what: str, timeout: float = 2.0) -> None:
    """Raise ``HubUnavailableError`` naming ``what`` unless the hub is usable."""
    if offline_forced():
        raise HubUnavailableError(f"{what}: HF_HUB_OFFLINE is set, so the hub is not used (offline mode)")
    if not hub_reachable(timeout):
        raise HubUnavailableError(f"{what}: {HUB_HOST} is not reachable within {timeout:.0f} s (no network?)")


@dataclass(frozen=True)
class Runtime:
    on_colab: bool
    device: str  # "cuda" or "cpu"
    gpu_name: str | None
    compute_capability: tuple[int, int] | None
    bf16: bool  # the GPU supports bf16 (compute capability >= 8.0)
    unsloth_available: bool
    hub: bool
    mode: str  # "online" or "offline"

    @property
    def fp16(self) -> bool:
        """Mixed precision in fp16: on a GPU without bf16 (e.g. the T4)."""
        return self.device == "cuda" and not self.bf16


def detect(*, check_hub: bool = True, timeout: float = 2.0) -> Runtime:
    """Inspect this machine. ``check_hub=False`` skips the network probe (mode then follows HF_HUB_OFFLINE only)."""
    import torch

    on_colab = "google.colab" in sys.modules or importlib.util.find_spec("google.colab") is not None
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else None
    cap = tuple(torch.cuda.get_device_capability(0)) if cuda else None
    bf16 = bool(cuda and cap is not None and cap >= (8, 0))
    hub = hub_reachable(timeout) if check_hub else not offline_forced()
    return Runtime(
        on_colab=on_colab,
        device="cuda" if cuda else "cpu",
        gpu_name=name,
        compute_capability=cap,  # type: ignore[arg-type]
        bf16=bf16,
        unsloth_available=importlib.util.find_spec("unsloth") is not None,
        hub=hub,
        mode="online" if hub else "offline",
    )


def precision_flags(rt: Runtime) -> dict[str, bool]:
    """``fp16``/``bf16`` for ``DPOConfig``: bf16 on Ampere+, fp16 on older GPUs (T4), neither on CPU (fp32).

    DPOConfig defaults to bf16=True, which raises on a CPU, so both flags are always given explicitly.
    """
    if rt.device != "cuda":
        return {"fp16": False, "bf16": False}
    return {"fp16": not rt.bf16, "bf16": rt.bf16}


def banner(rt: Runtime | None = None, *, model: str | None = None) -> str:
    """A one-screen summary of the runtime; notebooks print it first. ``model``: which model(s) the notebook runs."""
    rt = rt or detect()
    flags = precision_flags(rt)
    prec = "bf16" if flags["bf16"] else "fp16" if flags["fp16"] else "fp32 (CPU)"
    gpu = f"{rt.gpu_name} (compute capability {rt.compute_capability[0]}.{rt.compute_capability[1]})" \
        if rt.gpu_name else "none: running on CPU"
    why = "" if rt.hub else (" (HF_HUB_OFFLINE is set)" if offline_forced() else f" ({HUB_HOST} unreachable)")
    lines = [
        "=" * 64,
        f" where      : {'Google Colab' if rt.on_colab else 'local machine'}",
        f" GPU        : {gpu}",
        f" precision  : {prec}",
        f" Unsloth    : {'available' if rt.unsloth_available else 'not installed (plain transformers + peft)'}",
        f" mode       : {rt.mode}{why}",
    ]
    if model:
        lines.append(f" model      : {model}")
    lines.append("=" * 64)
    return "\n".join(lines)
