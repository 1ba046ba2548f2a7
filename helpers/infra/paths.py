"""Where the course's files live: the repository root, its ``data/`` and ``benchmarks/results/``, and the cache.

Every module that needs a path of the repository takes it from here (one ``__file__`` arithmetic, not one per module).
"""

from __future__ import annotations

from pathlib import Path

from helpers.infra.settings import setting

__all__ = ["ROOT", "DATA_DIR", "RESULTS_DIR", "default_cache_dir"]

ROOT = Path(__file__).resolve().parents[2]  # helpers/infra/paths.py -> the repository
DATA_DIR = ROOT / "data"  # the toy world's files and the on-policy pairs (committed)
RESULTS_DIR = ROOT / "benchmarks" / "results"  # measured figures the notebooks print


def default_cache_dir() -> Path:
    """``$DPO_CACHE_DIR``, else ``.cache/`` in the repository (git-ignored)."""
    return Path(setting("DPO_CACHE_DIR", str(ROOT / ".cache")))  # blank: the default
