"""Anthropic HH-RLHF -> TRL's conversational preference format, with every dropped row counted by reason.

A raw HH row is two full transcripts, ``{"chosen": str, "rejected": str}``, each a sequence of turns introduced by
the markers ``"\\n\\nHuman:"`` and ``"\\n\\nAssistant:"``. The two transcripts share the dialogue history and differ in
the final assistant turn. ``parse_hh`` splits both into role-tagged turns and returns::

    {"prompt":   [{"role": "user", ...}, {"role": "assistant", ...}, ..., {"role": "user", ...}],
     "chosen":   [{"role": "assistant", "content": final chosen turn}],
     "rejected": [{"role": "assistant", "content": final rejected turn}]}

Splitting at the FIRST ``"\\n\\nAssistant:"`` instead (one of this course's early seeds did) puts every later Human
turn of a multi-turn dialogue into the "response"; notebook 02 counts how often.

Where the rows come from (hub, file, toy world) and notebook 02's saved splits: ``helpers.worlds.splits``.

Rows that cannot become a clean pair raise ``HHFormatError`` with ``.reason`` in ``REASONS`` (checked in the order
listed there); ``format_hh`` counts them. Malformed input (missing keys, non-string fields, unreadable files) raises
``ValueError`` naming the row or file instead: that is a broken file, not a quirk of the data.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "REASONS",
    "HHFormatError",
    "split_turns",
    "last_split",
    "last_split_report",
    "parse_hh",
    "render_hh",
    "format_hh",
    "to_text",
    "tokenize_pair",
    "token_lengths",
    "truncation_report",
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
