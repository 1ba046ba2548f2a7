"""HH-RLHF parsing (helpers.data) on real rows from ../shared, property tests, bad input, TRL tokenization."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.data import (
    REASONS,
    HHFormatError,
    format_hh,
    parse_hh,
    render_hh,
    token_lengths,
    tokenize_pair,
    truncation_report,
)
from helpers.worlds.splits import load_hh

H, A = "\n\nHuman:", "\n\nAssistant:"


# --- an independent reading of the same rules: str.find scanning, no regex ---------------------------------------
def _scan(transcript: str):
    """[(label, text)] by scanning for the two markers with str.find; None if no leading Human marker."""
    first_h, first_a = transcript.find(H), transcript.find(A)
    if first_h == -1 or transcript[:first_h].strip() or (first_a != -1 and first_a < first_h):
        return None
    turns, pos = [], first_h
    while pos < len(transcript):
        label = "Human" if transcript.startswith(H, pos) else "Assistant"
        start = pos + len(H if label == "Human" else A)
        nxt = [i for i in (transcript.find(H, start), transcript.find(A, start)) if i != -1]
        end = min(nxt) if nxt else len(transcript)
        turns.append((label, transcript[start:end].strip()))
        pos = end
    return turns


def _independent_reason(row) -> str | None:
    sides = []
    for key in ("chosen", "rejected"):
        turns = _scan(row[key])
        if not turns or turns[0][0] != "Human":
            return "no_leading_human"
        if any("Human:" in t or "Assistant:" in t for _, t in turns):
            return "inline_marker"
        if any(turns[i][0] == turns[i + 1][0] for i in range(len(turns) - 1)):
            return "not_alternating"
        if turns[-1][0] != "Assistant":
            return "no_final_assistant"
        if any(t == "" for _, t in turns[:-1]):
            return "empty_turn"
        if turns[-1][1] == "":
            return "empty_response"
        sides.append(turns)
    if sides[0][:-1] != sides[1][:-1]:
        return "history_mismatch"
    if sides[0][-1] == sides[1][-1]:
        return "identical_responses"
    return None


def _ws(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


@pytest.fixture(scope="module")
def real_rows(shared_hh_path):
    return load_hh(shared_hh_path)


@pytest.fixture(scope="module")
def real_formatted(real_rows):
    return format_hh(real_rows)


# --- real data ---------------------------------------------------------------------------------------------------
def test_drop_counts_match_an_independent_count(real_rows, real_formatted):
    ds, dropped = real_formatted
    expected = Counter(r for r in map(_independent_reason, real_rows) if r is not None)
    assert dropped == expected
    assert len(ds) == sum(_independent_reason(r) is None for r in real_rows)
    # the figures notebook 02 prints for this file
    assert len(real_rows) == 1200 and len(ds) == 1169
    assert dict(dropped) == {"inline_marker": 26, "empty_response": 4, "not_alternating": 1}


def test_every_kept_row_reconstructs_both_transcripts(real_rows, real_formatted):
    ds, _ = real_formatted
    clean = [r for r in real_rows if _independent_reason(r) is None]
    assert len(clean) == len(ds)
    for raw, ex in zip(clean, ds, strict=True):
        assert _ws(render_hh(ex["prompt"] + ex["chosen"])) == _ws(raw["chosen"])
        assert _ws(render_hh(ex["prompt"] + ex["rejected"])) == _ws(raw["rejected"])


def test_kept_contents_have_no_markers_and_prompts_alternate(real_formatted):
    ds, _ = real_formatted
    for ex in ds:
        roles = [t["role"] for t in ex["prompt"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        assert ex["chosen"][0]["role"] == ex["rejected"][0]["role"] == "assistant"
        for t in ex["prompt"] + ex["chosen"] + ex["rejected"]:
            assert H not in t["content"] and A not in t["content"]
            assert t["content"] == t["content"].strip() and t["content"]


def test_seed_first_split_corrupts_every_multi_turn_row(real_rows):
    def first_split(text):  # the seeds' method: cut at the FIRST Assistant marker
        i = text.index(A)
        return text[: i + len(A)], text[i + len(A):]

    corrupted = sum(H in first_split(r["chosen"])[1] for r in real_rows)
    multi_turn = sum(r["chosen"].count(H) > 1 for r in real_rows)
    assert corrupted == multi_turn == 844  # 70% of this file: later Human turns end up inside the "response"


# --- constructed quirks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "chosen,rejected,reason",
    [
        ("Human: hi\n\nAssistant: yo", "Human: hi\n\nAssistant: no", "no_leading_human"),
        (f"{A} hi{H} a{A} b", f"{A} hi{H} a{A} c", "no_leading_human"),
        (f"{H} hi{A} fine.\nHuman: and you?{A} ok", f"{H} hi{A} ok", "inline_marker"),
        (f"{H} hi{A} a{A} b", f"{H} hi{A} c", "not_alternating"),
        (f"{H} hi{A} a{H} more", f"{H} hi{A} a{H} more", "no_final_assistant"),
        (f"{H} {A} a", f"{H} {A} b", "empty_turn"),
        (f"{H} hi{A}", f"{H} hi{A} b", "empty_response"),
        (f"{H} hi{A} x{H} q{A} a", f"{H} hi{A} y{H} q{A} b", "history_mismatch"),
        (f"{H} hi{A} same", f"{H} hi{A}  same ", "identical_responses"),
    ],
)
def test_each_quirk_has_its_reason(chosen, rejected, reason):
    with pytest.raises(HHFormatError) as e:
        parse_hh({"chosen": chosen, "rejected": rejected})
    assert e.value.reason == reason and reason in REASONS
    assert isinstance(e.value, ValueError)


def test_multi_turn_parse():
    row = {"chosen": f"{H} a{A} b{H} c{A} good", "rejected": f"{H} a{A} b{H} c{A} bad"}
    assert parse_hh(row) == {
        "prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }


# --- bad input ---------------------------------------------------------------------------------------------------
def test_bad_rows_raise_naming_the_row():
    good = {"chosen": f"{H} a{A} b", "rejected": f"{H} a{A} c"}
    with pytest.raises(ValueError, match=r"row 2: .*'rejected' must be a string"):
        format_hh([good, good, {"chosen": good["chosen"], "rejected": None}])
    with pytest.raises(ValueError, match=r"row 1: .*must have key 'chosen'"):
        format_hh([good, {"rejected": "x"}])
    with pytest.raises(ValueError, match="must be a dict"):
        parse_hh(["chosen", "rejected"])


def test_format_hh_on_no_clean_rows_returns_empty_dataset_with_counts():
    ds, dropped = format_hh([{"chosen": f"{H} a{A}", "rejected": f"{H} a{A}"}])
    assert len(ds) == 0 and set(ds.column_names) == {"prompt", "chosen", "rejected"}
    assert dropped == {"empty_response": 1}


# --- property tests ----------------------------------------------------------------------------------------------
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30).map(
    str.strip).filter(lambda s: s and "Human:" not in s and "Assistant:" not in s)


@settings(max_examples=200, deadline=None)
@given(history=st.lists(_text, min_size=0, max_size=6), last_user=_text, good=_text, bad=_text)
def test_well_formed_dialogues_round_trip_exactly(history, last_user, good, bad):
    if good == bad:
        bad = bad + " (other)"
    history = history[: len(history) // 2 * 2]
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(history)]
    turns.append({"role": "user", "content": last_user})
    row = {"chosen": render_hh(turns + [{"role": "assistant", "content": good}]),
           "rejected": render_hh(turns + [{"role": "assistant", "content": bad}])}
    out = parse_hh(row)
    assert out["prompt"] == turns
    assert out["chosen"][0]["content"] == good and out["rejected"][0]["content"] == bad
    assert render_hh(out["prompt"] + out["chosen"]) == row["chosen"]


_garbage = st.lists(st.sampled_from([H, A, "Human:", "Assistant:", "\n", "\n\n", " ", "hi", "Human", ":", "x"]),
                    max_size=25).map("".join)


@settings(max_examples=500, deadline=None)
@given(chosen=_garbage, rejected=_garbage)
def test_garbage_never_yields_a_marker_in_any_content(chosen, rejected):
    try:
        out = parse_hh({"chosen": chosen, "rejected": rejected})
    except HHFormatError:
        return
    for t in out["prompt"] + out["chosen"] + out["rejected"]:
        assert "Human:" not in t["content"] and "Assistant:" not in t["content"]


# --- chat template and lengths vs TRL ----------------------------------------------------------------------------
def test_tokenize_pair_equals_trl_preparation(tmp_path, tiny_model_dir, real_formatted):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    ds, _ = real_formatted
    sub = ds.select(range(12))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=DPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none", max_length=None),
        train_dataset=sub, processing_class=tok,
    )
    for ex, trl_ex in zip(sub, trainer.train_dataset, strict=True):
        ours = tokenize_pair(ex, tok)
        for k in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert ours[k] == trl_ex[k], k
    lengths = token_lengths(sub, tok)
    assert list(lengths["chosen"]) == [len(e["chosen_ids"]) for e in trainer.train_dataset]


def test_truncation_report_counts():
    lengths = {"prompt": [10, 50, 100, 120], "chosen": [5, 60, 10, 1], "rejected": [5, 10, 30, 1]}
    rep = truncation_report(lengths, 100)
    assert (rep["dropped"], rep["truncated"], rep["untouched"]) == (2, 1, 1)
    rep = truncation_report(lengths, 100, "keep_end")
    assert (rep["dropped"], rep["truncated"], rep["untouched"]) == (0, 3, 1)
    with pytest.raises(ValueError, match="max_length"):
        truncation_report(lengths, 0)
    with pytest.raises(ValueError, match="truncation_mode"):
        truncation_report(lengths, 10, "middle")


def test_last_split_is_the_reference_recipe_and_its_report_counts_the_pitfalls(real_rows):
    from helpers.data import last_split, last_split_report

    t = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant: 4"
    assert last_split(t) == ("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant:", " 4")
    assert last_split("no marker") == ("", "no marker")
    with pytest.raises(ValueError, match="transcript"):
        last_split(None)
    rep = last_split_report([{"chosen": t, "rejected": t[:-2] + " five"},
                             {"chosen": "\n\nHuman: x\n\nAssistant:y", "rejected": "\n\nHuman: z\n\nAssistant: y"}])
    assert rep == {"rows": 2, "raw_prompts": 2, "multi_turn": 1, "leading_space": 1, "rejected_elsewhere": 1,
                   "no_marker": 0}
    real = last_split_report(real_rows)
    multi = sum(r["chosen"].count("\n\nHuman:") > 1 for r in real_rows)
    assert real["raw_prompts"] == len(real_rows) and real["multi_turn"] == multi and real["leading_space"] > 0
