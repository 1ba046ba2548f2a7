"""Run-ahead for a workshop: the instructor trains once, every attendee loads the result.

Notebook 03's training and notebook 04's sweep are the long GPU work of the course. An instructor runs them before
the session and publishes one **run-ahead folder**, on the hub (a private or public model repository) or on Google
Drive:

- at its top, notebook 03's adapter (``adapter_config.json``, the weights) and ``metrics.json``: the layout
  ``helpers.course.export.trained_adapter`` accepts, so notebook 05 loads it as its ``TRAIN_DIR``;
- ``04_sweep/``: notebook 04's sweep cache (one JSON per run, named by the hash of its settings): a run whose
  settings are the instructor's is then read, not trained.

Attendees set one parameter, ``RUN_AHEAD`` (env ``DPO_RUN_AHEAD``), in notebooks 04 and 05 to the repository id
(``owner/name``) or the folder. An attendee who changed a setting trains that run as usual (the hash differs).

    python -m helpers.course.runahead pack --train-dir runs/notebooks/03_dpo --sweep-dir runs/notebooks/04_sweep \
        --out runs/run-ahead
    python -m helpers.course.runahead push --folder runs/run-ahead --repo <you>/dpo-workshop   # HF_TOKEN: write
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

__all__ = ["SWEEP_FOLDER", "pack_run_ahead", "push_run_ahead", "fetch_sweep", "main"]

SWEEP_FOLDER = "04_sweep"


def pack_run_ahead(out_dir: str | Path, *, train_dir: str | Path | None = None,
                   sweep_dir: str | Path | None = None) -> Path:
    """Lay out a run-ahead folder in ``out_dir`` from notebook 03's ``OUTPUT_DIR`` (``train_dir``: ``adapter/`` +
    ``metrics.json``) and/or notebook 04's sweep cache (``sweep_dir``: its ``*.json``). Returns ``out_dir``."""
    if train_dir is None and sweep_dir is None:
        raise ValueError("give train_dir (notebook 03's OUTPUT_DIR) and/or sweep_dir (notebook 04's 04_sweep)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if train_dir is not None:
        from helpers.course.export import trained_adapter

        adapter, _ = trained_adapter(train_dir)  # FileNotFoundError naming the folder when 03 has not run
        for f in adapter.iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
        shutil.copy2(Path(train_dir) / "metrics.json", out / "metrics.json")
    if sweep_dir is not None:
        files = sorted(Path(sweep_dir).glob("*.json"))
        if not files:
            raise ValueError(f"sweep_dir {sweep_dir} holds no sweep results (*.json): run notebook 04 first")
        (out / SWEEP_FOLDER).mkdir(exist_ok=True)
        for f in files:
            shutil.copy2(f, out / SWEEP_FOLDER / f.name)
    return out


def push_run_ahead(folder: str | Path, repo_id: str, *, token: str | None, private: bool = True) -> str:
    """Upload a ``pack_run_ahead`` folder to the hub model repository ``repo_id``; returns its URL."""
    from helpers.course.export import push_to_hub

    return push_to_hub(folder, repo_id, token=token, private=private, commit_message="DPO course: run-ahead")


def _local(source: str | Path) -> Path:
    """``source`` as a folder on this disk: itself, or the hub repository ``owner/name`` downloaded."""
    p = Path(source)
    if p.exists():
        return p
    name = str(source)
    from helpers.course.export import is_hub_id

    if not is_hub_id(name):
        raise FileNotFoundError(f"RUN_AHEAD={name!r} is neither a folder on this disk nor a hub repository id "
                                "('owner/name')")
    from huggingface_hub import snapshot_download

    from helpers.infra.hubio import HubDownloadError, hub_error_advice
    from helpers.infra.quiet import progress_bars_off
    from helpers.infra.runtime import require_hub

    require_hub(f"RUN_AHEAD={name!r} (a hub repository)")
    try:
        with progress_bars_off():
            return Path(snapshot_download(name, allow_patterns=[f"{SWEEP_FOLDER}/*"]))
    except Exception as e:  # the hub's HTTP and connection errors: one message that says what to do
        raise HubDownloadError(hub_error_advice(e, f"downloading the run-ahead repository {name}")) from e


def fetch_sweep(source: str | Path, sweep_dir: str | Path) -> int:
    """Copy the sweep results of the run-ahead ``source`` (folder or hub id) into ``sweep_dir``, keeping results
    already there; returns how many files were copied. ``helpers.sweep.run_sweep`` then reads every run whose
    settings match one of them instead of training it."""
    src = _local(source) / SWEEP_FOLDER
    files = sorted(src.glob("*.json")) if src.is_dir() else []
    if not files:
        raise FileNotFoundError(f"run-ahead {source} holds no {SWEEP_FOLDER}/*.json (pack it with "
                                "helpers.course.runahead.pack_run_ahead after running notebook 04)")
    dest = Path(sweep_dir)
    dest.mkdir(parents=True, exist_ok=True)
    new = [f for f in files if not (dest / f.name).exists()]
    for f in new:
        shutil.copy2(f, dest / f.name)
    return len(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.course.runahead", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="lay out a run-ahead folder from notebook 03's and 04's outputs")
    pk.add_argument("--out", required=True)
    pk.add_argument("--train-dir")
    pk.add_argument("--sweep-dir")
    pu = sub.add_parser("push", help="upload a run-ahead folder to a hub model repository (HF_TOKEN: write)")
    pu.add_argument("--folder", required=True)
    pu.add_argument("--repo", required=True)
    pu.add_argument("--public", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        print(pack_run_ahead(a.out, train_dir=a.train_dir, sweep_dir=a.sweep_dir))
    else:
        import os

        print(push_run_ahead(a.folder, a.repo, token=os.environ.get("HF_TOKEN"), private=not a.public))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
