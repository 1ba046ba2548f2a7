"""The offline default world: a toy preference task with a known ground-truth reward.

Like the DPO paper's controlled-sentiment experiment, but on a CPU in a minute. Users ask short factual questions
(single- and multi-turn). The rule a good answer follows is **politeness**: the ground-truth reward of a response is
the number of polite markers minus the number of rude markers in it (``toy_reward``); a response is in the *chosen
style* when its reward is > 0. Every pair's chosen response scores higher than its rejected one.

- clear pairs: polite opener + answer (+ maybe a polite closer) vs rude opener + the same answer (+ maybe a rude
  closer): reward >= 1 vs <= -1;
- subtle pairs (``subtle_share``): polite answer vs the same polite answer spoiled by a rude closer: reward 1 vs 0,
  one phrase apart at the end, so reward accuracy does not saturate at the first steps.

Rows are written in the raw HH-RLHF transcript format so the same ``helpers.data.parse_hh`` pipeline handles them.
A small share of rows (``quirk_share``) deliberately carries HH-RLHF's real quirks (empty response, merged turns,
identical responses, diverging histories), so the parser's drop report has something to count offline too.
All text is written by this module; nothing is copied from any data set.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from helpers.infra.files import write_text

__all__ = [
    "POLITE",
    "RUDE",
    "toy_reward",
    "is_chosen_style",
    "generate_toy_hh",
    "TOY_FILES",
    "write_toy_files",
]

# Openers are single words, so the style of a response is decided by its first token; the reward matches words,
# not exact phrases, so a garbled rude phrase ("Now go.") still counts as rude.
POLITE_OPENERS = ("Sure!", "Gladly!", "Certainly!", "Absolutely!", "Happily!")
POLITE_CLOSERS = ("Hope that helps!", "Have a nice day!", "Glad to help.")
RUDE_OPENERS = ("Ugh.", "Whatever.", "Obviously.", "Meh.", "Duh.")
RUDE_CLOSERS = ("Now go away.", "Don't ask again.", "Are we done?")
POLITE = POLITE_OPENERS + POLITE_CLOSERS
RUDE = RUDE_OPENERS + RUDE_CLOSERS
_POLITE_RE = re.compile(r"\b(?:sure|gladly|certainly|absolutely|happily|helps|nice day|glad)\b", re.IGNORECASE)
_RUDE_RE = re.compile(r"\b(?:ugh|whatever|obviously|meh|duh|go away|ask again|we done)\b", re.IGNORECASE)

TOY_FILES = {"train": "toy_hh_train.jsonl", "test": "toy_hh_test.jsonl"}
TOY_SIZES = {"train": (1200, 1), "test": (240, 2)}  # split -> (rows, seed)


def toy_reward(text: str) -> float:
    """Ground-truth reward: (# polite markers) - (# rude markers) in ``text``, matched as whole words, any case.

    Each opener and closer in ``POLITE``/``RUDE`` contains exactly one marker. Works on any generated text.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    return float(len(_POLITE_RE.findall(text)) - len(_RUDE_RE.findall(text)))


def is_chosen_style(text: str) -> bool:
    """The response follows the rule (reward > 0)."""
    return toy_reward(text) > 0


CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Egypt": "Cairo", "Peru": "Lima",
    "Kenya": "Nairobi", "Norway": "Oslo", "Canada": "Ottawa", "Chile": "Santiago", "Greece": "Athens",
    "Poland": "Warsaw", "Cuba": "Havana", "India": "New Delhi", "Ireland": "Dublin", "Portugal": "Lisbon",
}
COLORS = {
    "the sky": "blue", "grass": "green", "snow": "white", "coal": "black", "a ripe banana": "yellow",
    "a ripe tomato": "red", "an orange": "orange", "a plum": "purple", "chocolate": "brown", "a lime": "green",
}
SOUNDS = {"dog": "barks", "cat": "meows", "cow": "moos", "duck": "quacks", "sheep": "bleats", "lion": "roars",
           "owl": "hoots", "horse": "neighs", "frog": "croaks", "bee": "buzzes"}
OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "early": "late", "light": "dark",
              "up": "down", "open": "closed", "full": "empty", "loud": "quiet", "old": "new", "wet": "dry"}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]
_GREETINGS = [("Hi there!", "Hello! What can I do for you?"), ("Good morning.", "Good morning! How can I help?"),
              ("Hey, quick question.", "Of course, go ahead."), ("Hello.", "Hi! Ask me anything.")]


