"""DPO loss math: closed forms, gradients and input validation (helpers.losses)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers.losses import LOSS_TYPES, dpo_loss, implicit_margin


def _logps(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(-10 * torch.rand(b, generator=g, dtype=torch.float64) - 1) for _ in range(4)]


def _lengths(b=5):
    return torch.arange(1, b + 1, dtype=torch.float64) * 3, torch.arange(b, 0, -1, dtype=torch.float64) * 2


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 5.0])
def test_loss_is_ln2_when_policy_equals_reference(beta):
    pc, pr, _, _ = _logps()
    out = dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=beta)
    torch.testing.assert_close(out.losses, torch.full_like(pc, math.log(2)))
    assert torch.all(out.chosen_rewards == 0) and torch.all(out.rejected_rewards == 0)


@pytest.mark.parametrize("beta", [0.05, 0.1, 2.0])
def test_gradient_wrt_margin_matches_closed_form(beta):
    h = torch.linspace(-30, 30, 61, dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros_like(h)
    # policy_chosen - ref_chosen = h, rejected log-ratio 0  =>  margin = h
    loss = dpo_loss(h, zeros, zeros, zeros, beta=beta).losses
    (grad,) = torch.autograd.grad(loss.sum(), h)
    closed = -beta * torch.sigmoid(-beta * h.detach())
    assert (grad - closed).abs().max().item() < 1e-12


def test_rewards_are_beta_times_log_ratio_and_detached():
    pc, pr, rc, rr = _logps()
    pc.requires_grad_(True)
    out = dpo_loss(pc, pr, rc, rr, beta=0.3)
    torch.testing.assert_close(out.chosen_rewards, 0.3 * (pc.detach() - rc))
    torch.testing.assert_close(out.rejected_rewards, 0.3 * (pr - rr))
    assert not out.chosen_rewards.requires_grad and out.losses.requires_grad
    assert out.losses.shape == (5,)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "robust", "ipo", "sigmoid_norm"])
def test_identical_chosen_and_rejected_give_zero_gradient(loss_type):
    # chosen == rejected (same text, same log-probs): a margin-based loss gets no preference signal from the pair
    x = torch.tensor([-5.0, -7.5], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-6.0, -7.0], dtype=torch.float64)
    n = torch.tensor([4.0, 6.0], dtype=torch.float64)
    ls = 0.2 if loss_type == "robust" else 0.0
    losses = dpo_loss(x, x, ref, ref, beta=0.1, loss_type=loss_type, chosen_lengths=n, rejected_lengths=n,
                      label_smoothing=ls).losses
    (g,) = torch.autograd.grad(losses.sum(), x)
    assert torch.all(g == 0), g


def test_label_smoothing_zero_reduces_to_plain_dpo():
    pc, pr, rc, rr = _logps()
    plain = -F.logsigmoid(0.1 * implicit_margin(pc, pr, rc, rr))
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, label_smoothing=0.0).losses, plain)
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, loss_type="robust").losses, plain)


def test_conservative_dpo_is_expected_loss_under_flipped_labels():
    pc, pr, rc, rr = _logps()
    eps = 0.2
    flip = dpo_loss(pr, pc, rr, rc).losses  # labels swapped
    keep = dpo_loss(pc, pr, rc, rr).losses
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, label_smoothing=eps).losses, (1 - eps) * keep + eps * flip)


def test_ipo_uses_per_token_log_ratios():
    pc, pr, rc, rr = _logps()
    lc, lr = _lengths()
    beta = 0.5
    h_avg = (pc - rc) / lc - (pr - rr) / lr
    torch.testing.assert_close(
        dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="ipo", chosen_lengths=lc, rejected_lengths=lr).losses,
        (h_avg - 1 / (2 * beta)) ** 2,
    )


def test_hinge_is_zero_once_margin_exceeds_one_over_beta():
    h = torch.tensor([0.0, 5.0, 10.0, 20.0], dtype=torch.float64)
    z = torch.zeros_like(h)
    out = dpo_loss(h, z, z, z, beta=0.1, loss_type="hinge").losses
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("beta", [0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_beta_raises(beta):
    pc, pr, rc, rr = _logps()
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=beta)


@pytest.mark.parametrize(("beta", "loss_type"), [(1e39, "sigmoid"), (1e-320, "ipo"), (2e6, "hinge"), (1e-7, "ipo")])
def test_a_beta_that_would_overflow_the_loss_is_refused(beta, loss_type):
    """Issue 35: beta 1e39 (sigmoid) and 1e-320 (IPO) passed the check and gave inf/NaN losses and gradients."""
    pc, pr, rc, rr = (t.float() for t in _logps())  # float32, as training computes them
    lengths = torch.full_like(pc, 5.0)
    with pytest.raises(ValueError, match=r"beta must be a number in \[1e-06, 1e\+06\]"):
        dpo_loss(pc, pr, rc, rr, beta=beta, loss_type=loss_type, chosen_lengths=lengths, rejected_lengths=lengths)
    for edge in (1e-6, 1e6):  # the ends of the range keep the loss and its gradient finite
        x = pc.clone().requires_grad_(True)
        out = dpo_loss(x, pr, rc, rr, beta=edge, loss_type=loss_type, chosen_lengths=lengths,
                       rejected_lengths=lengths)
        out.losses.sum().backward()
        assert torch.isfinite(out.losses).all() and torch.isfinite(x.grad).all(), (edge, loss_type)


@pytest.mark.parametrize("ls", [-0.01, 0.5, 0.9])
def test_bad_label_smoothing_raises(ls):
    pc, pr, rc, rr = _logps()
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\)"):
        dpo_loss(pc, pr, rc, rr, label_smoothing=ls)


def test_unknown_loss_type_lists_valid_ones():
    pc, pr, rc, rr = _logps()
    with pytest.raises(ValueError, match="loss_type") as e:
        dpo_loss(pc, pr, rc, rr, loss_type="kl_dpo")
    for name in LOSS_TYPES:
        assert name in str(e.value)


def test_mismatched_shapes_raise_naming_the_argument():
    pc, pr, rc, rr = _logps()
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        dpo_loss(pc, pr, rc, rr[:3])
    with pytest.raises(ValueError, match="policy_chosen_logps"):
        dpo_loss(pc[:, None], pr, rc, rr)


@pytest.mark.parametrize("loss_type", ["ipo", "sigmoid_norm"])
def test_lengths_required_for_per_token_losses(loss_type):
    pc, pr, rc, rr = _logps()
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(pc, pr, rc, rr, loss_type=loss_type)
    lc, _ = _lengths()
    with pytest.raises(ValueError, match="rejected_lengths"):
        dpo_loss(pc, pr, rc, rr, loss_type=loss_type, chosen_lengths=lc, rejected_lengths=lc[:2])


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_loss_type_is_finite_and_decreases_with_margin(loss_type):
    lc, lr = _lengths(3)
    z = torch.zeros(3, dtype=torch.float64)
    vals = []
    for m in (-5.0, 0.0, 5.0):
        h = torch.full((3,), m, dtype=torch.float64)
        out = dpo_loss(h, -h, z, z, beta=0.1, loss_type=loss_type, chosen_lengths=lc, rejected_lengths=lr,
                       label_smoothing=0.1 if loss_type == "robust" else 0.0).losses
        assert torch.isfinite(out).all()
        vals.append(out.mean().item())
    if loss_type not in ("ipo", "sppo_hard"):  # squared losses have a finite target, not a monotone decrease
        assert vals[0] > vals[1] > vals[2], vals


def test_gradient_weight_is_the_autograd_gradient_per_log_prob():
    from helpers.losses import gradient_weight

    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(32, generator=g, dtype=torch.float64) * 5 for _ in range(4))
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    beta = 0.3
    out = dpo_loss(pc, pr, rc, rr, beta=beta)
    gc, gr = torch.autograd.grad(out.losses.sum(), (pc, pr))
    w = gradient_weight(out.chosen_rewards, out.rejected_rewards)
    assert (gc + beta * w).abs().max().item() < 1e-12 and (gr - beta * w).abs().max().item() < 1e-12
    assert ((w > 0.5) == (out.chosen_rewards < out.rejected_rewards)).all()  # misordered pairs weigh more


def test_the_separate_chosen_terms_push_up_fade_or_have_a_finite_target_and_none_forbids_a_fall():
    """What notebook 01 Appendix A says of bco_pair / apo_zero / sppo_hard / nca_pair, computed by autograd."""
    import math

    from helpers.losses import chosen_push

    hs = (-20.0, 0.0, 20.0, 60.0)
    for lt in ("bco_pair", "apo_zero"):  # always up, fading to nothing
        g = chosen_push(lt, beta=0.1, chosen_log_ratios=hs)
        assert all(v < 0 for v in g.values()) and abs(g[60.0]) < 1e-3, (lt, g)
    sppo = chosen_push("sppo_hard", beta=0.1, chosen_log_ratios=(4.9, 5.0, 5.1))  # target 1/(2 beta) = 5
    assert sppo[4.9] < 0 and abs(sppo[5.0]) < 1e-9 and sppo[5.1] > 0
    turn = math.log(2) / 0.1
    nca = chosen_push("nca_pair", beta=0.1, chosen_log_ratios=(turn - 0.05, turn + 0.05))
    assert nca[turn - 0.05] < 0 < nca[turn + 0.05]  # pushes chosen DOWN above beta * h_w = ln 2
    from helpers.losses import LOSS_INFO

    assert "not allowed to fall" not in LOSS_INFO["nca_pair"][1] and "removes" not in LOSS_INFO["sigmoid_norm"][1]


def test_loss_and_logprob_inputs_are_checked():
    import numpy as np
    import torch

    from helpers.logprobs import pad_and_mask, sequence_logps
    from helpers.losses import dpo_loss

    lp = {k: torch.tensor([-300.25, -280.5]) for k in ("pc", "pr", "rc", "rr")}
    lp["pc"] = torch.tensor([-299.1, -280.0])
    want = dpo_loss(lp["pc"], lp["pr"], lp["rc"], lp["rr"], beta=0.1).losses
    for beta in (np.float64(0.1), np.float32(0.1), torch.tensor(0.1)):
        got = dpo_loss(lp["pc"], lp["pr"], lp["rc"], lp["rr"], beta=beta).losses
        torch.testing.assert_close(got, want)
    # fp16 log-probs: upcast before the differences (fp16 spacing at 300 is 0.25)
    half = dpo_loss(*(lp[k].half() for k in ("pc", "pr", "rc", "rr")), beta=0.1).losses
    exact = dpo_loss(*(lp[k].half().double() for k in ("pc", "pr", "rc", "rr")), beta=0.1).losses
    torch.testing.assert_close(half.double(), exact, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(lp["pc"], lp["pr"], lp["rc"], lp["rr"], beta=float("inf"))
    logits = torch.randn(1, 4, 10)
    for dtype in (torch.bool, torch.uint8):
        with pytest.raises(ValueError, match="labels must be signed integer"):
            sequence_logps(logits, torch.ones(1, 4, dtype=dtype))
    with pytest.raises(ValueError, match=r"prompt_lengths\[0\]"):
        pad_and_mask([[1, 2, 3]], [-1], pad_token_id=0)
