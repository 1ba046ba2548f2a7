"""helpers.evaluation: what the held-out reports say about a trained policy."""

import pytest


@pytest.mark.parametrize("d_chosen,d_rejected,label", [
    (0.5, -0.5, "chosen up, rejected down"),
    (0.5, 0.2, "both up, chosen faster"),
    (-0.2, -0.5, "both down, rejected faster"),
    (0.021, 0.089, "no margin gained: both up, rejected faster"),  # 03 online once printed "both up, chosen faster"
    (-0.5, -0.2, "no margin gained: both down, chosen faster"),
    (-0.3, 0.4, "the wrong way: chosen down, rejected up"),
    (0.1, 0.1, "no margin: both sides moved alike"),
])
def test_the_margin_is_labelled_from_its_own_sign_first(d_chosen, d_rejected, label):
    from helpers.evaluation import margin_source

    assert margin_source(d_chosen, d_rejected) == label