def _question(rng: random.Random) -> tuple[str, str]:
    """(user question, a correct one-sentence answer)."""
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randrange(10), rng.randrange(10)
        sentence = f"{NUMBERS[a].capitalize()} plus {NUMBERS[b]} is {NUMBERS[a + b]}."
        return f"What is {NUMBERS[a]} plus {NUMBERS[b]}?", sentence
    if kind == 1:
        country = rng.choice(sorted(CAPITALS))
        return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."
    if kind == 2:
        thing = rng.choice(sorted(COLORS))
        return f"What color is {thing}?", f"{thing[0].upper() + thing[1:]} is {COLORS[thing]}."
    if kind == 3:
        animal = rng.choice(sorted(SOUNDS))
        return f"What sound does a {animal} make?", f"A {animal} {SOUNDS[animal]}."
    word = rng.choice(sorted(OPPOSITES))
    return f"What is the opposite of {word}?", f"The opposite of {word} is {OPPOSITES[word]}."


def _history(rng: random.Random) -> list[tuple[str, str]]:
    """0-2 earlier (user, assistant) exchanges; earlier assistant turns are always polite."""
    n = rng.choices([0, 1, 2], weights=[5, 3, 2])[0]
    hist = []
    if n >= 1:
        hist.append(rng.choice(_GREETINGS))
    if n == 2:
        q, a = _question(rng)
        hist.append((q, f"{rng.choice(POLITE_OPENERS)} {a}"))
    return hist


def _pair(rng: random.Random, answer: str, subtle: bool) -> tuple[str, str]:
    polite = f"{rng.choice(POLITE_OPENERS)} {answer}"
    if not subtle:  # polite vs rude, the same answer in between
        chosen = polite + (f" {rng.choice(POLITE_CLOSERS)}" if rng.random() < 0.5 else "")
        rude = f"{rng.choice(RUDE_OPENERS)} {answer}"
        return chosen, rude + (f" {rng.choice(RUDE_CLOSERS)}" if rng.random() < 0.5 else "")
    return polite, f"{polite} {rng.choice(RUDE_CLOSERS)}"  # the same answer, spoiled by a rude closer


def _render(turns: list[tuple[str, str]]) -> str:
    return "".join(f"\n\n{role}: {text}" for role, text in turns)


def generate_toy_hh(n: int, seed: int, *, subtle_share: float = 0.3, quirk_share: float = 0.03) -> list[dict]:
    """``n`` raw HH-format rows ``{"chosen": str, "rejected": str}``; deterministic for a given ``seed``.

    About ``subtle_share`` of the clean pairs are subtle (see module docstring); about ``quirk_share`` of rows carry
    an HH-RLHF quirk that ``parse_hh`` drops.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    for name, v in (("subtle_share", subtle_share), ("quirk_share", quirk_share)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v!r}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        hist = _history(rng)
        question, answer = _question(rng)
        chosen, rejected = _pair(rng, answer, subtle=rng.random() < subtle_share)
        turns = [t for h, a in hist for t in (("Human", h), ("Assistant", a))] + [("Human", question)]
        if rng.random() < quirk_share:
            quirk = rng.randrange(4)
            if quirk == 0:  # empty response
                rejected = ""
            elif quirk == 1:  # a merged turn: "Human:" inline, without the blank line
                chosen = f"{chosen}\nHuman: thanks!"
            elif quirk == 2:  # identical responses
                rejected = chosen
            else:  # histories diverge: the rejected side has an extra assistant turn (two in a row)
                row = {"chosen": _render(turns + [("Assistant", chosen)]),
                       "rejected": _render(turns + [("Assistant", "Hmm."), ("Assistant", rejected)])}
                rows.append(row)
                continue
        rows.append({"chosen": _render(turns + [("Assistant", chosen)]),
                     "rejected": _render(turns + [("Assistant", rejected)])})
    return rows


def write_toy_files(out_dir: str | Path) -> dict[str, Path]:
    """Write the offline default data set (train and test splits, ``TOY_SIZES``) as .jsonl files."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, (n, seed) in TOY_SIZES.items():
        p = out / TOY_FILES[split]
        write_text(p, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generate_toy_hh(n, seed)))
        paths[split] = p
    return paths


if __name__ == "__main__":  # python -m helpers.worlds.toy [out_dir]: regenerate data/toy_hh_*.jsonl
    import sys

    from helpers.infra.paths import DATA_DIR

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR
    for split, path in write_toy_files(target).items():
        print(f"{split}: {path}")
