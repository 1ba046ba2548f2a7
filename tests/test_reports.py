"""The notebooks' reports, plans and injected smoke-test sizes (helpers.sweep_report, helpers.course.presets,
helpers.course.reports, helpers.compare.comparison_columns): each fact can fail, each plan picks by mode."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from helpers.course import presets, reports
from helpers.course.suite import inject_quick
from helpers.recipe import DPORecipe
from helpers.sweep_report import check_sized_sweep, facts_report, healthy_runs, no_lesson, overopt_report, sweep_facts

ROOT = Path(__file__).resolve().parents[1]
ONLINE = dict(betas=(0.01, 0.1, 1.0), checkpoints=(50,), loop="trl", kl_prompts=64, kl_samples=2, path_samples=None,
              max_new_tokens=64, sample_batch=32, overopt=dict(learning_rate=4e-4, beta=0.1), run_loss_sweep=None)


def _run(beta, kl, kl_sem=0.01, malformed=0.0, reward=0.5, d_rej=-1.0, acc=1.0):
    return {"beta": beta, "kl": kl, "kl_sem": kl_sem, "kl_n": 400, "malformed_rate": malformed, "reward": reward,
            "reward_sem": 0.02, "delta_logps_rejected": d_rej, "delta_logps_rejected_se": 0.01,
            "delta_logps_chosen": 0.1, "delta_logps_chosen_se": 0.01, "heldout_accuracy": acc,
            "heldout_accuracy_se": 0.01}


REF = {"malformed_rate": 0.01, "kl_n": 400, "reward": 0.1, "reward_sem": 0.02}


def test_no_lesson_names_a_broken_run_and_only_that_one():
    rows = [_run(1, 0.8, malformed=0.30), _run(3, 0.3, malformed=0.02)]
    assert "malformed 30.0%" in no_lesson(rows[0], REF, 2.0) and no_lesson(rows[1], REF, 2.0) is None
    assert [r["beta"] for r in healthy_runs(rows, REF, 2.0)] == [3]
    for bad in (0.5, 200.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="malformed_ratio"):
            no_lesson(rows[0], REF, bad)


def test_the_bound_is_tied_to_the_references_rate_not_a_fixed_number_of_points():
    """Issue 34: with MALFORMED_OK = 5 points, beta 1 breaking 7.9% of its samples against the reference's 1.3%
    (six times as often) counted as well-formed."""
    ref = dict(REF, malformed_rate=0.013, kl_n=932)
    six_times = _run(1, 1.06, malformed=0.079)
    six_times["kl_n"] = 932
    assert "more than 2x its rate" in no_lesson(six_times, ref, 2.0)
    within = dict(six_times, malformed_rate=0.02)  # 1.5 times the reference's rate
    assert no_lesson(within, ref, 2.0) is None
    low = dict(ref, malformed_rate=0.0)  # a reference that never breaks: only noise-level breakage passes
    assert no_lesson(dict(six_times, malformed_rate=0.001), low, 2.0) is None
    assert no_lesson(dict(six_times, malformed_rate=0.03), low, 2.0) is not None


def test_sweep_facts_hold_or_not_by_their_numbers():
    hs = [_run(1, 0.8, reward=0.9, d_rej=-2.0), _run(10, 0.1, reward=0.3, d_rej=-0.5), _run(100, 0.01, reward=0.2,
                                                                                          d_rej=-0.1)]
    got = sweep_facts(hs, REF, reward_name="toy reward")

    def fact(start):
        return next(h for t, h, _ in got if t.startswith(start))

    assert fact("DPO raised the toy reward") is True
    assert fact("the largest beta (100) moved the rejected answers least") is True
    assert fact("held-out reward accuracy separates the betas") is False  # every accuracy 1.0
    # the same comparison with noise ten times the gaps: nothing holds
    noisy = [dict(r, reward_sem=5.0, delta_logps_rejected_se=5.0) for r in hs]
    assert not any(h for _, h, _ in sweep_facts(noisy, REF, reward_name="toy reward"))
    assert not any("toy reward" in t for t, _, _ in sweep_facts(hs, REF, reward_name=None))
    assert "[holds]" in str(facts_report([("x", True, "e")])) and "[NOT shown]" in str(facts_report([("x", False, "")]))
    with pytest.raises(ValueError, match="hs"):
        sweep_facts(hs[:1], REF, reward_name=None)


def test_the_sized_sweep_check_fails_when_kl_rises_with_beta():
    hs = [_run(b, kl, reward=0.5) for b, kl in ((1, 0.8), (3, 0.3), (10, 0.1), (30, 0.03), (100, 0.01))]
    check_sized_sweep(hs, hs)
    hs[2]["kl"] = 0.5  # beta 10 further from the reference than beta 3
    with pytest.raises(AssertionError):
        check_sized_sweep(hs, hs)


def test_overopt_report_calls_reward_hacking_only_when_broken_and_rewarded():
    over = dict(_run(1, 0.8, malformed=0.30, reward=0.9), cached=True, mean_tokens=9.0, samples=["a"],
                malformed_examples=[("Gladly! Three", "unfinished")])
    ref = dict(REF, mean_tokens=10.0)
    text = str(overopt_report(over, [over], ref, {"beta": 1.0}, reward_fn=lambda s: 1.0, malformed_ratio=2.0))
    assert "[holds] reward hacking" in text and "the sweep's own run, cached" in text
    healthy = dict(over, malformed_rate=0.01)
    text = str(overopt_report(healthy, [healthy], ref, {"beta": 1.0}, reward_fn=lambda s: 1.0, malformed_ratio=2.0))
    assert "[NOT shown] reward hacking" in text


def test_the_section_4_label_is_computed_from_the_run_both_ways():
    """Issue 34: "OVER-OPTIMISED run (beta=1.0)" was printed whatever the run showed, and §4 called it the falling half
    of the reward-vs-KL frontier though its reward was the sweep's highest."""
    ref = dict(REF, mean_tokens=10.0)
    extra = dict(cached=True, mean_tokens=9.0, samples=["a"], malformed_examples=[])
    sweep = [dict(_run(3, 0.3, malformed=0.01, reward=0.9), **extra), dict(_run(10, 0.1, reward=0.5), **extra)]
    broken_high = dict(_run(1, 0.8, malformed=0.30, reward=0.95), **extra)
    rep = overopt_report(broken_high, [broken_high, *sweep], ref, {"beta": 1.0}, reward_fn=lambda s: 1.0,
                         malformed_ratio=2.0)
    assert str(rep).startswith("the §4 run (beta=1.0; the sweep's own run, cached): OVER-OPTIMISED: malformed 30.0%")
    assert rep.values == {"overoptimised": True, "reward_fell": False}
    assert "[NOT shown] its reward fell as its KL grew" in str(rep) and "not the falling half" in str(rep)
    well_formed = dict(broken_high, malformed_rate=0.012)
    rep = overopt_report(well_formed, [well_formed, *sweep], ref, {"beta": 1.0}, reward_fn=lambda s: 1.0,
                         malformed_ratio=2.0)
    assert "NOT over-optimised by this measure: 1.2% of its samples break" in str(rep)
    assert "OVER-OPTIMISED" not in str(rep) and rep.values["overoptimised"] is False
    falling = dict(broken_high, reward=0.4)  # more KL than the best well-formed run, and less reward beyond 2 s.e.
    rep = overopt_report(falling, [falling, *sweep], ref, {"beta": 1.0}, reward_fn=lambda s: 1.0, malformed_ratio=2.0)
    assert rep.values == {"overoptimised": True, "reward_fell": True} and "[holds] its reward fell" in str(rep)
    no_reward = overopt_report(dict(falling, reward=None), sweep, ref, {"beta": 1.0}, reward_fn=None,
                               malformed_ratio=2.0)
    assert no_reward.values["reward_fell"] is None


