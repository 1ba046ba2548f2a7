"""The on-policy SmolLM2 pair set: its ground-truth check, the train/held-out split, the pairing rule, and that a
rebuild of a slice reproduces the shipped data file."""

from __future__ import annotations

import json

import pytest

from helpers.worlds.onpolicy import (
    DATA_DIR,
    FILES,
    check_answer,
    load_onpolicy,
    make_pairs,
    manifest,
    pass_rate,
    question_dict,
    questions,
    split_questions,
)

Q = {q.question: q for q in questions()}


@pytest.mark.parametrize("question,text,verdict", [
    ("What is the capital of Spain?", "The capital of Spain is Madrid.", None),
    ("What is the capital of Spain?", "El Salvador is Spain's only capital.", "misses the answer"),
    ("What is the capital of Spain?", "The capital of Spain is Madrid, not Lisbon.", "wrong: lisbon"),
    ("What is the capital of India?", "New Delhi.", None),
    ("What color is grass?", "Green, is a typical color for grass.", None),
    ("What color is grass?", "I'm sorry for that.", "misses the answer"),   # evasive: no answer, no win
    ("What color is grass?", "", "malformed: empty"),                       # empty: never wins
    ("What color is grass?", "Grass is blue or green.", "wrong: blue"),
    ("What sound does a dog make?", "Dogs bark!", None),
    ("What is the opposite of big?", "The opposite of big is big.", "misses the answer"),  # subject != answer
    ("What is the opposite of big?", "Small.", None),
])
def test_check_answer_reads_in_one_line(question, text, verdict):
    assert check_answer(Q[question], text) == verdict


def test_check_answer_sums_cut_offs_and_bad_input():
    q = next(q for q in questions() if q.kind == "sum" and q.subject.startswith("0+"))  # zero plus b = b
    b = int(q.subject.split("+")[1])
    restated = f"Zero plus {q.answer} is a mysterious number."
    assert check_answer(q, restated) == "misses the answer"  # restating the question names b, which is no answer
    assert check_answer(q, f"Zero plus {q.answer} is {q.answer}.") is None
    assert check_answer(q, f"It is {b + 1}.").startswith("wrong")
    spain = Q["What is the capital of Spain?"]
    assert check_answer(spain, "The capital of Spain is", stopped=False) == "cut off"
    assert check_answer(spain, "The capital of Spain is Madrid. It is a city that", stopped=False) is None
    assert check_answer(spain, "Madrid", stopped=True) is None  # a whole answer without a full stop
    with pytest.raises(ValueError, match="text"):
        check_answer(q, None)


def test_train_and_held_out_questions_ask_about_different_facts():
    s = split_questions()
    train, test = s["train"], s["test"]
    assert {q.id for q in train}.isdisjoint(q.id for q in test)
    assert {(q.kind, q.subject) for q in train}.isdisjoint((q.kind, q.subject) for q in test)
    assert {q.kind for q in test} == {q.kind for q in train} == {"capital", "color", "sound", "opposite", "sum"}
    assert len(questions()) == len(train) + len(test) and len(test) >= 20


def test_pairs_are_a_passing_sample_against_a_failing_one_of_the_same_question():
    q = Q["What is the capital of Japan?"]
    samples = [[("Tokyo is the capital of Japan, a city of many millions of people.", True),
                ("The capital of Japan is Tokyo.", True), ("I'm not sure.", True), ("", True),
                ("The capital of Japan is Lima.", True)]]
    rows = make_pairs([q], samples, pairs_per_question=2)
    assert [r["chosen"][0]["content"] for r in rows] == [  # the shortest passing sample first
        "The capital of Japan is Tokyo.", "Tokyo is the capital of Japan, a city of many millions of people."]
    assert [(r["rejected"][0]["content"], r["why"]) for r in rows] == [  # a wrong answer first, then a miss
        ("The capital of Japan is Lima.", "wrong: lima"), ("I'm not sure.", "misses the answer")]
    assert make_pairs([q], [[("The capital of Japan is Tokyo.", True)] * 3]) == []  # nothing fails: no pair
    with pytest.raises(ValueError, match="pairs_per_question"):
        make_pairs([q], samples, pairs_per_question=0)
    rate = pass_rate([q], samples)
    assert rate["pass_rate"] == pytest.approx(2 / 5) and rate["n"] == 5 and rate["se"] > 0
    assert rate["fails"] == {"wrong": 1, "misses the answer": 1, "malformed": 1}
    assert rate["per_question"] == [2] and rate["se_clustered"] == 0.0  # one question: no spread between questions


