"""Anthropic HH-RLHF -> TRL's conversational preference format, with every dropped row counted by reason.

A raw HH row is two full transcripts, ``{"chosen": str, "rejected": str}``, each a sequence of turns introduced by
the markers ``"\\n\\nHuman:"`` and ``"\\n\\nAssistant:"``. The two transcripts share the dialogue history and differ in
the final assistant turn. ``parse_hh`` splits both into role-tagged turns and returns::

    {"prompt":   [{"role": "user", ...}, {"role": "assistant", ...}, ..., {"role": "user", ...}],
     "chosen":   [{"role": "assistant", "content": final chosen turn}],
     "rejected": [{"role": "assistant", "content": final rejected turn}]}

Splitting at the FIRST ``"\\n\\nAssistant:"`` instead (as many tutorials do) puts every later Human turn of a
multi-turn dialogue into the "response"; notebook 02 counts how often.

Rows that cannot become a clean pair raise ``HHFormatError`` with ``.reason`` in ``REASONS`` (checked in the order
listed there); ``format_hh`` counts them. Malformed input (missing keys, non-string fields, unreadable files) raises
``ValueError`` naming the row or file instead: that is a broken file, not a quirk of the data.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.toy import TOY_FILES

__all__ = [
    "REASONS",
    "HHFormatError",
    "split_turns",
    "last_split",
    "last_split_report",
    "parse_hh",
    "render_hh",
    "format_hh",
    "load_hh",
    "read_jsonl",
    "to_text",
    "tokenize_pair",
    "token_lengths",
    "truncation_report",
    "TOY",
    "HHSplits",
    "resolve_hh",
    "save_splits",
    "split_request",
    "load_or_build_splits",
    "DEFAULT_SOURCE",
]

# reason -> what it means. Checked in this order: per transcript (chosen, then rejected), then the pair.
REASONS: dict[str, str] = {
    "no_leading_human": "the transcript does not start with a '\\n\\nHuman:' turn",
    "inline_marker": "a turn contains 'Human:' or 'Assistant:' without the blank line before it (merged turns)",
    "not_alternating": "two turns of the same role in a row",
    "no_final_assistant": "the transcript does not end with an Assistant turn",
    "empty_turn": "an empty turn in the dialogue history",
    "empty_response": "the final Assistant turn is empty",
    "history_mismatch": "chosen and rejected dialogue histories differ before the final Assistant turn",
    "identical_responses": "chosen and rejected final responses are identical",
}

_MARKER = re.compile(r"\n\n(Human|Assistant):")
_INLINE = re.compile(r"(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}
_LABEL = {"user": "Human", "assistant": "Assistant"}


class HHFormatError(ValueError):
    """A row that cannot be made into a clean preference pair; ``.reason`` is a key of ``REASONS``."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {list(REASONS)}, got {reason!r}")
        self.reason = reason
        super().__init__(f"{reason}: {REASONS[reason]}" + (f" ({detail})" if detail else ""))


def split_turns(transcript: str) -> list[dict[str, str]]:
    """Split one HH transcript into ``[{"role": "user"|"assistant", "content": str}, ...]``.

    Contents are stripped of the whitespace around the markers only. Raises ``HHFormatError`` for the per-transcript
    reasons (``no_leading_human``, ``inline_marker``, ``not_alternating``, ``no_final_assistant``, ``empty_turn``,
    ``empty_response``).
    """
    parts = _MARKER.split(transcript)  # [lead, role1, text1, role2, text2, ...]
    if parts[0].strip() or len(parts) < 3 or parts[1] != "Human":
        raise HHFormatError("no_leading_human", repr(parts[0][:60]) if parts[0].strip() else "")
    turns = [{"role": _ROLE[r], "content": t.strip()} for r, t in zip(parts[1::2], parts[2::2], strict=True)]
    for t in turns:
        m = _INLINE.search(t["content"])
        if m:
            raise HHFormatError("inline_marker", repr(t["content"][max(0, m.start() - 20) : m.end() + 20]))
    for a, b in zip(turns, turns[1:], strict=False):
        if a["role"] == b["role"]:
            raise HHFormatError("not_alternating", f"two {a['role']} turns in a row")
    if turns[-1]["role"] != "assistant":
        raise HHFormatError("no_final_assistant")
    if any(not t["content"] for t in turns[:-1]):
        raise HHFormatError("empty_turn")
    if not turns[-1]["content"]:
        raise HHFormatError("empty_response")
    return turns


