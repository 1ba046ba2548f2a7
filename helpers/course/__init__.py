"""The course's machinery: what runs, checks, serves, estimates and publishes the notebooks (the top layer).

What a notebook needs of it is here, importable without loading any ML library (so ``unsloth`` can still come first):
``setup_course`` (the first cell's install on Colab, standard library only), ``banner`` and ``detect`` (what this
runtime is), ``quick`` (``DPO_QUICK``: a smoke-test size), ``persist_path`` (Google Drive on Colab), ``hub_token``,
``record_metrics`` (a notebook's figures for ``make run``'s summary); the rest (plans, reports, figures, export) is
imported on first use.

suite     the headless runner behind ``make run`` / ``make run-online``     nbexec    its notebook client
hub       the local hub on 127.0.0.1 the online track runs against       cli       ``python -m helpers.course.cli``
estimate  T4 arithmetic, GPU measurements, expected times, the pilot rule export    merged model, hub push, adapter pull
plots     training curves                                                 publish   Colab badges and install cell
gguf      llama.cpp's converter (own folder), GGUF headers, Ollama Modelfile (export.export_gguf is the pipeline)
"""

from __future__ import annotations

import importlib
from pathlib import Path

from helpers.infra.colab import hub_token, persist_path, setup_course
from helpers.infra.files import write_json
from helpers.infra.runtime import banner, detect, quick
from helpers.infra.settings import setting

# The rest of the notebooks' face, imported on first use (``from helpers.course import save_merged`` loads
# helpers.course.export then, not before: the first cell and ``import unsloth`` come first).
_LAZY = {
    "plot_training_curves": "plots", "plot_beta_sweep": "plots", "plot_scores_lengths": "plots",
    "expected_time": "estimate", "expected_minutes": "estimate", "pilot_report": "reports",
    "gpu_cost_report": "reports", "onpolicy_report": "reports", "sft_bench_report": "reports",
    "recipe_report": "reports", "export_gguf": "export", "save_merged": "export",
    "push_to_hub": "export", "trained_adapter": "export", "fetch_sweep": "runahead",
    "sweep_plan": "presets", "generation_plan": "presets", "training_plan": "presets",
}
__all__ = ["setup_course", "banner", "detect", "quick", "setting", "persist_path", "hub_token", "record_metrics",
           *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"helpers.course.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'helpers.course' has no attribute {name!r}")


def record_metrics(run_dir: str | Path, notebook: str, metrics: dict) -> Path:
    """Write a notebook's measured figures to ``run_dir/metrics/<notebook>.json`` (merged into summary.json)."""
    return write_json(Path(run_dir) / "metrics" / f"{notebook}.json", metrics, default=float)  # atomic
