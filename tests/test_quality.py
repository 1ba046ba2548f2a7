"""The well-formedness check (real-text rules and the toy world's strict ones) and the win rate that counts
malformed answers as losses."""

import json

import pytest

from helpers.compare import strict_win_rate, win_rate
from helpers.quality import (
    REASONS,
    TOY_REASONS,
    calibration,
    excess_rate,
    is_malformed,
    malformed_reason,
    malformed_report,
)


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("   \n", "empty"),
    ("!", "no_letters"), ("...", "no_letters"), ('"', "no_letters"), ("?!", "no_letters"),
    ("Sure.<|im_end|>", "chat_marker"), ("Paris.<|im_start|>user", "chat_marker"), ("Yes </s>", "chat_marker"),
    ("The capital is Paris.\nuser\nAnd Spain?", "role_turn"), ("Sure.\n\nHuman: thanks", "role_turn"),
    ("Sure!\nAssistant: here it is.", "role_turn"), ("Okay.\nUser: what else?", "role_turn"),
    ("I am sorry " * 8, "repetition"), ("Certainly! green. " * 6, "repetition"),
    ("Hello!\n\nAbsol!!\n\nAbsolutely!", "fragments"),  # a collapsed SmolLM2 (off-policy pairs at lr 1e-3)
    ("Absol! greeting!\n\nHello!\n\nHello!\n\nHello!", "fragments"),
])
def test_real_text_rules_flag_what_is_broken(text, reason):
    assert malformed_reason(text) == reason and is_malformed(text)
    assert reason in REASONS


@pytest.mark.parametrize("text", [
    "Sure! The capital of Peru is Lima.", "Here are three ideas:\n1. Walk.\n2. Read.\n3. Cook.",
    "To reset it, the system must be booted from the recovery disk.", "A human being in California can do that.",
    "Ask the user for their password only through the official form.", "The answer is 4 because two plus two",
    "3 is odd.", "That is a good question", "\"Hello\" is a greeting.", "- first item\n- second item",
    "Sure.\n\nFirst, preheat the oven.\n\nThen bake it for an hour.", "Yes.\n\nNo.",
])
def test_real_text_rules_pass_fluent_answers_even_cut_or_listed(text):
    assert malformed_reason(text) is None, malformed_reason(text)


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("   \n", "empty"),
    ("!", "starts_with_non_letter"), ("! Sure, here it is.", "starts_with_non_letter"),
    ('"Hi."', "starts_with_non_letter"),
    ("Certainly! The capital of Peru is", "unfinished"), ("The answer is 4", "unfinished"),
    ("Sure! Paris.\nCertainly!", "line_break"),
    ("Two plus two is four. user: thanks!", "role_word"), ("Sure. Assistant: here.", "role_word"),
])
def test_the_toy_world_keeps_its_strict_rules_when_it_asks_for_them(text, reason):
    assert malformed_reason(text, rules="toy") == reason and reason in TOY_REASONS


@pytest.mark.parametrize("text", ["Sure! The capital of Peru is Lima.", "Ugh. Four.", "Is it 4? Yes!",
                                  "3 is odd.", "  Happily! Grass is green.  ", "The users' guide helps."])
def test_toy_well_formed_answers_pass(text):
    assert malformed_reason(text, rules="toy") is None


def test_real_hh_chosen_answers_are_flagged_at_most_2_percent(shared_hh_path):
    from helpers.data import HHFormatError, parse_hh

    pairs = []
    for line in shared_hh_path.read_text().splitlines():
        try:
            pairs.append(parse_hh(json.loads(line)))
        except HHFormatError:
            pass
    chosen = [p["chosen"][0]["content"] for p in pairs]
    assert len(chosen) > 1000
    assert malformed_report(chosen)["malformed_rate"] <= 0.02
    assert malformed_report(chosen, rules="toy")["malformed_rate"] > 0.10  # why the toy rules are not for real text


def test_report_counts_by_reason_truncation_apart_and_rejects_bad_input():
    rep = malformed_report(["Fine.", "", "cut mid", "!"], stopped=[True, True, False, True])
    assert rep == {"n": 4, "malformed": 2, "malformed_rate": 0.5, "reasons": {"empty": 1, "no_letters": 1},
                   "examples": [["", "empty"], ["!", "no_letters"]], "rules": "real", "truncated": 1,
                   "truncated_rate": 0.25}
    assert malformed_report(t for t in ["Fine.", "", "cut mid", "!"])["malformed"] == 2  # a generator is counted too
    with pytest.raises(ValueError, match="string"):
        malformed_reason(None)
    with pytest.raises(ValueError, match="rules"):
        malformed_reason("x", rules="strict")
    with pytest.raises(ValueError, match="one flag per text"):
        malformed_report(["a"], stopped=[True, False])


def test_excess_rate_is_the_difference_with_its_standard_error():
    e, se = excess_rate(0.30, 100, 0.10, 100)
    assert e == pytest.approx(0.20) and se == pytest.approx((0.3 * 0.7 / 100 + 0.1 * 0.9 / 100) ** 0.5)
    assert excess_rate(0.0, 10, 0.0, 10) == (0.0, 0.0)
    with pytest.raises(ValueError, match="run_n"):
        excess_rate(0.1, 0, 0.1, 10)
    with pytest.raises(ValueError, match="reference_rate"):
        excess_rate(0.1, 10, 1.5, 10)


def test_the_calibration_the_notebooks_print_holds_its_goals():
    from pathlib import Path

    c = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/quality_calibration.json").read_text())
    assert c["hh"]["chosen"]["real"]["malformed_rate"] <= 0.02
    t = c["toy_overoptimised"]["toy"]
    # notebook 04's over-optimised run is still caught by the toy rules, by 04's own criterion (MALFORMED_RATIO)
    import nbformat

    from helpers.sweep_report import no_lesson

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks/04_beta_sensitivity.ipynb", as_version=4)
    params: dict = {}
    exec(next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source, params)
    ratio = params["MALFORMED_RATIO"]
    run = t["run"]
    assert no_lesson(run, {**t["reference"], "kl_n": run["kl_n"]}, ratio) is not None, (run, t["reference"])
    text = calibration()
    assert "chosen" in text and "SmolLM2" in text and "collapsed" in text
    assert "toy world's over-optimised run" not in text  # one machine's dated run: 04 prints the live one


def test_strict_win_rate_counts_malformed_as_losses():
    pol, ref = [2.0, 2.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]
    assert win_rate(pol, ref) == (1 + 1 + 0 + 0.5) / 4
    # the policy's first two answers score high but are broken: they lose; a broken reference loses too
    assert strict_win_rate(pol, ref, [True, True, False, False], [False, True, True, False]) == (0 + 0.5 + 1 + 0.5) / 4
    with pytest.raises(ValueError, match="equal length"):
        strict_win_rate(pol, ref, [True], [False])


def test_calibration_prints_the_real_model_runs_judged_by_todays_rules():
    """The collapsed SmolLM2 of the on-policy benchmark (off-policy pairs, lr 1e-3) is flagged by the real-text rules
    (it was not before the 'fragments' rule), its reference is not, and the pilot's lr 5e-4 run has its own line."""
    import re

    from helpers.quality import calibration

    text = calibration()
    m = re.search(r"collapsed by off-policy pairs .*flag (\d+) of its (\d+) stored answers .*\(reference (\d+) of",
                  text)
    assert m, text
    flagged, n, ref = map(int, m.groups())
    assert flagged > n / 2 and ref <= 1
    assert "meant to over-optimise on real HH pairs" in text
