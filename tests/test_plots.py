"""helpers.course.plots: training curves from TRL's log history."""

from __future__ import annotations

import pytest

from helpers.course.plots import curves_from_log_history, plot_training_curves


def test_curves_separate_train_and_eval(tmp_path):
    log = [{"step": 10, "loss": 0.6, "rewards/accuracies": 0.7, "logps/chosen": -5.0, "logps/rejected": -6.0},
           {"step": 10, "eval_loss": 0.65, "eval_rewards/margins": 0.1},
           {"step": 20, "loss": 0.5, "rewards/accuracies": 0.8},
           {"step": 20, "train_runtime": 3.0}]
    c = curves_from_log_history(log)
    assert c["loss"] == ([10, 20], [0.6, 0.5]) and c["eval_loss"] == ([10], [0.65])
    assert c["eval_rewards/margins"] == ([10], [0.1]) and "train_runtime" not in c
    plot_training_curves(log, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="log_history"):
        plot_training_curves([{"step": 1, "train_runtime": 1.0}])
