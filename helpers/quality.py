"""Is a generated answer well-formed? A cheap, explicit check applied to both sides of every comparison.

Scores that only count markers (``helpers.toy.toy_reward``) or that come from the model itself (the implicit reward)
rate broken text as readily as good text. ``malformed_reason`` names what is wrong with an answer, or returns None:

- ``empty``: nothing but whitespace;
- ``starts_with_non_letter``: the first character is not a letter or digit (e.g. "!", a stray quote);
- ``unfinished``: it does not end with ".", "!" or "?" (cut mid-sentence, or ran out of tokens);
- ``line_break``: it holds a line break (a second turn, a list spilling over);
- ``role_word``: it contains a chat role word ("user", "assistant", "system", "Human:", "Assistant:") as a word.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["REASONS", "malformed_reason", "is_malformed", "malformed_report"]

REASONS = ("empty", "starts_with_non_letter", "unfinished", "line_break", "role_word")
_ROLE = re.compile(r"\b(?:user|assistant|system|human)\b", re.IGNORECASE)


def malformed_reason(text: str) -> str | None:
    """The first reason (in ``REASONS`` order) that ``text`` is malformed, or None when it is well-formed."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    s = text.strip()
    if not s:
        return "empty"
    if not s[0].isalnum():
        return "starts_with_non_letter"
    if s[-1] not in ".!?":
        return "unfinished"
    if "\n" in s:
        return "line_break"
    if _ROLE.search(s):
        return "role_word"
    return None


def is_malformed(text: str) -> bool:
    return malformed_reason(text) is not None


def malformed_report(texts: Iterable[str]) -> dict:
    """``{"n", "malformed", "malformed_rate", "reasons": {reason: count}}`` over ``texts``."""
    found = [malformed_reason(t) for t in texts]  # one pass: a generator is consumed once
    reasons = Counter(r for r in found if r is not None)
    n, bad = len(found), sum(reasons.values())
    return {"n": n, "malformed": bad, "malformed_rate": bad / n if n else float("nan"), "reasons": dict(reasons)}
