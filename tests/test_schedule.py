"""helpers.course.schedule: a workshop plan counts Colab's own minutes and fits its length."""

from __future__ import annotations

import pytest

from helpers.course import schedule as sch


def test_every_plan_fits_its_length_with_slack_and_lists_its_cuts():
    for plan, length in sch.PLAN_LENGTH.items():
        total = sum(m for _, m in sch.plan_minutes(plan))
        assert total <= length - 5, (plan, total)  # at least 5 minutes for disconnects and questions
        assert sch.CUTS[plan], plan
    assert set(sch.PLAN_LENGTH) == set(sch.PLANS) == set(sch.CUTS)


def test_a_fresh_runtime_costs_what_colab_costs():
    c = sch.colab_minutes("05_before_after_generation")
    assert c["install"] == sch.INSTALL_MEASURED[0] > 0 and c["connect"] > 0 and c["restart"] > 0
    assert c["splits"] > 0 and c["scoring"] > 0  # 02's splits rebuilt on the runtime; generation and judging
    mb = sch.COLAB["downloads_mb"]
    assert mb["05_before_after_generation"] - mb["03_unsloth_lora_dpo"] > 1000  # the judge's weights
    assert c["downloads"] == pytest.approx(mb["05_before_after_generation"] / sch.COLAB["bandwidth_mb_s"][0] / 60)
    assert c["total"] == pytest.approx(sum(v for k, v in c.items() if k != "total"))
    assert sch.colab_minutes("01_dpo_math_and_loss")["splits"] == 0  # 01 reads no HH split
    assert sch.colab_minutes("05_before_after_generation", projected=True)["total"] == 0
    assert sch.colab_minutes("03_unsloth_lora_dpo", fresh=False)["install"] == 0
    assert sch.colab_minutes("03_unsloth_lora_dpo", drive=True)["drive"] > 0
    with pytest.raises(ValueError, match="name"):
        sch.colab_minutes("06_missing")


def test_only_the_notebooks_that_need_a_gpu_ask_for_a_t4():
    assert {n for n, r in sch.RUNTIME.items() if r == "CPU"} == {"01_dpo_math_and_loss", "02_hh_rlhf_formatting"}
    assert set(sch.RUNTIME) == set(sch.MAIN_PATH)
    assert "T4" not in sch.WELCOME


def test_longer_cells_and_questions_cost_more_and_a_heading_inside_a_cell_starts_its_section():
    m = sch.main_path_minutes("01_dpo_math_and_loss", gpu=False)
    assert m["cells"] == pytest.approx(m["code_cells"] * sch.CELL_MINUTES + m["code_lines"] * sch.CELL_LINE_MINUTES)
    assert m["questions"] >= 1 and m["pauses"] == m["questions"] * sch.QUESTION_MINUTES
    assert m["lesson"] == pytest.approx(m["reading"] + m["cells"] + m["pauses"])
    intro = sch.main_path_minutes("01_dpo_math_and_loss", ("none",), gpu=False)
    s3 = sch.main_path_minutes("01_dpo_math_and_loss", ("3",), gpu=False)
    assert s3["words"] > intro["words"] and s3["code_cells"] > intro["code_cells"]  # 01's §3 begins mid-cell
    parts = ("1", "2", "3", "4", "5", "6")
    by_section = sum(sch.main_path_minutes("01_dpo_math_and_loss", (s,), gpu=False)["words"] - intro["words"]
                     for s in parts)
    assert by_section + intro["words"] == m["words"]  # every word counted once
