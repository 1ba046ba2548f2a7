"""Repository-wide pytest set-up (applies to tests/ and to nbmake runs of notebooks/).

Tests and notebook runs are offline (CI has no hub). Notebook 02 reads real HH-RLHF rows from ../shared when
they are there (the CI layout), so the notebook's counts are those of real data; elsewhere it uses its default.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

_SHARED_HH = Path(__file__).resolve().parents[1] / "shared/data/hh-rlhf/harmless-base-test-0000-1199.jsonl"
if _SHARED_HH.exists():
    os.environ.setdefault("DPO_HH_SOURCE", str(_SHARED_HH))
