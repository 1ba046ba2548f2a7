"""`make run`: execute the course notebooks headless, in order, into runs/<timestamp>/.

Each notebook runs in its own kernel with the notebooks/ folder as working directory (as in Jupyter and nbmake)
and the environment variable ``DPO_RUN_DIR`` pointing at the run directory; a notebook that measures something
for the summary writes ``$DPO_RUN_DIR/metrics/<notebook stem>.json``. The runner writes the executed notebooks,
``summary.json`` (mode, per-notebook seconds/ok, the notebooks' metrics) and points ``runs/latest`` at the run.
A failing notebook stops nothing else from being recorded, but makes the process exit 1 and names the cell; so do
a cell that runs into the per-cell timeout and a runner that waited more than a minute between two cells
(``helpers.course.nbexec``). Every cell's own time and the wait before it are in ``summary.json`` and in the executed
notebook (``metadata.dpo_course`` of each cell).

``--online`` (``make run-online``) runs the notebooks' online branch: against ``HF_ENDPOINT`` when it is set, else
against a local hub started for the run (``helpers.course.hub``), always with a fresh ``HF_HOME``; a notebook that fell
back to the offline default fails. ``DPO_QUICK=1`` (the notebooks read it) shrinks every long loop.

    python -m helpers.course.suite [--online] [--notebooks notebooks/01_*.ipynb ...] [--runs-dir runs] [--timeout 600]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from helpers.course import record_metrics  # noqa: F401  (the runner merges what notebooks record)
from helpers.infra.files import read_json, write_json
from helpers.infra.paths import ROOT
from helpers.infra.quiet import ALL_NOISE

__all__ = ["NotebookResult", "record_metrics", "run_notebook", "inject_quick", "output_problems", "NOISE_MARKERS",
           "digest",
           "run_suite", "main"]

# Library noise that must never reach a cell's output: what helpers.infra.quiet filters (torchao's "Failed to load",
# torch's _pytree deprecation, bitsandbytes' optional "kernels"), plus any _pytree or bitsandbytes message at all.
NOISE_MARKERS = tuple(dict.fromkeys([f for frags in ALL_NOISE.values() for f in frags] + ["_pytree", "bitsandbytes"]))
_WIDGET = "application/vnd.jupyter.widget-view+json"


@dataclass
class NotebookResult:
    notebook: str
    ok: bool
    seconds: float
    failed_cell: int | None = None  # 0-based index among all cells
    error: str | None = None
    cells: list[dict] | None = None  # per executed cell: index, own seconds, runner's wait before it


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


def inject_quick(nb, notebook: str) -> bool:
    """Under ``DPO_QUICK=1``: insert ``helpers.course.presets.quick_cell(notebook)`` straight after the cell tagged
    ``parameters`` (papermill's injected-parameters pattern; the cell is tagged ``injected-parameters``). Returns
    whether it did. A notebook with quick settings and no parameters cell is an error that names it."""
    from helpers.course.presets import quick_cell
    from helpers.infra.runtime import quick

    source = quick_cell(notebook) if quick() else None
    if source is None:
        return False
    import nbformat

    at = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if at is None:
        raise ValueError(f"notebook {notebook!r} has DPO_QUICK settings but no cell tagged 'parameters'")
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(at + 1, cell)
    return True


def run_notebook(path: Path, out_path: Path, *, run_dir: Path, timeout: int = 600) -> NotebookResult:
    """Execute ``path`` in a fresh kernel, save the executed copy to ``out_path``.

    The client is ``helpers.course.nbexec.CourseNotebookClient`` (no silent wait on a missed kernel message); a cell
    that runs into ``timeout`` fails the notebook naming that cell, and so does a gap of more than ``MAX_GAP_S`` between
    one cell's reply and the next cell's start. ``cells`` in the result holds every cell's own run time and the
    runner's wait before it (also written into each executed cell's ``metadata.dpo_course``).
    """
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    from helpers.course.nbexec import CourseNotebookClient, cell_timings, stall_problems, timeout_cell

    nb = nbformat.read(path, as_version=4)
    inject_quick(nb, path.stem)
    env_before = os.environ.get("DPO_RUN_DIR")
    os.environ["DPO_RUN_DIR"] = str(run_dir.resolve())  # inherited by the kernel process
    client = CourseNotebookClient(nb, timeout=timeout, kernel_name="python3",
                                  resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    ok, cell, err = True, None, None
    try:
        client.execute()
    except CellTimeoutError as e:
        ok, cell = False, timeout_cell(nb)
        text = nb.cells[cell].source.strip() if cell is not None else ""
        first = text.splitlines()[0][:80] if text else ""
        err = (f"CellTimeoutError: cell {cell} ({first!r}) ran into the {timeout} s timeout: "
               f"{str(e).strip().splitlines()[0][:200]}")
    except CellExecutionError as e:
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
    timings = cell_timings(nb)
    for t in timings:  # visible in the executed notebook itself
        nb.cells[t["cell"]].metadata["dpo_course"] = {"seconds": t["seconds"], "wait_before": t["wait_before"]}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_path)
    problems = [f"unclean output: {x}" for x in output_problems(nb)] + [f"stalled: {x}" for x in stall_problems(nb)]
    if ok and problems:
        ok, err = False, "; ".join(problems)
    return NotebookResult(path.name, ok, round(seconds, 2), cell, err, cells=timings)


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
                         "tokens_before": m5.get("tokens_reference"), "tokens_after": m5.get("tokens_policy"),
                         # online: the reward-model judge (helpers.judge) and how far it agreed with human labels
                         "judge": m5.get("judge"), "judge_random_weights": m5.get("judge_random_weights"),
                         "win_interval": m5.get("win_interval"), "judge_agreement": m5.get("judge_agreement"),
                         "judge_agreement_n": m5.get("judge_agreement_n"), "judge_trusted": m5.get("judge_trusted"),
                         # the win rate where stopping and length cannot drive it (issue 34)
                         **{f"win_rate_{k}{n}": m5.get(f"win_rate_{k}{n}") for k in ("untruncated", "length_matched")
                            for n in ("", "_n")}}
    if "chosen_style_rate_before" in m5:  # offline only: the toy world's ground truth
        out["generation"]["chosen_style_rate_before"] = m5["chosen_style_rate_before"]
        out["generation"]["chosen_style_rate_after"] = m5["chosen_style_rate_after"]
    out["beta_sweep"] = [{k: r.get(k) for k in ("beta", "heldout_accuracy", "kl", "kl_sem", "reward", "reward_sem",
                                                 "malformed_rate")}
                         for r in m4.get("beta_sweep", [])]
    # which model and tokenizer each notebook ran (helpers.models.describe_model)
    out["models"] = {name: {k: m.get(k) for k in ("model", "model_source", "model_parameters", "tokenizer_vocab")}
                     for name, m in summary.items() if isinstance(m, dict) and "model_parameters" in m}
    return out


def run_suite(notebooks: list[Path], runs_dir: Path, *, timeout: int = 600, online: bool = False,
              hub: dict | None = None) -> tuple[Path, dict]:
    """Run ``notebooks`` in order into a new ``runs_dir/<timestamp>``; return (run_dir, summary).

    ``online``: the environment already points at a hub (``online_session``); every notebook must then have run
    online, from the hub or the HF cache this run filled: one that fell back to the offline default or to the
    packaged model fails. ``hub`` is recorded in the summary (endpoint, whether the runner started it, note)."""
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

    from helpers.infra.runtime import offline_forced, quick

    offline = offline_forced()  # the same reading of HF_HUB_OFFLINE & co. as the notebooks' runtime banner
    summary: dict = {"mode": "online" if online else "offline" if offline else "auto", "quick": quick(),
                     "started": stamp, "notebooks": {}}
    if hub is not None:
        summary["hub"] = hub
    results = []
    for nb_path in notebooks:
        print(f"[run] {nb_path.name} ...", flush=True)
        res = run_notebook(nb_path, run_dir / nb_path.name, run_dir=run_dir, timeout=timeout)
        metrics_file = run_dir / "metrics" / f"{nb_path.stem}.json"
        if online and res.ok and metrics_file.exists():
            wrong = not_online(read_json(metrics_file, what="a notebook's metrics"))
            if wrong:
                res.ok, res.error = False, f"asked to run online, but {wrong}"
        results.append(res)
        summary["notebooks"][nb_path.stem] = asdict(res)
        slowest = max(res.cells or [{"cell": None, "seconds": 0.0}], key=lambda t: t["seconds"])
        print(f"[run] {nb_path.name}: {'ok' if res.ok else 'FAILED'} in {res.seconds:.1f} s (slowest cell "
              f"{slowest['cell']}: {slowest['seconds']:.1f} s)" + ("" if res.ok else f"\n      {res.error}"),
              flush=True)
    for f in sorted((run_dir / "metrics").glob("*.json")):
        summary[f.stem] = read_json(f, what="a notebook's metrics")
    if not notebooks:
        summary["note"] = "no notebooks found: nothing was executed"
    summary["seconds_total"] = round(sum(r.seconds for r in results), 2)
    summary.update(digest(summary))
    if online:
        summary["mode"] = "online"  # digest's mode comes from the notebooks; not_online checked each one
    write_json(run_dir / "summary.json", summary)
    return run_dir, summary


def not_online(metrics: dict) -> str | None:
    """Why a notebook's metrics show it did not run online (None: it did): its ``mode``, or a model source that is
    not the hub or the Hugging Face cache (the packaged copy, the toy model)."""
    if metrics.get("mode") not in (None, "online"):
        return f"it ran in mode {metrics['mode']!r}"
    if metrics.get("source") == "toy":
        return "its data fell back to the offline default (the toy world)"
    src = metrics.get("model_source")
    if src is not None and not str(src).startswith(("hub:", "Hugging Face cache")):
        return f"its model came from {str(src)[:120]!r}, not from the hub or the HF cache it filled"
    return None


@contextlib.contextmanager
def online_session(run_root: Path):
    """The environment of an online run, restored afterwards: ``HF_ENDPOINT`` as set, else a ``LocalHub`` started
    here (and stopped at the end, also on Ctrl-C or an error); a fresh ``HF_HOME`` under ``run_root`` (so every model
    and dataset comes from this hub, and nothing of it lands in your own cache), deleted afterwards; offline
    switches and ``DPO_HH_SOURCE`` removed. Yields the ``hub`` record for the summary."""
    from helpers.course.hub import HUB_ENV, LocalHub, client_env

    saved = dict(os.environ)
    hf_home = Path(tempfile.mkdtemp(prefix="hf-home-", dir=run_root))
    local = None
    try:
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "DPO_HH_SOURCE", "DPO_HUB_NOTE"):
            if k in os.environ and k != "DPO_HUB_NOTE":
                print(f"NOTE: {k}={os.environ[k]} is not used in an online run")
            os.environ.pop(k, None)
        if os.environ.get("HF_ENDPOINT"):
            endpoint = os.environ["HF_ENDPOINT"].rstrip("/")
            hub = {"endpoint": endpoint, "started_by_runner": False, "note": "HF_ENDPOINT as set"}
            os.environ.update({"HF_HOME": str(hf_home), **{k: v for k, v in HUB_ENV.items() if k not in os.environ}})
        else:
            local = LocalHub().start()
            endpoint = local.endpoint
            hub = {"endpoint": endpoint, "started_by_runner": True, "note": local.note}
            os.environ.update({**client_env(endpoint, hf_home), "DPO_HUB_NOTE": local.note})
        print(f"[run] online against {endpoint} ({hub['note']}); HF_HOME={hf_home}", flush=True)
        yield hub
    finally:
        if local is not None:
            local.stop()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(hf_home, ignore_errors=True)


def _print_table(run_dir: Path, summary: dict) -> None:
    quick = " (DPO_QUICK: shrunk)" if summary.get("quick") else ""
    print(f"\nrun dir: {run_dir}  (runs/latest -> {run_dir.name}), mode: {summary['mode']}{quick}")
    if summary.get("hub"):
        print(f"hub: {summary['hub']['endpoint']} ({summary['hub']['note']})")
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
        ci = gen.get("win_interval")
        print(f"generation: win rate {fmt(gen['win_rate'])}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") +
              f" ({gen.get('score')}), strict (malformed = loss) "
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
    p.add_argument("--online", action="store_true",
                   help="run online: against HF_ENDPOINT if set, else a local hub started here (make run-online)")
    a = p.parse_args(argv)
    notebooks = a.notebooks if a.notebooks is not None else sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for nb in notebooks:
        if not nb.is_file():
            p.error(f"--notebooks: no such notebook {nb}")
    if a.online:
        from helpers.course.hub import HubError

        a.runs_dir.mkdir(parents=True, exist_ok=True)
        try:
            with online_session(a.runs_dir) as hub:
                run_dir, summary = run_suite(notebooks, a.runs_dir, timeout=a.timeout, online=True, hub=hub)
        except HubError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the main job is the offline default
        run_dir, summary = run_suite(notebooks, a.runs_dir, timeout=a.timeout)
    _print_table(run_dir, summary)
    return 0 if all(r["ok"] for r in summary["notebooks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
