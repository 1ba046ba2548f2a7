"""Figures of notebooks 03-05: training curves from ``trainer.state.log_history``, 04's beta sweep, 05's scores."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CURVES", "curves_from_log_history", "plot_training_curves", "plot_beta_sweep", "plot_scores_lengths"]

# panel title -> the log keys drawn in it (TRL's names; eval entries carry an "eval_" prefix)
CURVES: dict[str, tuple[str, ...]] = {
    "loss": ("loss",),
    "reward accuracy": ("rewards/accuracies",),
    "reward margin": ("rewards/margins",),
    "log-probs": ("logps/chosen", "logps/rejected"),
}


def curves_from_log_history(log_history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """``{"loss": (steps, values), "eval_loss": ..., ...}`` for every key in ``CURVES``, train and eval."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for entry in log_history:
        step = entry.get("step")
        for keys in CURVES.values():
            for key in keys:
                for name in (key, f"eval_{key}"):
                    if name in entry and step is not None:
                        xs, ys = out.setdefault(name, ([], []))
                        xs.append(step)
                        ys.append(float(entry[name]))
    return out


def plot_training_curves(log_history: list[dict], path: str | Path | None = None, *, title: str = ""):
    """A 1x4 figure (loss, reward accuracy, margin, chosen/rejected log-probs): train lines, eval dots."""
    import matplotlib.pyplot as plt

    curves = curves_from_log_history(log_history)
    if not curves:
        raise ValueError("log_history holds no DPO metrics (was logging_steps larger than the steps trained?)")
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4))
    for ax, (panel, keys) in zip(axes, CURVES.items(), strict=True):
        for key in keys:
            label = key.split("/")[-1] if len(keys) > 1 else "train"
            if key in curves:
                line, = ax.plot(*curves[key], label=label)
                color = line.get_color()
            else:
                color = None
            if f"eval_{key}" in curves:
                ax.plot(*curves[f"eval_{key}"], "o--", color=color, ms=4,
                        label=f"{label} (held-out)" if len(keys) > 1 else "held-out")
        ax.set(title=panel, xlabel="step")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def plot_beta_sweep(rows: list[dict], ref: dict, path: str | Path, *, reward_name: str | None, bad: set[float]):
    """04's three panels: reward (or step) vs KL along training, one line per beta through its checkpoints (± 1 s.e.
    both ways; runs in ``bad``, betas that draw no lesson, faded and labelled); KL at the end vs beta; Δ log p of the
    chosen and rejected answers vs beta. ``reward_name``: what scored the samples (None: the y axis is the step).
    Saved to ``path``; returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    b = np.array([r["beta"] for r in rows])

    def get(k):
        return np.array([r.get(k, np.nan) for r in rows])

    ykey = "reward" if reward_name is not None else None
    fig, ax = plt.subplots(1, 3, figsize=(17, 4.3))
    for r in rows:
        pts = [{"step": 0, "kl": 0.0, "kl_sem": 0.0, "reward": ref.get("reward", np.nan),
                "reward_sem": ref.get("reward_sem", np.nan)}] + r["path"]
        faded = r["beta"] in bad
        ys = [p.get(ykey, np.nan) for p in pts] if ykey else [p["step"] for p in pts]
        ax[0].errorbar([p["kl"] for p in pts], ys, xerr=[p.get("kl_sem", np.nan) for p in pts],
                       yerr=[p.get("reward_sem", np.nan) for p in pts] if ykey else None, fmt="o-", ms=4, capsize=2,
                       alpha=0.45 if faded else 1.0,
                       label=f"β={r['beta']:g}" + (" (malformed, no lesson)" if faded else ""))
    ax[0].set(xlabel="KL(pi || pi_ref) estimated from samples", ylabel=f"{reward_name} of samples" if ykey else "step",
              title="reward vs KL along training (checkpoints)")
    ax[0].legend(fontsize=8)
    ax[1].errorbar(b, get("kl"), yerr=get("kl_sem"), fmt="o-", capsize=3)
    ax[1].set_xscale("log")
    if (get("kl") - get("kl_sem") > 0).all():  # a log axis when every point and its error bar are positive
        ax[1].set_yscale("log")
    ax[1].set(xlabel="beta", ylabel="KL at the end (± 1 s.e.)", title="KL vs beta")
    for side in ("chosen", "rejected"):
        ax[2].errorbar(b, get(f"delta_logps_{side}"), yerr=get(f"delta_logps_{side}_se"), fmt="o-", capsize=3,
                       label=side)
    ax[2].set_xscale("log")
    ax[2].axhline(0, c="gray", ls=":")
    ax[2].set(xlabel="beta", ylabel="Δ log p vs reference, held-out (± 1 s.e.)", title="what moved")
    ax[2].legend()
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_scores_lengths(rows: list[dict], key: str, path: str | Path, *, tokens: tuple[float, float]):
    """05's two histograms, reference vs policy: the score ``key`` (``toy_reward`` or ``implicit_reward``) and the
    answers' lengths in tokens (``tokens``: the two means, in the title). Saved to ``path``; returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    bins = np.linspace(min(min(r[f"{key}_reference"], r[f"{key}_policy"]) for r in rows) - 0.5,
                       max(max(r[f"{key}_reference"], r[f"{key}_policy"]) for r in rows) + 0.5, 20)
    for side in ("reference", "policy"):
        ax[0].hist([r[f"{key}_{side}"] for r in rows], bins=bins, alpha=0.6, label=side)
        ax[1].hist([r[f"tokens_{side}"] for r in rows], bins=20, alpha=0.6, label=side)
    ax[0].set(xlabel=key.replace("_", " "), ylabel="prompts", title="scores")
    ax[0].legend()
    ax[1].set(xlabel="response tokens", title=f"lengths: {tokens[0]:.1f} -> {tokens[1]:.1f} tokens on average")
    ax[1].legend()
    fig.tight_layout()
    _save(fig, path)
    return fig


def _save(fig, path) -> None:
    """``fig`` at ``path`` (its suffix the format: png, svg, pdf), written atomically (``helpers.infra.files``): an
    interrupt never leaves half a figure."""
    import io

    from helpers.infra.files import write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format=Path(path).suffix.lstrip(".") or "png")
    write_bytes(path, buf.getvalue())
