"""Where are we running? Colab or not, GPU and its precision, Unsloth, hub reachability -> offline/online mode.

Every notebook prints ``banner()`` first. ``hub_reachable()`` asks the hub the libraries will use (``HF_ENDPOINT``:
a mirror or the course's local hub, else the public hub) with one cheap HTTP call, honours ``HF_HUB_OFFLINE``, and
never blocks for more than its timeout (DNS included), so the offline default kicks in within seconds without network.
``quick()`` says whether ``DPO_QUICK=1`` asks the notebooks to run shrunk (``make run-online`` in CI).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass

from helpers.infra.settings import setting

__all__ = ["Runtime", "detect", "hub_endpoint", "hub_problem", "hub_reachable", "require_hub", "offline_forced",
           "quick", "precision_flags", "banner", "HubUnavailableError"]

DEFAULT_ENDPOINT = "https://huggingface.co"  # huggingface_hub's default; HF_ENDPOINT overrides it
# the cheap call that says "a hub answers here": SmolLM2's revision info (olah answers GET / with 500, so not "/")
PROBE_PATH = "/api/models/HuggingFaceTB/SmolLM2-135M-Instruct/revision/main"
_TRUE = {"1", "true", "yes", "on"}  # huggingface_hub's reading (case-insensitive); anything else is "not offline"


class HubUnavailableError(RuntimeError):
    """The Hugging Face hub cannot be used now (offline mode or unreachable)."""


def offline_forced() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``HF_DATASETS_OFFLINE``/``TRANSFORMERS_OFFLINE``) asks for offline mode."""
    return any(
        os.environ.get(k, "").strip().lower() in _TRUE
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def quick() -> bool:
    """``DPO_QUICK=1``: the notebooks shrink steps, rows, prompts and generated tokens (a smoke test of the code).
    A value that is not a boolean (``ture``, ``2``) is an error naming it (``helpers.infra.settings``)."""
    return setting("DPO_QUICK", False)


def hub_endpoint() -> str:
    """The hub the libraries talk to: ``HF_ENDPOINT`` (a mirror, a local hub), else the public hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")


@functools.lru_cache(maxsize=8)
def _probe(endpoint: str, timeout: float) -> str | None:
    """``None`` when an HTTP server at ``endpoint`` answers ``PROBE_PATH`` within ``timeout`` with a status below
    500 (401/404 still mean a hub is there), else why not (one line)."""
    import urllib.error
    import urllib.request

    result: list[str | None] = []

    def attempt() -> None:
        req = urllib.request.Request(endpoint + PROBE_PATH, method="GET", headers={"User-Agent": "dpo-course"})
        try:
            with urllib.request.urlopen(req, timeout=timeout):
                result.append(None)
        except urllib.error.HTTPError as e:
            result.append(None if e.code < 500 else f"{endpoint} answered HTTP {e.code}")
        except (urllib.error.URLError, OSError, ValueError) as e:
            why = getattr(e, "reason", e)
            result.append(f"{endpoint} is not reachable ({why})")

    t = threading.Thread(target=attempt, daemon=True)  # daemon: a hung DNS lookup cannot keep us waiting
    t.start()
    t.join(timeout + 0.5)
    return result[0] if result else f"{endpoint} did not answer within {timeout:g} s (no network?)"


def probe_timeout() -> float:
    """Seconds the hub probe waits: ``DPO_HUB_TIMEOUT`` (a slow network, a loaded machine), else 2."""
    value = setting("DPO_HUB_TIMEOUT", 2.0)  # finite: "inf" fails here, not in every banner cell
    if not value > 0:
        raise ValueError(f"DPO_HUB_TIMEOUT must be a number of seconds > 0, got {value!r}")
    return value


def hub_problem(timeout: float | None = None) -> str | None:
    """Why the hub cannot be used now (``None``: it can): offline forced, or the endpoint's probe failed.
    ``timeout=None``: ``probe_timeout()``."""
    timeout = probe_timeout() if timeout is None else timeout
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if offline_forced():
        return "HF_HUB_OFFLINE is set"
    return _probe(hub_endpoint(), float(timeout))


def hub_reachable(timeout: float | None = None) -> bool:
    """Does the configured hub (``hub_endpoint()``) answer within ``timeout`` seconds? False at once when offline
    is forced. The answer is cached per endpoint for the process (``_probe.cache_clear()`` forgets it)."""
    return hub_problem(timeout) is None


def require_hub(what: str, timeout: float | None = None) -> None:
    """Raise ``HubUnavailableError`` naming ``what`` unless the hub is usable."""
    problem = hub_problem(timeout)
    if problem == "HF_HUB_OFFLINE is set":
        raise HubUnavailableError(f"{what}: HF_HUB_OFFLINE is set, so the hub is not used (offline mode)")
    if problem is not None:
        raise HubUnavailableError(f"{what}: {problem}")


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


def detect(*, check_hub: bool = True, timeout: float | None = None) -> Runtime:
    """Inspect this machine. ``check_hub=False`` skips the network probe (mode then follows HF_HUB_OFFLINE only)."""
    import torch

    from helpers.infra.colab import on_colab as _on_colab

    on_colab = _on_colab()
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


def banner(rt: Runtime | None = None, *, model: str | None = None, offline_model: str | None = None) -> str:
    """A one-screen summary of the runtime; notebooks print it first. ``model``: which model(s) the notebook runs;
    ``offline_model``: what runs instead when the hub is not reachable (None: ``model`` in both modes)."""
    rt = rt or detect()
    if offline_model is not None and not rt.hub:
        model = offline_model
    flags = precision_flags(rt)
    prec = "bf16" if flags["bf16"] else "fp16" if flags["fp16"] else "fp32 (CPU)"
    if rt.device == "cpu" and "unsloth" in sys.modules:  # its import printed "bfloat16 = True/False" above
        prec += "; Unsloth's \"bfloat16 = ...\" above is what this CPU supports, not what trains"
    gpu = f"{rt.gpu_name} (compute capability {rt.compute_capability[0]}.{rt.compute_capability[1]})" \
        if rt.gpu_name else "none: running on CPU"
    why = f" ({hub_endpoint()})" if rt.hub else f" ({hub_problem() or 'hub not checked'})"
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
    if rt.hub and setting("DPO_HUB_NOTE", ""):  # set by `make run-online` when it serves its own local hub
        lines.append(f" hub        : {setting('DPO_HUB_NOTE', '')}")
    if quick() and rt.hub:
        lines.append(" DPO_QUICK  : on: steps, rows, prompts and generated tokens are shrunk to a smoke test (CI);")
        lines.append("              the numbers below show that the code runs, not what DPO does")
    elif quick():  # the shrunk sizes are the online knobs; offline the toy world's measured settings run in full
        lines.append(" DPO_QUICK  : on, but without the hub the toy world's own settings run unshrunk")
    lines.append("=" * 64)
    return "\n".join(lines)
