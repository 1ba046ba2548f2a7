"""A discrete "bandit" where every step of the DPO derivation can be checked exactly.

X prompts, Y candidate responses per prompt, a known reward r(x, y) and a reference policy pi_ref(y|x). The
KL-regularised RLHF objective  max_pi E[r] - beta * KL(pi || pi_ref)  has the closed-form optimum

    pi*(y|x) = pi_ref(y|x) * exp(r(x, y) / beta) / Z(x)

(DPO paper, Eq. 4). Preferences follow Bradley-Terry: P(y1 > y2 | x) = sigmoid(r(x, y1) - r(x, y2)). Minimising the
DPO loss over a tabular policy recovers pi*, and the implicit reward beta * log(pi / pi_ref) equals r up to the
per-prompt constant beta * log Z(x), which cancels in every pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Bandit", "make_bandit", "optimal_logp", "kl", "expected_reward", "sample_preferences",
           "fit_dpo_tabular", "implicit_reward"]


@dataclass(frozen=True)
class Bandit:
    reward: torch.Tensor  # (X, Y) float64
    ref_logp: torch.Tensor  # (X, Y) float64, log pi_ref(y|x); rows sum to 1 in probability


def make_bandit(n_prompts: int = 3, n_responses: int = 5, *, seed: int = 0, reward_scale: float = 2.0) -> Bandit:
    """Random rewards (standard normal x ``reward_scale``) and a random reference policy, float64."""
    if n_prompts < 1 or n_responses < 2:
        raise ValueError(f"need n_prompts >= 1 and n_responses >= 2, got {n_prompts}, {n_responses}")
    g = torch.Generator().manual_seed(seed)
    reward = reward_scale * torch.randn(n_prompts, n_responses, generator=g, dtype=torch.float64)
    ref_logp = torch.log_softmax(torch.randn(n_prompts, n_responses, generator=g, dtype=torch.float64), -1)
    return Bandit(reward, ref_logp)


def optimal_logp(b: Bandit, beta: float) -> torch.Tensor:
    """log pi*(y|x) = log pi_ref + r / beta - log Z(x); ``(X, Y)``."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    return torch.log_softmax(b.ref_logp + b.reward / beta, -1)


def kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per prompt; inputs ``(X, Y)`` log-probabilities, output ``(X,)``."""
    return (p_logp.exp() * (p_logp - q_logp)).sum(-1)


def expected_reward(b: Bandit, logp: torch.Tensor) -> torch.Tensor:
    """E_{y ~ pi(.|x)} r(x, y) per prompt, ``(X,)``."""
    return (logp.exp() * b.reward).sum(-1)


def implicit_reward(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """beta * log(pi / pi_ref), ``(X, Y)``: DPO's reward, equal to r(x, y) - beta * log Z(x) at the optimum."""
    return beta * (logp - ref_logp)


def sample_preferences(b: Bandit, n: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` labelled pairs: prompt x, winner, loser (each ``(n,)`` int64).

    Pairs of distinct responses are drawn uniformly; the winner is drawn from Bradley-Terry on the true reward.
    """
    g = torch.Generator().manual_seed(seed)
    n_x, n_y = b.reward.shape
    x = torch.randint(0, n_x, (n,), generator=g)
    y1 = torch.randint(0, n_y, (n,), generator=g)
    y2 = (y1 + torch.randint(1, n_y, (n,), generator=g)) % n_y  # != y1
    p1 = torch.sigmoid(b.reward[x, y1] - b.reward[x, y2])
    first_wins = torch.rand(n, generator=g, dtype=torch.float64) < p1
    return x, torch.where(first_wins, y1, y2), torch.where(first_wins, y2, y1)


def _population_loss(logp: torch.Tensor, b: Bandit, beta: float) -> torch.Tensor:
    """Expected DPO loss over all ordered pairs of distinct responses, labels drawn from Bradley-Terry."""
    h = implicit_reward(logp, b.ref_logp, beta)  # (X, Y)
    margin = h[:, :, None] - h[:, None, :]  # (X, Y, Y): reward of y1 minus y2
    p = torch.sigmoid(b.reward[:, :, None] - b.reward[:, None, :])  # P(y1 beats y2)
    off = ~torch.eye(h.shape[1], dtype=torch.bool)
    return -(p * F.logsigmoid(margin))[:, off].mean()


def fit_dpo_tabular(b: Bandit, beta: float, prefs=None, *, steps: int = 2000, lr: float = 0.1,
                    optimizer: str = "adam", trace: list | None = None) -> torch.Tensor:
    """Fit a tabular policy (free logits per prompt and response, started at pi_ref) by minimising the DPO loss.

    ``prefs=None`` minimises the population loss (exact Bradley-Terry labels); otherwise ``prefs`` is
    ``(x, winner, loser)`` from ``sample_preferences``. ``optimizer``: "adam" or "sgd". With ``trace`` (a list),
    the mean over prompts of KL(pi || pi_ref) is appended before every step. Returns log pi ``(X, Y)``.
    """
    from helpers.losses import dpo_loss

    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    logits = b.ref_logp.clone().requires_grad_(True)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)([logits], lr=lr)
    for _ in range(steps):
        logp = torch.log_softmax(logits, -1)
        if trace is not None:
            trace.append(kl(logp.detach(), b.ref_logp).mean().item())
        if prefs is None:
            loss = _population_loss(logp, b, beta)
        else:
            x, w, lo = prefs
            loss = dpo_loss(logp[x, w], logp[x, lo], b.ref_logp[x, w], b.ref_logp[x, lo], beta=beta).losses.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.log_softmax(logits.detach(), -1)
