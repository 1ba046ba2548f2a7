"""The offline default world's data: determinism, committed files, the ground-truth reward."""

from pathlib import Path

import pytest

from helpers.data import format_hh
from helpers.worlds.splits import load_hh
from helpers.worlds.toy import POLITE, RUDE, TOY_FILES, generate_toy_hh, is_chosen_style, toy_reward, write_toy_files

DATA = Path(__file__).resolve().parents[1] / "data"


def test_generator_is_deterministic_and_seed_dependent():
    assert generate_toy_hh(50, seed=3) == generate_toy_hh(50, seed=3)
    assert generate_toy_hh(50, seed=3) != generate_toy_hh(50, seed=4)


def test_committed_files_are_what_the_generator_writes(tmp_path):
    fresh = write_toy_files(tmp_path)
    for split, name in TOY_FILES.items():
        assert (DATA / name).read_bytes() == fresh[split].read_bytes(), "regenerate with `python -m helpers.worlds.toy`"


@pytest.fixture(scope="module")
def toy_splits():
    return {s: format_hh(load_hh(DATA / f)) for s, f in TOY_FILES.items()}


def test_sizes_and_turn_mix(toy_splits):
    train, _ = toy_splits["train"]
    test, _ = toy_splits["test"]
    assert len(train) >= 1000 and len(test) >= 200
    n_turns = [len(e["prompt"]) for e in train]
    assert 0.3 < sum(n == 1 for n in n_turns) / len(n_turns) < 0.7  # single- and multi-turn both common


def test_reward_separates_every_test_pair_and_clear_pairs_by_two(toy_splits):
    test, _ = toy_splits["test"]
    margins = [toy_reward(e["chosen"][0]["content"]) - toy_reward(e["rejected"][0]["content"]) for e in test]
    assert sum(m > 0 for m in margins) / len(margins) == 1.0  # 100% of test pairs
    subtle = sum(m == 1 for m in margins) / len(margins)
    assert 0.15 < subtle < 0.45, subtle  # a share of subtle pairs (one phrase apart)
    assert all(m >= 2 for m in margins if m != 1)  # clear pairs: polite vs rude


def test_injected_quirks_are_dropped_and_counted(toy_splits):
    _, dropped = toy_splits["train"]
    assert 10 < sum(dropped.values()) < 80
    assert {"empty_response", "inline_marker", "identical_responses", "not_alternating"} <= set(dropped)


def test_toy_reward_on_free_text():
    assert toy_reward("Sure! It is blue. Hope that helps!") == 2
    assert toy_reward("Ugh. It is blue.") == -1
    assert toy_reward("It is blue.") == 0 and not is_chosen_style("It is blue.")
    assert toy_reward("Sure! Whatever.") == 0
    assert all(toy_reward(p) == 1 for p in POLITE) and all(toy_reward(r) == -1 for r in RUDE)
    with pytest.raises(ValueError, match="text must be a string"):
        toy_reward(None)


@pytest.mark.parametrize("kw", [{"n": 0, "seed": 1}, {"n": 5, "seed": 1, "subtle_share": 1.5}])
def test_generator_validates(kw):
    with pytest.raises(ValueError):
        generate_toy_hh(**kw)