def test_plans_pick_by_mode_and_say_so(capsys):
    online, offline = SimpleNamespace(hub=True), SimpleNamespace(hub=False)
    p = presets.sweep_plan(online, **ONLINE)
    assert p.betas == ONLINE["betas"] and p.recipe == {} and p.reward_fn is None and p.run_loss_sweep is True
    assert capsys.readouterr().out == ""
    p = presets.sweep_plan(offline, **ONLINE)
    assert p.betas == (1.0, 3.0, 10.0, 30.0, 100.0) and p.loop == "scratch" and p.quality_rules == "toy"
    assert p.reward_fn("Certainly! Yes.") > 0 and p.run_loss_sweep is False
    assert "offline: toy world" in capsys.readouterr().out
    assert presets.sweep_plan(offline, **dict(ONLINE, run_loss_sweep=True)).run_loss_sweep is True
    t = presets.training_plan(offline, DPORecipe(), sample_decoding={"max_new_tokens": 96})
    assert t.recipe.data == "toy" and t.decoding == presets.TOY_DECODING and t.min_accuracy == 0.9
    t = presets.training_plan(online, DPORecipe(), sample_decoding={"max_new_tokens": 96})
    assert t.recipe == DPORecipe() and t.rules == "real" and t.min_accuracy is None
    g = presets.generation_plan(online, run_dir="r", decoding={"max_new_tokens": 128})
    assert g.recipe03.data == "r/02_hh" and not g.show_real_model
    assert g.for_recipe(DPORecipe(data="toy"))[:2] == (True, presets.TOY_DECODING)


