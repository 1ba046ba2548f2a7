"""Compare two `make run` summaries field by field: every metric equal, apart from timings and run folders.

    python scripts/compare_summaries.py runs/<before>/summary.json runs/<after>/summary.json

A refactor that promises "behaviour unchanged" runs `make run` (seeded) before and after and shows this prints
"0 differ". Timings (seconds, per-cell times, start time) and the run folder's own path are left out; every other leaf
(numbers, strings, samples, beta_sweep rows and their checkpoint paths) is compared exactly. Exit 1 when any differs.
"""

from __future__ import annotations

import json
import re
import sys

TIMING = re.compile(r"(^|\.)(seconds|seconds_total|started|output_dir)$|\.cells\[\d+\]\.")


def flat(x, prefix: str = ""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from flat(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from flat(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def main(before: str, after: str) -> int:
    a, b = (dict(flat(json.load(open(p)))) for p in (before, after))
    keys = sorted(set(a) | set(b))
    compared = [k for k in keys if not TIMING.search(k)]
    diff = [k for k in compared if a.get(k, "<missing>") != b.get(k, "<missing>")]
    numeric = sum(isinstance(a.get(k), (int, float)) and not isinstance(a.get(k), bool) for k in compared)
    print(f"compared {len(compared)} fields ({numeric} numeric); left out {len(keys) - len(compared)} timing fields; "
          f"{len(diff)} differ")
    for k in diff:
        print(f"  {k}: {str(a.get(k, '<missing>'))[:160]!r} -> {str(b.get(k, '<missing>'))[:160]!r}")
    return 1 if diff else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
