"""DPO-family preference losses on per-pair sequence log-probabilities.

Every loss is a function of the policy/reference log-ratios of the chosen (w) and rejected (l) response:

    h_w = log pi(y_w|x) - log pi_ref(y_w|x)       h_l = log pi(y_l|x) - log pi_ref(y_l|x)
    h   = h_w - h_l                                (the implicit-reward margin, divided by beta)

The implicit reward of a response is ``beta * h_y`` (DPO paper, Eq. 5, up to the prompt-only term beta*log Z(x),
which cancels in a pair). Formulas follow TRL 1.14.2's ``DPOTrainer`` wherever TRL has the same ``loss_type``
(checked against TRL in ``tests/test_trl_oracle.py``); ``sigmoid`` adds the conservative-DPO label smoothing of
the original DPO repository (``preference_loss`` in eric-mitchell/direct-preference-optimization), which TRL 1.14.2
ignores for ``sigmoid``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from helpers.infra.checks import number

__all__ = ["LOSS_TYPES", "LOSS_INFO", "BETA_RANGE", "DPOLossOutput", "dpo_loss", "implicit_margin", "gradient_weight",
           "chosen_push"]


# The loss first (the lesson); what it returns, its relatives, the table of variants and the checks below.
def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> DPOLossOutput:
    """Per-pair DPO-family loss.

    Args:
        policy_chosen_logps, policy_rejected_logps: ``(B,)`` summed log pi(y|x) of the policy.
        ref_chosen_logps, ref_rejected_logps: ``(B,)`` the same under the frozen reference.
        beta: > 0. Strength of the KL anchor to the reference: larger beta = policy stays closer to pi_ref.
        loss_type: one of ``LOSS_TYPES``.
        label_smoothing: in [0, 0.5): assumed rate of flipped labels (``sigmoid`` = cDPO, ``robust``).
        chosen_lengths, rejected_lengths: ``(B,)`` completion token counts; required by ``ipo`` and
            ``sigmoid_norm``, which use per-token averaged log-ratios (as TRL does).

    Returns:
        ``DPOLossOutput(losses (B,), chosen_rewards (B,), rejected_rewards (B,))``; rewards are detached.
    """
    beta, label_smoothing = _check(
        {
            "policy_chosen_logps": policy_chosen_logps,
            "policy_rejected_logps": policy_rejected_logps,
            "ref_chosen_logps": ref_chosen_logps,
            "ref_rejected_logps": ref_rejected_logps,
        },
        beta,
        loss_type,
        label_smoothing,
        chosen_lengths,
        rejected_lengths,
    )
    # fp16/bf16 log-probs are upcast: summed log-probs are large (-100s) and their differences small, which half
    # precision cannot hold (fp16 spacing at 300 is 0.25): the loss would be wrong without a word.
    up = lambda t: t.float() if t.dtype in (torch.float16, torch.bfloat16) else t  # noqa: E731
    policy_chosen_logps, policy_rejected_logps = up(policy_chosen_logps), up(policy_rejected_logps)
    ref_chosen_logps, ref_rejected_logps = up(ref_chosen_logps), up(ref_rejected_logps)
    h_w = policy_chosen_logps - ref_chosen_logps  # (B,)
    h_l = policy_rejected_logps - ref_rejected_logps  # (B,)
    h = h_w - h_l  # (B,)
    ls = float(label_smoothing)

    if loss_type == "sigmoid":
        losses = -(1 - ls) * F.logsigmoid(beta * h) - ls * F.logsigmoid(-beta * h)
    elif loss_type == "robust":
        losses = (-(1 - ls) * F.logsigmoid(beta * h) + ls * F.logsigmoid(-beta * h)) / (1 - 2 * ls)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss_type in ("ipo", "sigmoid_norm"):
        h_avg = h_w / chosen_lengths.clamp(min=1) - h_l / rejected_lengths.clamp(min=1)  # per-token margin
        if loss_type == "ipo":  # IPO Eq. 17 with tau = beta
            losses = (h_avg - 1 / (2 * beta)) ** 2
        else:
            losses = -F.logsigmoid(beta * h_avg)
    elif loss_type == "bco_pair":
        losses = -F.logsigmoid(beta * h_w) - F.logsigmoid(-beta * h_l)
    elif loss_type == "nca_pair":
        losses = -F.logsigmoid(beta * h_w) - 0.5 * F.logsigmoid(-beta * h_w) - 0.5 * F.logsigmoid(-beta * h_l)
    elif loss_type == "sppo_hard":
        losses = (h_w - 0.5 / beta) ** 2 + (h_l + 0.5 / beta) ** 2
    else:  # apo_zero
        losses = (1 - torch.sigmoid(beta * h_w)) + torch.sigmoid(beta * h_l)

    return DPOLossOutput(losses, (beta * h_w).detach(), (beta * h_l).detach())


# loss_type -> (paper, one line on what it changes). Notebook 01 prints this table.
LOSS_INFO: dict[str, tuple[str, str]] = {
    "sigmoid": (
        "Rafailov et al. 2023, DPO (arXiv:2305.18290); cDPO label smoothing: Mitchell 2023 note",
        "Bradley-Terry log-likelihood of the preference. Here label_smoothing=eps gives cDPO (a share eps of flipped "
        "labels); TRL 1.14.2's sigmoid ignores label_smoothing, so cDPO is not available through TRL.",
    ),
    "ipo": (
        "Azar et al. 2023, IPO (arXiv:2310.12036)",
        "Squared loss pulling the per-token margin to 1/(2 beta): bounded target, does not push margins to infinity.",
    ),
    "hinge": (
        "Zhao et al. 2023, SLiC-HF (arXiv:2305.10425)",
        "Hinge on beta*h with margin 1: zero loss (and gradient) once a pair is separated by 1/beta.",
    ),
    "robust": (
        "Chowdhury et al. 2024, Provably Robust DPO (arXiv:2403.00409)",
        "Unbiased loss under label noise rate eps=label_smoothing: de-biases the noisy BT likelihood.",
    ),
    "bco_pair": (
        "Jung et al. 2024, BCO (arXiv:2404.04656), paired form as in TRL",
        "Two independent binary classifiers: chosen log-ratio up, rejected log-ratio down (no shared margin).",
    ),
    "nca_pair": (
        "Chen et al. 2024, NCA (arXiv:2402.05369)",
        "Noise-contrastive: an absolute term on the chosen log-ratio that pushes it up only while beta*h_w < ln 2 and "
        "down beyond (a finite optimum, chosen_push); it does not stop the chosen likelihood from falling.",
    ),
    "sppo_hard": (
        "Wu et al. 2024, SPPO (arXiv:2405.00675), hard-label version",
        "Regresses chosen log-ratio to +1/(2 beta) and rejected to -1/(2 beta) separately.",
    ),
    "apo_zero": (
        "D'Oosterlinck et al. 2024, APO (arXiv:2408.06266), Eq. 7",
        "Anchored: raise chosen and lower rejected likelihood; for chosen answers better than the model's own.",
    ),
    "sigmoid_norm": (
        "DPO with per-token averaged log-ratios (length-normalised; cf. SimPO's normalisation, arXiv:2405.14734)",
        "Sigmoid loss on the per-token margin: weakens the length bias of summed log-probs (notebook 01 §4 measures "
        "by how much; it does not remove it).",
    ),
}
LOSS_TYPES: tuple[str, ...] = tuple(LOSS_INFO)
# beta outside this range overflows float32: beta * log-ratio (sigmoid, hinge) or 1 / (2 beta) (IPO) becomes inf, and
# the loss and its gradient inf or NaN (beta 1e39, 1e-320). The course's sweeps use 0.01 to 100.
BETA_RANGE: tuple[float, float] = (1e-6, 1e6)
_NEEDS_LENGTHS = frozenset({"ipo", "sigmoid_norm"})


class DPOLossOutput(NamedTuple):
    """Per-pair outputs, all of shape ``(B,)``."""

    losses: torch.Tensor  # differentiable; take .mean() for the batch loss
    chosen_rewards: torch.Tensor  # beta * (log pi(y_w) - log pi_ref(y_w)), detached
    rejected_rewards: torch.Tensor  # beta * (log pi(y_l) - log pi_ref(y_l)), detached


def implicit_margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)); all inputs and the output ``(B,)``."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def gradient_weight(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """sigma(r_l - r_w), ``(B,)``: the weight of a pair in the gradient of the sigmoid DPO loss (DPO paper, Sec. 4).

    For L = -log sigma(r_w - r_l) with r = beta * (log pi - log pi_ref):
    dL/d log pi(y_w) = -beta * sigma(r_l - r_w) and dL/d log pi(y_l) = +beta * sigma(r_l - r_w).
    Pairs the implicit reward already orders correctly get little weight; wrongly ordered pairs get up to 1.
    """
    return torch.sigmoid(rejected_rewards - chosen_rewards)


def chosen_push(loss_type: str, *, beta: float = 0.1, chosen_log_ratios=(-20.0, 0.0, 20.0, 60.0)) -> dict[float, float]:
    """dL/dh_w, the loss's gradient with respect to the chosen log-ratio h_w = log pi(y_w) - log pi_ref(y_w), at
    each of ``chosen_log_ratios`` with the rejected log-ratio held at 0 (and one token per answer, for the per-token
    losses). Negative: the loss pushes the chosen log-prob up there; near 0: it has stopped caring; positive: it
    pushes it down (a finite target). On its own term only: with shared parameters, lowering the rejected answer
    can still drag the chosen one down whatever this says."""
    h = torch.tensor(chosen_log_ratios, dtype=torch.float64, requires_grad=True)
    zero, one = torch.zeros_like(h).detach(), torch.ones_like(h).detach()
    out = dpo_loss(h, zero, zero, zero, beta=beta, loss_type=loss_type, label_smoothing=0.0, chosen_lengths=one,
                   rejected_lengths=one)
    (g,) = torch.autograd.grad(out.losses.sum(), h)
    return {float(x): float(v) for x, v in zip(chosen_log_ratios, g, strict=True)}


def _check(
    tensors: dict[str, torch.Tensor],
    beta: float,
    loss_type: str,
    label_smoothing: float,
    chosen_lengths: torch.Tensor | None,
    rejected_lengths: torch.Tensor | None,
) -> None:
    beta = number(beta, "beta", low=BETA_RANGE[0], high=BETA_RANGE[1],
                  allowed=f"a number in [{BETA_RANGE[0]:g}, {BETA_RANGE[1]:g}] (beyond it the loss overflows)")
    if loss_type not in LOSS_INFO:
        raise ValueError(f"loss_type must be one of {list(LOSS_TYPES)}, got {loss_type!r}")
    label_smoothing = number(label_smoothing, "label_smoothing", low=0, high=0.5, high_open=True,
                             allowed="in [0, 0.5)")
    shape = None
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 1:
            raise ValueError(f"{name} must have shape (B,), got {tuple(t.shape)}")
        if not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be floating point log-probs, got dtype {t.dtype}")
        if shape is None:
            shape = t.shape
        elif t.shape != shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but policy_chosen_logps has {tuple(shape)}; all must match"
            )
    if loss_type in _NEEDS_LENGTHS and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError(
            f"chosen_lengths and rejected_lengths (completion token counts, shape (B,)) are required for "
            f"loss_type={loss_type!r}: it averages log-ratios per token, like TRL"
        )
    for name, t in (("chosen_lengths", chosen_lengths), ("rejected_lengths", rejected_lengths)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.shape != shape:
            raise ValueError(f"{name} must be a tensor of shape {tuple(shape)}, got {getattr(t, 'shape', t)!r}")
        if bool((t < 0).any()):
            raise ValueError(f"{name} must be >= 0, got min {t.min().item()}")
    return beta, label_smoothing
