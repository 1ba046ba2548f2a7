"""The well-formedness check and the win rate that counts malformed answers as losses."""

import pytest

from helpers.compare import strict_win_rate, win_rate
from helpers.quality import REASONS, is_malformed, malformed_reason, malformed_report


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("   \n", "empty"),
    ("!", "starts_with_non_letter"), ("! Sure, here it is.", "starts_with_non_letter"),
    ('"Hi."', "starts_with_non_letter"),
    ("Certainly! The capital of Peru is", "unfinished"), ("The answer is 4", "unfinished"),
    ("Sure! Paris.\nCertainly!", "line_break"),
    ("Two plus two is four. user: thanks!", "role_word"), ("Sure. Assistant: here.", "role_word"),
])
def test_malformed_reasons(text, reason):
    assert malformed_reason(text) == reason and is_malformed(text)
    assert reason in REASONS


@pytest.mark.parametrize("text", ["Sure! The capital of Peru is Lima.", "Ugh. Four.", "Is it 4? Yes!",
                                  "3 is odd.", "  Happily! Grass is green.  ", "The users' guide helps."])
def test_well_formed_answers_pass(text):
    assert malformed_reason(text) is None


def test_report_counts_by_reason_and_rejects_non_strings():
    rep = malformed_report(["Fine.", "", "cut", "Fine!"])
    assert rep == {"n": 4, "malformed": 2, "malformed_rate": 0.5, "reasons": {"empty": 1, "unfinished": 1}}
    assert malformed_report(t for t in ["Fine.", "", "cut", "Fine!"]) == rep  # a generator is counted too
    with pytest.raises(ValueError, match="string"):
        malformed_reason(None)


def test_strict_win_rate_counts_malformed_as_losses():
    pol, ref = [2.0, 2.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]
    assert win_rate(pol, ref) == (1 + 1 + 0 + 0.5) / 4
    # the policy's first two answers score high but are broken: they lose; a broken reference loses too
    assert strict_win_rate(pol, ref, [True, True, False, False], [False, True, True, False]) == (0 + 0.5 + 1 + 0.5) / 4
    with pytest.raises(ValueError, match="equal length"):
        strict_win_rate(pol, ref, [True], [False])
