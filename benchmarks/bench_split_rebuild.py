"""What a notebook pays when notebook 02's splits are missing (a new Colab runtime) and it rebuilds them from the hub.

Against the local hub of the online track (``helpers.course.hub.LocalHub``: olah on 127.0.0.1, 1000/200 real HH rows
of ../shared as ``Anthropic/hh-rlhf`` helpful-base), in a fresh process with an empty HF_HOME, as notebooks 03-05 do
(``helpers.recipe.load_data`` -> ``load_or_build_splits`` with ``SPLIT_LIMITS``), then ``check_lengths`` (tokenizing
every pair with SmolLM2's template). Timed parts: download + parse + save, and the length check. The hub's data set
is smaller than the real helpful-base, so the full rebuild on Colab reads up to 5000/500 rows: the per-row figures
are printed for scaling. Writes benchmarks/results/split_rebuild.json.

    python benchmarks/bench_split_rebuild.py        # ~1 min on 2 cores (the hub's repos are built once, ~75 s cold)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "split_rebuild.json"

CLIENT = r"""
import json, sys, time
t0 = time.perf_counter()
from helpers.recipe import DPORecipe, load_data, check_lengths
from helpers.models import load_tokenizer
t1 = time.perf_counter()
r = DPORecipe(data=sys.argv[1])
splits = load_data(r)
t2 = time.perf_counter()
tok, _ = load_tokenizer(r.model, verbose=False)
kept, rep = check_lengths(r, tok, splits)
t3 = time.perf_counter()
print(json.dumps({"imports_s": round(t1 - t0, 1), "rebuild_s": round(t2 - t1, 1), "length_check_s": round(t3 - t2, 1),
                  "rows": {k: len(v) for k, v in splits.items()}, "kept": {k: len(v) for k, v in kept.items()}}))
"""


def main() -> int:
    from helpers.course.hub import LocalHub

    with LocalHub() as hub, tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                                 "TRANSFORMERS_OFFLINE", "DPO_HH_SOURCE")}
        env.update(hub.env(Path(tmp) / "hf_home"), PYTHONPATH=str(ROOT))
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CLIENT, str(Path(tmp) / "02_hh")], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - t0
    if out.returncode:
        print(out.stderr[-3000:])
        return 1
    res = json.loads(out.stdout.strip().splitlines()[-1])
    n = sum(res["rows"].values())
    res.update(wall_s=round(wall, 1), per_1000_rows_s=round(1000 * (res["rebuild_s"] + res["length_check_s"]) / n, 1),
               machine=f"{platform.machine()}, {os.cpu_count()} cores", date=time.strftime("%Y-%m-%d"),
               command="python benchmarks/bench_split_rebuild.py",
               note="local hub (olah, 127.0.0.1) serving 1000/200 real HH rows; Colab's rebuild reads up to 5000/500")
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