_HUMAN, _ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def last_split(transcript: str) -> tuple[str, str]:
    """The reference recipe (the DPO authors' ``extract_anthropic_prompt``, TRL's old HH script): everything up to
    and including the **last** ``"\n\nAssistant:"`` is the prompt, the rest the response. ``("", transcript)``
    when the marker is missing."""
    if not isinstance(transcript, str):
        raise ValueError(f"transcript must be a string, got {type(transcript).__name__}")
    i = transcript.rfind(_ASSISTANT)
    return ("", transcript) if i < 0 else (transcript[: i + len(_ASSISTANT)], transcript[i + len(_ASSISTANT):])


def last_split_report(rows: list[dict]) -> dict[str, Any]:
    """What the last-split recipe hands a chat model, counted over raw HH ``rows``:

    - ``raw_prompts``: prompts that are a raw transcript (``"Human:"`` text), i.e. one user message holding every
      earlier turn as text instead of role-tagged turns, ``multi_turn`` of them with earlier assistant turns inside;
    - ``leading_space``: chosen responses that start with whitespace (the space after ``"Assistant:"``);
    - ``rejected_elsewhere``: rows whose rejected transcript does not start with the chosen side's prompt (its
      "response" then answers a different conversation); ``no_marker``: rows without an Assistant marker.
    """
    out = {"rows": len(rows), "raw_prompts": 0, "multi_turn": 0, "leading_space": 0, "rejected_elsewhere": 0,
           "no_marker": 0}
    for r in rows:
        _check_row(r)
        prompt, chosen = last_split(r["chosen"])
        if not prompt:
            out["no_marker"] += 1
            continue
        out["raw_prompts"] += _HUMAN in prompt
        out["multi_turn"] += prompt.count(_ASSISTANT) > 1
        out["leading_space"] += chosen[:1].isspace()
        out["rejected_elsewhere"] += not r["rejected"].startswith(prompt)
    return out


def _check_row(example: Any) -> None:
    if not isinstance(example, dict):
        raise ValueError(f"an HH row must be a dict with 'chosen' and 'rejected', got {type(example).__name__}")
    for key in ("chosen", "rejected"):
        if key not in example:
            raise ValueError(f"an HH row must have key {key!r}; it has {sorted(example)}")
        if not isinstance(example[key], str):
            raise ValueError(f"HH field {key!r} must be a string, got {type(example[key]).__name__}")


def parse_hh(example: dict) -> dict[str, list[dict[str, str]]]:
    """One raw HH row -> ``{"prompt": [...], "chosen": [assistant turn], "rejected": [assistant turn]}``.

    Raises ``HHFormatError`` (with ``.reason``) for rows that are not a clean pair, ``ValueError`` for malformed rows.
    """
    _check_row(example)
    chosen = split_turns(example["chosen"])
    rejected = split_turns(example["rejected"])
    if chosen[:-1] != rejected[:-1]:
        raise HHFormatError("history_mismatch", f"{len(chosen) - 1} vs {len(rejected) - 1} history turns")
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise HHFormatError("identical_responses")
    return {"prompt": chosen[:-1], "chosen": [chosen[-1]], "rejected": [rejected[-1]]}


def render_hh(turns: Sequence[dict[str, str]]) -> str:
    """Inverse of ``split_turns``: turns -> ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``."""
    return "".join(f"\n\n{_LABEL[t['role']]}: {t['content']}" for t in turns)


