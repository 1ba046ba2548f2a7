"""Benchmark masked sequence log-probs: time and extra peak memory of forward+backward.

Methods, each measured in its own fresh process so peak RSS is not shared:
  naive   log_softmax(logits).gather(...)            (what most tutorials do)
  trl     trl.trainer.utils.selective_log_softmax     (TRL 1.14.2's row loop)
  helpers helpers.logprobs.sequence_logps             (this project: saves only the per-row logsumexp)

"extra peak" = peak resident memory during forward+backward minus the resident memory just before it, with the
logits (a leaf tensor with requires_grad) already allocated. The gradient of the logits (1.0x the logits) is part
of every method's extra peak. Usage:

    python benchmarks/bench_logprobs.py [--batch 8 --seq 512 --vocab 49152 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

METHODS = ("naive", "trl", "helpers")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kB


def _worker(method: str, batch: int, seq: int, vocab: int, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    if method == "trl":
        from trl.trainer.utils import selective_log_softmax

        def fn(logits, labels):
            lab = labels[:, 1:].clone()
            mask = lab != -100
            lab[~mask] = 0
            return (selective_log_softmax(logits[:, :-1], lab) * mask).sum(-1)
    elif method == "naive":

        def fn(logits, labels):
            lab = labels[:, 1:].clone()
            mask = lab != -100
            lab[~mask] = 0
            per_tok = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, lab[..., None]).squeeze(-1)
            return (per_tok * mask).sum(-1)
    else:
        from helpers.logprobs import sequence_logps as fn

    logits = torch.randn(batch, seq, vocab, requires_grad=True)
    labels = torch.randint(0, vocab, (batch, seq))
    labels[:, : seq // 4] = -100  # a prompt that does not count
    # warm-up at a small size so one-off allocations (thread pools, kernels) are not counted as peak
    small = torch.randn(2, 8, vocab, requires_grad=True)
    fn(small, labels[:2, :8]).sum().backward()
    del small
    times = []
    base = _rss_bytes()
    for _ in range(repeats):
        logits.grad = None
        t0 = time.perf_counter()
        fn(logits, labels).sum().backward()
        times.append(time.perf_counter() - t0)
    logits.grad = None
    return {
        "method": method,
        "seconds": min(times),
        "extra_peak_mb": (_peak_bytes() - base) / 2**20,
        "logits_mb": logits.numel() * logits.element_size() / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(_worker(a.worker, a.batch, a.seq, a.vocab, a.repeats)))
        return
    rows = []
    for m in METHODS:
        cmd = [sys.executable, __file__, "--worker", m, "--batch", str(a.batch), "--seq", str(a.seq),
               "--vocab", str(a.vocab), "--repeats", str(a.repeats)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  measured {m}", file=sys.stderr)
    naive = rows[0]
    logits_mb = naive["logits_mb"]
    print(f"\nlogits ({a.batch} x {a.seq} x {a.vocab}) fp32 = {logits_mb:.0f} MB; "
          f"forward+backward, best of {a.repeats}")
    print(f"{'method':<8} {'time s':>8} {'x naive':>8} {'extra peak MB':>14} {'x logits':>9} {'x naive':>8}")
    for r in rows:
        print(
            f"{r['method']:<8} {r['seconds']:>8.3f} {r['seconds'] / naive['seconds']:>8.2f} "
            f"{r['extra_peak_mb']:>14.0f} {r['extra_peak_mb'] / logits_mb:>9.2f} "
            f"{r['extra_peak_mb'] / naive['extra_peak_mb']:>8.2f}"
        )


if __name__ == "__main__":
    main()
