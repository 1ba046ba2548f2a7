"""The DPO derivation checked exactly on a discrete bandit (helpers.bandit): notebook 01's claims, as unit tests."""

import pytest
import torch

from helpers.bandit import (
    expected_reward,
    fit_dpo_tabular,
    implicit_reward,
    kl,
    make_bandit,
    optimal_logp,
    sample_preferences,
)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_minimising_the_dpo_loss_recovers_the_closed_form_optimum(beta):
    b = make_bandit(3, 5, seed=0)
    star = optimal_logp(b, beta)
    fit = fit_dpo_tabular(b, beta, steps=3000, lr=0.05)
    assert kl(star, fit).max().item() < 1e-8
    assert kl(star, b.ref_logp).min().item() > 1e-3  # and the optimum is not the reference itself
    # implicit reward = r(x, y) - beta * log Z(x): equal to r up to one constant per prompt
    diff = implicit_reward(fit, b.ref_logp, beta) - b.reward
    assert (diff - diff.mean(-1, keepdim=True)).abs().max().item() < 1e-6
    log_z = torch.logsumexp(b.ref_logp + b.reward / beta, -1)
    torch.testing.assert_close(diff.mean(-1), -beta * log_z)


def test_finite_bradley_terry_samples_get_close():
    b = make_bandit(3, 5, seed=0)
    prefs = sample_preferences(b, 20000, seed=1)
    x, w, lo = prefs
    assert (b.reward[x, w] > b.reward[x, lo]).float().mean() > 0.6  # labels follow the reward, noisily
    assert (b.reward[x, w] > b.reward[x, lo]).float().mean() < 0.95
    fit = fit_dpo_tabular(b, 1.0, prefs, steps=500, lr=0.05)
    assert kl(optimal_logp(b, 1.0), fit).max().item() < 5e-3


def test_larger_beta_keeps_the_optimum_closer_to_the_reference():
    b = make_bandit(4, 6, seed=3)
    betas = [0.05, 0.1, 0.5, 1.0, 5.0]
    kls = [kl(optimal_logp(b, beta), b.ref_logp).mean().item() for beta in betas]
    rewards = [expected_reward(b, optimal_logp(b, beta)).mean().item() for beta in betas]
    assert all(a > c for a, c in zip(kls, kls[1:], strict=False))  # KL to pi_ref falls as beta grows
    assert all(a > c for a, c in zip(rewards, rewards[1:], strict=False))  # and so does expected reward
    assert rewards[-1] > expected_reward(b, b.ref_logp).mean().item()


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_responses"):
        make_bandit(2, 1)
    with pytest.raises(ValueError, match="beta"):
        optimal_logp(make_bandit(), 0.0)


def test_adam_cancels_beta_early_while_sgd_scales_with_it():
    """Notebook 04 §5: with Adam the small betas take the same first steps; with SGD the step scales with beta."""
    import pytest

    from helpers.bandit import fit_dpo_tabular, make_bandit, sample_preferences

    b = make_bandit(3, 5, seed=0)
    prefs = sample_preferences(b, 500, seed=0)
    kl_at = {}
    for opt, lr in (("adam", 0.05), ("sgd", 5.0)):
        for beta in (0.01, 0.1):
            tr: list[float] = []
            fit_dpo_tabular(b, beta, prefs, steps=11, lr=lr, optimizer=opt, trace=tr)
            assert len(tr) == 11 and tr[0] == pytest.approx(0.0, abs=1e-12)
            kl_at[opt, beta] = tr[10]
    assert kl_at["adam", 0.1] / kl_at["adam", 0.01] < 1.2  # same steps: beta cancelled
    assert kl_at["sgd", 0.1] / kl_at["sgd", 0.01] > 10  # step ~ beta, KL ~ step^2
    with pytest.raises(ValueError, match="optimizer"):
        fit_dpo_tabular(b, 0.1, prefs, steps=1, optimizer="lion")