def format_hh(rows: Iterable[dict], *, progress: bool | None = None, desc: str = "parsing HH rows"):
    """Parse many raw rows; keep the clean pairs.

    Returns ``(datasets.Dataset with columns prompt/chosen/rejected, Counter of dropped rows by reason)``.
    Malformed rows raise ``ValueError`` naming the row index. ``progress=None`` shows a bar above 2000 rows.
    """
    from datasets import Dataset
    from tqdm.auto import tqdm

    rows = rows if isinstance(rows, Sequence) else list(rows)
    show = len(rows) > 2000 if progress is None else progress
    kept: list[dict] = []
    dropped: Counter = Counter()
    for i, row in enumerate(tqdm(rows, desc=desc, disable=not show)):
        try:
            kept.append(parse_hh(row))
        except HHFormatError as e:
            dropped[e.reason] += 1
        except ValueError as e:
            raise ValueError(f"row {i}: {e}") from e
    if not kept:  # an empty Dataset still has the conversational columns
        from datasets import Features, List, Value

        turn = List({"role": Value("string"), "content": Value("string")})
        cols = ("prompt", "chosen", "rejected")
        return Dataset.from_dict({c: [] for c in cols}, features=Features({c: turn for c in cols})), dropped
    return Dataset.from_list(kept), dropped


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

    from helpers.runtime import require_hub

    require_hub(f"load_hh({str(source)!r})")
    from datasets import load_dataset

    from helpers.models import HubDownloadError, hub_error_advice

    sl = f"{split}[:{limit}]" if limit else split
    try:  # datasets builds every split of data_dir in a temporary folder and renames it when complete
        ds = load_dataset(str(source), data_dir=data_dir, split=sl)
    except Exception as e:  # missing repository or file, HTTP errors, a server gone midway: one clear message
        raise HubDownloadError(hub_error_advice(e, f"loading dataset {source} (data_dir={data_dir!r}, "
                                                   f"split {split!r})")) from e
    return [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in ds]


# ---------------------------------------------------------------------------------------------------------------
# Chat template and token lengths, the way TRL 1.14.2's DPOTrainer tokenizes conversational pairs


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def to_text(example: dict, tokenizer) -> dict[str, str]:
    """Render one conversational pair with the tokenizer's chat template.

    Returns ``{"prompt": ..., "chosen": ..., "rejected": ...}`` where the prompt ends with the generation prompt
    (for ChatML ``"<|im_start|>assistant\\n"``) and each completion is the rest of prompt+response.
    """
    prompt = tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
    out = {"prompt": prompt}
    for key in ("chosen", "rejected"):
        full = tokenizer.apply_chat_template(example["prompt"] + example[key], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError(f"the chat template renders the prompt differently alone and with the {key} response")
        out[key] = full[len(prompt):]
    return out


def tokenize_pair(example: dict, tokenizer) -> dict[str, list[int]]:
    """``prompt_ids``, ``chosen_ids``, ``rejected_ids`` exactly as TRL 1.14.2's DPOTrainer builds them.

    The completion starts where the tokenized prompt (with generation prompt) and prompt+completion diverge.
    """

    def ids(messages, **kw):
        out = tokenizer.apply_chat_template(messages, tokenize=True, **kw)
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)

    prompt_ids = ids(example["prompt"], add_generation_prompt=True)
    chosen = ids(example["prompt"] + example["chosen"])
    rejected = ids(example["prompt"] + example["rejected"])
    n = min(_common_prefix(prompt_ids, chosen), _common_prefix(prompt_ids, rejected))
    return {"prompt_ids": prompt_ids[:n], "chosen_ids": chosen[n:], "rejected_ids": rejected[n:]}


def token_lengths(dataset, tokenizer, *, progress: bool | None = None) -> dict[str, Any]:
    """Token counts per pair: ``{"prompt": array (N,), "chosen": array (N,), "rejected": array (N,)}`` (int)."""
    import numpy as np
    from tqdm.auto import tqdm

    show = len(dataset) > 2000 if progress is None else progress
    out: dict[str, list[int]] = {"prompt": [], "chosen": [], "rejected": []}
    for ex in tqdm(dataset, desc="tokenizing", disable=not show):
        t = tokenize_pair(ex, tokenizer)
        out["prompt"].append(len(t["prompt_ids"]))
        out["chosen"].append(len(t["chosen_ids"]))
        out["rejected"].append(len(t["rejected_ids"]))
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


