"""`make run`: execute the course notebooks headless, in order, into runs/<timestamp>/.

Each notebook runs in its own kernel with the notebooks/ folder as working directory (as in Jupyter and nbmake)
and the environment variable ``DPO_RUN_DIR`` pointing at the run directory; a notebook that measures something
for the summary writes ``$DPO_RUN_DIR/metrics/<notebook stem>.json``. The runner writes the executed notebooks,
``summary.json`` (mode, per-notebook seconds/ok, the notebooks' metrics) and points ``runs/latest`` at the run.
A failing notebook stops nothing else from being recorded, but makes the process exit 1 and names the cell.

    python -m helpers.suite [--notebooks notebooks/01_*.ipynb ...] [--runs-dir runs] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from helpers.quiet import NOISE

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["NotebookResult", "record_metrics", "run_notebook", "output_problems", "NOISE_MARKERS", "digest",
           "run_suite", "main"]

# Library noise that must never reach a cell's output: what helpers.quiet filters (torchao's "Failed to load ...so",
# torch's _pytree deprecation, bitsandbytes' optional "kernels"), plus any _pytree or bitsandbytes message at all.
NOISE_MARKERS = tuple(dict.fromkeys([f for frags in NOISE.values() for f in frags] + ["_pytree", "bitsandbytes"]))
_WIDGET = "application/vnd.jupyter.widget-view+json"


def record_metrics(run_dir: str | Path, notebook: str, metrics: dict) -> Path:
    """Write a notebook's measured figures to ``run_dir/metrics/<notebook>.json`` (merged into summary.json)."""
    out = Path(run_dir) / "metrics" / f"{notebook}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return out


@dataclass
class NotebookResult:
    notebook: str
    ok: bool
    seconds: float
    failed_cell: int | None = None  # 0-based index among all cells
    error: str | None = None


def _failing_cell(nb) -> tuple[int | None, str | None]:
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                return i, f"{out.get('ename')}: {out.get('evalue')} (cell {i}: {first_line[:80]!r})"
    return None, None


def output_problems(nb) -> list[str]:
    """What an executed notebook's outputs should not hold: library noise (``NOISE_MARKERS``), and a cell with more
    than one progress bar (a cell's long loop has one bar; short steps inside it show none). ``[]`` when clean."""
    import re

    problems = []
    for i, cell in enumerate(nb.cells):
        bars = 0
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = out.get("text", "") if out.get("output_type") == "stream" else data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else str(text)
            for marker in NOISE_MARKERS:
                if marker in text:
                    line = next(x for x in text.splitlines() if marker in x)
                    problems.append(f"cell {i}: library noise ({marker!r}): {line.strip()[:160]}")
            if _WIDGET in data and re.search(r"\d+%\|", text):
                bars += 1
            elif out.get("output_type") == "stream":
                bars += len(re.findall(r"(?:^|\r|\n)[^\r\n]*?\b0%\|", text))
        if bars > 1:
            problems.append(f"cell {i}: {bars} progress bars (one per long loop; short steps show none)")
    return problems


def run_notebook(path: Path, out_path: Path, *, run_dir: Path, timeout: int = 600) -> NotebookResult:
    """Execute ``path`` in a fresh kernel, save the executed copy to ``out_path``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("DPO_RUN_DIR")
    os.environ["DPO_RUN_DIR"] = str(run_dir.resolve())  # inherited by the kernel process
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    ok, cell, err = True, None, None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as e:
        ok = False
        cell, err = _failing_cell(nb)
        err = err or f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
    except Exception as e:  # kernel died, etc.
        ok, err = False, f"{type(e).__name__}: {e}"
    finally:
        if env_before is None:
            os.environ.pop("DPO_RUN_DIR", None)
        else:
            os.environ["DPO_RUN_DIR"] = env_before
    seconds = time.perf_counter() - t0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_path)
    problems = output_problems(nb)
    if ok and problems:
        ok, err = False, "unclean output: " + "; ".join(problems)
    return NotebookResult(path.name, ok, round(seconds, 2), cell, err)


def digest(summary: dict) -> dict:
    """The headline numbers of a run, from the notebooks' metrics: mode, dpo, generation, beta_sweep."""
    m3 = summary.get("03_unsloth_lora_dpo", {})
    m4 = summary.get("04_beta_sensitivity", {})
    m5 = summary.get("05_before_after_generation", {})
    out: dict = {"mode": m3.get("mode") or m5.get("mode") or summary.get("mode")}
    out["dpo"] = {"heldout_reward_accuracy": m3.get("heldout_reward_accuracy"),
                  "heldout_margin": m3.get("heldout_margin")}
    out["generation"] = {"win_rate": m5.get("win_rate"), "strict_win_rate": m5.get("strict_win_rate"),
                         "malformed_rate_before": m5.get("malformed_rate_before"),
                         "malformed_rate_after": m5.get("malformed_rate_after"), "score": m5.get("score"),
                         "tokens_before": m5.get("tokens_reference"), "tokens_after": m5.get("tokens_policy")}
    if "chosen_style_rate_before" in m5:  # offline only: the toy world's ground truth
        out["generation"]["chosen_style_rate_before"] = m5["chosen_style_rate_before"]
        out["generation"]["chosen_style_rate_after"] = m5["chosen_style_rate_after"]
    out["beta_sweep"] = [{k: r.get(k) for k in ("beta", "heldout_accuracy", "kl", "reward", "malformed_rate")}
                         for r in m4.get("beta_sweep", [])]
    # which model and tokenizer each notebook ran (helpers.models.describe_model)
    out["models"] = {name: {k: m.get(k) for k in ("model", "model_source", "model_parameters", "tokenizer_vocab")}
                     for name, m in summary.items() if isinstance(m, dict) and "model_parameters" in m}
    return out


