"""How often does a headless runner wait silently between two cells? (issue: headless runs never wait silently)

Executes a notebook N times, one after the other, each in a fresh kernel, and reports per run the longest wait
between one cell's reply and the next cell's start (nbclient's own timestamps, `helpers.course.nbexec.cell_timings`),
for nbclient's plain `NotebookClient` (`--client plain`, what `make run` used before) or the course's
`CourseNotebookClient` (`--client course`). `--load K` keeps K busy-looping processes running meanwhile (the stall
was seen on a loaded machine). Results go to benchmarks/results/headless_stall_<client>_<name>.json.

    python benchmarks/bench_headless_stall.py --runs 10 --client course notebooks/01_dpo_math_and_loss.ipynb
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _burn(stop):  # one busy core
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--client", choices=("plain", "course"), default="course")
    p.add_argument("--timeout", type=int, default=600, help="per-cell timeout (s)")
    p.add_argument("--load", type=int, default=0, help="busy-looping processes running meanwhile")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    import nbformat
    from nbclient import NotebookClient

    from helpers.course.nbexec import CourseNotebookClient, cell_timings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DPO_RUN_DIR", str(ROOT / "runs" / "bench-stall"))
    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(a.load)]
    for b in burners:
        b.start()
    runs = []
    try:
        for k in range(a.runs):
            nb = nbformat.read(a.notebook, as_version=4)
            cls = CourseNotebookClient if a.client == "course" else NotebookClient
            client = cls(nb, timeout=a.timeout, kernel_name="python3",
                         resources={"metadata": {"path": str(a.notebook.parent)}})
            t0 = time.perf_counter()
            error = None
            try:
                client.execute()
            except Exception as e:  # a timeout or a failing cell: recorded, the next run goes on
                error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
            wall = time.perf_counter() - t0
            t = cell_timings(nb)
            waits = [x for x in t if x["wait_before"] is not None]
            worst = max(waits, key=lambda x: x["wait_before"]) if waits else {"cell": None, "wait_before": 0.0}
            own = sum(x["seconds"] for x in t)
            runs.append({"run": k, "wall_s": round(wall, 2), "cells_s": round(own, 2),
                         "max_wait_s": worst["wait_before"], "max_wait_before_cell": worst["cell"],
                         "stalled": worst["wait_before"] > min(60, a.timeout / 2), "error": error})
            print(f"run {k}: wall {wall:.1f} s, cells {own:.1f} s, longest wait {worst['wait_before']:.2f} s "
                  f"before cell {worst['cell']}" + (f", ERROR {error}" if error else ""), flush=True)
    finally:
        stop.set()
        for b in burners:
            b.join(5)
    res = {"date": datetime.now().isoformat(timespec="seconds"), "notebook": str(a.notebook), "client": a.client,
           "load": a.load, "timeout": a.timeout, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "command": "python benchmarks/bench_headless_stall.py " + " ".join(argv or sys.argv[1:]),
           "stalls": sum(r["stalled"] for r in runs), "runs": runs}
    out = a.out or ROOT / "benchmarks" / "results" / f"headless_stall_{a.client}_{a.notebook.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"{res['stalls']} of {len(runs)} runs stalled (a wait > min(60 s, timeout/2) between two cells); {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
