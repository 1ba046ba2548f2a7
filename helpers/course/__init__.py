"""The course's machinery: what runs, checks, serves, estimates and publishes the notebooks (the top layer).

What a notebook needs of it is here, importable without loading any ML library (so ``unsloth`` can still come first):
``banner`` (what this runtime is), ``quick`` (``DPO_QUICK``: a smoke-test size), ``persist_path`` (Google Drive on
Colab), ``record_metrics`` (a notebook's figures for ``make run``'s summary).

suite     the headless runner behind ``make run`` / ``make run-online``     nbexec    its notebook client
hub       the local hub on 127.0.0.1 the online track runs against       cli       ``python -m helpers.course.cli``
estimate  T4 arithmetic, GPU measurements, expected times, the pilot rule export    merged model, hub push, adapter pull
plots     training curves                                                 publish   Colab badges and install cell
gguf      llama.cpp's converter (own folder), GGUF headers, Ollama Modelfile (export.export_gguf is the pipeline)
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers.infra.colab import persist_path
from helpers.infra.runtime import banner, quick

__all__ = ["banner", "quick", "persist_path", "record_metrics"]


def record_metrics(run_dir: str | Path, notebook: str, metrics: dict) -> Path:
    """Write a notebook's measured figures to ``run_dir/metrics/<notebook>.json`` (merged into summary.json)."""
    out = Path(run_dir) / "metrics" / f"{notebook}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return out