def run_suite(notebooks: list[Path], runs_dir: Path, *, timeout: int = 600) -> tuple[Path, dict]:
    """Run ``notebooks`` in order into a new ``runs_dir/<timestamp>``; return (run_dir, summary)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = runs_dir / stamp
    n = 1
    while run_dir.exists():
        run_dir = runs_dir / f"{stamp}-{n}"
        n += 1
    (run_dir / "metrics").mkdir(parents=True)
    latest = runs_dir / "latest"
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.exists():  # a real folder named "latest" (copied by hand?): kept, under another name
        aside = runs_dir / f"latest.moved-{stamp}"
        latest.rename(aside)
        print(f"NOTE: {latest} was a folder, not the link this runner keeps; moved it to {aside.name}")
    latest.symlink_to(run_dir.name)

    from helpers.runtime import offline_forced

    offline = offline_forced()  # the same reading of HF_HUB_OFFLINE & co. as the notebooks' runtime banner
    summary: dict = {"mode": "offline" if offline else "auto", "started": stamp, "notebooks": {}}
    results = []
    for nb_path in notebooks:
        print(f"[run] {nb_path.name} ...", flush=True)
        res = run_notebook(nb_path, run_dir / nb_path.name, run_dir=run_dir, timeout=timeout)
        results.append(res)
        summary["notebooks"][nb_path.stem] = asdict(res)
        print(f"[run] {nb_path.name}: {'ok' if res.ok else 'FAILED'} in {res.seconds:.1f} s"
              + ("" if res.ok else f"\n      {res.error}"), flush=True)
    for f in sorted((run_dir / "metrics").glob("*.json")):
        summary[f.stem] = json.loads(f.read_text())
    if not notebooks:
        summary["note"] = "no notebooks found: nothing was executed"
    summary["seconds_total"] = round(sum(r.seconds for r in results), 2)
    summary.update(digest(summary))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir, summary


def _print_table(run_dir: Path, summary: dict) -> None:
    print(f"\nrun dir: {run_dir}  (runs/latest -> {run_dir.name}), mode: {summary['mode']}")
    print(f"{'notebook':<40} {'ok':>4} {'seconds':>8}  model (parameters, tokenizer vocabulary)")
    for name, r in summary["notebooks"].items():
        m = summary.get("models", {}).get(name)
        model = f"  {m['model']} ({m['model_parameters']:,}, {m['tokenizer_vocab']:,})" if m else ""
        print(f"{name:<40} {'yes' if r['ok'] else 'NO':>4} {r['seconds']:>8.1f}{model}")
    print(f"{'total':<40} {'':>4} {summary['seconds_total']:>8.1f}")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    dpo, gen = summary.get("dpo", {}), summary.get("generation", {})
    if any(v is not None for v in dpo.values()):
        print(f"DPO held-out: reward accuracy {fmt(dpo['heldout_reward_accuracy'])}, margin "
              f"{fmt(dpo['heldout_margin'])}")
    if gen.get("win_rate") is not None:
        style = (f", chosen-style rate {fmt(gen['chosen_style_rate_before'])} -> "
                 f"{fmt(gen['chosen_style_rate_after'])}" if "chosen_style_rate_before" in gen else "")
        print(f"generation: win rate {fmt(gen['win_rate'])} ({gen.get('score')}), strict (malformed = loss) "
              f"{fmt(gen.get('strict_win_rate'))}; malformed answers {fmt(gen.get('malformed_rate_before'))} -> "
              f"{fmt(gen.get('malformed_rate_after'))}{style}")
    if summary.get("beta_sweep"):
        print(f"{'beta':>8} {'accuracy':>9} {'KL':>7} {'reward':>7} {'malformed':>10}")
        for r in summary["beta_sweep"]:
            print(f"{r['beta']:>8g} {fmt(r['heldout_accuracy']):>9} {fmt(r['kl']):>7} {fmt(r['reward']):>7} "
                  f"{fmt(r.get('malformed_rate')):>10}")
    if "note" in summary:
        print(summary["note"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Execute the course notebooks headless into runs/<timestamp>/.")
    p.add_argument("--notebooks", nargs="*", type=Path, help="default: notebooks/[0-9]*.ipynb in order")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    a = p.parse_args(argv)
    notebooks = a.notebooks if a.notebooks is not None else sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for nb in notebooks:
        if not nb.is_file():
            p.error(f"--notebooks: no such notebook {nb}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the main job is the offline default
    run_dir, summary = run_suite(notebooks, a.runs_dir, timeout=a.timeout)
    _print_table(run_dir, summary)
    return 0 if all(r["ok"] for r in summary["notebooks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