def test_dpo_quick_is_injected_after_the_parameters_cell_only_when_asked(monkeypatch):
    path = ROOT / "notebooks" / "03_unsloth_lora_dpo.ipynb"
    monkeypatch.delenv("DPO_QUICK", raising=False)
    nb = nbformat.read(path, as_version=4)
    assert inject_quick(nb, path.stem) is False and nb == nbformat.read(path, as_version=4)
    monkeypatch.setenv("DPO_QUICK", "1")
    assert inject_quick(nb, path.stem) is True
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nb.cells[at + 1]
    assert injected.metadata["tags"] == ["injected-parameters"]
    scope: dict = {}
    exec(nb.cells[at].source + "\n" + injected.source, scope)  # the shrunk values replace the parameters cell's
    assert (scope["MAX_STEPS"], scope["SAMPLE_DECODING"]["max_new_tokens"], scope["BETA"]) == (3, 24, 0.1)
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(ValueError, match="parameters"):
        inject_quick(bare, path.stem)
    assert inject_quick(bare, "01_dpo_math_and_loss") is False  # nothing to shrink there
    for name, body in presets.QUICK.items():  # every injected name is a knob of that notebook's parameters cell
        cells = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells
        params = next(c.source for c in cells if "parameters" in c.metadata.get("tags", []))
        for line in body.splitlines():
            for knob in line.split("=")[0].split(","):
                assert f"{knob.strip()}" in params, (name, knob)


def test_stored_reports_read_their_files_and_name_a_missing_one(tmp_path):
    pilot = reports.pilot_report(DPORecipe().learning_rate, DPORecipe().sft_weight)
    assert pilot.values["same"] is True and "the rule picks" in str(pilot)
    assert reports.pilot_report(1e-3, 0.0).values["same"] is False
    assert "runs" not in str(reports.onpolicy_report()).splitlines()[0] and reports.onpolicy_report().values["verdicts"]
    assert "sft_weight" in str(reports.sft_bench_report())
    with pytest.raises(ValueError, match="nothing.json"):
        reports.read_result(tmp_path / "nothing.json")
    text = str(reports.recipe_report(DPORecipe()))
    assert all(f.name in text for f in dataclasses.fields(DPORecipe))


def test_a_negative_kl_estimate_is_explained_not_printed_bare():
    """Issue 34: negative KL estimates were printed unexplained (03 online "-0.03 ± 0.03", 04 "ratio -1851558.7x")."""
    from helpers.evaluation import kl_text

    assert kl_text(0.42, 0.03) == "0.42 ± 0.03 nats"
    assert "0 is within 2 s.e., read it as about 0" in kl_text(-0.03, 0.03)
    assert "more than 2 s.e. below 0" in kl_text(-0.5, 0.03)


def test_the_best_run_fact_raises_its_bar_for_being_picked_as_the_best():
    """Issue 34: "best run beats the reference" took a max over runs before its 2-s.e. test."""
    hs = [_run(b, kl, reward=0.1 + 0.05 * i) for i, (b, kl) in enumerate(((1, 0.8), (3, 0.3), (10, 0.1), (30, 0.03)))]
    ref = dict(REF, reward=0.1, reward_sem=0.02)
    # the best run (0.25) is 0.15 above the reference, ± 0.028: 5.3 s.e., beyond Bonferroni's 2.5 for 4 runs
    fact = next(f for f in sweep_facts(hs, ref, reward_name="toy reward") if f[0].startswith("DPO raised"))
    assert fact[1] is True and "beyond 2.5 s.e." in fact[0] and "best of 4 runs" in fact[0]
    near = [dict(r, reward=0.16) for r in hs]  # 0.06 ± 0.028 above: 2.1 s.e., past 2 but not past 2.5
    fact = next(f for f in sweep_facts(near, ref, reward_name="toy reward") if f[0].startswith("DPO raised"))
    assert fact[1] is False
