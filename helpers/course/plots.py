"""Figures shared by notebooks 03-05: training curves from ``trainer.state.log_history``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CURVES", "curves_from_log_history", "plot_training_curves"]

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
        fig.savefig(path, dpi=100)
    return fig
