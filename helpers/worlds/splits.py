"""Where the HH pairs come from: the hub, a local ``.jsonl[.gz]`` file, or the toy world when the hub is unusable;
notebook 02's saved splits, and when they are stale.

``resolve_hh`` picks the source (printing which and why) and returns parsed train/test splits (``HHSplits``);
``save_splits`` / ``load_or_build_splits`` keep them on disk with a ``report.json`` that says what they were built
from, so that notebook 03 rebuilds them (with a printed note) when they are missing or were built from other rows.
Parsing and formatting a row is ``helpers.data``'s job.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.data import format_hh
from helpers.infra.files import building_dir, write_json
from helpers.infra.paths import DATA_DIR
from helpers.worlds.toy import TOY_FILES

__all__ = ["DEFAULT_SOURCE", "read_jsonl", "load_hh", "TOY", "HHSplits", "resolve_hh", "split_request", "save_splits",
           "load_or_build_splits"]


DEFAULT_SOURCE = "Anthropic/hh-rlhf"  # the only source that falls back to the toy world when the hub is unusable


def _is_local(source: str | Path) -> bool:
    """A local path, as opposed to a hub dataset id ("owner/name"): it exists, has a file suffix, starts with
    '/', '.' or '~', or has more than one '/'."""
    s = str(source)
    return (Path(s).exists() or bool(Path(s).suffix) or s.startswith(("/", ".", "~")) or s.count("/") > 1
            or os.sep != "/" and os.sep in s)


def read_jsonl(path: str | Path, *, limit: int | None = None) -> list[dict]:
    """Rows of a ``.jsonl`` or ``.jsonl.gz`` file. Errors name the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HH file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict] = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if limit is not None and len(rows) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from e
    except (EOFError, gzip.BadGzipFile, OSError, UnicodeDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot be read completely ({type(e).__name__}: {e}); is it truncated?") from e
    if not rows:
        raise ValueError(f"{path}: no rows (empty file)")
    return rows


def load_hh(
    source: str | Path = "Anthropic/hh-rlhf",
    *,
    data_dir: str | None = "helpful-base",
    split: str = "train",
    limit: int | None = None,
) -> list[dict]:
    """Raw HH rows from a local ``.jsonl``/``.jsonl.gz`` file or from the hub.

    Args:
        source: a path to a local file, or a hub dataset id (default ``"Anthropic/hh-rlhf"``).
        data_dir: hub subset, e.g. ``"helpful-base"``, ``"harmless-base"`` (ignored for local files).
        split: ``"train"`` or ``"test"`` (hub only).
        limit: at most this many rows (> 0).

    Raises:
        HubUnavailableError: a hub id while offline (``HF_HUB_OFFLINE=1``) or unreachable; raised within seconds.
    """
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if _is_local(source):
        if not Path(source).exists():
            raise FileNotFoundError(f"source {str(source)!r} is a local path that does not exist (a hub id looks "
                                    f"like 'owner/name')")
        if Path(source).suffix not in (".jsonl", ".gz"):
            raise ValueError(f"source must be a .jsonl or .jsonl.gz file or a hub id, got {source!r}")
        return read_jsonl(source, limit=limit)

    from helpers.infra.runtime import require_hub

    require_hub(f"load_hh({str(source)!r})")
    from datasets import load_dataset

    from helpers.infra.hubio import HubDownloadError, hub_error_advice

    sl = f"{split}[:{limit}]" if limit else split
    try:  # datasets builds every split of data_dir in a temporary folder and renames it when complete
        ds = load_dataset(str(source), data_dir=data_dir, split=sl)
    except Exception as e:  # missing repository or file, HTTP errors, a server gone midway: one clear message
        raise HubDownloadError(hub_error_advice(e, f"loading dataset {source} (data_dir={data_dir!r}, "
                                                   f"split {split!r})")) from e
    return [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in ds]


TOY = "toy"  # the offline default world (helpers.worlds.toy), written to data/ by `python -m helpers.worlds.toy`




@dataclass
class HHSplits:
    """Raw rows and formatted pairs of one source. ``dropped[split]`` counts rows dropped by reason."""

    source: str  # what was actually used (after any fallback)
    note: str  # how it was chosen, printed by the notebooks
    raw: dict[str, list[dict]]
    data: dict[str, Any]  # split -> datasets.Dataset (prompt/chosen/rejected)
    dropped: dict[str, Counter]


def _split_rows(rows: list[dict], test_fraction: float, seed: int) -> dict[str, list[dict]]:
    import random

    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_test = max(1, round(len(rows) * test_fraction))
    test = sorted(idx[:n_test])
    train = sorted(idx[n_test:])
    return {"train": [rows[i] for i in train], "test": [rows[i] for i in test]}


def resolve_hh(
    source: str | Path = "Anthropic/hh-rlhf",
    *,
    data_dir: str | None = "helpful-base",
    limit: int | None = None,
    test_limit: int | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> HHSplits:
    """Load and format train/test HH pairs from ``source``, falling back to the offline default when needed.

    ``source``: a hub id (train and test splits from the hub; when the hub is unusable the toy world is used and
    the note says why), a local ``.jsonl[.gz]`` file (split ``test_fraction`` deterministically by ``seed``), or
    ``"toy"`` (the offline default in ``data/``). ``limit``/``test_limit`` cap the rows read per split.
    """
    from helpers.infra.runtime import HubUnavailableError, hub_endpoint

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    source = str(source)
    toy_paths = {s: DATA_DIR / f for s, f in TOY_FILES.items()}
    in_file = None  # a local file's rows in file order
    if source == TOY:
        raw = {s: load_hh(p, limit=limit if s == "train" else test_limit) for s, p in toy_paths.items()}
        note = "offline default: the toy politeness world (helpers.worlds.toy), data/toy_hh_*.jsonl"
    elif _is_local(source):
        in_file = load_hh(source, limit=limit)
        raw = _split_rows(in_file, test_fraction, seed)
        if test_limit:
            raw["test"] = raw["test"][:test_limit]
        note = f"local file {source}: {len(raw['train'])} train / {len(raw['test'])} test rows (seed {seed})"
    else:
        try:
            raw = {"train": load_hh(source, data_dir=data_dir, split="train", limit=limit),
                   "test": load_hh(source, data_dir=data_dir, split="test", limit=test_limit)}
            note = (f"hub: {source} ({data_dir}) at {hub_endpoint()}: {len(raw['train'])} train / "
                    f"{len(raw['test'])} test rows read")
        except HubUnavailableError as e:
            if source != DEFAULT_SOURCE:  # only the default falls back; any other source was asked for by name
                raise
            print(f"NOTE: {e}. Falling back to the offline default (the toy world).")
            fb = resolve_hh(TOY, limit=limit, test_limit=test_limit)
            fb.note = f"{fb.note} (fallback: {e})"
            return fb
    data, dropped = {}, {}
    for split, rows in raw.items():
        try:
            data[split], dropped[split] = format_hh(rows, desc=f"parsing {split}")
        except ValueError as e:
            if in_file is not None:  # a local file: name the bad row by its line there, not by the shuffle
                _check_rows(in_file, source)
            raise ValueError(f"source {source}, {split} split: {e}") from e
    for split in ("train", "test"):
        if len(data[split]) == 0:
            counts = {r: n for r, n in dropped[split].items() if n}
            raise ValueError(f"source {source}: the {split} split is empty ({len(raw[split])} rows read"
                             + (f", all dropped: {counts}" if counts else "") + "); a source needs at least 2 "
                             "usable rows (one per split)")
    used = TOY if source == TOY else source
    return HHSplits(used, note, raw, data, dropped)


def _check_rows(rows: list[dict], source: str | Path) -> None:
    """``ValueError`` naming the file and line of the first row of ``source`` that is not an HH row (not an object
    with string ``chosen`` and ``rejected``); rows that parse but are dropped (``HHFormatError``) pass. Called only
    once ``format_hh`` has failed on a split, so the clean path parses every row once."""
    from helpers.data import HHFormatError, parse_hh

    for k, row in enumerate(rows):
        try:
            parse_hh(row)
        except HHFormatError:
            continue
        except ValueError as e:
            opener = gzip.open if Path(source).suffix == ".gz" else open
            with opener(source, "rt", encoding="utf-8") as f:  # the k-th non-blank line
                line = [n for n, text in enumerate(f, 1) if text.strip()][k]
            raise ValueError(f"{source}, line {line}: {e}") from e


def _toy_fingerprint() -> str:
    """sha256 (12 hex) of the offline default's data files: saved splits made from other files are stale."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(TOY_FILES.values()):
        h.update((DATA_DIR / name).read_bytes())
    return h.hexdigest()[:12]


def split_request(**resolve_kwargs) -> dict[str, Any]:
    """What ``resolve_hh(**resolve_kwargs)`` is asked for, with its defaults filled in, plus a fingerprint of the
    source's content (a local file's sha256, the toy data's fingerprint): saved splits are reused only for this."""
    import hashlib
    import inspect

    req = {k: p.default for k, p in inspect.signature(resolve_hh).parameters.items()}
    unknown = set(resolve_kwargs) - set(req)
    if unknown:
        raise ValueError(f"unknown resolve_hh arguments {sorted(unknown)}; allowed: {sorted(req)}")
    req.update(resolve_kwargs)
    req["source"] = str(req["source"])
    if req["source"] == TOY:
        req["fingerprint"] = _toy_fingerprint()
    elif Path(req["source"]).is_file():
        req["fingerprint"] = hashlib.sha256(Path(req["source"]).read_bytes()).hexdigest()[:16]
    return req


def save_splits(splits: HHSplits, out_dir: str | Path, *, request: dict[str, Any] | None = None) -> Path:
    """``save_to_disk`` each formatted split under ``out_dir/<split>`` plus ``report.json`` (source, drop counts,
    and ``request``: what the splits were built for, see ``split_request``)."""
    from helpers.infra.quiet import progress_bars_off

    out = Path(out_dir)
    report = {"source": splits.source, "note": splits.note, "toy_fingerprint": _toy_fingerprint(),
              "request": request, "rows": {s: len(r) for s, r in splits.raw.items()},
              "kept": {s: len(d) for s, d in splits.data.items()},
              "dropped": {s: dict(c) for s, c in splits.dropped.items()}}
    # complete splits get the name, or nothing does; a folder of something else is refused, not replaced
    with building_dir(out, kind="saved splits", also_ours=("report.json",)) as tmp, progress_bars_off():
        for split, ds in splits.data.items():
            ds.save_to_disk(str(tmp / split))  # a second's work per split
        write_json(tmp / "report.json", report)
    return out


def _stale_reason(report: dict, request: dict, asked: set[str]) -> str | None:
    """Why saved splits cannot serve ``request`` (None: they can). Compared: the arguments the caller gave
    (``asked``) and the source's content fingerprint; arguments left at their defaults accept any saved value."""
    from helpers.infra.runtime import hub_reachable

    if report.get("source") == TOY and report.get("toy_fingerprint") != _toy_fingerprint():
        return "stale toy data (data/toy_hh_*.jsonl changed since it was saved)"
    old = report.get("request")
    if not isinstance(old, dict):
        return "saved splits without a record of what they were built from (an older version)"
    keys = (asked | {"source"}) | ({"fingerprint"} if "fingerprint" in request else set())
    diff = {k: (old.get(k), request[k]) for k in ["source", *sorted(keys - {"source"})] if old.get(k) != request[k]}
    if diff:
        return "saved splits were built for " + ", ".join(f"{k}={a!r}" for k, (a, _) in diff.items()) + \
            ", not " + ", ".join(f"{k}={b!r}" for k, (_, b) in diff.items())
    if report.get("source") == TOY and request["source"] != TOY and hub_reachable():
        return f"saved splits are the toy fallback, and {request['source']} is reachable now"
    return None


def load_or_build_splits(out_dir: str | Path, *, rebuild_with: dict[str, Any] | None = None,
                         **resolve_kwargs) -> dict[str, Any]:
    """Notebook 02's saved splits from ``out_dir`` if they were built for these ``resolve_kwargs`` (source, limit,
    seed, ... as given, and the source's content); otherwise rebuild them (``resolve_hh``) and save, with a note
    saying why. Arguments not given accept whatever the saved splits were built with (notebook 02's limits).
    ``rebuild_with``: ``resolve_hh`` arguments used only for a rebuild (e.g. notebook 02's row limits), not asked of
    saved splits; ``resolve_kwargs`` win over them."""
    from datasets import load_from_disk

    out = Path(out_dir)
    if out.is_file():
        raise ValueError(f"out_dir {out} is a file; it must be a folder of saved splits (notebook 02's output)")
    request = split_request(**resolve_kwargs)
    splits_saved = all((out / s / "dataset_info.json").exists() for s in ("train", "test"))
    reason = "no formatted data"
    if splits_saved and (out / "report.json").exists():
        try:
            reason = _stale_reason(json.loads((out / "report.json").read_text()), request, set(resolve_kwargs))
        except ValueError as e:
            reason = f"unreadable report.json ({e})"
    if reason is not None:
        build = {**(rebuild_with or {}), **resolve_kwargs}
        print(f"NOTE: {reason} at {out} (notebook 02's output); rebuilding it with helpers.worlds.splits.resolve_hh"
              + (f" ({', '.join(f'{k}={v}' for k, v in build.items() if k in (rebuild_with or {}))})"
                 if rebuild_with else "") + ".")
        splits = resolve_hh(**build)
        print(f"      source: {splits.note}")
        save_splits(splits, out, request=split_request(**build))
    loaded = {s: load_from_disk(str(out / s)) for s in ("train", "test")}
    empty = [s for s, d in loaded.items() if len(d) == 0]
    if empty:
        raise ValueError(f"{out}: the saved {' and '.join(empty)} split is empty; delete {out} to rebuild it")
    return loaded