def test_clustered_change_pairs_questions_and_is_wider_when_samples_cluster():
    from helpers.worlds.onpolicy import clustered_change

    # 4 questions x 4 samples; each question's samples all agree (fully clustered)
    ref = {"n": 16, "pass_rate": 0.25, "per_question": [0, 0, 0, 4]}
    pol = {"n": 16, "pass_rate": 0.5, "per_question": [4, 0, 0, 4]}
    change, se = clustered_change(ref, pol)
    assert change == pytest.approx(0.25)
    assert se == pytest.approx(0.25)  # changes (1, 0, 0, 0): sd 0.5 over 4 questions
    naive = ((0.5 * 0.5 / 16) + (0.25 * 0.75 / 16)) ** 0.5
    assert se > 1.5 * naive  # 16 samples of 4 questions carry the information of about 4
    with pytest.raises(ValueError, match="per_question"):
        clustered_change({"n": 16}, pol)
    with pytest.raises(ValueError, match="per_question"):
        clustered_change(ref, {**pol, "per_question": [4, 0, 0]})


def test_the_shipped_files_are_consistent_with_the_check():
    m = manifest()
    data = load_onpolicy()
    assert len(data["train"]) == m["pairs"]["train"] >= 40 and len(data["test"]) == m["pairs"]["test"] >= 15
    qd = question_dict()
    for split in ("train", "test"):
        for line in (DATA_DIR / FILES[split]).read_text().splitlines():
            r = json.loads(line)
            q = qd[r["question_id"]]
            assert q.id in m["questions"][split]
            assert r["prompt"] == [{"role": "user", "content": q.question}]
            assert check_answer(q, r["chosen"][0]["content"]) is None
            assert check_answer(q, r["rejected"][0]["content"], stopped=False) is not None or r["why"] == "cut off"
        qs = [qd[i] for i in m["questions"][split]]
        samples = [[tuple(x) for x in m["samples"][split][str(q.id)]] for q in qs]
        assert pass_rate(qs, samples)["pass_rate"] == pytest.approx(m["reference"][split]["pass_rate"])


@pytest.mark.slow
def test_a_rebuild_of_a_slice_reproduces_the_shipped_samples_and_pairs(tmp_path):
    """The build command on the first question of each split, with the packaged SmolLM2: the same samples (seeded per
    question, no padding, BUILD_THREADS threads) and so the same pairs as data/."""
    from helpers.worlds.onpolicy import build

    shipped = manifest()
    small = build(tmp_path, limit=1)
    for split in ("train", "test"):
        qid = str(small["questions"][split][0])
        assert small["samples"][split][qid] == shipped["samples"][split][qid]
        mine = (tmp_path / FILES[split]).read_text().splitlines()
        theirs = [x for x in (DATA_DIR / FILES[split]).read_text().splitlines()
                  if json.loads(x)["question_id"] == int(qid)]
        assert mine == theirs


def test_benchmark_verdicts_need_the_goal_the_quality_and_the_budget():
    from helpers.worlds.onpolicy import benchmark_verdicts

    def run(name, change, malformed, seconds):
        return {"name": name, "pairs": "onpolicy", "pass_rate_change": change, "pass_rate_change_se": 0.07,
                "seconds_notebook03_parts": seconds, "policy": {"quality": {"malformed_rate": malformed, "n": 92}}}

    res = {"reference": {"quality": {"malformed_rate": 0.0, "n": 92}},
           "runs": [run("ok", 0.25, 0.0, 70), run("small", 0.15, 0.0, 70), run("slow", 0.3, 0.0, 120),
                    run("broken", 0.3, 0.2, 70)]}
    v = {x["name"]: x for x in benchmark_verdicts(res)}
    assert [n for n, x in v.items() if x["meets"]] == ["ok"]
    assert not v["small"]["reaches_goal"] and not v["slow"]["fits"] and not v["broken"]["quality_ok"]


def test_the_shipped_benchmark_is_read_by_its_verdicts():
    """The results notebook 03's Appendix B prints: every run judged, and the on/off-policy contrast present."""
    from helpers.worlds.onpolicy import benchmark_verdicts

    res = json.loads((DATA_DIR.parent / "benchmarks" / "results" / "onpolicy_smollm2_cpu_dpo.json").read_text())
    names = [v["name"] for v in benchmark_verdicts(res)]
    assert "base" in names and "offpolicy" in names and len(names) == len(res["runs"])