def truncation_report(lengths: dict[str, Any], max_length: int, truncation_mode: str = "keep_start") -> dict:
    """What ``DPOConfig(max_length=..., truncation_mode=...)`` does to these pairs (TRL 1.14.2 semantics).

    - ``keep_start``: pairs whose prompt alone has >= max_length tokens are dropped (no completion token would be
      left); others longer than max_length lose the end of the completion.
    - ``keep_end``: nothing is dropped; long sequences lose the start of the prompt.

    Returns counts: ``n``, ``dropped``, ``truncated`` (kept pairs with a chosen or rejected sequence cut),
    ``untouched``.
    """
    import numpy as np

    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be an int >= 1, got {max_length!r}")
    if truncation_mode not in ("keep_start", "keep_end"):
        raise ValueError(f"truncation_mode must be 'keep_start' or 'keep_end', got {truncation_mode!r}")
    p, c, r = (np.asarray(lengths[k]) for k in ("prompt", "chosen", "rejected"))
    dropped = (p >= max_length) if truncation_mode == "keep_start" else np.zeros_like(p, dtype=bool)
    cut = ((p + c) > max_length) | ((p + r) > max_length)
    truncated = cut & ~dropped
    return {
        "n": int(p.size),
        "max_length": max_length,
        "truncation_mode": truncation_mode,
        "dropped": int(dropped.sum()),
        "truncated": int(truncated.sum()),
        "untouched": int((~cut).sum()),
    }


# ---------------------------------------------------------------------------------------------------------------
# Source resolution with the offline fallback, train/test split, saving for notebook 03

TOY = "toy"  # the offline default world (helpers.toy), written to data/ by `python -m helpers.toy`
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


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
    from helpers.runtime import HubUnavailableError, hub_endpoint

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    source = str(source)
    toy_paths = {s: DATA_DIR / f for s, f in TOY_FILES.items()}
    if source == TOY:
        raw = {s: load_hh(p, limit=limit if s == "train" else test_limit) for s, p in toy_paths.items()}
        note = "offline default: the toy politeness world (helpers.toy), data/toy_hh_*.jsonl"
    elif _is_local(source):
        raw = _split_rows(load_hh(source, limit=limit), test_fraction, seed)
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
        data[split], dropped[split] = format_hh(rows, desc=f"parsing {split}")
    for split in ("train", "test"):
        if len(data[split]) == 0:
            counts = {r: n for r, n in dropped[split].items() if n}
            raise ValueError(f"source {source}: the {split} split is empty ({len(raw[split])} rows read"
                             + (f", all dropped: {counts}" if counts else "") + "); a source needs at least 2 "
                             "usable rows (one per split)")
    used = TOY if source == TOY else source
    return HHSplits(used, note, raw, data, dropped)


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
    from helpers.quiet import progress_bars_off

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{time.time_ns()}")  # complete splits get the name, or nothing does
    with progress_bars_off():  # a second's work per split
        for split, ds in splits.data.items():
            ds.save_to_disk(str(tmp / split))
    report = {"source": splits.source, "note": splits.note, "toy_fingerprint": _toy_fingerprint(),
              "request": request, "rows": {s: len(r) for s, r in splits.raw.items()},
              "kept": {s: len(d) for s, d in splits.data.items()},
              "dropped": {s: dict(c) for s, c in splits.dropped.items()}}
    (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _stale_reason(report: dict, request: dict, asked: set[str]) -> str | None:
    """Why saved splits cannot serve ``request`` (None: they can). Compared: the arguments the caller gave
    (``asked``) and the source's content fingerprint; arguments left at their defaults accept any saved value."""
    from helpers.runtime import hub_reachable

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
        print(f"NOTE: {reason} at {out} (notebook 02's output); rebuilding it with helpers.data.resolve_hh"
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
