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

__all__ = ["SWEEP_FOLDER", "PACK_FILE", "pack_run_ahead", "push_run_ahead", "fetch_sweep", "version_difference",
           "main"]

SWEEP_FOLDER = "04_sweep"


PACK_FILE = "run-ahead.json"  # what a pack holds and which course made it (its DPORecipe fields)


def _recipe_fields() -> list[str]:
    from dataclasses import fields

    from helpers.recipe import DPORecipe

    return sorted(f.name for f in fields(DPORecipe))


def _inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def pack_run_ahead(out_dir: str | Path, *, train_dir: str | Path | None = None,
                   sweep_dir: str | Path | None = None) -> Path:
    """Lay out a run-ahead folder in ``out_dir`` from notebook 03's ``OUTPUT_DIR`` (``train_dir``: ``adapter/`` +
    ``metrics.json``) and/or notebook 04's sweep cache (``sweep_dir``: its ``*.json``). Returns ``out_dir``.

    What it carries is checked first: adapter weights present and readable, ``metrics.json`` and every sweep result
    valid JSON (a broken file is named, and nothing is packed). The pack is built beside ``out_dir`` and swapped in
    whole (never old files mixed with new), with ``PACK_FILE`` recording its contents and the course's recipe fields.
    ``out_dir`` must be absent, empty or an earlier pack, and must not overlap ``train_dir`` or ``sweep_dir``."""
    from helpers.infra.files import building_dir, read_json, write_json

    if train_dir is None and sweep_dir is None:
        raise ValueError("give train_dir (notebook 03's OUTPUT_DIR) and/or sweep_dir (notebook 04's 04_sweep)")
    out = Path(out_dir)
    for name, src in (("train_dir", train_dir), ("sweep_dir", sweep_dir)):
        if src is not None and (_inside(out, Path(src)) or _inside(Path(src), out)):
            raise ValueError(f"out_dir {out} overlaps {name} {src}: pack into a folder of its own (e.g. "
                             "runs/run-ahead)")
    adapter = metrics = None
    files: list[Path] = []
    if train_dir is not None:
        from helpers.course.export import trained_adapter
        from helpers.infra.outputs import weights_problem

        # FileNotFoundError naming the folder when 03 has not run or its weights are missing; ValueError for a recipe
        # of another course version
        adapter, metrics = trained_adapter(train_dir)
        for w in adapter.glob("*.safetensors"):
            if why := weights_problem(w):
                raise ValueError(f"{w}: the adapter weights cannot be read ({why}): save the adapter again "
                                 "(notebook 03 §8) before packing")
    if sweep_dir is not None:
        files = sorted(Path(sweep_dir).glob("*.json"))
        if not files:
            raise ValueError(f"sweep_dir {sweep_dir} holds no sweep results (*.json): run notebook 04 first")
        for f in files:
            read_json(f, what="sweep result")  # CorruptFileError naming a truncated one: nothing is packed
    with building_dir(out, kind="run-ahead", also_ours=(SWEEP_FOLDER, PACK_FILE)) as tmp:
        if adapter is not None:
            for f in adapter.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
            write_json(tmp / "metrics.json", metrics)
        if files:
            (tmp / SWEEP_FOLDER).mkdir()
            for f in files:
                shutil.copy2(f, tmp / SWEEP_FOLDER / f.name)
        write_json(tmp / PACK_FILE, {"adapter": adapter is not None, "sweep_results": len(files),
                                     "recipe_fields": _recipe_fields()})
    return out


def version_difference(pack: dict) -> str | None:
    """How the course that made a pack differs from this one (its ``recipe_fields``), or None."""
    theirs, ours = set(pack.get("recipe_fields") or []), set(_recipe_fields())
    if not theirs or theirs == ours:
        return None
    parts = [f"recipe fields unknown here: {sorted(theirs - ours)}" if theirs - ours else "",
             f"recipe fields it lacks: {sorted(ours - theirs)}" if ours - theirs else ""]
    return "it was made by another version of the course (" + "; ".join(p for p in parts if p) + ")"


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

    what = f"RUN_AHEAD={name!r} (no folder {p.resolve()} here, so read as a hub repository id)"
    require_hub(what)
    try:
        with progress_bars_off():
            return Path(snapshot_download(name, allow_patterns=[f"{SWEEP_FOLDER}/*", PACK_FILE]))
    except Exception as e:  # the hub's HTTP and connection errors: one message that says what to do
        raise HubDownloadError(hub_error_advice(e, f"downloading {what}")) from e


def fetch_sweep(source: str | Path, sweep_dir: str | Path) -> int:
    """Copy the sweep results of the run-ahead ``source`` (folder or hub id) into ``sweep_dir``, keeping results
    already there; returns how many files were copied. ``helpers.sweep.run_sweep`` then reads every run whose
    settings match one of them instead of training it, and says how many matched and what differs for the rest.
    A broken result (not valid JSON) is skipped with a note naming it; a pack from another course version is named
    as such."""
    from helpers.infra.files import CorruptFileError, read_json, write_bytes, write_json
    from helpers.sweep import RUN_AHEAD_NOTE

    root = _local(source)
    src = root / SWEEP_FOLDER
    files = sorted(src.glob("*.json")) if src.is_dir() else []
    if not files:
        raise FileNotFoundError(f"run-ahead {source} holds no {SWEEP_FOLDER}/*.json (pack it with "
                                "helpers.course.runahead.pack_run_ahead after running notebook 04)")
    if (root / PACK_FILE).is_file():
        why = version_difference(read_json(root / PACK_FILE, what="run-ahead description"))
        if why:
            print(f"NOTE: run-ahead {source}: {why}; its sweep results are used only where their settings match")
    dest = Path(sweep_dir)
    dest.mkdir(parents=True, exist_ok=True)
    good = []
    for f in files:
        try:
            read_json(f, what="run-ahead sweep result")
            good.append(f)
        except CorruptFileError as e:
            print(f"NOTE: {e}; skipped (that run trains here unless it is cached already)")
    new = [f for f in good if not (dest / f.name).exists()]
    for f in new:
        write_bytes(dest / f.name, f.read_bytes())
    write_json(dest / RUN_AHEAD_NOTE, {"source": str(source), "files": [f.name for f in good]})
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
